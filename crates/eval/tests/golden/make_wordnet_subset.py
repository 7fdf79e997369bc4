"""A WordNet 3.0 subset holding every entry the METEOR goldens touch, so that the metric tests
run in a clone with no WordNet installed.

Which entries: each word that METEOR can look up for the texts the tests score, i.e. every token of
`normalize_word(text.lower()).split()` of the predictions and references of
  * the synthetic texts of make_eval_goldens.py (SYNTHETIC),
  * the committed sample of the released pairs (data/released-sample, rejected vs chosen answer),
  * EXTRA below (texts of other tests, e.g. crates/runner/tests/cli_eval.rs).
For each such word and part of speech it keeps the exception-list line of the word and the index
line of the word and of every form nltk's `_morphy` could try (the exception bases and all the
detachment-rule results: a superset of what morphy keeps), and the data line of every synset those
index lines list. nltk names a synset after the index entry of its first lemma, and a satellite
adjective after its head synset, so those index lines and synsets are kept too, until nothing new
comes in. Synsets keep their lemmas and verb frames, not their glosses; of their pointers only
those to synsets in the subset stay (METEOR follows none); offsets are renumbered to the new byte
positions, in the index lines too. Each data file keeps WordNet's licence header; LICENSE beside
the files holds the same text.

Check: the Rust goldens (crates/eval/tests/metrics.rs) pass on the subset and on the full database,
and nltk on the subset gives the goldens' METEOR values (`--check`, needs nltk).

Regenerate (stdlib only; the full database from Debian's wordnet-base):
    python3 crates/eval/tests/golden/make_wordnet_subset.py [WORDNET_DIR] [--check]
"""

import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[3]
OUT = HERE / "wordnet-subset"
sys.path.insert(0, str(HERE))
from make_eval_goldens import SYNTHETIC, normalize_word  # noqa: E402

POS = [("n", "noun"), ("v", "verb"), ("a", "adj"), ("r", "adv")]
SUBSTITUTIONS = {
    "n": [("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"),
          ("shes", "sh"), ("men", "man"), ("ies", "y")],
    "v": [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"),
          ("ing", "")],
    "a": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
    "r": [],
}
EXTRA = [
    ("The lungs are clear. No effusion.", "The lungs are clear. No pleural effusion."),
    ("", "Normal chest."),
]


def texts():
    yield from SYNTHETIC
    yield from EXTRA
    for path in sorted((ROOT / "data" / "released-sample").glob("*_dpo_weighted.json")):
        for item in json.loads(path.read_text()):
            yield item["rejected_conversations"][-1]["value"], item["conversations"][-1]["value"]


def words():
    out = set()
    for pred, ref in texts():
        for t in (pred, ref):
            out.update(normalize_word(t.lower()).split())
    return out


FILE = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}


def pointers(t):
    """The (symbol, offset, pos, source/target) pointers of a split data line."""
    p_at = 4 + 2 * int(t[3], 16)
    return [t[p_at + 1 + 4 * k: p_at + 5 + 4 * k] for k in range(int(t[p_at]))]


