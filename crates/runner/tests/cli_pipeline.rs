//! `mmedpo pipeline`: Algorithm 1 from one file on the tiny LLaVA with in-process local agents
//! (chain models: a judge that writes the hallucination, two relevance agents), every stage in its
//! folder; a rerun skips what is current, a changed setting reruns its stage and the ones after it,
//! `--from` starts over from a stage, `--ablations` reuses the main run's folders; bad sections are
//! refused naming the file, the section and the flag.

mod common;

use std::path::Path;

use common::{mmedpo, pipeline_file, stderr, tmp};

fn run(file: &Path, extra: &[&str]) -> String {
    let mut args = vec!["pipeline", "--config", file.to_str().unwrap()];
    args.extend(extra);
    let o = mmedpo(&args);
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    e
}

/// Every stage, in order.
const STAGES: [&str; 7] = [
    "text",
    "relevance",
    "visual",
    "assemble",
    "train",
    "eval-base",
    "eval",
];

fn line<'a>(log: &'a str, stage: &str) -> &'a str {
    log.lines()
        .find(|l| l.starts_with(&format!("[{stage}]")))
        .unwrap_or_else(|| panic!("no [{stage}] line in:\n{log}"))
}

#[test]
fn pipeline_runs_every_stage_and_reruns_only_what_changed() {
    let dir = tmp("pipeline");
    let file = pipeline_file(&dir, "pipeline", "max_new_tokens = 6");
    let out = dir.join("out");
    let first = run(&file, &[]);
    for stage in STAGES {
        assert!(line(&first, stage).contains("running in"), "{first}");
        assert!(out.join(stage).join("done.json").is_file(), "{stage}");
    }
    let text: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("text/text_pairs.json")).unwrap())
            .unwrap();
    assert_eq!(text.as_array().unwrap().len(), 3);
    let scored = std::fs::read_to_string(out.join("relevance/scored_pairs.json")).unwrap();
    assert!(scored.contains("\"weighted_score\": 0.7"), "{scored}");
    let pairs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("assemble/pairs.json")).unwrap())
            .unwrap();
    assert_eq!(
        pairs.as_array().unwrap().len(),
        6,
        "3 text + 3 visual pairs"
    );
    assert!(out
        .join("train/adapter/adapter_model.safetensors")
        .is_file());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    for side in ["base", "mmedpo"] {
        for k in ["open_recall", "closed_accuracy"] {
            assert!(summary[side][k].is_number(), "{side}.{k}: {summary}");
        }
    }
    let png = std::fs::read(out.join("summary.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "summary.png is a PNG");
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.starts_with("| metric | base | MMedPO | Δ |"), "{md}");

    // Nothing changed: every stage is skipped.
    let again = run(&file, &[]);
    for stage in STAGES {
        assert!(line(&again, stage).contains("current, skipped"), "{again}");
    }
    // One setting of the evaluation changed: only the evaluations rerun, saying what changed.
    let edited = std::fs::read_to_string(&file)
        .unwrap()
        .replace("max_new_tokens = 6", "max_new_tokens = 5");
    std::fs::write(&file, edited).unwrap();
    let changed = run(&file, &[]);
    assert!(line(&changed, "train").contains("current"), "{changed}");
    assert!(
        line(&changed, "eval").contains("changed max_new_tokens 6 → 5"),
        "{changed}"
    );
    // --from starts over from that stage; the ones before stay.
    let from = run(&file, &["--from", "train"]);
    assert!(line(&from, "assemble").contains("current"), "{from}");
    assert!(line(&from, "train").contains("(--from)"), "{from}");
    assert!(line(&from, "eval").contains("(--from)"), "{from}");

    // The ablation presets: the variants reuse the main run's text, relevance and visual stages
    // and the base evaluation, and rerun relevance for one agent and visual for global noise.
    let abl = run(&file, &["--ablations"]);
    assert!(abl.contains("[text] current (shared with"), "{abl}");
    assert!(abl.contains("[eval-base] current (shared with"), "{abl}");
    let table = std::fs::read_to_string(out.join("ablations.md")).unwrap();
    for row in [
        "| base |",
        "| stage 1+2 (MMedPO) |",
        "| stage 1 (text), no weights |",
        "| stage 1 (text), one agent |",
        "| stage 2 (visual) |",
        "| stage 2 (visual), global noise |",
    ] {
        assert!(table.contains(row), "{row} in\n{table}");
    }
    assert!(std::fs::read(out.join("ablations.png"))
        .unwrap()
        .starts_with(b"\x89PNG"));
    let one = out.join("ablations/stage-1-text-one-agent");
    assert!(one.join("relevance/done.json").is_file());
    let global = std::fs::read_to_string(
        out.join("ablations/stage-2-visual-global-noise/visual/stage.json"),
    )
    .unwrap();
    assert!(global.contains("global"), "{global}");
}

#[test]
fn bad_pipeline_files_name_the_file_the_section_and_the_key() {
    let dir = tmp("pipeline-bad");
    let file = pipeline_file(&dir, "pipeline-bad", "noize = 3");
    let o = mmedpo(&["pipeline", "--config", file.to_str().unwrap()]);
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(
        e.contains("pipeline.toml: [eval] unknown field `noize`"),
        "{e}"
    );
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("noize = 3", "data = \"x.json\"");
    std::fs::write(&file, text).unwrap();
    let e = stderr(&mmedpo(&["pipeline", "--config", file.to_str().unwrap()]));
    assert!(e.contains("[eval] data: set by the pipeline"), "{e}");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("task = \"vqa\"", "task = \"vqa\"\nstages = 3");
    std::fs::write(&file, text).unwrap();
    let e = stderr(&mmedpo(&["pipeline", "--config", file.to_str().unwrap()]));
    assert!(
        e.contains("pipeline.toml") && e.contains("stages") && e.contains("line 7"),
        "{e}"
    );
}
