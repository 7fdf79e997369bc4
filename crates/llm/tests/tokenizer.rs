//! The committed Mistral tokenizer (`models/mistral-tokenizer/tokenizer.json`) against SentencePiece.
//!
//! Goldens: `tests/golden/make_tokenizer_goldens.py`. The MMedPO preference files: the committed
//! sample (`data/released-sample`) always, and the full released files too when they are beside
//! the clone (`../shared/data` or `$MMEDPO_SHARED_DIR/data`; CI has them). The test output says
//! which it checked.

use std::path::{Path, PathBuf};

use mmedpo_llm::Tokenizer;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tokenizer() -> Tokenizer {
    Tokenizer::from_file(&root().join("models/mistral-tokenizer/tokenizer.json")).unwrap()
}

fn goldens() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tokenizer_goldens.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// FNV-1a 64 over the ids as little-endian u32 (as the golden script).
fn fnv1a64(ids: &[u32]) -> String {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for id in ids {
        for b in id.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
    format!("{h:016x}")
}

#[test]
fn edge_cases_match_sentencepiece_with_and_without_bos() {
    let tok = tokenizer();
    let g = goldens();
    let cases = g["edge_cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    let mut mismatches = vec![];
    for case in cases {
        let text = case["text"].as_str().unwrap();
        if tok.encode_literal(text, false).unwrap() != ids(&case["ids"]) {
            mismatches.push(format!("{text:?} (no BOS)"));
        }
        if tok.encode_literal(text, true).unwrap() != ids(&case["ids_bos"]) {
            mismatches.push(format!("{text:?} (BOS)"));
        }
        // HF mode: `</s>` and friends written in the text become their ids.
        if tok.encode(text, false).unwrap() != ids(&case["hf_parse_ids"]) {
            mismatches.push(format!("{text:?} (HF parse mode)"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches: {mismatches:#?}",
        mismatches.len()
    );
    assert_eq!(tok.encode("a</s>", false).unwrap().last(), Some(&2));
    assert_eq!(tok.vocab_size(), 32000);
}

#[test]
fn every_turn_of_the_mmedpo_preference_files_matches_sentencepiece() {
    let tok = tokenizer();
    let g = goldens();
    for set in mmedpo_core::testing::released_data("tokenizer vs SentencePiece") {
        let key = match set.label {
            "sample" => "sample_hashes",
            _ => "shared_hashes",
        };
        let hashes: Vec<&str> = g[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap())
            .collect();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&set.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with("_dpo_weighted.json"))
            .collect();
        files.sort();
        let mut n = 0;
        let mut mismatches = vec![];
        for path in &files {
            let items: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            for item in items.as_array().unwrap() {
                for conv in ["conversations", "rejected_conversations"] {
                    for (t, turn) in item[conv].as_array().unwrap().iter().enumerate() {
                        let text = turn["value"].as_str().unwrap();
                        let plain = tok.encode_literal(text, false).unwrap();
                        let with_bos = tok.encode_literal(text, true).unwrap();
                        let ok = hashes.get(n) == Some(&fnv1a64(&plain).as_str())
                            && with_bos.first() == Some(&1)
                            && with_bos[1..] == plain[..];
                        if !ok {
                            mismatches.push(format!(
                                "{} id {} {conv}[{t}]",
                                path.display(),
                                item["id"]
                            ));
                        }
                        n += 1;
                    }
                }
            }
        }
        println!(
            "{}: {n} strings checked, {} mismatches",
            set.label,
            mismatches.len()
        );
        assert_eq!(
            n,
            hashes.len(),
            "{}: a different number of turns than the goldens",
            set.dir.display()
        );
        assert!(n > 0, "{}: no turns", set.dir.display());
        assert!(
            mismatches.is_empty(),
            "{} mismatches, first: {:?}",
            mismatches.len(),
            &mismatches[..mismatches.len().min(10)]
        );
    }
}
