"""Goldens for mmedpo-lvlm: a tiny random LLaVA (Mistral text model + CLIP 336/14 tower) in both layouts.

Regenerate (never in CI; torch + transformers + pillow + tokenizers, see docs/goldens.md):
    python crates/lvlm/tests/golden/make_llava_goldens.py

Writes next to this script:
  tiny-llava-hf/     `LlavaForConditionalGeneration` as transformers 5 saves it (bf16): keys
                     `language_model.model.*`, `language_model.lm_head.weight`, `vision_tower.*`,
                     `multi_modal_projector.linear_{1,2}.*`
  tiny-llava-med/    the same weights in the original LLaVA-Med layout (bf16): `model.layers.*`,
                     `model.mm_projector.{0,2}.*`, `lm_head.weight`, LLaVA `config.json`
                     (`model_type: llava_mistral`, `mm_vision_tower: ../tiny-clip-336`, ...)
  tiny-clip-336/     the tower alone, hub-style keys `vision_model.*` (bf16)
  pairs.json         three synthetic preference pairs (our own text; images from data/images)
  llava_goldens.safetensors
      logits.positions [P] i64, logits.subset [P, 512] f32, logits.lse [P], logits.argmax [P] i64,
      subset_ids [512]: the chosen conversation of pair 0 with its image, at every text position and
      every 32nd image position (positions in the expanded sequence);
      pair{i}.{chosen,rejected}.logp f32 / .tokens i64: summed response log-probs, labels made by a
      Python re-implementation of LLaVA's `tokenizer_image_token` + `preprocess_v1` (vicuna_v1),
      chosen on `image`, rejected on `rejected_image`.
Tokenization uses the `tokenizers` library with models/mistral-tokenizer/tokenizer.json, i.e. the
same tokenizer the Rust code uses (it matches SentencePiece; see the llm crate's tokenizer test).
"""

import json
import pathlib

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import (CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, MistralConfig)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[3]
IMAGES = ROOT / "data" / "images"
IMAGE_TOKEN_INDEX = -200
IGNORE = -100
IMAGE_TOKEN_ID = 31999  # llava-hf placeholder id inside the tiny vocabulary
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)

PAIRS = [
    {"id": 0, "image": "chest-xray-pa-nodules.png", "rejected_image": "ct-small.png",
     "q": "<image>\nAre there nodules in the lungs?", "c": " Yes",
     "r": " No, the lungs are clear and there are no nodules.", "w": 0.9},
    {"id": "report-1", "image": "chest-xray-pa-nodules.png", "rejected_image": None,
     "q": "<image>\nDescribe the findings of the chest X-ray.",
     "c": "Multiple rounded nodular opacities are seen in both lungs. No pleural effusion.",
     "r": "The lungs are clear. No nodules, masses or effusions. Normal heart size.", "w": "0.8"},
    {"id": 2, "image": "ct-small.png", "rejected_image": "chest-xray-pa-nodules.png",
     "q": "What organ is shown?\n<image>", "c": " Lung", "r": " The liver, with a large mass in the right lobe.", "w": 0.2},
]

tok = Tokenizer.from_file(str(ROOT / "models" / "mistral-tokenizer" / "tokenizer.json"))


def tok_ids(text):
    return tok.encode(text, add_special_tokens=True).ids


def tokenizer_image_token(prompt):
    chunks = [tok_ids(c) for c in prompt.split("<image>")]
    ids, offset = [], 0
    if chunks and chunks[0] and chunks[0][0] == 1:
        offset = 1
        ids.append(chunks[0][0])
    sep = [IMAGE_TOKEN_INDEX] * (offset + 1)
    seq = [e for sub in zip(chunks, [sep] * len(chunks)) for e in sub][:-1]
    for x in seq:
        ids.extend(x[offset:])
    return ids


