//! ROUGE-L F as the Python `rouge` package (pltrdy, 1.0.1) computes it with `Rouge().get_scores`:
//! both texts split into "sentences" at every `.`, summary-level union-LCS over *sets* of words
//! (`exclusive=True`): `m` / `n` = distinct words of reference / prediction, the LCS of each
//! reference sentence with each prediction sentence reconstructed as the package does, their word
//! sets united, `F = 2PR / (P + R + 1e-8)`. Empty texts (which make the package raise) score 0.

use std::collections::HashSet;

fn sentences(text: &str) -> Vec<String> {
    text.split('.')
        .filter(|s| !s.is_empty())
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn words(sentence: &str) -> Vec<&str> {
    sentence.split(' ').collect()
}

/// The words of the LCS of `x` (reference) and `y` (prediction), reconstructed like `_recon_lcs`.
fn recon_lcs<'a>(x: &[&'a str], y: &[&str]) -> Vec<&'a str> {
    let (n, m) = (x.len(), y.len());
    let mut t = vec![vec![0usize; m + 1]; n + 1];
    for i in 1..=n {
        for j in 1..=m {
            t[i][j] = if x[i - 1] == y[j - 1] {
                t[i - 1][j - 1] + 1
            } else {
                t[i - 1][j].max(t[i][j - 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (n, m, vec![]);
    while i > 0 && j > 0 {
        if x[i - 1] == y[j - 1] {
            out.push(x[i - 1]);
            i -= 1;
            j -= 1;
        } else if t[i - 1][j] > t[i][j - 1] {
            i -= 1;
        } else {
            j -= 1;
        }
    }
    out.reverse();
    out
}

/// ROUGE-L F-measure of `prediction` against `reference`.
pub fn rouge_l(prediction: &str, reference: &str) -> f64 {
    let (hyp, refs) = (sentences(prediction), sentences(reference));
    if hyp.is_empty() || refs.is_empty() {
        return 0.0;
    }
    // rouge-1 (computed first by get_scores) raises on an empty word list too.
    let hyp_words: HashSet<&str> = hyp.iter().flat_map(|s| words(s)).collect();
    let ref_words: HashSet<&str> = refs.iter().flat_map(|s| words(s)).collect();
    let (m, n) = (ref_words.len(), hyp_words.len());
    let mut union: HashSet<&str> = HashSet::new();
    for r in &refs {
        let rw = words(r);
        for h in &hyp {
            union.extend(recon_lcs(&rw, &words(h)));
        }
    }
    let llcs = union.len() as f64;
    let (r, p) = (llcs / m as f64, llcs / n as f64);
    2.0 * ((p * r) / (p + r + 1e-8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_lcs_over_word_sets() {
        assert!((rouge_l("a b c", "a b c") - 2.0 * 1.0 / (2.0 + 1e-8)).abs() < 1e-12);
        assert_eq!(rouge_l("", "a b"), 0.0);
        assert_eq!(rouge_l(".", "a b"), 0.0);
        // Repeated words count once (sets).
        let f = rouge_l("lung lung lung", "lung nodule");
        assert!((f - 2.0 * (1.0 * 0.5) / (1.5 + 1e-8)).abs() < 1e-12, "{f}");
    }
}
