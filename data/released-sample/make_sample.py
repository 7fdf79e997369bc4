"""The committed sample of the MMedPO preference pairs released with the paper.

Every 20th item (indices 0, 20, 40, ...) of each `*_dpo_weighted.json` of the shared data folder,
unchanged and in file order, written under the same file name next to this script. These are the
336 pairs the metric goldens (crates/eval/tests/golden/make_eval_goldens.py) are computed on, and
their 1,344 turns are checked against SentencePiece (crates/llm/tests/golden/make_tokenizer_goldens.py),
so a clone with nothing beside it runs those checks; the full files add their checks where present.

Regenerate (stdlib only):
    python3 data/released-sample/make_sample.py [SHARED_DATA_DIR]    # default ../shared/data
"""

import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
STRIDE = 20


def main():
    data_dir = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ROOT.parent / "shared" / "data")
    files = sorted(data_dir.glob("*_dpo_weighted.json"))
    if not files:
        sys.exit(f"{data_dir}: no *_dpo_weighted.json")
    for path in files:
        items = json.loads(path.read_text())
        sample = items[::STRIDE]
        (HERE / path.name).write_text(json.dumps(sample, ensure_ascii=False, indent=1) + "\n")
        print(f"{path.name}: {len(sample)} of {len(items)} items")


if __name__ == "__main__":
    main()
