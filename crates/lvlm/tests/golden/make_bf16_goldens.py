"""bf16 goldens for mmedpo-lvlm: the tiny llava-hf fixture run by transformers in bfloat16.

Regenerate (never in CI; same environment as make_llava_goldens.py, see docs/goldens.md):
    python crates/lvlm/tests/golden/make_bf16_goldens.py

Loads tiny-llava-hf/ (written by make_llava_goldens.py) with `dtype=torch.bfloat16` and eager
attention, i.e. every weight and activation bf16 with transformers' own f32 islands (RMSNorm and
LayerNorm statistics, the attention softmax), and scores the pairs of pairs.json as LLaVA's DPO
trainer does: `logits.float()` then log-softmax. Writes llava_bf16_goldens.safetensors:
  pair{i}.{chosen,rejected}.logp f32: summed response log-probs (bf16 model, f32 log-softmax).
"""

import torch
from safetensors.torch import save_file
from transformers import LlavaForConditionalGeneration

from make_llava_goldens import HERE, IGNORE, PAIRS, expand, pixels, preprocess_v1


def main():
    model = LlavaForConditionalGeneration.from_pretrained(
        HERE / "tiny-llava-hf", dtype=torch.bfloat16, attn_implementation="eager").eval()
    out = {}
    for i, p in enumerate(PAIRS):
        for branch, ans, img in [("chosen", p["c"], p["image"]), ("rejected", p["r"], p["rejected_image"] or p["image"])]:
            ids, labels = preprocess_v1(p["q"], ans)
            ids, labels = expand(ids, labels, 576)
            x = torch.tensor([ids])
            with torch.no_grad():
                logits = model(input_ids=x, pixel_values=pixels(img).to(torch.bfloat16),
                               attention_mask=torch.ones_like(x)).logits[0]
            lp = torch.log_softmax(logits.float(), -1)
            total = sum(float(lp[t - 1, ids[t]]) for t in range(1, len(ids)) if labels[t] != IGNORE)
            out[f"pair{i}.{branch}.logp"] = torch.tensor([total], dtype=torch.float32)
            print(f"pair {i} {branch}: bf16 logp {total:.4f}")
    save_file(out, HERE / "llava_bf16_goldens.safetensors")


if __name__ == "__main__":
    main()
