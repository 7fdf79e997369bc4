"""Cross-check (run by hand, never in CI): an adapter trained by `mmedpo train` loads in PEFT and
gives the pair log-probs that `mmedpo score --adapter` gives; with ADAPTER `none`, a model (e.g. one
written by `mmedpo merge`) loads in transformers and gives the log-probs `mmedpo score` gives.

    mmedpo score --model MODEL --tokenizer models/mistral-tokenizer/tokenizer.json --adapter ADAPTER \
        --data PAIRS.json --image-root data/images --out /tmp/scores.jsonl
    python crates/dpo/tests/golden/check_trained_adapter.py MODEL ADAPTER PAIRS.json data/images /tmp/scores.jsonl

    mmedpo merge --model MODEL --adapter ADAPTER --out MERGED
    mmedpo score --model MERGED --data PAIRS.json --image-root data/images --out /tmp/merged.jsonl
    python crates/dpo/tests/golden/check_trained_adapter.py MERGED none PAIRS.json data/images /tmp/merged.jsonl

MODEL is a llava-hf directory (`mmedpo init-model` writes one). Prints the largest difference and
exits non-zero above 1e-3.
"""

import importlib.util
import json
import pathlib
import sys

import torch
from peft import PeftModel
from PIL import Image
from transformers import LlavaForConditionalGeneration
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

ROOT = pathlib.Path(__file__).resolve().parents[4]
spec = importlib.util.spec_from_file_location("lg", ROOT / "crates/lvlm/tests/golden/make_llava_goldens.py")
lg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lg)


def main(model_dir, adapter_dir, pairs_path, image_root, scores_path):
    base = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    model = (base if adapter_dir == "none" else PeftModel.from_pretrained(base, adapter_dir)).eval()
    vc = base.config.vision_config
    size = vc.image_size
    n_img = (size // vc.patch_size) ** 2
    image_token = base.config.image_token_id
    proc = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                 image_mean=list(lg.MEAN), image_std=list(lg.STD), resample=3)
    scores = {json.dumps(s["id"]): s for s in map(json.loads, pathlib.Path(scores_path).read_text().splitlines())}
    worst = 0.0
    for p in json.loads(pathlib.Path(pairs_path).read_text()):
        q = p["conversations"][0]["value"]
        for branch, conv, img in [("chosen", "conversations", p["image"]), ("rejected", "rejected_conversations", p.get("rejected_image", p["image"]))]:
            ids, labels = lg.preprocess_v1(q, p[conv][1]["value"])
            ids, labels = lg.expand(ids, labels, n_img)
            ids = [image_token if i == lg.IMAGE_TOKEN_ID else i for i in ids]
            pix = proc(lg.expand2square(Image.open(pathlib.Path(image_root) / img).convert("RGB")), return_tensors="pt")["pixel_values"]
            x = torch.tensor([ids])
            with torch.no_grad():
                lp = torch.log_softmax(model(input_ids=x, pixel_values=pix, attention_mask=torch.ones_like(x)).logits[0].double(), -1)
            total = sum(float(lp[t - 1, ids[t]]) for t in range(1, len(ids)) if labels[t] != lg.IGNORE)
            ours = scores[json.dumps(p["id"])][f"{branch}_logp"]
            worst = max(worst, abs(total - ours))
            print(f"{p['id']} {branch}: transformers{'' if adapter_dir == 'none' else ' + peft'} {total:.5f}  mmedpo {ours:.5f}")
    print(f"max |Δ| = {worst:.2e}")
    sys.exit(0 if worst <= 1e-3 else 1)


if __name__ == "__main__":
    main(*sys.argv[1:6])
