"""Goldens for mmedpo-vision: LLaVA's image preprocessing and a tiny CLIP vision tower.

Regenerate (never in CI; torch + transformers + pillow, see docs/goldens.md):
    python crates/vision/tests/golden/make_vision_goldens.py

Preprocessing truth = LLaVA's `expand2square(img, (122, 116, 104))` then the PIL-backed
`CLIPImageProcessorPil` (the slow processor LLaVA used: shortest edge 336 bicubic, centre crop 336,
/255, CLIP mean/std). For each input image we store the processor's uint8 image before rescaling
as a PNG (`pixels-<name>.png`, exact) and, in `vision_goldens.safetensors`, the processor's float
output `pixel_values.<name>` [3, 336, 336] subsampled every 7th row and column ([3, 48, 48]).
The script asserts that the float output equals normalize(png) to 1e-6, so the PNG is the full truth.

Tower truth = `CLIPVisionModel` (3 layers, hidden 32, 2 heads, 336 px / patch 14, quick_gelu),
saved in `tiny-clip/` (f32), run on the chest X-ray's pixel values: `hidden.-2` = hidden_states[-2]
without CLS [576, 32] (LLaVA's feature), `last_hidden` [577, 32], `pooled` [32].
"""

import pathlib

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModel
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

HERE = pathlib.Path(__file__).resolve().parent
IMAGES = HERE.parents[3] / "data" / "images"
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def expand2square(img, bg):
    w, h = img.size
    if w == h:
        return img
    if w > h:
        out = Image.new(img.mode, (w, w), bg)
        out.paste(img, (0, (w - h) // 2))
    else:
        out = Image.new(img.mode, (h, h), bg)
        out.paste(img, ((h - w) // 2, 0))
    return out


def processor():
    return CLIPImageProcessorPil(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
        do_resize=True, do_center_crop=True, do_rescale=True, do_normalize=True,
        image_mean=list(MEAN), image_std=list(STD), resample=3, do_convert_rgb=True,
    )


def main():
    proc = processor()
    out = {}
    bg = tuple(int(x * 255) for x in MEAN)
    assert bg == (122, 116, 104)
    for name in ["chest-xray-pa-nodules", "ct-small"]:
        img = expand2square(Image.open(IMAGES / f"{name}.png").convert("RGB"), bg)
        # The uint8 image the processor rescales: resize (PIL bicubic) + centre crop, no rescale/normalize.
        u8 = proc(img, do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"][0]
        u8 = np.asarray(u8).round().astype(np.uint8)  # [3, 336, 336]
        Image.fromarray(u8.transpose(1, 2, 0)).save(HERE / f"pixels-{name}.png")
        pv = proc(img, return_tensors="pt")["pixel_values"][0].float()
        ref = (torch.from_numpy(u8).double() / 255 - torch.tensor(MEAN).double()[:, None, None]) / torch.tensor(STD).double()[:, None, None]
        assert (pv.double() - ref).abs().max() < 1e-6, (pv.double() - ref).abs().max()
        out[f"pixel_values.{name}"] = pv[:, ::7, ::7].contiguous()
        if name == "chest-xray-pa-nodules":
            chest = pv
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                           image_size=336, patch_size=14, hidden_act="quick_gelu", layer_norm_eps=1e-5)
    torch.manual_seed(3)
    model = CLIPVisionModel(cfg)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n and n.endswith("weight"):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    d = HERE / "tiny-clip"
    d.mkdir(exist_ok=True)
    model.save_pretrained(d)
    model = CLIPVisionModel.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        o = model(chest[None], output_hidden_states=True)
    out["hidden.-2"] = o.hidden_states[-2][0, 1:].contiguous()
    out["last_hidden"] = o.last_hidden_state[0].contiguous()
    out["pooled"] = o.pooler_output[0].contiguous()
    save_file(out, HERE / "vision_goldens.safetensors")
    print({k: tuple(v.shape) for k, v in out.items()})


if __name__ == "__main__":
    main()
