"""The hostile-input corpus of crates/runner/tests/hostile.rs: small files, each broken in one way.

    python3 crates/runner/tests/hostile/make_corpus.py      # standard library only

Writes crates/runner/tests/hostile/corpus/. What each file breaks is in CASES of hostile.rs, which
runs the subcommands over them (and over what it makes at run time: a FIFO named like an image, a
checkpoint holding a NaN) and asserts a clear error naming the file, item and field, in bounded time
and memory, and no panic.
"""

import json
import pathlib
import struct
import zlib

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "corpus"
ROOT = HERE.parents[3]


def png_gray(path, width, height):
    """An all-black 8-bit gray PNG (tiny on disk whatever its size)."""
    raw = b"".join(b"\x00" + bytes(width) for _ in range(height))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def main():
    OUT.mkdir(exist_ok=True)
    pairs = json.loads((ROOT / "data/default/pairs.json").read_text())
    png_gray(OUT / "strip.png", 1, 60_000)  # 1 x 60,000: a 10.8 GB canvas once padded square
    (OUT / "not-an-image.png").write_text("hello, I am text\n")

    def variant(name, change):
        items = json.loads(json.dumps(pairs))
        change(items)
        (OUT / name).write_text(json.dumps(items, indent=1) + "\n")

    variant("pairs-strip-image.json", lambda it: it[1].update(image="strip.png"))
    variant("pairs-not-an-image.json", lambda it: it[2].update(image="not-an-image.png"))
    variant("pairs-climbing-path.json", lambda it: it[3].update(image="../../etc/hostname"))
    variant("pairs-weight-2.json", lambda it: it[4].update(weighted_score=2))
    variant("pairs-weight-huge.json", lambda it: it[5].update(weighted_score=1e308))
    variant("pairs-no-image-placeholder.json",
            lambda it: it[6]["conversations"][0].update(value="no placeholder here"))
    (OUT / "pairs-not-a-list.json").write_text('{"id": 1}\n')
    (OUT / "pairs-cut.json").write_text(json.dumps(pairs)[:500])
    (OUT / "vqa-maybe.json").write_text(json.dumps([
        {"question_id": 1, "image": "ct-small.png", "question": "Is it?", "answer": "yes", "answer_type": "maybe"}]))
    (OUT / "vqa-empty.json").write_text("[]\n")
    (OUT / "predictions-empty.jsonl").write_text("")
    (OUT / "predictions-huge-report.jsonl").write_text(json.dumps(
        {"id": "r1", "prediction": "ok", "reference": " ".join(["lung"] * 30_000)}) + "\n")
    config = json.loads((ROOT / "models/tiny-llava/config.json").read_text())
    config["text_config"]["num_hidden_layers"] = 10_000_000
    (OUT / "config-ten-million-layers.json").write_text(json.dumps(config, indent=1))
    config = json.loads((ROOT / "models/tiny-llava/config.json").read_text())
    config["text_config"]["num_attention_heads"] = 0
    (OUT / "config-zero-heads.json").write_text(json.dumps(config, indent=1))
    config = json.loads((ROOT / "models/tiny-llava/config.json").read_text())
    config["image_token_index"] = 10_000_000
    (OUT / "config-image-token-outside.json").write_text(json.dumps(config, indent=1))
    for name, body in [
        ("train-negative-lr.toml", "[optim]\nlearning_rate = -1e-7\n"),
        ("train-nan-alpha.toml", "[lora]\nalpha = nan\n"),
        ("train-zero-rank.toml", "[lora]\nr = 0\n"),
        ("train-beta-zero.toml", "[dpo]\nbeta = 0.0\n"),
        ("train-warmup-2.toml", "[optim]\nwarmup_ratio = 2.0\n"),
        ("train-zero-steps.toml", "[optim]\nmax_steps = 0\n"),
        ("train-unknown-key.toml", "[optim]\nlearning_rat = 1e-7\n"),
    ]:
        (OUT / name).write_text(body)
    print(f"{len(list(OUT.iterdir()))} files in {OUT}")


if __name__ == "__main__":
    main()
