//! The judge: given the question, the ground truth and the sampled answers, pick the most
//! hallucinated answer or write one. Replies are JSON (`{"pick": k}`, 1-based, or
//! `{"write": "..."}`), accepted bare, in a code fence or after prose. An unusable reply (not
//! readable, a number out of range, a pick or text that equals the ground truth, an empty text)
//! is answered with a corrective message naming the problem, up to `max_retries` times; then the
//! item is recorded as a failure. Every prompt, reply and problem goes into the turns.

use std::path::Path;
use std::time::Instant;

use mmedpo_scorer::{Agent, Message};
use serde::{Deserialize, Serialize};

use crate::{normalized, Item};

/// The judge's prompts (`data/prompts/judge.txt`, `judge_corrective.txt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JudgePrompts {
    /// `{question}`, `{ground_truth}`, `{candidates}`, `{n}`.
    pub judge: String,
    /// `{problem}`, `{n}`.
    pub corrective: String,
}

impl JudgePrompts {
    /// The project's prompts.
    pub fn builtin() -> Self {
        Self {
            judge: include_str!("../../../data/prompts/judge.txt").into(),
            corrective: include_str!("../../../data/prompts/judge_corrective.txt").into(),
        }
    }

    /// Prompts from a folder holding `judge.txt` and `judge_corrective.txt`.
    pub fn from_dir(dir: &Path) -> std::io::Result<Self> {
        let read = |n: &str| std::fs::read_to_string(dir.join(n));
        Ok(Self {
            judge: read("judge.txt")?,
            corrective: read("judge_corrective.txt")?,
        })
    }

    /// The opening prompt.
    pub fn first(&self, item: &Item, candidates: &[String]) -> String {
        let list: Vec<String> = candidates
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{}. {}", i + 1, c.trim().replace('\n', " ")))
            .collect();
        self.judge
            .replace("{question}", item.question.trim())
            .replace("{ground_truth}", item.ground_truth.trim())
            .replace("{candidates}", &list.join("\n"))
            .replace("{n}", &candidates.len().to_string())
    }

    /// The corrective message.
    pub fn corrective(&self, problem: &str, n: usize) -> String {
        self.corrective
            .replace("{problem}", problem)
            .replace("{n}", &n.to_string())
    }
}

/// What the judge decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Verdict {
    /// One of the sampled answers.
    Picked {
        /// 0-based index into the candidates.
        index: usize,
        /// Its text.
        text: String,
    },
    /// An answer the judge wrote.
    Written {
        /// The text.
        text: String,
    },
}

impl Verdict {
    /// The rejected answer.
    pub fn text(&self) -> &str {
        match self {
            Verdict::Picked { text, .. } | Verdict::Written { text } => text,
        }
    }
}

/// One request to the judge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeTurn {
    /// The message sent.
    pub prompt: String,
    /// The reply, if one came.
    pub reply: Option<String>,
    /// A transport/model failure.
    pub error: Option<String>,
    /// Why the reply could not be used.
    pub problem: Option<String>,
    /// Milliseconds the request took.
    pub millis: u64,
}

/// The judge's result for one item, with its transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The verdict, or `None` when every attempt failed.
    pub verdict: Option<Verdict>,
    /// Every request.
    pub turns: Vec<JudgeTurn>,
}

fn json_object(reply: &str) -> Option<serde_json::Value> {
    let text = reply.trim();
    if let Ok(v @ serde_json::Value::Object(_)) = serde_json::from_str(text) {
        return Some(v);
    }
    // In a code fence, or after prose: the first `{` to its matching last `}`.
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    serde_json::from_str(text.get(start..=end)?).ok()
}

/// Reads a verdict from a reply, checked against the candidates and the ground truth.
pub fn parse_verdict(
    reply: &str,
    candidates: &[String],
    ground_truth: &str,
) -> Result<Verdict, String> {
    let n = candidates.len();
    let Some(obj) = json_object(reply) else {
        return Err("no JSON object with \"pick\" or \"write\" was found".into());
    };
    let truth = normalized(ground_truth);
    if let Some(p) = obj.get("pick").filter(|p| !p.is_null()) {
        let k = p
            .as_f64()
            .or_else(|| p.as_str().and_then(|s| s.trim().parse().ok()))
            .ok_or_else(|| format!("\"pick\" is {p}, not a number"))?;
        if k.fract() != 0.0 || k < 1.0 || k > n as f64 {
            return Err(format!(
                "\"pick\" is {k}, but the answers are numbered 1 to {n}"
            ));
        }
        let index = k as usize - 1;
        let text = candidates[index].trim().to_string();
        if normalized(&text) == truth {
            return Err(format!("answer {k} says the same as the ground truth"));
        }
        return Ok(Verdict::Picked { index, text });
    }
    if let Some(w) = obj.get("write") {
        let text = w.as_str().map(str::trim).unwrap_or_default();
        if text.is_empty() {
            return Err("\"write\" is empty or not a text".into());
        }
        if normalized(text) == truth {
            return Err("the written answer repeats the ground truth".into());
        }
        return Ok(Verdict::Written {
            text: text.to_string(),
        });
    }
    Err("the JSON has neither \"pick\" nor \"write\"".into())
}

