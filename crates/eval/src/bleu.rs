//! Sentence BLEU exactly as `nltk.translate.bleu_score.sentence_bleu` computes it with
//! `SmoothingFunction().method7` (nltk 3.10): modified n-gram precisions as exact fractions, the
//! closest-reference brevity penalty, method 4 (zero counts → `1 / (2^k · 5 / ln(len))`) then
//! method 5 (average with the neighbouring orders, using the 5-gram precision), and only the orders
//! with a positive precision enter `exp(Σ w log p)`. No unigram match → 0.

use std::collections::HashMap;

fn ngram_counts<'a>(tokens: &'a [&'a str], n: usize) -> HashMap<&'a [&'a str], usize> {
    let mut m = HashMap::new();
    if tokens.len() >= n {
        for w in tokens.windows(n) {
            *m.entry(w).or_insert(0) += 1;
        }
    }
    m
}

/// `modified_precision` as (numerator, denominator) with one reference.
fn modified_precision(reference: &[&str], hypothesis: &[&str], n: usize) -> (usize, usize) {
    let counts = ngram_counts(hypothesis, n);
    let ref_counts = ngram_counts(reference, n);
    let numerator: usize = counts
        .iter()
        .map(|(g, c)| (*c).min(*ref_counts.get(g).unwrap_or(&0)))
        .sum();
    let denominator = counts.values().sum::<usize>().max(1);
    (numerator, denominator)
}

/// `sentence_bleu([reference], hypothesis, weights, smoothing_function=method7)`.
pub fn sentence_bleu(reference: &[&str], hypothesis: &[&str], weights: [f64; 4]) -> f64 {
    let hyp_len = hypothesis.len();
    let ref_len = reference.len();
    let p: Vec<(usize, usize)> = (1..=4)
        .map(|n| modified_precision(reference, hypothesis, n))
        .collect();
    if p[0].0 == 0 {
        return 0.0;
    }
    let bp = if hyp_len > ref_len {
        1.0
    } else if hyp_len == 0 {
        0.0
    } else {
        (1.0 - ref_len as f64 / hyp_len as f64).exp()
    };
    // Method 4.
    let mut incvnt = 1;
    let mut pn: Vec<f64> = Vec::with_capacity(4);
    for &(num, den) in &p {
        if num == 0 && hyp_len > 1 {
            let numerator = 1.0 / (2f64.powi(incvnt) * 5.0 / (hyp_len as f64).ln());
            pn.push(numerator / den as f64);
            incvnt += 1;
        } else {
            pn.push(num as f64 / den as f64);
        }
    }
    // Method 5.
    let (n5, d5) = modified_precision(reference, hypothesis, 5);
    let mut plus1 = pn.clone();
    plus1.push(n5 as f64 / d5 as f64);
    let mut prev = pn[0] + 1.0;
    for i in 0..4 {
        pn[i] = (prev + plus1[i] + plus1[i + 1]) / 3.0;
        prev = pn[i];
    }
    let s: f64 = weights
        .iter()
        .zip(&pn)
        .filter(|(_, p)| **p > 0.0)
        .map(|(w, p)| w * p.ln())
        .sum();
    bp * s.exp()
}

/// Individual n-gram BLEU (weights one-hot at `n`, 1..=4).
pub fn bleu_n(reference: &[&str], hypothesis: &[&str], n: usize) -> f64 {
    let mut w = [0.0; 4];
    w[n - 1] = 1.0;
    sentence_bleu(reference, hypothesis, w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<&str> {
        s.split_whitespace().collect()
    }

    #[test]
    fn empty_or_unmatched_hypotheses_score_zero() {
        let r = toks("no acute cardiopulmonary process is seen today");
        // method5 averages with neighbouring orders (and 1 + p1 below order 1): nltk gives
        // 1.1167470964180197 for identical 7-word sentences.
        let same = sentence_bleu(&r, &r, [0.25; 4]);
        assert!((same - 1.1167470964180197).abs() < 1e-12, "{same}");
        assert_eq!(sentence_bleu(&r, &[], [0.25; 4]), 0.0);
        assert_eq!(bleu_n(&r, &toks("completely different words"), 1), 0.0);
    }
}
