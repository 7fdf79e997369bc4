"""Goldens for LoRA (PEFT interop) and the weighted DPO loss and its LoRA gradients.

Regenerate (never in CI; torch + transformers + peft + tokenizers + pillow, see docs/goldens.md):
    python crates/dpo/tests/golden/make_dpo_goldens.py

Base model: the tiny LLaVA of crates/lvlm/tests/golden (llava-hf layout), in f32.
Writes next to this script:
  peft-adapter/        a PEFT LoRA adapter (r 4, alpha 8, the LLM's q,k,v,o,gate,up,down only),
                       lora_A as PEFT initialises it, lora_B drawn N(0, 0.1) so it changes the output
  dpo_goldens.safetensors
      adapter.logits.subset [P, 512], adapter.logits.positions [P], subset_ids: logits of pair 0's
          chosen conversation with the adapter on (positions as the lvlm goldens);
      policy.{chosen,rejected} [3], reference.{chosen,rejected} [3]: summed response log-probs with
          the adapter on / off (`disable_adapter()`), chosen on `image`, rejected on `rejected_image`;
      loss []: mean over the 3 pairs of w · −log σ(β Δ), β = 0.1, w = raw weighted_score;
      grad.<peft key> : d loss / d each LoRA weight (PEFT layout [r, in] / [out, r]).
The prompt, label and image code is the lvlm golden script's (imported from there).
"""

import importlib.util
import json
import pathlib

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import LlavaForConditionalGeneration

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[3]
LVLM = ROOT / "crates" / "lvlm" / "tests" / "golden"
spec = importlib.util.spec_from_file_location("llava_goldens", LVLM / "make_llava_goldens.py")
lg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lg)

BETA = 0.1
TARGET = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def seq_logp(model, q, ans, image):
    ids, labels = lg.preprocess_v1(q, ans)
    ids, labels = lg.expand(ids, labels, 576)
    x = torch.tensor([ids])
    logits = model(input_ids=x, pixel_values=lg.pixels(image), attention_mask=torch.ones_like(x)).logits[0]
    lp = torch.log_softmax(logits.float(), -1)
    idx = [t for t in range(1, len(ids)) if labels[t] != lg.IGNORE]
    return lp[[t - 1 for t in idx], [ids[t] for t in idx]].sum(), logits, ids


def main():
    base = LlavaForConditionalGeneration.from_pretrained(LVLM / "tiny-llava-hf", dtype=torch.float32, attn_implementation="eager")
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGET, bias="none", task_type="CAUSAL_LM")
    torch.manual_seed(7)
    model = get_peft_model(base, cfg)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    out_dir = HERE / "peft-adapter"
    model.peft_config["default"].base_model_name_or_path = "crates/lvlm/tests/golden/tiny-llava-hf"
    model.save_pretrained(out_dir)
    (out_dir / "README.md").unlink(missing_ok=True)
    model.eval()
    pairs = json.loads((LVLM / "pairs.json").read_text())
    out = {}
    # Logits with the adapter.
    gold = __import__("safetensors.torch", fromlist=["load_file"]).load_file(LVLM / "llava_goldens.safetensors")
    with torch.no_grad():
        _, logits, _ = seq_logp(model, pairs[0]["conversations"][0]["value"], pairs[0]["conversations"][1]["value"], pairs[0]["image"])
    pos = gold["logits.positions"]
    out["subset_ids"] = gold["subset_ids"]
    out["adapter.logits.positions"] = pos
    out["adapter.logits.subset"] = logits[pos][:, gold["subset_ids"]].contiguous()
    # Weighted DPO loss and LoRA gradients.
    pc, pr, rc, rr, w = [], [], [], [], []
    for p in pairs:
        q = p["conversations"][0]["value"]
        img_c, img_r = p["image"], p.get("rejected_image", p["image"])
        pc.append(seq_logp(model, q, p["conversations"][1]["value"], img_c)[0])
        pr.append(seq_logp(model, q, p["rejected_conversations"][1]["value"], img_r)[0])
        with torch.no_grad(), model.disable_adapter():
            rc.append(seq_logp(model, q, p["conversations"][1]["value"], img_c)[0])
            rr.append(seq_logp(model, q, p["rejected_conversations"][1]["value"], img_r)[0])
        w.append(float(p["weighted_score"]))
    pc, pr, rc, rr = map(torch.stack, (pc, pr, rc, rr))
    logits = (pc - pr) - (rc - rr)
    losses = -torch.nn.functional.logsigmoid(BETA * logits) * torch.tensor(w)
    loss = losses.mean()
    loss.backward()
    out["policy.chosen"], out["policy.rejected"] = pc.detach(), pr.detach()
    out["reference.chosen"], out["reference.rejected"] = rc.detach(), rr.detach()
    out["loss"] = loss.detach().reshape(1)
    for n, p in model.named_parameters():
        if "lora_" in n:
            key = n.replace(".default", "")
            out[f"grad.{key}"] = p.grad.detach().contiguous()
    save_file(out, HERE / "dpo_goldens.safetensors")
    print("loss", float(loss.detach()), "policy", pc.tolist(), "reference", rc.tolist())
    print("grad keys e.g.", [k for k in out if k.startswith("grad.")][:2])


if __name__ == "__main__":
    main()
