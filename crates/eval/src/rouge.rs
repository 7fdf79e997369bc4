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
///
/// The package keeps the whole length table to walk it back; the walk only asks, at each cell,
/// whether the words match and else whether the cell above is larger than the one to the left.
/// Those answers are fixed during the forward pass, so two rows of lengths and two bits per cell
/// (n·m/4 bytes instead of 8·n·m) give the same walk and the same words.
fn recon_lcs<'a>(x: &[&'a str], y: &[&str]) -> Vec<&'a str> {
    const DIAG: u8 = 0;
    const UP: u8 = 1;
    const LEFT: u8 = 2;
    let (n, m) = (x.len(), y.len());
    let mut dirs = vec![0u8; (n * m).div_ceil(4)];
    let set = |dirs: &mut [u8], i: usize, j: usize, d: u8| {
        let k = i * m + j;
        dirs[k / 4] |= d << (2 * (k % 4));
    };
    let get = |dirs: &[u8], i: usize, j: usize| {
        let k = i * m + j;
        (dirs[k / 4] >> (2 * (k % 4))) & 3
    };
    let (mut prev, mut row) = (vec![0u32; m + 1], vec![0u32; m + 1]);
    for i in 1..=n {
        row[0] = 0;
        for j in 1..=m {
            let (value, d) = if x[i - 1] == y[j - 1] {
                (prev[j - 1] + 1, DIAG)
            } else if prev[j] > row[j - 1] {
                (prev[j], UP)
            } else {
                (row[j - 1], LEFT)
            };
            row[j] = value;
            set(&mut dirs, i - 1, j - 1, d);
        }
        std::mem::swap(&mut prev, &mut row);
    }
    let (mut i, mut j, mut out) = (n, m, vec![]);
    while i > 0 && j > 0 {
        match get(&dirs, i - 1, j - 1) {
            DIAG => {
                out.push(x[i - 1]);
                i -= 1;
                j -= 1;
            }
            UP => i -= 1,
            _ => j -= 1,
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
