"""Fixtures for scripts/convert_bin.py: small PyTorch `.bin` checkpoints as torch.save writes them.

    ~/.cache/mmedpo-venv/bin/python scripts/tests/make_bin_fixtures.py     # torch (docs/goldens.md)

Writes scripts/tests/bin-fixtures/:
  * llava-hf/: a random LlavaForConditionalGeneration (transformers' own class and key names) in
    bf16 as one `pytorch_model.bin`; its `lm_head.weight` is a transposed (non-contiguous) view and
    q/k/v of layer 0 are slices of one fused storage, so the converter's strided and offset paths
    are exercised.
  * llava-med/: the original LLaVA-Med layout (`model.layers.*`, `model.mm_projector.{0,2}.*`) in
    two shards with `pytorch_model.bin.index.json`, and its CLIP tower in `llava-med/tower/`
    (`mm_vision_tower: "tower"`).
  * adapter/: a PEFT adapter for llava-hf/ as `adapter_model.bin` (f32).
  * evil.bin: a torch-zip archive whose pickle calls `os.system` (the converter must refuse it).
  * expected.json: for each converted file, every tensor's dtype, shape and FNV-1a-64 of its
    contiguous little-endian bytes (mmedpo-core's `fingerprint` of one part), computed by torch.
"""

import json
import os
import pathlib
import pickle
import shutil
import zipfile

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, LlavaConfig, LlavaForConditionalGeneration, MistralConfig

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "bin-fixtures"
DT = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}

TEXT = dict(vocab_size=128, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=1, head_dim=8, max_position_embeddings=256, rms_norm_eps=1e-5,
            rope_theta=1e6, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
VISION = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28,
              patch_size=14, num_channels=3, hidden_act="quick_gelu", layer_norm_eps=1e-5)


def fnv(data):
    h = 0xCBF29CE484222325
    for b in data + b"\xff":
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def describe(sd):
    return {k: {"dtype": DT[t.dtype], "shape": list(t.shape),
                "fnv": fnv(t.detach().contiguous().flatten().view(torch.uint8).numpy().tobytes())}
            for k, t in sd.items()}


def strided(sd, q, k, v, head):
    """q/k/v as slices of one storage, the head as a transposed view: same values, other layouts."""
    fused = torch.cat([sd[q], sd[k], sd[v]])
    nq, nk = sd[q].shape[0], sd[k].shape[0]
    sd[q], sd[k], sd[v] = fused[:nq], fused[nq:nq + nk], fused[nq + nk:]
    sd[head] = sd[head].t().contiguous().t()
    assert not sd[head].is_contiguous() and sd[k].storage_offset() == nq * sd[q].shape[1]


def main():
    torch.manual_seed(0)
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    expected = {}

    # llava-hf, one file.
    hf_dir = OUT / "llava-hf"
    hf_dir.mkdir()
    cfg = LlavaConfig(text_config=MistralConfig(**TEXT), vision_config=CLIPVisionConfig(**VISION),
                      image_token_index=127, projector_hidden_act="gelu", vision_feature_layer=-2,
                      vision_feature_select_strategy="default")
    model = LlavaForConditionalGeneration(cfg).to(torch.bfloat16)
    sd = dict(model.state_dict())
    pre = next(k for k in sd if k.endswith("layers.0.self_attn.q_proj.weight") and "language_model" in k)[: -len("q_proj.weight")]
    strided(sd, pre + "q_proj.weight", pre + "k_proj.weight", pre + "v_proj.weight", "lm_head.weight")
    torch.save(sd, hf_dir / "pytorch_model.bin")
    cfg.save_pretrained(hf_dir)
    expected["llava-hf/model.safetensors"] = describe(sd)

    # A PEFT adapter for it, as `adapter_model.bin` (f32).
    ad = OUT / "adapter"
    ad.mkdir()
    asd = {f"base_model.model.{pre}q_proj.lora_A.weight": torch.randn(4, TEXT["hidden_size"]),
           f"base_model.model.{pre}q_proj.lora_B.weight": torch.randn(TEXT["hidden_size"], 4)}
    torch.save(asd, ad / "adapter_model.bin")
    (ad / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                        "target_modules": ["q_proj"], "bias": "none"}))
    expected["adapter/adapter_model.safetensors"] = describe(asd)

    # Original LLaVA-Med layout, two shards, tower in its own folder.
    med = OUT / "llava-med"
    (med / "tower").mkdir(parents=True)
    tower = CLIPVisionModel(CLIPVisionConfig(**VISION)).to(torch.bfloat16)
    tsd = dict(tower.state_dict())
    torch.save(tsd, med / "tower" / "pytorch_model.bin")
    tower.config.save_pretrained(med / "tower")
    expected["llava-med/tower/model.safetensors"] = describe(tsd)
    from transformers import MistralForCausalLM
    llm = MistralForCausalLM(MistralConfig(**TEXT)).to(torch.bfloat16)
    sd = dict(llm.state_dict())
    d, v = TEXT["hidden_size"], VISION["hidden_size"]
    sd["model.mm_projector.0.weight"] = torch.randn(d, v).bfloat16()
    sd["model.mm_projector.0.bias"] = torch.randn(d).bfloat16()
    sd["model.mm_projector.2.weight"] = torch.randn(d, d).bfloat16()
    sd["model.mm_projector.2.bias"] = torch.randn(d).bfloat16()
    strided(sd, "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
            "model.layers.0.self_attn.v_proj.weight", "lm_head.weight")
    keys = sorted(sd)
    half = len(keys) // 2
    weight_map = {}
    for i, part in enumerate([keys[:half], keys[half:]]):
        name = f"pytorch_model-{i + 1:05d}-of-00002.bin"
        torch.save({k: sd[k] for k in part}, med / name)
        weight_map.update({k: name for k in part})
        expected[f"llava-med/model-{i + 1:05d}-of-00002.safetensors"] = describe({k: sd[k] for k in part})
    (med / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2))
    config = {"architectures": ["LlavaMistralForCausalLM"], "model_type": "llava_mistral", **TEXT,
              "hidden_act": "silu", "sliding_window": None, "mm_vision_tower": "tower", "mm_hidden_size": v,
              "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
              "image_aspect_ratio": "pad", "mm_use_im_start_end": False, "mm_use_im_patch_token": False,
              "tokenizer_model_max_length": 256, "torch_dtype": "bfloat16"}
    config.pop("head_dim")
    (med / "config.json").write_text(json.dumps(config, indent=2))

    # A pickle that runs a shell command when unpickled.
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo PWNED > pwned-by-pickle",))

    with zipfile.ZipFile(OUT / "evil.bin", "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"w": Evil()}, protocol=2))
        z.writestr("evil/version", "3\n")
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    print({k: len(v) for k, v in expected.items()})


if __name__ == "__main__":
    main()
