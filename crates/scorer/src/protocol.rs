//! The multi-agent clinical-relevance protocol (MMedPO §3.2.1, paper-spec §1.5).
//!
//! Agent 1 scores the rejected answer given the question and the ground truth; each next agent sees
//! the previous score and returns a score: the same one (it agrees) or its own. A round is one pass
//! over the agents, cycling back to agent 1 (who then sees the last agent's score). The run stops at
//! **consensus**, a pass in which every turn agreed with the score it was shown (in round 1, agent 1's
//! opening score starts the pass), and the result is that score; or after `max_rounds` (paper: 5),
//! and the result is the mean of every score given, agreements included.
//!
//! An unreadable or out-of-range reply is retried with a corrective message (`max_retries` times);
//! then the turn is recorded as a failure, the shown score passes on unchanged, and that pass cannot
//! be a consensus. Every prompt, reply, parsed score, retry and timing goes into the transcript.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::parse::parse_score;
use crate::prompts::Prompts;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: "user".into(),
            content: content.into(),
        }
    }
    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: "assistant".into(),
            content: content.into(),
        }
    }
}

/// A chat model that can be asked for a score (local LLM, HTTP server, or a scripted test double).
pub trait Agent: Send + Sync {
    /// A name for transcripts and logs.
    fn name(&self) -> String;
    /// The model's reply to a conversation. An `Err` is a transport/model failure (already retried
    /// by the agent where that makes sense); it is recorded, not fatal.
    fn complete(&self, messages: &[Message]) -> Result<String, String>;
}

/// What is scored: a dispreferred answer with its question and ground truth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoreRequest {
    /// The question (without the image placeholder).
    pub question: String,
    /// The ground-truth answer.
    pub ground_truth: String,
    /// The rejected (hallucinated) answer.
    pub answer: String,
}

/// One agent turn, as the transcript records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    /// 1-based round.
    pub round: usize,
    /// Agent name.
    pub agent: String,
    /// The score this agent was shown (`None` for the opening turn).
    pub shown: Option<f64>,
    /// Every message sent, corrective ones included.
    pub prompts: Vec<String>,
    /// Every reply received.
    pub replies: Vec<String>,
    /// The parsed score, or `None` when the turn failed.
    pub score: Option<f64>,
    /// Whether the score equals the shown one.
    pub agreed: bool,
    /// Corrective retries used.
    pub retries: usize,
    /// Why the turn failed, if it did.
    pub error: Option<String>,
    /// Wall time of the turn.
    pub millis: u64,
}

/// The outcome for one pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreOutcome {
    /// The agreed score, or the mean of every score given; `None` if no agent gave any.
    pub score: Option<f64>,
    /// Whether a pass of full agreement was reached.
    pub consensus: bool,
    /// Rounds run.
    pub rounds: usize,
    /// Every turn.
    pub turns: Vec<TurnRecord>,
}

/// Protocol settings.
#[derive(Debug, Clone)]
pub struct Protocol {
    /// Most rounds (paper: 5).
    pub max_rounds: usize,
    /// Corrective retries per turn.
    pub max_retries: usize,
    /// The prompt texts.
    pub prompts: Prompts,
    /// Most wall time one pair may take; no turn starts after it (`None`: no limit).
    pub pair_budget: Option<std::time::Duration>,
}

impl Default for Protocol {
    fn default() -> Self {
        Self {
            max_rounds: 5,
            max_retries: 2,
            prompts: Prompts::builtin(),
            pair_budget: None,
        }
    }
}

/// Scores compare equal at one decimal, as the agents are asked to answer.
fn same(a: f64, b: f64) -> bool {
    (a - b).abs() < 0.05 - 1e-9
}

