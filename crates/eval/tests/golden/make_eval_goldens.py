"""Goldens for mmedpo-eval: every metric of the authors' eval scripts, computed by the reference
libraries (nltk 3.10 BLEU/METEOR, `rouge` 1.0.1), on
  * every 20th pair of ../shared/data/*_dpo_weighted.json (prediction = rejected answer, reference =
    chosen answer; these texts are not ours to commit, so the goldens hold only the numbers, in the
    order the Rust test reads the files: sorted by name, items in order), and
  * our own synthetic report-like texts and edge cases (stored with their numbers).
Regenerate (never in CI; needs nltk and rouge, e.g. the venv of docs/goldens.md, and Debian's
wordnet-base):
    python crates/eval/tests/golden/make_eval_goldens.py [SHARED_DATA_DIR] [WORDNET_DIR]

nltk reads the same WordNet files as the Rust side (WORDNET_DIR, default /usr/share/wordnet), through
~/nltk_data/corpora/wordnet-mmedpo (a copy of them) plus the `lexnames` file nltk's reader insists on (it plays no part in
synonyms). normalize_word, closed/open VQA scores and the report metrics follow the authors' code.
"""

import json
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[3]

# ---- the authors' normalize_word (eval/eval_vqa.py, ec5ea44), restated ----
CONTRACTIONS = dict(json.loads((HERE / "contractions.json").read_text()))
MANUAL = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
          "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = ["a", "an", "the"]
PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA = re.compile(r"(\d)(\,)(\d)")
PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]


def normalize_word(token):
    t = token
    for p in PUNCT:
        if (p + " " in token or " " + p in token) or (re.search(COMMA, token) is not None):
            t = t.replace(p, "")
        else:
            t = t.replace(p, " ")
    token = PERIOD.sub("", t, re.UNICODE)  # count = 32, as in the script
    out = [MANUAL.get(w, w) for w in token.lower().split()]
    out = [CONTRACTIONS.get(w, w) for w in out if w not in ARTICLES]
    return " ".join(out).replace(",", "")


def split_counts(s):
    c = {}
    for w in s.lower().strip().split():
        c[w] = c.get(w, 0) + 1
    return c


def open_recall(pred, gt):
    cand, ref = split_counts(normalize_word(pred)), split_counts(normalize_word(gt))
    if not cand or not ref:
        return 0.0
    tp = sum(c for w, c in cand.items() if w in ref)
    fn = sum(c for w, c in ref.items() if w not in cand)
    return 0.0 if tp == 0 else tp / (tp + fn)


SYNTHETIC = [
    ("The lungs are clear. No pleural effusion or pneumothorax.", "The lungs are clear. There is no pleural effusion or pneumothorax."),
    ("Multiple rounded nodules are seen in both lungs.", "Multiple rounded nodular opacities in both lungs, consistent with metastases."),
    ("Heart size is normal. Mediastinal contours are unremarkable.", "The cardiomediastinal silhouette is within normal limits."),
    ("There is a small left pleural effusion.", "Small left-sided pleural effusion with adjacent atelectasis."),
    ("No acute cardiopulmonary process.", "No acute cardiopulmonary abnormality."),
    ("Two nodules, 3.5 cm and 1.2 cm, in the right upper lobe.", "two nodules measuring 3.5 and 1.2 centimeters in the right upper lobe"),
    ("", "The lungs are clear."),
    ("...", "Normal chest radiograph."),
    ("?!", "Normal chest radiograph."),
    ("lung lung lung lung", "lung nodule"),
    ("Yes", "yes"),
    ("yes, there is", "No"),
    ("Cardiomegaly. Pulmonary edema. Effusions.", "Cardiomegaly with pulmonary edema and bilateral effusions."),
    ("The heart is enlarged; the aorta is tortuous.", "Enlarged heart. Tortuous aorta."),
    ("Degenerative changes of the thoracic spine are noted.", "Mild degenerative change of the thoracic spine."),
    ("dont see any fracture", "no fracture is seen"),
    ("The patient has a pneumonia in the left lower lobe", "left lower lobe pneumonia"),
    ("one two three four five", "1 2 3 4 5"),
    ("Calcified granuloma in the right apex.", "Calcified granulomas are present at the right lung apex."),
    ("No focal consolidation, effusion, or pneumothorax is seen.", "No focal airspace consolidation. No effusion. No pneumothorax."),
    ("big heart", "large heart"),
    ("The kidneys show stones.", "Renal calculi are seen in the kidney."),
    ("Opacity in the liver", "Opacities in the livers"),
    ("a" * 3, "aaa"),
]


