//! `mmedpo score-relevance` against OpenAI-schema servers on loopback (every pair scored, the
//! output in input order, a killed run resumed to the same file) and `mmedpo assemble`.

mod common;
use common::{mmedpo, serve, stderr, tmp};

#[test]
fn scores_every_pair_in_order_and_resumes_to_the_same_file() {
    let (a, b) = (serve("{\"score\": 0.7}"), serve("0.7"));
    let dir = tmp("relevance");
    let out = dir.join("scored.json");
    let run = || {
        mmedpo(&[
            "score-relevance",
            "--data",
            "data/default/pairs.json",
            "--agent",
            &format!("openai={a}@med42"),
            "--agent",
            &format!("openai={b}@biomistral"),
            "--concurrency",
            "3",
            "--timeout",
            "10",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let o = run();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("8 pairs: 8 scored (8 by consensus), 0 without any score"),
        "{}",
        stderr(&o)
    );
    let first = std::fs::read_to_string(&out).unwrap();
    let items: Vec<serde_json::Value> = serde_json::from_str(&first).unwrap();
    assert_eq!(items.len(), 8);
    assert!(items
        .iter()
        .enumerate()
        .all(|(i, v)| v["id"] == i && v["weighted_score"] == 0.7));
    let transcripts = std::fs::read_to_string(dir.join("scored.json.transcripts.jsonl")).unwrap();
    assert_eq!(transcripts.lines().count(), 8);
    assert!(
        transcripts.contains("Candidate answer"),
        "transcripts keep the prompts"
    );
    // Kill emulation: keep 3 progress lines and half of a fourth; the rerun scores exactly the rest.
    let progress = dir.join("scored.json.progress.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(&progress)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    std::fs::write(
        &progress,
        format!("{}\n{}", lines[..3].join("\n"), &lines[3][..5]),
    )
    .unwrap();
    std::fs::remove_file(&out).unwrap();
    let o = run();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), first);
    assert_eq!(
        std::fs::read_to_string(&progress).unwrap().lines().count(),
        8
    );
    // Other agents (or other data) on the same journals are refused, naming the change; with
    // --overwrite the run starts over.
    let other = |extra: &[&str]| {
        let mut v = vec![
            "score-relevance".to_string(),
            "--data".into(),
            "data/default/pairs.json".into(),
            "--agent".into(),
            format!("openai={a}@med42"),
            "--timeout".into(),
            "10".into(),
            "--out".into(),
            out.to_str().unwrap().into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        let v: Vec<&str> = v.iter().map(String::as_str).collect();
        mmedpo(&v)
    };
    let o = other(&[]);
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("agent[1] openai model biomistral → (absent)"),
        "{e}"
    );
    let o = other(&["--overwrite"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("8 scored"), "{}", stderr(&o));
}

#[test]
fn bad_agent_specs_are_explained() {
    let o = mmedpo(&[
        "score-relevance",
        "--data",
        "data/default/pairs.json",
        "--agent",
        "gpt4o",
        "--out",
        "/tmp/x.json",
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("openai=BASE_URL@MODEL"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn assemble_merges_weights_and_shuffles_reproducibly() {
    let dir = tmp("assemble");
    let visual = dir.join("visual.json");
    let mut items: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(common::root().join("data/default/pairs.json")).unwrap(),
    )
    .unwrap();
    for (i, v) in items.iter_mut().enumerate() {
        v["id"] = format!("v{i}").into();
        v["rejected_image"] = "mr-small.png".into();
        v["rejected_conversations"] = v["conversations"].clone();
        v["weighted_score"] = (0.5 + 0.05 * i as f64).into();
    }
    std::fs::write(&visual, serde_json::to_string(&items).unwrap()).unwrap();
    let run = |out: &std::path::Path, seed: &str| {
        mmedpo(&[
            "assemble",
            "--data",
            "data/default/pairs.json",
            "--data",
            visual.to_str().unwrap(),
            "--weight-mode",
            "paper",
            "--weight-stats",
            "per-source",
            "--seed",
            seed,
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let (a, b, c) = (dir.join("a.json"), dir.join("b.json"), dir.join("c.json"));
    for (p, seed) in [(&a, "1"), (&b, "1"), (&c, "2")] {
        let o = run(p, seed);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    assert_eq!(read(&a), read(&b));
    assert_ne!(read(&a), read(&c));
    let merged: Vec<serde_json::Value> = serde_json::from_str(&read(&a)).unwrap();
    assert_eq!(merged.len(), 16);
    assert!(merged
        .iter()
        .all(|v| (0.75..=1.25).contains(&v["weighted_score"].as_f64().unwrap())));
    let o = mmedpo(&[
        "assemble",
        "--data",
        "data/default/pairs.json",
        "--weight-mode",
        "loud",
        "--out",
        dir.join("d.json").to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("--weight-mode loud"),
        "{}",
        stderr(&o)
    );
    // The same file twice: every id in two inputs, refused (never a file with duplicate ids).
    let o = mmedpo(&[
        "assemble",
        "--data",
        "data/default/pairs.json",
        "--data",
        "data/default/pairs.json",
        "--seed",
        "1",
        "--out",
        dir.join("e.json").to_str().unwrap(),
    ]);
    assert!(!o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("ids 0, 1, 2, 3, 4, 5, 6, 7 are in more than one"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.join("e.json").exists());
}

#[test]
fn the_api_key_never_reaches_the_log_even_at_trace_level() {
    let a = serve("{\"score\": 0.6}");
    let dir = tmp("relevance-trace");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mmedpo"))
        .args([
            "score-relevance",
            "--data",
            "data/default/pairs.json",
            "--agent",
            &format!("openai={a}@med42"),
            "--api-key-env",
            "MMEDPO_TEST_TRACE_KEY",
            "--timeout",
            "10",
            "--out",
            dir.join("scored.json").to_str().unwrap(),
        ])
        .env("RUST_LOG", "trace")
        .env("MMEDPO_TEST_TRACE_KEY", "sk-trace-secret-987")
        .current_dir(common::root())
        .output()
        .unwrap();
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("TRACE") && log.contains("request"),
        "the log ran at trace level: {log}"
    );
    assert!(
        !log.contains("sk-trace-secret-987"),
        "the key is in the log"
    );
}

#[test]
fn failed_pairs_are_not_done_every_failure_exits_non_zero_and_bad_agents_stop_before_sending() {
    let dir = tmp("relevance-dead");
    let out = dir.join("scored.json");
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/v1", l.local_addr().unwrap())
    };
    let run = |url: &str| {
        mmedpo(&[
            "score-relevance",
            "--data",
            "data/default/pairs.json",
            "--agent",
            &format!("openai={url}@med42"),
            "--timeout",
            "2",
            "--max-rounds",
            "1",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let t = std::time::Instant::now();
    let o = run(&dead);
    assert!(!o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("every pair failed (8)"),
        "{}",
        stderr(&o)
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        t.elapsed()
    );
    let progress = std::fs::read_to_string(format!("{}.progress.jsonl", out.display())).unwrap();
    assert!(
        progress.lines().all(|l| l.contains("\"error\"")),
        "{progress}"
    );
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!(written
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r.get("weighted_score").is_none_or(|w| w.is_null())));
    // The server back: the failed pairs are retried, not taken as done.
    let good = serve("{\"score\": 0.4}");
    let o = run(&good);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("8 pairs: 8 scored"), "{}", stderr(&o));
    // Checked before any request.
    for (agent, extra, want) in [
        ("openai=localhost:1/v1@m", vec![], "needs a scheme"),
        (
            &format!("openai={dead}@m")[..],
            vec!["--timeout", "0"],
            "timeout = 0: must be",
        ),
        (
            &format!("openai={dead}@m")[..],
            vec!["--api-key-env", "MMEDPO_SURELY_UNSET_KEY"],
            "is not set",
        ),
    ] {
        let mut args = vec![
            "score-relevance",
            "--data",
            "data/default/pairs.json",
            "--agent",
            agent,
            "--out",
        ];
        let o2 = dir.join("never.json");
        args.push(o2.to_str().unwrap());
        args.extend(extra);
        let o = mmedpo(&args);
        assert!(
            !o.status.success() && stderr(&o).contains(want),
            "{want}: {}",
            stderr(&o)
        );
        assert!(!o2.exists());
    }
}