impl Protocol {
    fn turn(
        &self,
        agent: &dyn Agent,
        req: &ScoreRequest,
        shown: Option<f64>,
        round: usize,
    ) -> TurnRecord {
        let start = Instant::now();
        let first = match shown {
            None => self.prompts.first(req),
            Some(s) => self.prompts.next(req, s),
        };
        let mut messages = vec![Message::user(first.clone())];
        let mut rec = TurnRecord {
            round,
            agent: agent.name(),
            shown,
            prompts: vec![first],
            replies: vec![],
            score: None,
            agreed: false,
            retries: 0,
            error: None,
            millis: 0,
        };
        loop {
            match agent.complete(&messages) {
                Err(e) => {
                    rec.error = Some(e);
                    break;
                }
                Ok(reply) => {
                    rec.replies.push(reply.clone());
                    match parse_score(&reply) {
                        Ok(x) => {
                            rec.score = Some(x);
                            rec.agreed = shown.is_some_and(|s| same(s, x));
                            rec.error = None;
                            break;
                        }
                        Err(problem) => {
                            rec.error = Some(format!("unparseable reply: {problem}"));
                            if rec.retries >= self.max_retries {
                                break;
                            }
                            rec.retries += 1;
                            let corrective = self.prompts.corrective(&problem.to_string());
                            messages.push(Message::assistant(reply));
                            messages.push(Message::user(corrective.clone()));
                            rec.prompts.push(corrective);
                        }
                    }
                }
            }
        }
        rec.millis = start.elapsed().as_millis() as u64;
        rec
    }

