//! The text-pair pipeline end to end on the real chest X-ray: `mmedpo curate-text` (a tiny random
//! LLaVA samples the answers, a judge picks or writes the hallucination) → `score-relevance` →
//! `visual-pairs` → `assemble`, with in-process local agents (chain models whose greedy reply is
//! fixed by their weights, decoded by the real generation path) and with an OpenAI-schema server.

mod common;

use std::path::{Path, PathBuf};

use common::{chain_llm, mmedpo, root, serve, stderr, tiny_llava, tmp};
use mmedpo::core::record::read_records;

fn items(dir: &Path) -> PathBuf {
    // No rejected_conversations: curation makes them.
    let qa = [
        (
            "chest-xray-pa-nodules.png",
            "Are there nodules in the lungs?",
            "Yes",
        ),
        (
            "chest-xray-pa-nodules.png",
            "Is there a pneumothorax?",
            "No",
        ),
        ("ct-small.png", "What organ is shown?", "Liver"),
    ];
    let v: Vec<serde_json::Value> = qa
        .iter()
        .enumerate()
        .map(|(i, (img, q, a))| {
            serde_json::json!({"id": 100 + i, "image": img, "conversations": [
                {"from": "human", "value": format!("<image>\n{q}")}, {"from": "gpt", "value": a}]})
        })
        .collect();
    let p = dir.join("items.json");
    std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
    p
}

fn ok(o: std::process::Output) -> String {
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    e
}

fn curate(model: &Path, data: &Path, out: &Path, judge: &str) -> std::process::Output {
    let images = root().join("data/images");
    mmedpo(&[
        "curate-text",
        "--data",
        data.to_str().unwrap(),
        "--image-root",
        images.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--n",
        "3",
        "--max-new-tokens",
        "6",
        "--judge",
        judge,
        "--local-template",
        "mistral",
        "--out",
        out.to_str().unwrap(),
    ])
}

