//! `mmedpo visual-pairs` on real scans with the tiny MedKLIP: a valid preference file, noised PNGs
//! that keep the original's kind and size, overlays, unreadable images reported by id and path,
//! and a killed run resumed to the same files as an uninterrupted one.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{mmedpo, root, stderr, tmp};
use mmedpo::core::record::read_records;

fn pairs(dir: &Path) -> std::path::PathBuf {
    // Items in the released VQA-RAD format; several share an image, one image is missing.
    let images = [
        "chest-xray-pa-nodules.png",
        "ct-small.png",
        "chest-xray-pa-nodules.png",
        "missing.png",
    ];
    let items: Vec<serde_json::Value> = (0..10)
        .map(|i| {
            serde_json::json!({
                "id": i, "image": images[i % 4],
                "conversations": [{"from": "human", "value": format!("<image>\nQuestion {i}?")},
                                  {"from": "gpt", "value": format!(" Answer {i}")}],
                "rejected_conversations": [{"from": "human", "value": format!("<image>\nQuestion {i}?")},
                                           {"from": "gpt", "value": " wrong"}],
                "weighted_score": 0.5,
            })
        })
        .collect();
    // Plain QA items (no rejected side) are accepted too.
    let mut items = items;
    for item in items.iter_mut().skip(1).step_by(2) {
        item.as_object_mut()
            .unwrap()
            .remove("rejected_conversations");
    }
    let p = dir.join("pairs.json");
    std::fs::write(&p, serde_json::to_string(&items).unwrap()).unwrap();
    p
}

fn run(data: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let root_images = root().join("data/images");
    let mut args = vec![
        "visual-pairs",
        "--data",
        data.to_str().unwrap(),
        "--image-root",
        root_images.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--batch-size",
        "2",
    ];
    args.extend_from_slice(extra);
    mmedpo(&args)
}

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for sub in ["", "images", "overlays"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in entries.flatten() {
            if e.path().is_file() {
                out.insert(
                    format!("{sub}/{}", e.file_name().to_string_lossy()),
                    std::fs::read(e.path()).unwrap(),
                );
            }
        }
    }
    out
}

