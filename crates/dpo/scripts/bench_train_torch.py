"""PyTorch + PEFT reference for `mmedpo bench train`: the same weighted-DPO pair step on the same
llava-hf config, the same synthetic pairs and the same LoRA targets, on this machine's CPU.

    python crates/dpo/scripts/bench_train_torch.py --config models/bench-mid/config.json \
        [--seq-len 256] [--answer-len 20] [--steps 3] [--batch 1] [--lora-r 16] [--threads N] [--json F]

What one step does, as `mmedpo_dpo::train::loss_and_grads` + `optimizer_step` do:
- the CLIP tower and the projector once per image without gradients (the projector is frozen),
  features taken at `vision_feature_layer` without the CLS token;
- chosen and rejected as one batch of two: the policy (LoRA r, alpha 2r, dropout 0, on q,k,v,o,
  gate,up,down of the language model only) forward with gradients, the reference the same model with
  the adapter disabled (`disable_adapter()`, no gradients);
- the LM head only at the labelled positions, log-softmax and sums in f32; loss = w · −log σ(β·Δ)
  with β 0.1, w 1; backward; global-norm clip 1.0; AdamW (0.9, 0.999, 1e-8, no decay), lr 1e-7.

The pairs are `mmedpo bench train`'s: `[bos, <image>×image_tokens, text…]` of `--seq-len` tokens,
the last `--answer-len` labelled, token `3 + (i·7919 + salt·104729) mod (vocab − 3)`, pixels
`((i·2654435761 + b) mod 1000) / 250 − 2`. Weights are random (seed 0) in both programs: the
timing does not depend on their values. Prints the median seconds per pair over the timed steps
(the first step is reported on its own) and per-phase medians, then one JSON line.
"""

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import LlavaConfig, LlavaForConditionalGeneration

IGNORE = -100