def header_and_lines(path):
    header, lines = [], []
    for line in path.read_bytes().split(b"\n"):
        if not line:
            continue
        (header if line.startswith(b"  ") else lines).append(line)
    return header, lines


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    src = pathlib.Path(args[0] if args else "/usr/share/wordnet")
    ws = words()
    OUT.mkdir(exist_ok=True)
    summary = {}
    for pos, name in POS:
        exc = {}
        for line in (src / f"{name}.exc").read_text().splitlines():
            t = line.split()
            if t:
                exc[t[0]] = (line, t[1:])
        _, index_lines = header_and_lines(src / f"index.{name}")
        index = {line.split(b" ", 1)[0].decode(): line for line in index_lines}
        forms, exc_out = set(), []
        for w in sorted(ws):
            forms.add(w)
            if w in exc:
                exc_out.append(exc[w][0])
                forms.update(exc[w][1])
            forms.update(w[: len(w) - len(old)] + new for old, new in SUBSTITUTIONS[pos] if w.endswith(old))
        header, data_lines = header_and_lines(src / f"data.{name}")
        by_offset = {int(line[:8]): line.split(b" ") for line in data_lines}
        # The data lines of every synset these lemmas list. nltk names a synset after the index
        # entry of its first lemma, and a satellite adjective after its head (its `&` pointer), so
        # those come too (with their index lines and synsets), until nothing new comes in.
        lemmas, wanted = set(), set()
        todo = [("lemma", f) for f in forms if f in index]

        def want(off):
            if off not in wanted:
                wanted.add(off)
                t = by_offset[off]
                first = t[4].decode().lower()
                todo.append(("lemma", first.split("(")[0] if first.endswith(")") else first))
                if t[2] == b"s":
                    todo.extend(("synset", int(ptr[1])) for ptr in pointers(t) if ptr[0] == b"&")

        while todo:
            kind, x = todo.pop()
            if kind == "synset":
                want(x)
                continue
            if x in lemmas:
                continue
            lemmas.add(x)
            t = index[x].split()
            n_synsets, n_ptr = int(t[2]), int(t[3])
            for off in (int(o) for o in t[4 + n_ptr + 2: 4 + n_ptr + 2 + n_synsets]):
                want(off)
        lemmas = sorted(lemmas)
        # Pointers to synsets of this file that the subset keeps stay (renumbered); others go.
        # Offsets are 8 digits, so line lengths do not depend on them: lay out, then fill in.
        order = sorted(wanted)
        layout = []
        for off in order:
            t = by_offset[off]
            p_at = 4 + 2 * int(t[3], 16)
            kept = [ptr for ptr in pointers(t) if FILE[ptr[2].decode()] == name and int(ptr[1]) in wanted]
            rest = t[p_at + 1 + 4 * int(t[p_at]):]
            rest = rest[: rest.index(b"|") + 1]  # verb frames stay, the gloss goes
            layout.append((t[1:p_at], kept, rest))
        renumber, at = {}, sum(len(h) + 1 for h in header)
        for off, (head, kept, rest) in zip(order, layout):
            renumber[off] = at
            at += len(b" ".join([b"00000000"] + head + [b"000"] + [x for ptr in kept for x in ptr] + rest)) + 1
        body = b"".join(h + b"\n" for h in header)
        for off, (head, kept, rest) in zip(order, layout):
            ptrs = [x for ptr in kept for x in (ptr[0], b"%08d" % renumber[int(ptr[1])], ptr[2], ptr[3])]
            line = b" ".join([b"%08d" % renumber[off]] + head + [b"%03d" % len(kept)] + ptrs + rest)
            assert len(body) == renumber[off]
            body += line + b"\n"
        (OUT / f"data.{name}").write_bytes(body)
        idx = b""
        for lemma in lemmas:
            t = index[lemma].split(b" ")
            n_synsets, n_ptr = int(t[2]), int(t[3])
            at = 4 + n_ptr + 2
            t[at: at + n_synsets] = [b"%08d" % renumber[int(o)] for o in t[at: at + n_synsets]]
            idx += b" ".join(t) + b"\n"
        (OUT / f"index.{name}").write_bytes(idx)
        (OUT / f"{name}.exc").write_text("".join(line + "\n" for line in exc_out))
        summary[name] = (len(lemmas), len(wanted), len(exc_out))
    license_lines = [h.decode()[2:].lstrip("0123456789").strip() for h in header]
    (OUT / "LICENSE").write_text(
        "WordNet 3.0 (a subset, made by crates/eval/tests/golden/make_wordnet_subset.py)\n\n"
        + "\n".join(license_lines) + "\n")
    print(f"{len(ws)} words; kept (lemmas, synsets, exceptions): {summary}")
    size = sum(f.stat().st_size for f in OUT.iterdir())
    print(f"{OUT}: {size} bytes")
    if "--check" in sys.argv:
        check()


def check():
    """nltk on the subset: METEOR of every golden pair equals the goldens (made on the full WordNet)."""
    from nltk.corpus.reader.wordnet import WordNetCorpusReader
    from nltk.translate.meteor_score import meteor_score

    tmp = pathlib.Path.home() / "nltk_data" / "corpora" / "wordnet-mmedpo-subset"
    tmp.mkdir(parents=True, exist_ok=True)
    for f in OUT.iterdir():
        (tmp / f.name).write_bytes(f.read_bytes())
    (tmp / "lexnames").write_text("".join(f"{i:02d} lex.{i} 1\n" for i in range(45)))
    WordNetCorpusReader.map_wn = lambda self, version="wordnet": None
    wn = WordNetCorpusReader(str(tmp), None)
    g = json.loads((HERE / "eval_goldens.json").read_text())
    pairs = [(s["prediction"], s["reference"], s["meteor"]) for s in g["synthetic"]]
    sample = {}
    for path in sorted((ROOT / "data" / "released-sample").glob("*_dpo_weighted.json")):
        sample[path.name] = json.loads(path.read_text())
    for s in g["shared"]:
        item = sample[s["file"]][s["index"] // 20]
        pairs.append((item["rejected_conversations"][-1]["value"], item["conversations"][-1]["value"], s["meteor"]))
    worst = 0.0
    for pred, ref, want in pairs:
        p, r = normalize_word(pred.lower()).split(), normalize_word(ref.lower()).split()
        worst = max(worst, abs(float(meteor_score([r], p, wordnet=wn)) - want))
    print(f"nltk on the subset vs the goldens: {len(pairs)} pairs, max |dMETEOR| {worst:.3g}")
    assert worst <= 1e-12, worst


if __name__ == "__main__":
    main()
