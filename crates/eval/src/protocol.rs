//! The paper's evaluation protocol around the metrics, as the authors' scripts run it
//! (`inference/llava-med-1.5_*.py`, `eval/eval_*.py` of Odyssni/MMedPO): the test-set reader, the
//! report prompts drawn with CPython's `random` ([`crate::pyrandom`]), the predictions file, and the
//! aggregation into Table 1's numbers (× 100). Generating the answers is the caller's (a LLaVA:
//! `mmedpo_lvlm::generate`); everything here is pure.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use mmedpo_core::journal::Entry;
use mmedpo_core::record::RecordId;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::normalize::normalize_word;
use crate::report_scores;
use crate::vqa::{closed_hit, open_recall};
use crate::wordnet::WordNet;

/// Which benchmark kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Med-VQA (SLAKE, VQA-RAD): closed accuracy, open recall.
    Vqa,
    /// Report generation (IU-Xray, MIMIC-CXR): BLEU, ROUGE-L, METEOR.
    Report,
}

impl Task {
    /// `vqa` or `report`.
    pub fn name(self) -> &'static str {
        match self {
            Task::Vqa => "vqa",
            Task::Report => "report",
        }
    }

    /// New tokens per answer in the authors' scripts: 64 for VQA, 1024 for reports.
    pub fn max_new_tokens(self) -> usize {
        match self {
            Task::Vqa => 64,
            Task::Report => 1024,
        }
    }
}

impl FromStr for Task {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "vqa" => Ok(Task::Vqa),
            "report" => Ok(Task::Report),
            other => Err(format!("{other:?}: expected vqa or report")),
        }
    }
}

/// The report prompts of the authors' inference script (`inference/llava-med-1.5_report.py`).
pub const REPORT_PROMPTS: [&str; 5] = [
    "<image>\nWalk through the important details of the image",
    "<image>\nClarify the contents of the displayed image with great detail",
    "<image>\nExamine the image closely and share its details",
    "<image>\nClarify the contents of the displayed image with great detail",
    "<image>\nAnalyze the image in a comprehensive and detailed manner",
];

/// One line of a predictions file (what `mmedpo eval` writes and `mmedpo metrics` reads).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prediction {
    /// Item id.
    pub id: serde_json::Value,
    /// The model's answer.
    pub prediction: String,
    /// The ground truth.
    pub reference: String,
    /// `CLOSED` or `OPEN` (VQA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_type: Option<String>,
}

impl Entry for Prediction {
    fn record_id(&self) -> Option<RecordId> {
        RecordId::from_json(&self.id)
    }
}

/// The longest prediction or reference `score` takes for reports: a report of the test sets has a
/// few hundred words, and ROUGE-L's table of two 20,000-word texts is 100 MB.
pub const MAX_REPORT_WORDS: usize = 20_000;

/// Table 1's numbers of one model on one test set, × 100 (`metrics.json`); a metric without items
/// is `None` (null), not 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "lowercase")]
pub enum Metrics {
    /// Med-VQA.
    Vqa {
        /// Closed questions: share whose answer contains the ground truth.
        closed_accuracy: Option<f64>,
        /// Open questions: mean recall of the ground truth's words.
        open_recall: Option<f64>,
        /// Closed questions scored.
        closed_count: usize,
        /// Open questions scored.
        open_count: usize,
    },
    /// Report generation.
    Report {
        /// The paper's BLEU: the mean of BLEU-1..4.
        bleu: f64,
        /// Individual-n-gram BLEU-1.
        bleu_1: f64,
        /// BLEU-2.
        bleu_2: f64,
        /// BLEU-3.
        bleu_3: f64,
        /// BLEU-4.
        bleu_4: f64,
        /// The script's other BLEU (cumulative 4-gram).
        bleu_cumulative: f64,
        /// ROUGE-L F.
        rouge_l: f64,
        /// METEOR.
        meteor: f64,
        /// Reports scored.
        count: usize,
    },
}

impl Metrics {
    /// The task they score.
    pub fn task(&self) -> Task {
        match self {
            Metrics::Vqa { .. } => Task::Vqa,
            Metrics::Report { .. } => Task::Report,
        }
    }