def pairs(cfg, a):
    v = cfg.vision_config
    image_tokens = (v.image_size // v.patch_size) ** 2
    text = a.seq_len + 1 - (image_tokens + 2)
    if text <= a.answer_len:
        raise SystemExit(f"--seq-len {a.seq_len} leaves no room for {image_tokens} image tokens, "
                         f"a prompt and {a.answer_len} answer tokens")
    vocab = cfg.text_config.vocab_size

    def token(i, salt):
        return 3 + (i * 7919 + salt * 104729) % (vocab - 3)

    ids, labels, pixels = [], [], []
    for b in range(a.batch):
        n = 3 * v.image_size * v.image_size
        px = torch.tensor([((i * 2654435761 + b) % 1000) / 250.0 - 2.0 for i in range(n)],
                          dtype=torch.float32).reshape(3, v.image_size, v.image_size)
        pixels.append(px)
        for salt in (b * 3 + 1, b * 3 + 2):
            seq = [1] + [cfg.image_token_index] * image_tokens + [token(i, salt) for i in range(text)]
            lab = [IGNORE] * (len(seq) - a.answer_len) + seq[len(seq) - a.answer_len:]
            ids.append(seq)
            labels.append(lab)
    # Rows: chosen of every pair, then rejected (as `pair_logps_with_features`).
    order = [2 * b for b in range(a.batch)] + [2 * b + 1 for b in range(a.batch)]
    ids = torch.tensor([ids[i] for i in order])
    labels = torch.tensor([labels[i] for i in order])
    return ids, labels, torch.stack(pixels)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--answer-len", type=int, default=20)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with open(a.config) as f:
        cfg = LlavaConfig(**json.load(f))
    ids, labels, pixels = pairs(cfg, a)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(cfg).float()
    targets = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
    model = get_peft_model(model, LoraConfig(r=a.lora_r, lora_alpha=2 * a.lora_r, lora_dropout=0.0,
                                             target_modules=targets, bias="none"))
    model.train()
    inner = model.base_model.model
    lora_layers = sum(1 for n, _ in inner.named_modules() if n.endswith("lora_A"))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-7, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    build_s = time.perf_counter() - t0
    layer = cfg.vision_feature_layer
    # Positions whose next token is labelled; the rows chosen…, rejected….
    rows = [(r, t - 1) for r in range(ids.shape[0]) for t in range(1, ids.shape[1]) if labels[r, t] != IGNORE]
    row_idx = torch.tensor([r for r, _ in rows])
    pos_idx = torch.tensor([t for _, t in rows])
    target = labels[row_idx, pos_idx + 1]
    owner = row_idx
    image_of = torch.tensor([r % a.batch for r in range(ids.shape[0])])
    image_mask = (ids == cfg.image_token_index).unsqueeze(-1)

    def logps(features):
        embeds = inner.get_input_embeddings()(ids)
        feats = features[image_of].reshape(-1, features.shape[-1]).to(embeds.dtype)
        embeds = embeds.masked_scatter(image_mask.expand_as(embeds), feats)
        hidden = inner.model.language_model(inputs_embeds=embeds, use_cache=False).last_hidden_state
        logits = inner.lm_head(hidden[row_idx, pos_idx])
        per_token = F.log_softmax(logits.float(), dim=-1).gather(1, target[:, None])[:, 0]
        sums = torch.zeros(ids.shape[0], dtype=torch.float32).index_add(0, owner, per_token)
        return sums[: a.batch], sums[a.batch:]

    def step():
        ph = {}
        t = time.perf_counter()
        with torch.no_grad():
            out = inner.model.vision_tower(pixels, output_hidden_states=True)
            feats = inner.model.multi_modal_projector(out.hidden_states[layer][:, 1:])
        ph["tower_s"] = time.perf_counter() - t
        t = time.perf_counter()
        pc, pr = logps(feats)
        ph["policy_forward_s"] = time.perf_counter() - t
        t = time.perf_counter()
        with torch.no_grad(), model.disable_adapter():
            rc, rr = logps(feats)
        ph["reference_forward_s"] = time.perf_counter() - t
        t = time.perf_counter()
        loss = (-F.logsigmoid(0.1 * ((pc - rc) - (pr - rr)))).mean()
        loss.backward()
        ph["backward_s"] = time.perf_counter() - t
        t = time.perf_counter()
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ph["optimizer_s"] = time.perf_counter() - t
        return loss.item(), norm.item(), ph

    times, phases, losses = [], [], []
    for _ in range(a.steps + 1):
        t = time.perf_counter()
        loss, norm, ph = step()
        times.append(time.perf_counter() - t)
        phases.append(ph)
        losses.append((loss, norm))
    med = statistics.median(times[1:]) / a.batch
    phase = {k: statistics.median(p[k] for p in phases[1:]) / a.batch for k in phases[0]}
    peak = None
    try:
        with open("/proc/self/status") as f:
            peak = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        pass
    res = {
        "bench": "train", "backend": f"torch {torch.__version__} cpu + peft", "config": a.config,
        "seq_len": a.seq_len, "answer_len": a.answer_len, "batch": a.batch, "lora_r": a.lora_r,
        "lora_layers": lora_layers, "steps": a.steps, "build_s": build_s, "first_step_s": times[0],
        "s_per_pair": med, "min_s_per_pair": min(times[1:]) / a.batch, "phases": phase,
        "loss": losses[-1][0], "grad_norm": losses[-1][1], "peak_bytes": peak, "threads": torch.get_num_threads(),
    }
    print(f"torch bench train {a.config} (T={a.seq_len}, r={a.lora_r}, {lora_layers} LoRA layers, "
          f"{res['threads']} threads): first step {times[0]:.2f} s, {med:.3f} s/pair; phases "
          + ", ".join(f"{k[:-2]} {v:.3f}" for k, v in phase.items()) + f"; loss {losses[-1][0]:.5f}")
    print(json.dumps(res))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
