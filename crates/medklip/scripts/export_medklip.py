"""Export MedKLIP to the ONNX file mmedpo-medklip builds against (I/O contract "mmedpo-v1").

Run by hand (never in CI); see docs/medklip-export.md. Needs torch >= 2.6, onnx, onnxscript,
onnxruntime, numpy, Pillow. No torchvision: the ResNet-50 trunk is restated here with torchvision's
module names, so MedKLIP's checkpoint loads strictly (every key used, none missing).

    # 1. the 75 query vectors (once; transformers < 5 and Hugging Face access):
    python export_medklip.py book --observations "observation explanation.json" --out disease_book.npy
    # 2. the ONNX file:
    python export_medklip.py export --checkpoint MedKLIP_model.pth --book disease_book.npy \\
        --out medklip.onnx --check-image data/images/chest-xray-pa-nodules.png
    # dry run of the export path with random weights (no downloads):
    python export_medklip.py export --random-weights --out /tmp/medklip-random.onnx

Graph: image [N,3,224,224] (ImageNet-normalised) -> logits [N,75,2], attn [N,4,75,196]
(per decoder layer, the head-averaged cross-attention of the 75 queries to the 14x14 patches).
"""
import argparse
import json
import sys

import numpy as np
import torch
from torch import nn

D_MODEL, HEADS, LAYERS, FF, QUERIES = 256, 4, 4, 1024, 75


class Bottleneck(nn.Module):
    """torchvision's v1.5 Bottleneck (stride on the 3x3 conv), same parameter names."""

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def layer(inplanes, planes, blocks, stride):
    down = None
    if stride != 1 or inplanes != planes * 4:
        down = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))
    mods = [Bottleneck(inplanes, planes, stride, down)]
    mods += [Bottleneck(planes * 4, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*mods)


class DecoderLayer(nn.Module):
    """DETR's pre-norm TransformerDecoderLayer (normalize_before=True, no positional embeddings)."""

    def __init__(self):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(D_MODEL, HEADS, dropout=0.1)
        self.multihead_attn = nn.MultiheadAttention(D_MODEL, HEADS, dropout=0.1)
        self.linear1 = nn.Linear(D_MODEL, FF)
        self.dropout = nn.Dropout(0.1)
        self.linear2 = nn.Linear(FF, D_MODEL)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(D_MODEL) for _ in range(3))
        self.dropout1, self.dropout2, self.dropout3 = (nn.Dropout(0.1) for _ in range(3))

    def forward(self, x, memory):
        t = self.norm1(x)
        x = x + self.dropout1(self.self_attn(t, t, t)[0])
        t = self.norm2(x)
        # batch_first stays False and need_weights True: the explicit path, weights averaged over heads.
        o, w = self.multihead_attn(t, memory, memory)
        x = x + self.dropout2(o)
        t = self.norm3(x)
        x = x + self.dropout3(self.linear2(self.dropout(torch.relu(self.linear1(t)))))
        return x, w


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer() for _ in range(LAYERS))
        self.norm = nn.LayerNorm(D_MODEL)


class MedKLIP(nn.Module):
    """MedKLIP's inference path with the checkpoint's parameter names (checkpoint["model"] minus `module.`)."""

    def __init__(self):
        super().__init__()
        stem = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1)]
        self.res_features = nn.Sequential(*stem, layer(64, 64, 3, 1), layer(256, 128, 4, 2), layer(512, 256, 6, 2))
        self.res_l1 = nn.Linear(1024, 1024)
        self.res_l2 = nn.Linear(1024, D_MODEL)
        self.disease_embedding_layer = nn.Linear(768, D_MODEL)
        self.cl_fc = nn.Linear(D_MODEL, 768)  # training-only, in the checkpoint
        self.decoder = Decoder()
        self.classifier = nn.Linear(D_MODEL, 2)


class Wrapper(nn.Module):
    """image -> (logits [N,75,2], attn [N,4,75,196]); the queries are a precomputed constant."""

    def __init__(self, model, book):
        super().__init__()
        self.m = model
        with torch.no_grad():
            self.register_buffer("queries", model.disease_embedding_layer(book))  # [75,256]

    def forward(self, image):
        m = self.m
        f = m.res_features(image)  # [N,1024,14,14]
        n = f.shape[0]
        tokens = f.flatten(2).transpose(1, 2).reshape(-1, 1024)  # (b h w) d, s = 14*row + col
        memory = m.res_l2(torch.relu(m.res_l1(tokens))).reshape(n, 196, D_MODEL).transpose(0, 1)
        x = self.queries.unsqueeze(1).repeat(1, n, 1)  # [75,N,256]
        maps = []
        for lyr in m.decoder.layers:
            x, w = lyr(x, memory)
            maps.append(w)
        x = m.decoder.norm(x)
        logits = m.classifier(x).transpose(0, 1)  # [N,75,2]
        return logits, torch.stack(maps, 1)


