"""Tokenizer goldens: SentencePiece ids of every turn of the MMedPO preference files, plus edge cases.

Regenerate (never in CI; needs sentencepiece + mistral-common, e.g. the venv of docs/goldens.md):
    python crates/llm/tests/golden/make_tokenizer_goldens.py ../shared/data

Truth: SentencePiece with `mistral_common/data/tokenizer.model.v1` (the Mistral-7B v0.1/v0.2 model,
LLaVA-Med v1.5's tokenizer), `encode(text)` without and with BOS (id 1).
For the full released preference files (not ours to commit) and the committed sample of them
(data/released-sample) we store one FNV-1a-64 hash of the id list per string, in a fixed order: files sorted by name, items in file order, `conversations` then
`rejected_conversations`, turns in order. Edge cases are our own strings: stored with their full ids.
Also stored: ids from HF `tokenizers` (Python binding of the same library) in its default mode, where
special tokens written in the text (`</s>`) are parsed; these differ from SentencePiece on purpose.

Writes tokenizer_goldens.json next to this script.
"""

import json
import pathlib
import sys

import sentencepiece as spm
import mistral_common

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[3]

EDGE_CASES = [
    "",
    " ",
    "  ",
    "Yes",
    " Yes",
    "  Yes",
    " No, the CT scan shows no infarct.",
    "line one\nline two",
    "\n",
    "\n\nTwo leading newlines",
    "trailing newline\n",
    "tabs\tand  double  spaces",
    "The answer is </s> and more",
    "</s>",
    "<s> at the start",
    "<unk>",
    "USER: <image>\nWhat is shown? ASSISTANT: A nodule.</s>",
    "emoji 🫁🩻 lungs",
    "CJK: 肺部有结节吗？",
    "Ünïcödé àccents — dash “quotes”",
    "numbers 3.5 cm, 12/03/2024, 100%",
    "x" * 300,
    "a\u00a0non-breaking space",
    "zero\u200bwidth",
    "ﬁ ligature",
]


def fnv1a64(ids):
    h = 0xCBF29CE484222325
    for i in ids:
        for b in int(i).to_bytes(4, "little"):
            h ^= b
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def shared_strings(data_dir):
    for path in sorted(pathlib.Path(data_dir).glob("*_dpo_weighted.json")):
        for item in json.loads(path.read_text()):
            for conv in ("conversations", "rejected_conversations"):
                for turn in item.get(conv, []):
                    yield path.name, turn["value"]


def main():
    data_dir = sys.argv[1] if len(sys.argv) > 1 else str(ROOT.parent / "shared" / "data")
    model = pathlib.Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"
    sp = spm.SentencePieceProcessor(model_file=str(model))
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(ROOT / "models" / "mistral-tokenizer" / "tokenizer.json"))
    files = {}
    hashes = []
    for name, text in shared_strings(data_dir):
        files[name] = files.get(name, 0) + 1
        hashes.append(fnv1a64(sp.encode(text)))
    # The committed sample (every 20th item, data/released-sample): checked in every clone.
    sample_hashes = [fnv1a64(sp.encode(text)) for _, text in shared_strings(ROOT / "data" / "released-sample")]
    edge = []
    for text in EDGE_CASES:
        ids = sp.encode(text)
        edge.append({
            "text": text,
            "ids": ids,
            "ids_bos": [sp.bos_id()] + ids,
            "hf_parse_ids": hf.encode(text, add_special_tokens=False).ids,
        })
    out = {
        "sentencepiece_model": "mistral_common/data/tokenizer.model.v1 (mistral-common "
        + mistral_common.__version__ + ")",
        "hash": "FNV-1a 64 over the ids as little-endian u32, hex",
        "order": "files sorted by name; items in order; conversations then rejected_conversations; turns in order",
        "files": files,
        "shared_hashes": hashes,
        "sample_hashes": sample_hashes,
        "edge_cases": edge,
    }
    (HERE / "tokenizer_goldens.json").write_text(json.dumps(out, ensure_ascii=False, indent=0))
    print(f"{len(hashes)} shared strings from {files}, {len(sample_hashes)} sample strings, {len(edge)} edge cases")


if __name__ == "__main__":
    main()