def scores(pred, gt, rouge, wn, smooth):
    from nltk.translate.bleu_score import sentence_bleu
    from nltk.translate.meteor_score import meteor_score

    p, r = normalize_word(pred.lower()), normalize_word(gt.lower())
    pt, rt = p.split(), r.split()
    out = {"norm_pred": p, "closed": 1.0 if r in p else 0.0, "open_recall": open_recall(p, r)}
    for n in range(1, 5):
        w = [0, 0, 0, 0]
        w[n - 1] = 1
        out[f"bleu_{n}"] = float(sentence_bleu([rt], pt, weights=tuple(w), smoothing_function=smooth))
    out["bleu_cumulative"] = float(sentence_bleu([rt], pt, smoothing_function=smooth))
    try:
        out["rouge_l"] = rouge.get_scores(p, r)[0]["rouge-l"]["f"]
    except ValueError:  # the package raises on an empty prediction; we score it 0
        out["rouge_l"] = 0.0
    out["meteor"] = float(meteor_score([rt], pt, wordnet=wn))
    return out


def main():
    # Imported here so that make_wordnet_subset.py can import normalize_word and SYNTHETIC
    # without nltk.
    from nltk.corpus.reader.wordnet import WordNetCorpusReader
    from nltk.translate.bleu_score import SmoothingFunction
    from rouge import Rouge

    shared = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ROOT.parent / "shared" / "data")
    wn_dir = pathlib.Path(sys.argv[2] if len(sys.argv) > 2 else "/usr/share/wordnet")
    # nltk only reads corpora under its data path: copy the files into ~/nltk_data/corpora/.
    tmp = pathlib.Path.home() / "nltk_data" / "corpora" / "wordnet-mmedpo"
    tmp.mkdir(parents=True, exist_ok=True)
    for f in tmp.iterdir():
        f.unlink()
    for f in wn_dir.iterdir():
        if f.is_file():
            (tmp / f.name).write_bytes(f.read_bytes())
    (tmp / "lexnames").write_text("".join(f"{i:02d} lex.{i} 1\n" for i in range(45)))
    # The reader maps every other WordNet to the default `wordnet` corpus for the multilingual
    # (OMW) data; that mapping plays no part in synsets, and the default corpus is not installed.
    WordNetCorpusReader.map_wn = lambda self, version="wordnet": None
    wn = WordNetCorpusReader(str(tmp), None)
    rouge, smooth = Rouge(), SmoothingFunction().method7
    shared_out = []
    for path in sorted(shared.glob("*_dpo_weighted.json")):
        items = json.loads(path.read_text())
        for k, item in enumerate(items):
            if k % 20:
                continue
            s = scores(item["rejected_conversations"][-1]["value"], item["conversations"][-1]["value"], rouge, wn, smooth)
            s.pop("norm_pred")
            shared_out.append({"file": path.name, "index": k, **s})
    synth_out = [{"prediction": p, "reference": r, **scores(p, r, rouge, wn, smooth)} for p, r in SYNTHETIC]
    out = {"note": "shared entries: prediction = rejected answer, reference = chosen answer; every 20th item",
           "shared": shared_out, "synthetic": synth_out}
    (HERE / "eval_goldens.json").write_text(json.dumps(out, indent=0))
    print(f"{len(shared_out)} shared pairs, {len(synth_out)} synthetic")


if __name__ == "__main__":
    main()