    /// The paper's Table 1 row in Markdown.
    pub fn table(&self) -> String {
        let f = |v: Option<f64>| v.map_or("n/a".into(), |x| format!("{x:.2}"));
        match self {
            Metrics::Vqa {
                closed_accuracy,
                open_recall,
                ..
            } => format!(
                "| Open (recall) | Closed (accuracy) |\n|---|---|\n| {} | {} |\n",
                f(*open_recall),
                f(*closed_accuracy)
            ),
            Metrics::Report {
                bleu,
                rouge_l,
                meteor,
                ..
            } => format!(
                "| BLEU | ROUGE-L | METEOR |\n|---|---|---|\n| {} | {} | {} |\n",
                f(Some(*bleu)),
                f(Some(*rouge_l)),
                f(Some(*meteor))
            ),
        }
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Scores × 100, as the paper reports them; a metric without items is null.
pub fn score(task: Task, preds: &[Prediction], wordnet: Option<&Path>) -> Result<Metrics> {
    if preds.is_empty() {
        return Err(Error::Score(
            "no predictions to score: a metric of nothing is not 0".into(),
        ));
    }
    match task {
        Task::Vqa => {
            let (mut closed, mut open) = (vec![], vec![]);
            for p in preds {
                match p.answer_type.as_deref().map(str::to_uppercase).as_deref() {
                    Some("CLOSED") => closed.push(closed_hit(&p.prediction, &p.reference)),
                    Some("OPEN") => open.push(open_recall(
                        &normalize_word(&p.prediction.to_lowercase()),
                        &normalize_word(&p.reference.to_lowercase()),
                    )),
                    other => {
                        return Err(Error::Score(format!(
                            "item {}: answer_type {:?} (expected CLOSED or OPEN)",
                            p.id, other
                        )))
                    }
                }
            }
            // A kind of question the test set does not have has no score (null), not 0.
            let mean =
                |v: &[f64]| (!v.is_empty()).then(|| 100.0 * v.iter().sum::<f64>() / v.len() as f64);
            Ok(Metrics::Vqa {
                closed_accuracy: mean(&closed),
                open_recall: mean(&open),
                closed_count: closed.len(),
                open_count: open.len(),
            })
        }
        Task::Report => {
            for p in preds {
                for (field, text) in [("prediction", &p.prediction), ("reference", &p.reference)] {
                    let words = text.split_whitespace().count();
                    if words > MAX_REPORT_WORDS {
                        return Err(Error::Score(format!(
                            "item {}: {field} has {words} words, more than the {MAX_REPORT_WORDS} \
                             the report metrics take (ROUGE-L's table grows with the product of the lengths)",
                            p.id
                        )));
                    }
                }
            }
            let wn = WordNet::open(wordnet)?;
            let n = preds.len().max(1) as f64;
            let mut sums = [0f64; 7];
            for p in preds {
                let s = report_scores(&p.prediction, &p.reference, &wn);
                for (sum, b) in sums.iter_mut().zip(s.bleu) {
                    *sum += b;
                }
                sums[4] += s.bleu_cumulative;
                sums[5] += s.rouge_l;
                sums[6] += s.meteor;
            }
            let m = sums.map(|x| 100.0 * x / n);
            Ok(Metrics::Report {
                bleu: (m[0] + m[1] + m[2] + m[3]) / 4.0,
                bleu_1: m[0],
                bleu_2: m[1],
                bleu_3: m[2],
                bleu_4: m[3],
                bleu_cumulative: m[4],
                rouge_l: m[5],
                meteor: m[6],
                count: preds.len(),
            })
        }
    }
}

/// A predictions file: one JSON [`Prediction`] per line (blank lines skipped); every bad line is
/// reported.
pub fn read_predictions(path: &Path) -> Result<Vec<Prediction>> {
    let text = read(path)?;
    let mut out = vec![];
    let mut bad = vec![];
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match serde_json::from_str::<Prediction>(line) {
            Ok(p) => out.push(p),
            Err(e) => bad.push(format!("line {}: {e}", n + 1)),
        }
    }
    if !bad.is_empty() {
        return Err(Error::File {
            path: path.to_path_buf(),
            message: format!("{} bad line(s):\n  {}", bad.len(), bad.join("\n  ")),
        });
    }
    Ok(out)
}

/// One test question (VQA) or image (report), as the authors' scripts read it.
#[derive(Debug, Clone, PartialEq)]
pub struct TestItem {
    /// `question_id` or `id` (an integer or a string; `"#INDEX"` when absent).
    pub id: serde_json::Value,
    /// The image path, relative to the image folder.
    pub image: String,
    /// The question without the image placeholder (reports: the prompt drawn for the item).
    pub question: String,
    /// The ground-truth answer or report.
    pub reference: String,
    /// `CLOSED` or `OPEN` (VQA).
    pub answer_type: Option<String>,
}

/// A test set: a JSON list or JSONL. VQA items: `question_id`/`id`, `image`, `question`/`text`,
/// `answer`, `answer_type`; report items: `question_id`/`id`, `image`/`image_path`,
/// `report`/`gt_report`, each asked one of [`REPORT_PROMPTS`] drawn as the authors' script draws
/// it (`random.seed(42)`, one `random.choice` per item in order). Every bad item is reported, with
/// its id and index; ids must be distinct (predictions are resumed by id).
pub fn read_test_set(path: &Path, task: Task) -> Result<Vec<TestItem>> {
    let text = read(path)?;
    let values: Vec<serde_json::Value> = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Array(a)) => a,
        _ => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(n, l)| {
                serde_json::from_str(l).map_err(|e| Error::File {
                    path: path.to_path_buf(),
                    message: format!("line {}: {e}", n + 1),
                })
            })
            .collect::<Result<_>>()?,
    };
    if values.is_empty() {
        return Err(Error::File {
            path: path.to_path_buf(),
            message: "no test items".into(),
        });
    }
    let str_of = |v: &serde_json::Value, keys: &[&str]| {
        keys.iter()
            .find_map(|k| v.get(*k).and_then(|x| x.as_str()).map(String::from))
    };
    let mut items = vec![];
    let mut bad = vec![];
    // The authors' report script: random.seed(42), then one random.choice of the prompts per item.
    let mut prompts = crate::pyrandom::PyRandom::new(42);
    for (i, v) in values.iter().enumerate() {
        let id = v
            .get("question_id")
            .or_else(|| v.get("id"))
            .cloned()
            // An item without an id is named by its index, as a string no numeric id can equal.
            .unwrap_or_else(|| serde_json::json!(format!("#{i}")));
        let image = str_of(v, &["image", "image_path"]);
        let (question, reference, answer_type) = match task {
            Task::Vqa => (
                str_of(v, &["question", "text"]),
                str_of(v, &["answer"]),
                str_of(v, &["answer_type"]),
            ),
            Task::Report => {
                let prompt = REPORT_PROMPTS[prompts.choice(REPORT_PROMPTS.len() as u32) as usize];
                (
                    Some(prompt.to_string()),
                    str_of(v, &["report", "gt_report"]),
                    None,
                )
            }
        };
        let mut missing = vec![];
        if image.is_none() {
            missing.push("image");
        }
        if question.is_none() {
            missing.push("question");
        }
        if reference.is_none() {
            missing.push(if task == Task::Vqa {
                "answer"
            } else {
                "report"
            });
        }
        let mut problems: Vec<String> = vec![];
        if RecordId::from_json(&id).is_none() {
            problems.push(format!("id {id} is not an integer or a string"));
        }
        if let Some(p) = image
            .as_deref()
            .filter(|p| mmedpo_core::record::climbs_out(p))
        {
            problems.push(format!(
                "image {p:?} climbs out of the image folder (relative paths stay under --image-root)"
            ));
        }
        if task == Task::Vqa {
            match answer_type.as_deref().map(str::to_uppercase).as_deref() {
                Some("CLOSED") | Some("OPEN") => {}
                Some(_) => problems.push(format!(
                    "answer_type {:?} is not CLOSED or OPEN",
                    answer_type.as_deref().unwrap_or_default()
                )),
                None => missing.push("answer_type (CLOSED or OPEN)"),
            }
        }
        if !missing.is_empty() {
            problems.insert(0, format!("missing {}", missing.join(", ")));
        }
        if problems.is_empty() {
            items.push(TestItem {
                id,
                image: image.unwrap_or_default(),
                question: question
                    .unwrap_or_default()
                    .replace("<image>", "")
                    .trim()
                    .to_string(),
                reference: reference.unwrap_or_default(),
                answer_type,
            });
        } else {
            bad.push(format!("item {id} (index {i}): {}", problems.join("; ")));
        }
    }
    // Predictions are resumed by id: two items with one id would share an answer.
    let mut first: HashMap<String, usize> = HashMap::new();
    for (i, it) in items.iter().enumerate() {
        if let Some(j) = first.insert(it.id.to_string(), i) {
            bad.push(format!("id {} is used by items {j} and {i}", it.id));
        }
    }
    if !bad.is_empty() {
        return Err(Error::File {
            path: path.to_path_buf(),
            message: format!("{} bad item(s):\n  {}", bad.len(), bad.join("\n  ")),
        });
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("mmedpo-eval-protocol-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn test_sets_read_both_formats_and_list_every_bad_item() {
        let p = file(
            "vqa.jsonl",
            "{\"question_id\": 1, \"image\": \"a.png\", \"question\": \"<image>\\nIs it?\", \"answer\": \"yes\", \"answer_type\": \"CLOSED\"}\n\n\
             {\"id\": \"b\", \"image\": \"b.png\", \"text\": \"Where?\", \"answer\": \"left\", \"answer_type\": \"open\"}\n",
        );
        let items = read_test_set(&p, Task::Vqa).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].question, "Is it?");
        assert_eq!(items[1].id, serde_json::json!("b"));
        let p = file(
            "bad.json",
            r#"[{"id": 1, "image": "../x.png", "question": "q", "answer": "a", "answer_type": "CLOSED"},
                {"id": 1, "question": "q", "answer_type": "maybe"}]"#,
        );
        let e = read_test_set(&p, Task::Vqa).unwrap_err().to_string();
        assert!(e.contains("bad.json: 2 bad item(s)"), "{e}");
        assert!(e.contains("climbs out of the image folder"), "{e}");
        assert!(
            e.contains("missing image, answer") && e.contains("\"maybe\""),
            "{e}"
        );
    }

    #[test]
    fn report_items_get_the_authors_prompt_sequence() {
        let p = file(
            "reports.json",
            &serde_json::to_string(
                &(0..6)
                    .map(|i| serde_json::json!({"id": i, "image": "x.png", "report": "r"}))
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
        );
        let items = read_test_set(&p, Task::Report).unwrap();
        // CPython: random.seed(42); [random.choice(range(5)) for _ in range(6)] == [0, 0, 2, 1, 1, 1]
        for (it, want) in items.iter().zip([0, 0, 2, 1, 1, 1]) {
            assert_eq!(
                it.question,
                REPORT_PROMPTS[want].replace("<image>", "").trim()
            );
        }
        assert_ne!(items[0].question, items[2].question);
    }

    #[test]
    fn metrics_serialize_as_metrics_json_and_refuse_nothing() {
        let preds = vec![
            Prediction {
                id: serde_json::json!(1),
                prediction: "Yes, there is.".into(),
                reference: "yes".into(),
                answer_type: Some("CLOSED".into()),
            },
            Prediction {
                id: serde_json::json!(2),
                prediction: "no".into(),
                reference: "yes".into(),
                answer_type: Some("closed".into()),
            },
        ];
        let m = score(Task::Vqa, &preds, None).unwrap();
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["task"], "vqa");
        assert_eq!(v["closed_accuracy"], 50.0);
        assert!(v["open_recall"].is_null(), "no open question: null, not 0");
        assert_eq!(serde_json::from_value::<Metrics>(v).unwrap(), m);
        assert!(m.table().contains("| n/a | 50.00 |"), "{}", m.table());
        let e = score(Task::Vqa, &[], None).unwrap_err().to_string();
        assert!(e.contains("a metric of nothing is not 0"), "{e}");
        assert_eq!("report".parse::<Task>().unwrap(), Task::Report);
        assert!("vq"
            .parse::<Task>()
            .unwrap_err()
            .contains("expected vqa or report"));
    }
}