#[test]
fn curate_score_visual_and_assemble_with_local_agents() {
    let dir = tmp("curate-local");
    let data = items(&dir);
    let llava = tiny_llava("curate-local-llava");
    let judge = chain_llm(
        "curate-judge",
        r#"{"write": "Multiple cavitating masses."}"#,
    );
    let text = dir.join("text.json");
    let err = ok(curate(
        &llava,
        &data,
        &text,
        &format!("local={}", judge.display()),
    ));
    assert!(err.contains("3 written by the judge"), "{err}");
    let recs = read_records(&text).unwrap();
    assert_eq!(recs.len(), 3);
    for r in &recs {
        assert_eq!(r.rejected(), Some("Multiple cavitating masses."));
        assert_eq!(
            r.conversations[0], r.rejected_conversations[0],
            "same question"
        );
        assert!(r.weighted_score.is_none() && r.rejected_image.is_none());
    }
    // Every item's transcript keeps the 3 sampled candidates and the judge's turn.
    let t = std::fs::read_to_string(dir.join("text.json.transcripts.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = t
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines
        .iter()
        .all(|l| l["candidates"].as_array().unwrap().len() == 3));

    // Two local Med-LLM agents that both say 0.7: consensus in round 1.
    let (a, b) = (
        chain_llm("agent-a", r#"{"score": 0.7}"#),
        chain_llm("agent-b", "0.7"),
    );
    let scored = dir.join("scored.json");
    // The second agent comes from an agents file.
    let agents_file = dir.join("agents.txt");
    std::fs::write(
        &agents_file,
        format!("# Med-LLM judges, in turn order\n\nlocal={}\n", b.display()),
    )
    .unwrap();
    let err = ok(mmedpo(&[
        "score-relevance",
        "--data",
        text.to_str().unwrap(),
        "--agent",
        &format!("local={}", a.display()),
        "--agents-file",
        agents_file.to_str().unwrap(),
        "--local-template",
        "mistral",
        "--out",
        scored.to_str().unwrap(),
    ]));
    assert!(err.contains("3 scored (3 by consensus)"), "{err}");
    assert!(read_records(&scored)
        .unwrap()
        .iter()
        .all(|r| r.weighted_score == Some(0.7)));
    let png = image::open(dir.join("scored.json.histogram.png")).unwrap();
    assert_eq!((png.width(), png.height()), (800, 450));

    let visual_dir = dir.join("visual");
    ok(mmedpo(&[
        "visual-pairs",
        "--data",
        scored.to_str().unwrap(),
        "--image-root",
        root().join("data/images").to_str().unwrap(),
        "--out",
        visual_dir.to_str().unwrap(),
        "--overlays",
    ]));
    let train = dir.join("train.json");
    ok(mmedpo(&[
        "assemble",
        "--data",
        scored.to_str().unwrap(),
        "--data",
        visual_dir.join("visual_pairs.json").to_str().unwrap(),
        "--out",
        train.to_str().unwrap(),
    ]));
    let all = read_records(&train).unwrap();
    assert_eq!(all.len(), 6);
    assert_eq!(all.iter().filter(|r| r.rejected_image.is_some()).count(), 3);

    // The assembled file trains: text pairs on the clean scan, visual pairs on the noised PNGs.
    let run = dir.join("run");
    let err = ok(mmedpo(&[
        "train",
        "--model",
        llava.to_str().unwrap(),
        "--data",
        train.to_str().unwrap(),
        "--image-root",
        root().join("data/images").to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--lora-r",
        "4",
        "--lora-alpha",
        "8",
        "--batch-size",
        "2",
        "--max-steps",
        "3",
    ]));
    assert!(err.contains("trained 3 step(s) on 6 pair(s)"), "{err}");
}

#[test]
fn an_openai_judge_picks_and_a_rerun_redoes_nothing() {
    let dir = tmp("curate-http");
    let data = items(&dir);
    let llava = tiny_llava("curate-http-llava");
    let url = serve("Answer 2 contradicts it.\n```json\n{\"pick\": 2}\n```");
    let out = dir.join("text.json");
    let judge = format!("openai={url}@judge");
    let err = ok(curate(&llava, &data, &out, &judge));
    assert!(err.contains("3 picked from the model's answers"), "{err}");
    let first = std::fs::read(&out).unwrap();
    let transcripts = std::fs::read_to_string(dir.join("text.json.transcripts.jsonl")).unwrap();
    for (r, line) in read_records(&out).unwrap().iter().zip(transcripts.lines()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            r.rejected(),
            v["candidates"][1].as_str(),
            "the second sampled answer"
        );
    }
    // Killed after one item (a cut line too): the restart does the other two, same file.
    let progress = std::fs::read_to_string(dir.join("text.json.progress.jsonl")).unwrap();
    let kept: Vec<&str> = progress.lines().take(1).collect();
    std::fs::write(
        dir.join("text.json.progress.jsonl"),
        format!("{}\n{{\"id\": \"10", kept[0]),
    )
    .unwrap();
    std::fs::remove_file(&out).unwrap();
    ok(curate(&llava, &data, &out, &judge));
    assert_eq!(
        std::fs::read(&out).unwrap(),
        first,
        "resumed to the same file"
    );
    let again = std::fs::read_to_string(dir.join("text.json.transcripts.jsonl")).unwrap();
    assert_eq!(
        again.lines().count(),
        5,
        "3 first, then only the 2 unfinished items"
    );
    // Nothing left: a third run asks nobody.
    ok(curate(&llava, &data, &out, &judge));
    assert_eq!(
        std::fs::read_to_string(dir.join("text.json.transcripts.jsonl"))
            .unwrap()
            .lines()
            .count(),
        5
    );
    // Another judge on the same journals is refused, naming it.
    let o = curate(&llava, &data, &out, &format!("openai={url}@other-judge"));
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("judge openai model judge → openai model other-judge"),
        "{e}"
    );
}

#[test]
fn a_judge_without_usable_verdicts_fails_the_run_and_keeps_the_transcripts() {
    let dir = tmp("curate-garbage");
    let data = items(&dir);
    let llava = tiny_llava("curate-garbage-llava");
    let url = serve("I cannot help with that.");
    let out = dir.join("text.json");
    let o = curate(&llava, &data, &out, &format!("openai={url}@judge"));
    assert!(
        !o.status.success(),
        "a run in which every item failed exits non-zero"
    );
    let err = stderr(&o);
    assert!(
        err.contains("3 item(s) without a usable verdict")
            && err.contains("100, 101, 102")
            && err.contains("every item failed"),
        "{err}"
    );
    assert!(read_records(&out).unwrap().is_empty());
    let t = std::fs::read_to_string(dir.join("text.json.transcripts.jsonl")).unwrap();
    assert!(
        t.contains("could not be used"),
        "the corrective message is in the transcript"
    );
}
