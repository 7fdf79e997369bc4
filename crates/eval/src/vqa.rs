//! Med-VQA scores, as `eval/eval_vqa.py` computes them on normalised strings.

use std::collections::HashMap;

use crate::normalize::normalize_word;

/// Unigram counts of a whitespace-split, lowercased string (`split_sentence(s, 1)`).
pub fn unigram_counts(s: &str) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for w in s.to_lowercase().split_whitespace() {
        *m.entry(w.to_string()).or_insert(0) += 1;
    }
    m
}

/// Closed questions: 1 when the normalised reference is a substring of the normalised prediction.
pub fn closed_hit(prediction: &str, reference: &str) -> f64 {
    let (p, r) = (
        normalize_word(&prediction.to_lowercase()),
        normalize_word(&reference.to_lowercase()),
    );
    if p.contains(&r) {
        1.0
    } else {
        0.0
    }
}

/// Open questions: the script's recall, `tp / (tp + fn)` over unigram counts, where `tp` sums the
/// *prediction's* counts of shared words and `fn` the reference's counts of missed words; 0 when
/// either side is empty or nothing is shared. (The strings are normalised twice, as the script does:
/// once in `evaluate`, once in `calculate_f1score`.)
pub fn open_recall(prediction: &str, reference: &str) -> f64 {
    let (p, r) = (
        normalize_word(&prediction.to_lowercase()),
        normalize_word(&reference.to_lowercase()),
    );
    let cand = unigram_counts(&normalize_word(&p));
    let refs = unigram_counts(&normalize_word(&r));
    if cand.is_empty() || refs.is_empty() {
        return 0.0;
    }
    let tp: usize = cand
        .iter()
        .filter(|(w, _)| refs.contains_key(*w))
        .map(|(_, c)| c)
        .sum();
    let fn_: usize = refs
        .iter()
        .filter(|(w, _)| !cand.contains_key(*w))
        .map(|(_, c)| c)
        .sum();
    if tp == 0 {
        0.0
    } else {
        tp as f64 / (tp + fn_) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_is_a_substring_test_after_normalisation() {
        assert_eq!(closed_hit("Yes, there is a nodule.", " Yes"), 1.0);
        assert_eq!(closed_hit("No.", "yes"), 0.0);
        // The substring rule counts "yes" inside "yesterday".
        assert_eq!(closed_hit("yesterday", "yes"), 1.0);
    }

    #[test]
    fn open_recall_counts_prediction_occurrences() {
        assert_eq!(open_recall("left lung left", "left lung"), 1.0);
        assert!((open_recall("the left kidney", "left lung") - 0.5).abs() < 1e-12);
        assert_eq!(open_recall("", "lung"), 0.0);
        assert_eq!(open_recall("...", "lung"), 0.0);
    }
}
