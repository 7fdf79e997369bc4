//! Real kills: each long command is killed with SIGKILL at pseudo-random points (twice in a row,
//! three trials), resumed, and every file it wrote is compared with an uninterrupted run's; and two
//! processes started together on one `--out` leave one writer and the files of one run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{mmedpo, root, stderr, tiny_llava, tmp};

/// Every file under `dir` (recursively) by relative path, with the run-dependent parts masked: the
/// lock file, request timings in transcripts, and the order of lines in journals written by
/// concurrent workers (`sorted`).
fn snapshot(dir: &Path, sorted: &[&str]) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                out.push((rel, p));
            }
        }
    }
    let mut files = vec![];
    walk(dir, dir, &mut files);
    files
        .into_iter()
        .filter(|(rel, _)| !rel.contains(".lock"))
        .map(|(rel, p)| {
            let mut bytes = std::fs::read(&p).unwrap();
            if rel.contains("transcripts") {
                bytes = mask_millis(&String::from_utf8(bytes).unwrap()).into_bytes();
            }
            if sorted.iter().any(|s| rel.ends_with(s)) {
                let text = String::from_utf8(bytes).unwrap();
                let mut lines: Vec<&str> = text.lines().collect();
                lines.sort();
                bytes = lines.join("\n").into_bytes();
            }
            (rel, bytes)
        })
        .collect()
}

/// `"millis":123` → `"millis":0` (the only wall-clock value the journals hold).
fn mask_millis(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("\"millis\":") {
        let (head, tail) = rest.split_at(i + "\"millis\":".len());
        out.push_str(head);
        out.push('0');
        rest = tail.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// Deterministic kill points in (0.05 t, 0.95 t).
fn points(seed: u64, n: usize, t: Duration) -> Vec<Duration> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            t.mul_f64(0.05 + 0.9 * u)
        })
        .collect()
}

/// One kill test at a time: the kill points are fractions of a run's measured time, which other
/// tests running beside it would stretch.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn spawn(args: &[String]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_mmedpo"))
        .args(args)
        .env("RUST_LOG", "error")
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn run(args: &[String]) -> std::process::Output {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    mmedpo(&a)
}

/// Runs `args` uninterrupted with `dir` fresh, then three trials, each from a fresh `dir`: two
/// SIGKILLs at pseudo-random points of the uninterrupted run's duration, then a run to the end
/// (the runs after the first get `resume` appended); every file under `dir` must equal the
/// uninterrupted run's. Returns how many kills landed while the process was still running.
fn killed_runs_resume_to_the_same_files(
    name: &str,
    dir: &Path,
    args: &[String],
    resume: &[&str],
    sorted: &[&str],
) -> usize {
    let fresh = || {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
    };
    let _one = serial();
    fresh();
    let start = Instant::now();
    let o = run(args);
    let t = start.elapsed();
    assert!(o.status.success(), "{name}: {}", stderr(&o));
    let full = snapshot(dir, sorted);
    assert!(!full.is_empty(), "{name}: no files");
    let mut again = args.to_vec();
    again.extend(resume.iter().map(|s| s.to_string()));
    let mut landed = 0;
    for trial in 0..3u64 {
        // A kill after the process ended proves nothing: then the trial starts again with the
        // kill points moved earlier (runs are faster when the machine is less busy).
        let mut scale = 1.0;
        loop {
            fresh();
            let mut here = 0;
            for (k, at) in points(trial * 7 + name.len() as u64, 2, t)
                .into_iter()
                .enumerate()
            {
                let mut child = spawn(if k == 0 { args } else { &again });
                std::thread::sleep(at.mul_f64(scale));
                if child.try_wait().unwrap().is_none() {
                    here += 1;
                }
                let _ = child.kill(); // SIGKILL
                let _ = child.wait();
            }
            if here == 2 || scale < 0.1 {
                landed += here;
                break;
            }
            scale *= 0.5;
        }
        let o = run(&again);
        assert!(
            o.status.success(),
            "{name} trial {trial}: the resumed run failed: {}",
            stderr(&o)
        );
        let got = snapshot(dir, sorted);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            full.keys().collect::<Vec<_>>(),
            "{name} trial {trial}: other files"
        );
        for (k, v) in &full {
            if got[k] != *v {
                let keep = std::env::temp_dir().join(format!("mmedpo-k9-{name}"));
                let _ = std::fs::create_dir_all(&keep);
                std::fs::write(keep.join("resumed"), &got[k]).unwrap();
                std::fs::write(keep.join("uninterrupted"), v).unwrap();
                panic!(
                    "{name} trial {trial}: {k} differs from the uninterrupted run's (both in {})",
                    keep.display()
                );
            }
        }
    }
    eprintln!(
        "{name}: uninterrupted {:.2} s; {landed} of 6 kills landed mid-run",
        t.as_secs_f64()
    );
    landed
}

