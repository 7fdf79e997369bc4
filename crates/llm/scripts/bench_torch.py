"""PyTorch reference for `mmedpo bench llm`: the same ~100M-parameter Mistral config, same prompt
length, greedy decoding with a KV cache, on this machine's CPU.

    python crates/llm/scripts/bench_torch.py [--prompt-len 128] [--new-tokens 32] [--batch 1] [--reps 3]

Prints prefill and decode tokens/s (best of --reps after a warm-up), like the Rust benchmark.
"""

import argparse
import json
import time

import torch
from transformers import MistralConfig, MistralForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--backend", default="torch")  # accepted and ignored, for a shared command line
    a = ap.parse_args()
    cfg = MistralConfig(
        vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=8,
        num_attention_heads=12, num_key_value_heads=4, head_dim=64, max_position_embeddings=4096,
        rms_norm_eps=1e-5, rope_theta=1e6, sliding_window=None, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = MistralForCausalLM(cfg).eval()
    params = sum(p.numel() for p in model.parameters())
    ids = torch.tensor([[3 + (i * 7919 + b * 104729) % 31000 for i in range(a.prompt_len)] for b in range(a.batch)])

    def run():
        with torch.inference_mode():
            t0 = time.perf_counter()
            out = model(ids, use_cache=True)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            t1 = time.perf_counter()
            past = out.past_key_values
            for _ in range(a.new_tokens - 1):
                out = model(nxt, past_key_values=past, use_cache=True)
                past = out.past_key_values
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            t2 = time.perf_counter()
        return t1 - t0, t2 - t1

    run()
    times = [run() for _ in range(a.reps)]
    prefill = min(t[0] for t in times)
    decode = min(t[1] for t in times)
    res = {
        "bench": "llm", "backend": f"torch {torch.__version__} cpu", "params_m": params / 1e6,
        "batch": a.batch, "prompt_len": a.prompt_len, "new_tokens": a.new_tokens,
        "prefill_tokens_per_s": a.batch * a.prompt_len / prefill,
        "decode_tokens_per_s": a.batch * (a.new_tokens - 1) / decode,
        "threads": torch.get_num_threads(),
    }
    print(f"torch: {params / 1e6:.1f}M params, batch {a.batch}: prefill {res['prefill_tokens_per_s']:.1f} tokens/s, "
          f"decode {res['decode_tokens_per_s']:.2f} tokens/s")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