def preprocess_v1(q, a):
    """LLaVA `preprocess_v1` for one human/gpt round (legacy tokenizer, vicuna_v1)."""
    conv = f"{SYSTEM} USER: {q} ASSISTANT: {a}</s>"
    ids = tokenizer_image_token(conv)
    target = list(ids)
    sep = " ASSISTANT: "
    cur = 1
    target[0] = IGNORE
    for rou in conv.split("</s>"):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        round_len = len(tokenizer_image_token(rou))
        instr = len(tokenizer_image_token(parts[0])) - 2
        target[cur:cur + instr] = [IGNORE] * len(target[cur:cur + instr])
        cur += round_len
    target[cur:] = [IGNORE] * len(target[cur:])
    assert cur == len(ids), "tokenization mismatch"
    return ids, target


def expand(ids, labels, n_img):
    out_ids, out_lab = [], []
    for i, l in zip(ids, labels):
        if i == IMAGE_TOKEN_INDEX:
            out_ids += [IMAGE_TOKEN_ID] * n_img
            out_lab += [IGNORE] * n_img
        else:
            out_ids.append(i)
            out_lab.append(l)
    return out_ids, out_lab


def expand2square(img, bg=(122, 116, 104)):
    w, h = img.size
    if w == h:
        return img
    s = max(w, h)
    out = Image.new(img.mode, (s, s), bg)
    out.paste(img, (0, (w - h) // 2) if w > h else ((h - w) // 2, 0))
    return out


def pixels(name):
    proc = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                 image_mean=list(MEAN), image_std=list(STD), resample=3)
    img = expand2square(Image.open(IMAGES / name).convert("RGB"))
    return proc(img, return_tensors="pt")["pixel_values"].float()


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n and n.endswith("weight"):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)