/// `n` pairs cycling through the default pairs, with ids of their own.
fn many_pairs(dir: &Path, n: usize) -> PathBuf {
    let base: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(root().join("data/default/pairs.json")).unwrap(),
    )
    .unwrap();
    let items: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let mut v = base[i % base.len()].clone();
            v["id"] = serde_json::json!(i);
            v
        })
        .collect();
    let p = dir.join("pairs.json");
    std::fs::write(&p, serde_json::to_string_pretty(&items).unwrap()).unwrap();
    p
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn score_killed_and_resumed_writes_the_same_files() {
    let dir = tmp("k9-score");
    let model = tiny_llava("k9-score-model");
    let data = many_pairs(&dir, 48);
    let out = dir.join("out");
    let args = s(&[
        "score",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--image-root",
        "data/images",
        "--batch-size",
        "2",
        "--out",
        out.join("scores.jsonl").to_str().unwrap(),
    ]);
    let landed = killed_runs_resume_to_the_same_files("score", &out, &args, &[], &[]);
    assert!(landed >= 4, "only {landed} of 6 kills landed mid-run");
}

#[test]
fn eval_killed_and_resumed_writes_the_same_files() {
    let dir = tmp("k9-eval");
    let model = tiny_llava("k9-eval-model");
    let base: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(root().join("data/default/vqa_test.json")).unwrap(),
    )
    .unwrap();
    let items: Vec<serde_json::Value> = (0..36)
        .map(|i| {
            let mut v = base[i % base.len()].clone();
            v["question_id"] = serde_json::json!(i);
            v
        })
        .collect();
    let data = dir.join("test.json");
    std::fs::write(&data, serde_json::to_string(&items).unwrap()).unwrap();
    let out = dir.join("out");
    let args = s(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--image-root",
        "data/images",
        "--task",
        "vqa",
        "--max-new-tokens",
        "6",
        "--batch-size",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    let landed = killed_runs_resume_to_the_same_files("eval", &out, &args, &[], &[]);
    assert!(landed >= 4, "only {landed} of 6 kills landed mid-run");
}

