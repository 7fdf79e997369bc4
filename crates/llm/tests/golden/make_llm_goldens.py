"""Parity goldens for mmedpo-llm: tiny random Mistral and Llama models from Hugging Face transformers.

Regenerate (never in CI; needs torch + transformers, e.g. the venv of docs/goldens.md):
    python crates/llm/tests/golden/make_llm_goldens.py

Writes, next to this script:
  tiny-mistral/  MistralForCausalLM, GQA 4/2, rope_theta 1e6, sliding_window 16, untied lm_head,
                 saved in bf16 and *sharded* (model.safetensors.index.json)
  tiny-llama/    LlamaForCausalLM, GQA 4/2, rope_theta 1e4, attention_bias, *tied* lm_head,
                 saved in f16 as one model.safetensors
  llm_goldens.safetensors
      {m}.seq{i}.input_ids  [L] i64       the sequences (seq1 is longer than the sliding window)
      {m}.seq{i}.logits     [L, S] f32    logits at the vocabulary subset `subset_ids`
      {m}.seq{i}.lse        [L] f32       logsumexp over the full vocabulary
      {m}.seq{i}.argmax     [L] i64       argmax over the full vocabulary
      {m}.greedy.prompt     [P] i64, {m}.greedy.output [N] i64 (new tokens of greedy generate)
      subset_ids            [S] i64
The models compute in f32 from the rounded (bf16 / f16) weights, so the Rust side, loading the same
files into f32, must match to ~1e-5.
"""

import json
import pathlib

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

HERE = pathlib.Path(__file__).resolve().parent
VOCAB = 32000


def randomize(model, seed):
    """HF's init (std 0.02) gives near-uniform logits; use larger weights so greedy margins are wide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)


def build(kind):
    common = dict(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
    )
    if kind == "mistral":
        cfg = MistralConfig(**common, rope_theta=1e6, sliding_window=16, tie_word_embeddings=False)
        model = MistralForCausalLM(cfg)
        dtype = torch.bfloat16
    else:
        cfg = LlamaConfig(**common, rope_theta=1e4, attention_bias=True, tie_word_embeddings=True)
        model = LlamaForCausalLM(cfg)
        dtype = torch.float16
    randomize(model, seed=1 if kind == "mistral" else 2)
    if cfg.tie_word_embeddings:
        model.tie_weights()
    return model.eval(), dtype


def main():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    subset = torch.randperm(VOCAB, generator=g)[:512].sort().values
    out = {"subset_ids": subset.to(torch.int64)}
    summary = {}
    for kind in ["mistral", "llama"]:
        model, dtype = build(kind)
        d = HERE / f"tiny-{kind}"
        d.mkdir(exist_ok=True)
        for f in d.glob("*"):
            f.unlink()
        model.to(dtype).save_pretrained(d, max_shard_size="2MB" if kind == "mistral" else "1GB")
        # The goldens come from the files as HF loads them, computing in f32. (Casting the in-memory
        # model instead would also round the rotary `inv_freq` buffer to bf16.)
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
        lengths = [12, 40]
        for i, n in enumerate(lengths):
            ids = torch.randint(3, VOCAB, (1, n), generator=g)
            ids[0, 0] = 1
            with torch.no_grad():
                logits = model(ids).logits[0]
            out[f"{kind}.seq{i}.input_ids"] = ids[0].to(torch.int64)
            out[f"{kind}.seq{i}.logits"] = logits[:, subset].contiguous()
            out[f"{kind}.seq{i}.lse"] = torch.logsumexp(logits, dim=-1)
            out[f"{kind}.seq{i}.argmax"] = logits.argmax(dim=-1).to(torch.int64)
            top2 = logits.topk(2, dim=-1).values
            summary[f"{kind}.seq{i} min top-2 margin"] = float((top2[:, 0] - top2[:, 1]).min())
        prompt = torch.randint(3, VOCAB, (1, 10), generator=g)
        prompt[0, 0] = 1
        with torch.no_grad():
            gen = model.generate(prompt, max_new_tokens=20, do_sample=False, eos_token_id=2, pad_token_id=2)
            new = gen[0, prompt.shape[1]:]
            # Margins along the greedy path.
            logits = model(gen[:, :-1]).logits[0, prompt.shape[1] - 1:]
            top2 = logits.topk(2, dim=-1).values
        summary[f"{kind}.greedy min top-2 margin"] = float((top2[:, 0] - top2[:, 1]).min())
        out[f"{kind}.greedy.prompt"] = prompt[0].to(torch.int64)
        out[f"{kind}.greedy.output"] = new.to(torch.int64)
        summary[f"{kind} files"] = sorted(p.name for p in d.iterdir())
    save_file(out, HERE / "llm_goldens.safetensors")
    import transformers
    summary["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    print(json.dumps(summary, indent=1))
    for k, v in summary.items():
        if "margin" in k:
            assert v > 1e-3, f"{k} too small for a stable greedy comparison: {v}"


if __name__ == "__main__":
    main()