    /// Runs the protocol for one pair.
    pub fn score(&self, agents: &[&dyn Agent], req: &ScoreRequest) -> ScoreOutcome {
        let mut turns: Vec<TurnRecord> = vec![];
        let mut shown: Option<f64> = None;
        let start = std::time::Instant::now();
        let mut rounds = 0;
        'rounds: for round in 1..=self.max_rounds.max(1) {
            rounds = round;
            let mut all_agree = true;
            for (k, agent) in agents.iter().enumerate() {
                if let Some(budget) = self.pair_budget.filter(|b| start.elapsed() > *b) {
                    turns.push(TurnRecord {
                        round,
                        agent: agent.name(),
                        shown,
                        prompts: vec![],
                        replies: vec![],
                        score: None,
                        agreed: false,
                        retries: 0,
                        error: Some(format!(
                            "not asked: the pair's time budget of {:.0} s was spent",
                            budget.as_secs_f64()
                        )),
                        millis: 0,
                    });
                    break 'rounds;
                }
                let rec = self.turn(*agent, req, shown, round);
                match rec.score {
                    Some(x) => {
                        // Round 1's opening turn starts the pass; every other turn must agree.
                        let opening = round == 1 && k == 0;
                        if !opening && !rec.agreed {
                            all_agree = false;
                        }
                        shown = Some(x);
                    }
                    None => all_agree = false,
                }
                turns.push(rec);
            }
            if all_agree && shown.is_some() {
                return ScoreOutcome {
                    score: shown,
                    consensus: true,
                    rounds: round,
                    turns,
                };
            }
        }
        let given: Vec<f64> = turns.iter().filter_map(|t| t.score).collect();
        let mean = (!given.is_empty()).then(|| given.iter().sum::<f64>() / given.len() as f64);
        ScoreOutcome {
            score: mean,
            consensus: false,
            rounds,
            turns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Replies from a script, in order; `Err` entries are transport failures.
    struct Scripted {
        name: &'static str,
        replies: Mutex<Vec<Result<&'static str, &'static str>>>,
    }

    impl Scripted {
        fn new(name: &'static str, replies: Vec<Result<&'static str, &'static str>>) -> Self {
            Self {
                name,
                replies: Mutex::new(replies.into_iter().rev().collect()),
            }
        }
    }

    impl Agent for Scripted {
        fn name(&self) -> String {
            self.name.into()
        }
        fn complete(&self, _: &[Message]) -> Result<String, String> {
            match self.replies.lock().unwrap().pop() {
                Some(Ok(r)) => Ok(r.to_string()),
                Some(Err(e)) => Err(e.to_string()),
                None => Err("script exhausted".into()),
            }
        }
    }

    fn req() -> ScoreRequest {
        ScoreRequest {
            question: "Is there a nodule?".into(),
            ground_truth: "Yes".into(),
            answer: "No, the lungs are clear.".into(),
        }
    }

    fn run(agents: &[Scripted]) -> ScoreOutcome {
        let refs: Vec<&dyn Agent> = agents.iter().map(|a| a as &dyn Agent).collect();
        Protocol::default().score(&refs, &req())
    }

    /// Every call takes `delay` and answers 0.3 then 0.6 alternately: never a consensus.
    struct Slow {
        delay: std::time::Duration,
        calls: Mutex<usize>,
    }

    impl Agent for Slow {
        fn name(&self) -> String {
            "slow".into()
        }
        fn complete(&self, _: &[Message]) -> Result<String, String> {
            std::thread::sleep(self.delay);
            let mut n = self.calls.lock().unwrap();
            *n += 1;
            Ok(if *n % 2 == 1 { "0.3" } else { "0.6" }.into())
        }
    }

    #[test]
    fn no_turn_starts_after_the_pair_budget() {
        let slow = Slow {
            delay: std::time::Duration::from_millis(30),
            calls: Mutex::new(0),
        };
        let p = Protocol {
            pair_budget: Some(std::time::Duration::from_millis(70)),
            ..Protocol::default()
        };
        let req = ScoreRequest {
            question: "q".into(),
            ground_truth: "a".into(),
            answer: "b".into(),
        };
        let out = p.score(&[&slow, &slow], &req);
        let asked = *slow.calls.lock().unwrap();
        assert!((3..=4).contains(&asked), "{asked} calls");
        let last = out.turns.last().unwrap();
        assert!(
            last.error.as_deref().unwrap_or("").contains("time budget"),
            "{last:?}"
        );
        assert!(out.rounds < 5 && !out.consensus);
        assert!(out.score.is_some(), "the mean of the scores given");
    }

    #[test]
    fn consensus_in_round_one() {
        let out = run(&[
            Scripted::new("med42-8b", vec![Ok(r#"{"score": 0.8}"#)]),
            Scripted::new("med42-70b", vec![Ok("0.8")]),
            Scripted::new("biomistral", vec![Ok("```json\n{\"score\": 0.8}\n```")]),
        ]);
        assert!(out.consensus);
        assert_eq!((out.score, out.rounds, out.turns.len()), (Some(0.8), 1, 3));
        assert!(out.turns[0].prompts[0].contains("No, the lungs are clear."));
        assert!(out.turns[1].prompts[0].contains("0.8"));
    }

    #[test]
    fn consensus_in_a_later_round() {
        let out = run(&[
            Scripted::new("a", vec![Ok("0.8"), Ok("0.6")]),
            Scripted::new("b", vec![Ok("0.6"), Ok("0.6")]),
            Scripted::new("c", vec![Ok("0.6"), Ok("0.6")]),
        ]);
        // Round 1: 0.8, 0.6 (disagree), 0.6. Round 2: a agrees with 0.6, b, c agree.
        assert!(out.consensus);
        assert_eq!((out.score, out.rounds, out.turns.len()), (Some(0.6), 2, 6));
    }

    #[test]
    fn no_consensus_gives_the_mean_of_every_score() {
        let a = Scripted::new("a", vec![Ok("0.2"); 5]);
        let b = Scripted::new("b", vec![Ok("0.9"); 5]);
        let out = run(&[a, b]);
        assert!(!out.consensus);
        assert_eq!((out.rounds, out.turns.len()), (5, 10));
        assert!((out.score.unwrap() - 0.55).abs() < 1e-12);
    }

    #[test]
    fn bad_replies_are_retried_then_recorded_as_failures() {
        let out = run(&[
            Scripted::new(
                "a",
                vec![
                    Ok("I am not sure."),
                    Ok(r#"{"score": 7}"#),
                    Ok("0.7"),
                    Ok("0.7"),
                ],
            ),
            Scripted::new("b", vec![Err("HTTP 500"), Ok("0.7")]),
        ]);
        let t0 = &out.turns[0];
        assert_eq!(
            (t0.retries, t0.score, t0.replies.len(), t0.prompts.len()),
            (2, Some(0.7), 3, 3)
        );
        assert!(
            t0.prompts[1].contains("no score found") && t0.prompts[2].contains("outside [0, 1]")
        );
        assert_eq!(out.turns[1].error.as_deref(), Some("HTTP 500"));
        assert_eq!(out.turns[1].score, None);
        // Round 1 had a failure, so no consensus there; round 2: a agrees (0.7), b agrees.
        assert!(out.consensus);
        assert_eq!((out.rounds, out.score), (2, Some(0.7)));
        // Three garbage replies exhaust the retries.
        let out = run(&[Scripted::new("a", vec![Ok("?"); 15])]);
        assert!(out
            .turns
            .iter()
            .all(|t| t.score.is_none() && t.retries == 2));
        assert_eq!(out.score, None);
    }
}