#[test]
fn visual_pairs_are_valid_and_only_the_lesion_region_changes() {
    let dir = tmp("visual-valid");
    let data = pairs(&dir);
    let out = dir.join("out");
    let o = run(&data, &out, &["--overlays"]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    // The missing image: each of its items named with the path; the run went on.
    for id in [3, 7] {
        assert!(
            err.contains(&format!("item {id}: ")) && err.contains("missing.png"),
            "{err}"
        );
    }
    let recs = read_records(&out.join("visual_pairs.json")).unwrap();
    assert_eq!(recs.len(), 8, "10 items, 2 with an unreadable image");
    assert_eq!(
        recs[0].id.to_string(),
        "0-visual",
        "a visual pair has an id of its own"
    );
    let original = image::open(root().join("data/images/chest-xray-pa-nodules.png"))
        .unwrap()
        .to_luma8();
    let mut scores = BTreeMap::new();
    for r in &recs {
        assert_eq!(
            r.chosen(),
            r.rejected(),
            "the same ground-truth answer in both"
        );
        assert_eq!(r.conversations, r.rejected_conversations);
        let s = r.weighted_score.unwrap();
        assert!(s > 0.0 && s < 1.0);
        assert_eq!(
            *scores.entry(r.image.clone()).or_insert(s),
            s,
            "one score per image"
        );
        let noised = image::open(r.rejected_image.as_ref().unwrap()).unwrap();
        let noised = noised
            .as_luma8()
            .expect("a gray scan stays one-channel gray");
        if r.image.starts_with("chest") {
            assert_eq!(noised.dimensions(), original.dimensions());
            let same = noised
                .pixels()
                .zip(original.pixels())
                .filter(|(a, b)| a == b)
                .count();
            let frac = same as f64 / original.len() as f64;
            // ~83% of this scan is in the mask (fixture goldens); speckle keeps ~3% by chance.
            assert!((0.1..0.3).contains(&frac), "unchanged fraction {frac}");
        }
    }
    assert_ne!(
        std::fs::read(recs[0].rejected_image.as_ref().unwrap()).unwrap(),
        std::fs::read(recs[2].rejected_image.as_ref().unwrap()).unwrap(),
        "items sharing an image get their own noise draw"
    );
    for name in ["chest-xray-pa-nodules", "ct-small"] {
        let o = image::open(out.join(format!("overlays/{name}.png"))).unwrap();
        assert!(o.as_rgb8().is_some());
    }
}

#[test]
fn a_killed_run_resumes_to_the_same_files() {
    let dir = tmp("visual-resume");
    let data = pairs(&dir);
    let (a, b) = (dir.join("a"), dir.join("b"));
    let extra = &["--noise", "diffusion"][..];
    {
        assert!(run(&data, &a, extra).status.success());
        let whole = files(&a);
        // The state a kill leaves: 3 items logged, a 4th image written but not logged, a cut
        // progress line, a half-written temp PNG, no preference file.
        std::fs::create_dir_all(b.join("images")).unwrap();
        let progress = String::from_utf8(whole["/progress.jsonl"].clone()).unwrap();
        let lines: Vec<&str> = progress.lines().collect();
        let cut = format!(
            "{}\n{}\n{}\n{}",
            lines[0],
            lines[1],
            lines[2],
            &lines[3][..10]
        );
        std::fs::write(b.join("progress.jsonl"), cut).unwrap();
        std::fs::write(b.join("manifest.json"), &whole["/manifest.json"]).unwrap();
        for line in &lines[..4] {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let name = Path::new(v["rejected_image"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_owned();
            std::fs::write(
                b.join("images").join(&name),
                &whole[&format!("images/{}", name.to_string_lossy())],
            )
            .unwrap();
        }
        // A kill's temporary (the name `mmedpo::core::journal::write_atomic` gives) is removed.
        std::fs::write(b.join("images/.9.png.partial"), b"half a png").unwrap();
        let o = run(&data, &b, extra);
        assert!(o.status.success(), "{}", stderr(&o));
        let resumed = files(&b);
        assert_eq!(
            resumed.keys().collect::<Vec<_>>(),
            whole.keys().collect::<Vec<_>>()
        );
        let norm = |bytes: &[u8]| {
            let text = String::from_utf8_lossy(bytes).into_owned();
            text.replace(a.to_str().unwrap(), "OUT")
                .replace(b.to_str().unwrap(), "OUT")
        };
        for (k, v) in &whole {
            if k == "/visual_pairs.json" {
                // Absolute rejected_image paths differ by folder; the rest is identical.
                assert_eq!(norm(v), norm(&resumed[k]));
            } else if k == "/progress.jsonl" {
                // The journal's order follows the work; the same items, once each.
                let sorted = |t: String| {
                    let mut l: Vec<String> = t.lines().map(String::from).collect();
                    l.sort();
                    l
                };
                assert_eq!(sorted(norm(v)), sorted(norm(&resumed[k])));
            } else {
                assert!(resumed[k] == *v, "{k} differs after the resume");
            }
        }
    }
    // Other settings in the same folder are refused instead of mixed.
    let o = run(&data, &a, &["--noise", "speckle-clamped"]);
    assert!(
        !o.status.success() && stderr(&o).contains("noise diffusion → speckle-clamped"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_item_id_ending_in_tmp_keeps_its_image_across_runs() {
    let dir = tmp("visual-tmp-id");
    let item = serde_json::json!([{
        "id": "scan.tmp", "image": "ct-small.png",
        "conversations": [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A"}],
    }]);
    let data = dir.join("pairs.json");
    std::fs::write(&data, item.to_string()).unwrap();
    let out = dir.join("out");
    for run_no in 0..2 {
        let o = run(&data, &out, &[]);
        assert!(o.status.success(), "run {run_no}: {}", stderr(&o));
        assert!(
            out.join("images/scan.tmp.png").is_file(),
            "run {run_no}: the item's image was taken for a stale temporary"
        );
    }
    let pairs = read_records(&out.join("visual_pairs.json")).unwrap();
    assert!(pairs[0].rejected_image().ends_with("scan.tmp.png"));
}