def main():
    text = MistralConfig(vocab_size=32000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         rms_norm_eps=1e-5, rope_theta=1e6, sliding_window=None, tie_word_embeddings=False,
                         bos_token_id=1, eos_token_id=2)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                              image_size=336, patch_size=14, hidden_act="quick_gelu", layer_norm_eps=1e-5)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN_ID,
                      projector_hidden_act="gelu", vision_feature_select_strategy="default",
                      vision_feature_layer=-2, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(cfg)
    randomize(model, 5)
    hf_dir = HERE / "tiny-llava-hf"
    hf_dir.mkdir(exist_ok=True)
    for f in hf_dir.glob("*"):
        f.unlink()
    model.to(torch.bfloat16).save_pretrained(hf_dir)
    model = LlavaForConditionalGeneration.from_pretrained(hf_dir, dtype=torch.float32, attn_implementation="eager").eval()
    sd = {k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}

    # Original LLaVA-Med layout + a separate hub-style CLIP tower directory.
    med_dir, clip_dir = HERE / "tiny-llava-med", HERE / "tiny-clip-336"
    for d in (med_dir, clip_dir):
        d.mkdir(exist_ok=True)
        for f in d.glob("*"):
            f.unlink()
    med, clip = {}, {}
    for k, v in sd.items():
        if k.startswith("model.language_model."):
            med["model." + k[len("model.language_model."):]] = v
        elif k == "lm_head.weight":
            med[k] = v
        elif k.startswith("model.multi_modal_projector.linear_1."):
            med["model.mm_projector.0." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("model.multi_modal_projector.linear_2."):
            med["model.mm_projector.2." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("model.vision_tower."):
            clip["vision_model." + k[len("model.vision_tower."):]] = v  # hub CLIP naming
        else:
            raise SystemExit(f"unexpected key {k}")
    save_file(med, med_dir / "model.safetensors", metadata={"format": "pt"})
    save_file(clip, clip_dir / "model.safetensors", metadata={"format": "pt"})
    tc = json.loads((hf_dir / "config.json").read_text())["text_config"]
    med_cfg = {
        "architectures": ["LlavaMistralForCausalLM"], "model_type": "llava_mistral",
        **{k: tc[k] for k in ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                              "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                              "rms_norm_eps", "sliding_window", "tie_word_embeddings", "bos_token_id", "eos_token_id"]},
        "hidden_act": "silu", "rope_theta": 1e6,
        "mm_vision_tower": "../tiny-clip-336", "mm_hidden_size": 32, "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", "image_aspect_ratio": "pad",
        "mm_use_im_start_end": False, "mm_use_im_patch_token": False, "tokenizer_model_max_length": 1024,
        "tokenizer_padding_side": "right", "torch_dtype": "bfloat16", "feature_outs": "encoder+decoder",
    }
    (med_dir / "config.json").write_text(json.dumps(med_cfg, indent=2))
    vc = json.loads((hf_dir / "config.json").read_text())["vision_config"]
    (clip_dir / "config.json").write_text(json.dumps({**vc, "model_type": "clip_vision_model",
                                                      "architectures": ["CLIPVisionModel"]}, indent=2))

    # Goldens.
    n_img = 576
    g = torch.Generator().manual_seed(0)
    subset = torch.randperm(32000, generator=g)[:512].sort().values
    out = {"subset_ids": subset.to(torch.int64)}
    pairs_json = []
    for i, p in enumerate(PAIRS):
        item = {"id": p["id"], "image": p["image"],
                "conversations": [{"from": "human", "value": p["q"]}, {"from": "gpt", "value": p["c"]}],
                "rejected_conversations": [{"from": "human", "value": p["q"]}, {"from": "gpt", "value": p["r"]}],
                "weighted_score": p["w"]}
        if p["rejected_image"]:
            item["rejected_image"] = p["rejected_image"]
        pairs_json.append(item)
        for branch, ans, img in [("chosen", p["c"], p["image"]), ("rejected", p["r"], p["rejected_image"] or p["image"])]:
            ids, labels = preprocess_v1(p["q"], ans)
            ids, labels = expand(ids, labels, n_img)
            x = torch.tensor([ids])
            with torch.no_grad():
                logits = model(input_ids=x, pixel_values=pixels(img), attention_mask=torch.ones_like(x)).logits[0]
            lp = torch.log_softmax(logits.double(), -1)
            total, count = 0.0, 0
            for t in range(1, len(ids)):
                if labels[t] != IGNORE:
                    total += float(lp[t - 1, ids[t]])
                    count += 1
            out[f"pair{i}.{branch}.logp"] = torch.tensor([total], dtype=torch.float32)
            out[f"pair{i}.{branch}.tokens"] = torch.tensor([count], dtype=torch.int64)
            if i == 0 and branch == "chosen":
                img_pos = [t for t, v in enumerate(ids) if v == IMAGE_TOKEN_ID]
                pos = [t for t in range(len(ids)) if ids[t] != IMAGE_TOKEN_ID or (t - img_pos[0]) % 32 == 0]
                pos_t = torch.tensor(pos)
                out["logits.positions"] = pos_t.to(torch.int64)
                out["logits.subset"] = logits[pos_t][:, subset].contiguous()
                out["logits.lse"] = torch.logsumexp(logits[pos_t], -1)
                out["logits.argmax"] = logits[pos_t].argmax(-1).to(torch.int64)
                out["pair0.chosen.input_ids"] = torch.tensor(ids, dtype=torch.int64)
                out["pair0.chosen.labels"] = torch.tensor(labels, dtype=torch.int64)
            print(f"pair {i} {branch}: {count} response tokens, logp {total:.4f}")
    (HERE / "pairs.json").write_text(json.dumps(pairs_json, indent=1, ensure_ascii=False))
    save_file(out, HERE / "llava_goldens.safetensors")
    keys = sorted(sd)
    print("llava-hf keys, e.g.:", [k for k in keys if "layers.1" not in k and "layers.2" not in k][:12])


if __name__ == "__main__":
    main()