/// `visual-pairs` over 40 pairs into `DIR/out`, with `extra` flags.
fn visual_args(dir: &Path, extra: &[&str]) -> (Vec<String>, PathBuf) {
    let data = many_pairs(dir, 40);
    let out = dir.join("out");
    let images = root().join("data/images");
    let mut args = s(&[
        "visual-pairs",
        "--data",
        data.to_str().unwrap(),
        "--image-root",
        images.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    args.extend(s(extra));
    (args, out)
}

#[test]
fn visual_pairs_killed_and_resumed_writes_the_same_files() {
    let dir = tmp("k9-visual");
    let (args, out) = visual_args(&dir, &["--overlays", "--batch-size", "2"]);
    let landed = killed_runs_resume_to_the_same_files("visual-pairs", &out, &args, &[], &[]);
    assert!(landed >= 4, "only {landed} of 6 kills landed mid-run");
}

#[test]
fn score_relevance_killed_and_resumed_writes_the_same_files() {
    let dir = tmp("k9-relevance");
    let data = many_pairs(&dir, 400);
    let (a, b) = (serve_many("{\"score\": 0.7}"), serve_many("0.4"));
    let out = dir.join("out");
    let args = s(&[
        "score-relevance",
        "--data",
        data.to_str().unwrap(),
        "--agent",
        &format!("openai={a}@med42"),
        "--agent",
        &format!("openai={b}@biomistral"),
        "--concurrency",
        "4",
        "--timeout",
        "10",
        "--out",
        out.join("scored.json").to_str().unwrap(),
    ]);
    // Four workers append in the order they finish: the journals are compared as sets of lines.
    let landed = killed_runs_resume_to_the_same_files(
        "score-relevance",
        &out,
        &args,
        &[],
        &["progress.jsonl", "transcripts.jsonl"],
    );
    assert!(landed >= 4, "only {landed} of 6 kills landed mid-run");
}

/// An OpenAI-schema stub that serves many requests (the kill trials send thousands).
fn serve_many(reply: &'static str) -> String {
    mmedpo_scorer::testing::serve(100_000, move |_| {
        mmedpo_scorer::testing::StubReply::content(reply)
    })
    .url
}

#[test]
fn curate_text_killed_and_resumed_writes_the_same_files() {
    let dir = tmp("k9-curate");
    let llava = tiny_llava("k9-curate-model");
    let items: Vec<serde_json::Value> = (0..30)
        .map(|i| {
            serde_json::json!({"id": i, "image": if i % 2 == 0 { "chest-xray-pa-nodules.png" } else { "ct-small.png" },
                "conversations": [{"from": "human", "value": format!("<image>\nQuestion {i}?")},
                                  {"from": "gpt", "value": "Yes"}]})
        })
        .collect();
    let data = dir.join("items.json");
    std::fs::write(&data, serde_json::to_string(&items).unwrap()).unwrap();
    let url = serve_many("Answer 2 contradicts it.\n```json\n{\"pick\": 2}\n```");
    let out = dir.join("out");
    let images = root().join("data/images");
    let args = s(&[
        "curate-text",
        "--data",
        data.to_str().unwrap(),
        "--image-root",
        images.to_str().unwrap(),
        "--model",
        llava.to_str().unwrap(),
        "--n",
        "3",
        "--max-new-tokens",
        "6",
        "--concurrency",
        "2",
        "--judge",
        &format!("openai={url}@judge"),
        "--out",
        out.join("text.json").to_str().unwrap(),
    ]);
    let landed = killed_runs_resume_to_the_same_files("curate-text", &out, &args, &[], &[]);
    assert!(landed >= 4, "only {landed} of 6 kills landed mid-run");
}

fn train_args(dir: &Path, name: &str, devices: &str) -> (Vec<String>, PathBuf) {
    let model = tiny_llava(&format!("{name}-model"));
    let out = dir.join("out");
    let args = s(&[
        "train",
        "--model",
        model.to_str().unwrap(),
        "--data",
        "data/default/pairs.json",
        "--image-root",
        "data/images",
        "--lora-r",
        "4",
        "--lora-alpha",
        "8",
        "--learning-rate",
        "5e-3",
        "--batch-size",
        "1",
        "--grad-accum",
        "2",
        "--max-steps",
        "8",
        "--save-steps",
        "1",
        "--devices",
        devices,
        "--out",
        out.to_str().unwrap(),
    ]);
    (args, out)
}

#[test]
fn train_killed_and_resumed_writes_the_same_files() {
    let dir = tmp("k9-train");
    let (args, out) = train_args(&dir, "k9-train", "1");
    let landed = killed_runs_resume_to_the_same_files("train", &out, &args, &["--resume"], &[]);
    assert!(landed >= 4, "only {landed} of 6 kills landed mid-run");
}

#[test]
fn train_on_two_devices_killed_and_resumed_writes_the_same_files() {
    let dir = tmp("k9-train2");
    let (args, out) = train_args(&dir, "k9-train2", "2");
    let landed =
        killed_runs_resume_to_the_same_files("train --devices 2", &out, &args, &["--resume"], &[]);
    assert!(landed >= 4, "only {landed} of 6 kills landed mid-run");
}

/// Two processes started together on one `--out`: one runs, the other is refused naming the
/// lock, and the files are those of a single run.
#[test]
fn two_processes_on_one_out_leave_one_writer() {
    let dir = tmp("k9-two");
    let (args, out) = visual_args(&dir, &[]);
    let _one = serial();
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let single = snapshot(&out, &[]);
    let mut refusals = 0;
    for trial in 0..3 {
        let _ = std::fs::remove_dir_all(&out);
        let spawn_piped = || {
            Command::new(env!("CARGO_BIN_EXE_mmedpo"))
                .args(&args)
                .env("RUST_LOG", "error")
                .current_dir(root())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (p, q) = (spawn_piped(), spawn_piped());
        let (p, q) = (p.wait_with_output().unwrap(), q.wait_with_output().unwrap());
        let ok = [&p, &q].iter().filter(|o| o.status.success()).count();
        for o in [&p, &q].iter().filter(|o| !o.status.success()) {
            let e = stderr(o);
            assert!(
                e.contains("lock") && e.contains(out.to_str().unwrap()),
                "trial {trial}: the second process failed otherwise: {e}"
            );
            refusals += 1;
        }
        // Both succeed only when the first had finished before the second started (then the
        // second found the output complete and did nothing).
        assert!(ok >= 1, "trial {trial}: neither process finished");
        assert_eq!(snapshot(&out, &[]), single, "trial {trial}");
    }
    assert!(
        refusals >= 1,
        "the two processes never overlapped: the lock went untested"
    );
}

/// `mmedpo pipeline` killed anywhere in Algorithm 1 (curation, scoring, visual pairs, training,
/// evaluation) and run again ends with the files of an uninterrupted run, stamps included.
#[test]
fn pipeline_killed_and_resumed_writes_the_same_files() {
    let dir = tmp("k9-pipeline");
    let file = common::pipeline_file(&dir, "k9-pipeline", "max_new_tokens = 6");
    let out = dir.join("out");
    let args = s(&["pipeline", "--config", file.to_str().unwrap()]);
    let landed = killed_runs_resume_to_the_same_files(
        "pipeline",
        &out,
        &args,
        &[],
        &["progress.jsonl", "transcripts.jsonl"],
    );
    assert!(landed >= 4, "only {landed} of 6 kills landed mid-run");
}
