//! Local agents on tiny random Mistral-shaped models: the real path (chat template → tokenizer →
//! `mmedpo-llm` generation with the KV cache → decode) runs inside the scoring protocol. A random
//! model cannot write a score, so every turn is retried with the corrective message and then
//! recorded as a failure, and the pair still finishes; greedy replies are reproducible.

use std::path::{Path, PathBuf};

use mmedpo_core::backend::Cpu;
use mmedpo_llm::{loader::save_llm, DecoderConfig};
use mmedpo_scorer::local::{LocalAgent, LocalSettings};
use mmedpo_scorer::prompts::Prompts;
use mmedpo_scorer::{Agent, Message, Protocol, ScoreRequest};

const MISTRAL_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

fn tiny_model(name: &str, seed_layers: usize) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmedpo-local-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = DecoderConfig {
        hidden_size: 16,
        intermediate_size: 32,
        num_hidden_layers: seed_layers,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        head_dim: 8,
        ..DecoderConfig::mistral_100m()
    };
    save_llm(&config.init::<Cpu>(&Default::default()), &config, &dir).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::copy(
        root.join("models/mistral-tokenizer/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    let tc = serde_json::json!({"chat_template": MISTRAL_TEMPLATE, "bos_token": "<s>", "eos_token": "</s>"});
    std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).unwrap();
    dir
}

fn settings() -> LocalSettings {
    LocalSettings {
        max_new_tokens: 12,
        ..LocalSettings::default()
    }
}

#[test]
fn local_agents_run_the_protocol_on_real_generation() {
    let (a, b) = (tiny_model("a", 1), tiny_model("b", 2));
    let device = Default::default();
    let agent_a = LocalAgent::load::<Cpu>(&a, settings(), &device).unwrap();
    let agent_b = LocalAgent::load::<Cpu>(
        &b,
        LocalSettings {
            template: Some("mistral".into()),
            ..settings()
        },
        &device,
    )
    .unwrap();

    // The directory's Jinja template and the built-in render the same prompt.
    let msgs = [Message::user("Score this answer.")];
    assert_eq!(
        agent_a.prompt(&msgs).unwrap(),
        "<s>[INST] Score this answer. [/INST]"
    );
    assert_eq!(
        agent_b.prompt(&msgs).unwrap(),
        agent_a.prompt(&msgs).unwrap()
    );
    // A system message is folded into the first user turn for templates that refuse it.
    let with_system = [
        Message {
            role: "system".into(),
            content: "Be strict.".into(),
        },
        Message::user("Score this answer."),
    ];
    assert_eq!(
        agent_a.prompt(&with_system).unwrap(),
        "<s>[INST] Be strict.\n\nScore this answer. [/INST]"
    );

    let reply = agent_a.complete(&msgs).unwrap();
    assert_eq!(
        agent_a.complete(&msgs).unwrap(),
        reply,
        "greedy replies are reproducible"
    );

    let agents: Vec<&dyn Agent> = vec![&agent_a, &agent_b];
    let protocol = Protocol {
        max_rounds: 2,
        max_retries: 1,
        prompts: Prompts::builtin(),
        pair_budget: None,
    };
    let req = ScoreRequest {
        question: "Is there a pneumothorax?".into(),
        ground_truth: "No".into(),
        answer: "Yes, a large left pneumothorax.".into(),
    };
    let out = protocol.score(&agents, &req);
    assert!(!out.turns.is_empty());
    for t in &out.turns {
        assert!(t.agent.starts_with("local:"), "{}", t.agent);
        assert_eq!(
            t.replies.len(),
            t.prompts.len(),
            "every prompt got a generated reply"
        );
        if t.score.is_none() {
            assert_eq!(
                t.replies.len(),
                2,
                "an unreadable reply is retried once, then recorded"
            );
        }
    }
    let json = serde_json::to_string(&out).unwrap();
    assert!(
        json.contains("Is there a pneumothorax?"),
        "the transcript keeps the prompts"
    );
    for d in [a, b] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn concurrent_requests_are_batched_and_answered_as_alone() {
    let dir = tiny_model("batch", 2);
    let device = Default::default();
    let agent = LocalAgent::load::<Cpu>(&dir, settings(), &device).unwrap();
    let questions: Vec<String> = (0..6)
        .map(|i| format!("Question {i}: is there {} effusion?", "a large ".repeat(i)))
        .collect();
    let alone: Vec<String> = questions
        .iter()
        .map(|q| agent.complete(&[Message::user(q.clone())]).unwrap())
        .collect();
    assert_eq!(
        agent.largest_batch(),
        1,
        "one at a time when asked one at a time"
    );
    // The same prompts from 6 threads at once: batched (different lengths, left-padded), and each
    // reply equals the one it got alone.
    let together: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = questions
            .iter()
            .map(|q| {
                let agent = &agent;
                s.spawn(move || agent.complete(&[Message::user(q.clone())]).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(together, alone);
    eprintln!("largest batch: {}", agent.largest_batch());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_model_without_a_template_needs_a_named_one() {
    let dir = tiny_model("plain", 1);
    std::fs::remove_file(dir.join("tokenizer_config.json")).unwrap();
    let e = LocalAgent::load::<Cpu>(&dir, settings(), &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no chat_template") && e.contains("mistral"),
        "{e}"
    );
    assert!(LocalAgent::load::<Cpu>(
        &dir,
        LocalSettings {
            template: Some("chatml".into()),
            ..settings()
        },
        &Default::default()
    )
    .is_ok());
    std::fs::remove_dir_all(dir).unwrap();
}