/// Asks `agent` for a verdict on `item` given the sampled `candidates`.
pub fn judge(
    agent: &dyn Agent,
    item: &Item,
    candidates: &[String],
    prompts: &JudgePrompts,
    max_retries: usize,
) -> Outcome {
    let mut messages = vec![Message::user(prompts.first(item, candidates))];
    let mut turns = Vec::new();
    for _ in 0..=max_retries {
        let prompt = messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let started = Instant::now();
        let reply = agent.complete(&messages);
        let millis = started.elapsed().as_millis() as u64;
        match reply {
            Err(e) => turns.push(JudgeTurn {
                prompt,
                reply: None,
                error: Some(e),
                problem: None,
                millis,
            }),
            Ok(text) => match parse_verdict(&text, candidates, &item.ground_truth) {
                Ok(v) => {
                    turns.push(JudgeTurn {
                        prompt,
                        reply: Some(text),
                        error: None,
                        problem: None,
                        millis,
                    });
                    return Outcome {
                        verdict: Some(v),
                        turns,
                    };
                }
                Err(problem) => {
                    messages.push(Message::assistant(text.clone()));
                    messages.push(Message::user(
                        prompts.corrective(&problem, candidates.len()),
                    ));
                    turns.push(JudgeTurn {
                        prompt,
                        reply: Some(text),
                        error: None,
                        problem: Some(problem),
                        millis,
                    });
                }
            },
        }
    }
    tracing::warn!(item = %item.id, agent = %agent.name(), "the judge gave no usable verdict");
    Outcome {
        verdict: None,
        turns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn cands() -> Vec<String> {
        vec!["No".into(), "Yes, in the left lung.".into(), " no. ".into()]
    }

    #[test]
    fn verdicts_parse_from_json_fences_and_prose() {
        let c = cands();
        assert_eq!(
            parse_verdict("{\"pick\": 2}", &c, "No").unwrap(),
            Verdict::Picked {
                index: 1,
                text: "Yes, in the left lung.".into()
            }
        );
        assert_eq!(
            parse_verdict("```json\n{\"pick\": \"2\"}\n```", &c, "No").unwrap(),
            Verdict::Picked {
                index: 1,
                text: "Yes, in the left lung.".into()
            }
        );
        assert_eq!(
            parse_verdict(
                "Answer 2 is wrong.\n{\"write\": \"Yes, right lower lobe\"}",
                &c,
                "No"
            )
            .unwrap(),
            Verdict::Written {
                text: "Yes, right lower lobe".into()
            }
        );
    }

    #[test]
    fn unusable_verdicts_are_named() {
        let c = cands();
        for (reply, problem) in [
            ("I pick 2", "no JSON object"),
            ("{\"pick\": 4}", "numbered 1 to 3"),
            ("{\"pick\": 1.5}", "numbered 1 to 3"),
            ("{\"pick\": 3}", "same as the ground truth"),
            ("{\"write\": \"NO\"}", "repeats the ground truth"),
            ("{\"write\": \"\"}", "empty"),
            ("{\"score\": 1}", "neither"),
        ] {
            let e = parse_verdict(reply, &c, "No").unwrap_err();
            assert!(e.contains(problem), "{reply}: {e}");
        }
    }

    struct Scripted(Mutex<Vec<Result<String, String>>>);

    impl Agent for Scripted {
        fn name(&self) -> String {
            "scripted".into()
        }
        fn complete(&self, messages: &[Message]) -> Result<String, String> {
            assert_eq!(
                messages.len() % 2,
                1,
                "the conversation ends with a user message"
            );
            self.0.lock().unwrap().remove(0)
        }
    }

    fn item() -> Item {
        Item {
            id: "7".into(),
            image: "x.png".into(),
            question: "Is there a pneumothorax?".into(),
            ground_truth: "No".into(),
        }
    }

    #[test]
    fn the_judge_is_corrected_then_succeeds_or_fails() {
        let p = JudgePrompts::builtin();
        let agent = Scripted(Mutex::new(vec![
            Ok("pick 2".into()),
            Err("HTTP 500".into()),
            Ok("{\"pick\": 2}".into()),
        ]));
        let out = judge(&agent, &item(), &cands(), &p, 2);
        assert_eq!(out.verdict.unwrap().text(), "Yes, in the left lung.");
        assert_eq!(out.turns.len(), 3);
        assert!(out.turns[0].problem.as_ref().unwrap().contains("no JSON"));
        assert!(
            out.turns[1].prompt.contains("could not be used"),
            "{}",
            out.turns[1].prompt
        );
        assert_eq!(out.turns[1].error.as_deref(), Some("HTTP 500"));
        assert!(out.turns[0]
            .prompt
            .contains("1. No\n2. Yes, in the left lung.\n3. no."));

        let agent = Scripted(Mutex::new(vec![
            Ok("{}".into()),
            Ok("{\"pick\": 1}".into()),
        ]));
        let out = judge(&agent, &item(), &cands(), &p, 1);
        assert!(out.verdict.is_none());
        assert_eq!(out.turns.len(), 2);
    }
}