def load_checkpoint(path):
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = ckpt.get("model", ckpt)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = MedKLIP()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        sys.exit(f"{path}: not a MedKLIP checkpoint: missing {missing[:8]}..., unexpected {unexpected[:8]}...")
    return model


def preprocess(path):
    from PIL import Image
    img = Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR)
    x = np.asarray(img, np.float32) / 255.0
    x = (x - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    return torch.from_numpy(x.transpose(2, 0, 1)[None].copy())


def cmd_book(args):
    # MedKLIP computes this in MedKLIP.__init__: Bio_ClinicalBERT [CLS] of each observation text,
    # padding to max_length 64, in the JSON's key order (= original_class).
    from transformers import AutoModel, BertTokenizer
    texts = list(json.load(open(args.observations)).values())
    assert len(texts) == QUERIES, f"{len(texts)} observations, expected 75"
    tok = BertTokenizer.from_pretrained("emilyalsentzer/Bio_ClinicalBERT")
    bert = AutoModel.from_pretrained("emilyalsentzer/Bio_ClinicalBERT").eval()
    enc = tok(texts, padding="max_length", truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        book = bert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state[:, 0]
    np.save(args.out, book.numpy().astype(np.float32))
    print(f"{args.out}: {tuple(book.shape)}")


def cmd_export(args):
    torch.manual_seed(0)
    if args.random_weights:
        model, book = MedKLIP(), torch.randn(QUERIES, 768)
    else:
        model, book = load_checkpoint(args.checkpoint), torch.from_numpy(np.load(args.book))
    model.eval()
    wrapper = Wrapper(model, book).eval()
    example = torch.randn(2, 3, 224, 224)
    batch = torch.export.Dim("batch")
    with torch.no_grad():
        torch.onnx.export(wrapper, (example,), args.out, input_names=["image"], output_names=["logits", "attn"],
                          dynamo=True, dynamic_shapes={"image": {0: batch}}, external_data=False)
    import onnx
    import onnxruntime as ort
    m = onnx.load(args.out)
    onnx.helper.set_model_props(m, {"medklip.io_contract": "mmedpo-v1", "medklip.disease_index": "29"})
    onnx.save(m, args.out)
    onnx.checker.check_model(args.out, full_check=True)
    inputs = [example, example[:1]]
    if args.check_image:
        inputs.append(preprocess(args.check_image))
    sess = ort.InferenceSession(args.out, providers=["CPUExecutionProvider"])
    for x in inputs:
        with torch.no_grad():
            tl, ta = wrapper(x)
        ol, oa = sess.run(None, {"image": x.numpy()})
        dl, da = np.abs(ol - tl.numpy()).max(), np.abs(oa - ta.numpy()).max()
        rows = np.abs(oa.sum(-1) - 1).max()
        score = torch.softmax(torch.from_numpy(ol[0, 29]), -1)[1].item()
        print(f"batch {x.shape[0]}: onnxruntime vs PyTorch logits {dl:.2e}, attn {da:.2e}; "
              f"attn rows sum to 1 within {rows:.1e}; disease score {score:.4f}")
        assert dl < 1e-4 and da < 1e-5 and rows < 1e-4, "the export does not reproduce PyTorch"
    print(f"{args.out}: ok ({len(m.graph.node)} nodes). Build: MEDKLIP_ONNX={args.out} cargo build --release")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("book", help="the [75,768] disease book from Bio_ClinicalBERT")
    b.add_argument("--observations", required=True, help='the grounding copy of "observation explanation.json"')
    b.add_argument("--out", required=True)
    e = sub.add_parser("export", help="the ONNX file")
    e.add_argument("--checkpoint", help="MedKLIP checkpoint (.pth with a 'model' state dict)")
    e.add_argument("--book", help="disease_book.npy from the book step")
    e.add_argument("--random-weights", action="store_true", help="dry run with random weights")
    e.add_argument("--check-image", help="also compare on this image, preprocessed as MMedPO does")
    e.add_argument("--out", required=True)
    args = p.parse_args()
    if args.cmd == "book":
        cmd_book(args)
    else:
        if not args.random_weights and not (args.checkpoint and args.book):
            p.error("export needs --checkpoint and --book, or --random-weights")
        cmd_export(args)


if __name__ == "__main__":
    main()
