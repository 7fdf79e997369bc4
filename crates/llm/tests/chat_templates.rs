//! Chat templates rendered by minijinja equal transformers' rendering (goldens:
//! `tests/golden/make_chat_goldens.py`, transformers 5.24.0), raised errors included; the built-in
//! templates equal the Jinja ones they stand for; a model directory's template is found and a
//! broken one is reported with the file.

use std::path::Path;

use mmedpo_llm::{BuiltinChat, ChatTemplate};
use serde_json::Value;

fn goldens() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/chat_goldens.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn jinja(g: &Value, name: &str) -> ChatTemplate {
    let t = &g["templates"][name];
    ChatTemplate::Jinja {
        source: t["template"].as_str().unwrap().into(),
        bos_token: t["bos_token"].as_str().unwrap().into(),
        eos_token: t["eos_token"].as_str().unwrap().into(),
    }
}

fn messages(case: &Value) -> Vec<(String, String)> {
    case["conversation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().into(),
                m["content"].as_str().unwrap().into(),
            )
        })
        .collect()
}

#[test]
fn minijinja_renders_like_transformers() {
    let g = goldens();
    let cases = g["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 18);
    for case in cases {
        let name = case["template"].as_str().unwrap();
        let msgs = messages(case);
        let refs: Vec<(&str, &str)> = msgs.iter().map(|(r, c)| (r.as_str(), c.as_str())).collect();
        let got = jinja(&g, name).render(&refs, case["add_generation_prompt"].as_bool().unwrap());
        match (case.get("text"), case.get("error")) {
            (Some(text), _) => assert_eq!(got.unwrap(), text.as_str().unwrap(), "{name}: {case}"),
            (_, Some(err)) => {
                let e = got.unwrap_err().to_string();
                assert!(e.contains(err.as_str().unwrap()), "{name}: {e} vs {err}");
            }
            _ => unreachable!(),
        }
    }
}

#[test]
fn builtins_equal_the_templates_they_stand_for() {
    let g = goldens();
    for case in g["cases"].as_array().unwrap() {
        let name = case["template"].as_str().unwrap();
        let msgs = messages(case);
        let refs: Vec<(&str, &str)> = msgs.iter().map(|(r, c)| (r.as_str(), c.as_str())).collect();
        let gen = case["add_generation_prompt"].as_bool().unwrap();
        let Some(text) = case.get("text").and_then(Value::as_str) else {
            continue;
        };
        match name {
            "llama3" => {
                let b = ChatTemplate::Builtin(BuiltinChat::Llama3)
                    .render(&refs, gen)
                    .unwrap();
                assert_eq!(b, text);
            }
            // Mistral's template has no generation prompt and no system role (the built-in folds
            // a system message into the first user turn instead of raising).
            "mistral" => {
                let b = ChatTemplate::Builtin(BuiltinChat::Mistral)
                    .render(&refs, gen)
                    .unwrap();
                assert_eq!(b, text);
            }
            _ => {}
        }
    }
}

#[test]
fn a_model_directory_template_is_loaded_and_checked() {
    let g = goldens();
    let dir = std::env::temp_dir().join(format!("mmedpo-chat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let t = &g["templates"]["llama3"];
    let config = serde_json::json!({
        "chat_template": t["template"],
        "bos_token": {"content": "<|begin_of_text|>", "lstrip": false},
        "eos_token": "<|eot_id|>",
    });
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    let loaded = ChatTemplate::resolve(&dir, None).unwrap();
    let out = loaded.render(&[("user", "hi")], true).unwrap();
    assert!(
        out.starts_with("<|begin_of_text|><|start_header_id|>user"),
        "{out}"
    );
    // A named built-in overrides the directory's template.
    let b = ChatTemplate::resolve(&dir, Some("chatml")).unwrap();
    assert!(b
        .render(&[("user", "hi")], true)
        .unwrap()
        .starts_with("<|im_start|>user"));

    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"chat_template": "{% for %}"}"#,
    )
    .unwrap();
    let e = ChatTemplate::resolve(&dir, None).unwrap_err().to_string();
    assert!(
        e.contains("tokenizer_config.json") && e.contains("parse"),
        "{e}"
    );
    std::fs::write(dir.join("tokenizer_config.json"), r#"{"bos_token": "<s>"}"#).unwrap();
    let e = ChatTemplate::resolve(&dir, None).unwrap_err().to_string();
    assert!(
        e.contains("no chat_template") && e.contains("llama3"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
