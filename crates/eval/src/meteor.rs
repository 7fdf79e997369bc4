//! METEOR exactly as `nltk.translate.meteor_score.meteor_score` computes it (nltk 3.10): words
//! aligned by exact match, then Porter-stem match (NLTK mode), then WordNet-synonym match (of the
//! stems the previous stage leaves, as nltk passes them on), each
//! stage scanning the hypothesis from its end and taking the last free reference position; then
//! `Fmean = P·R / (α·P + (1 − α)·R)`, `penalty = γ · (chunks / matches)^β`, score = (1 − penalty) · Fmean
//! with α 0.9, β 3, γ 0.5; no match → 0.

use std::collections::HashMap;

use crate::porter::stem;
use crate::wordnet::WordNet;

type Enum = Vec<(usize, String)>;

/// Reference positions of each word (in order; matching pops from the end).
fn positions(refs: &Enum) -> HashMap<&str, Vec<usize>> {
    let mut p: HashMap<&str, Vec<usize>> = HashMap::new();
    for (j, (_, w)) in refs.iter().enumerate() {
        p.entry(w.as_str()).or_default().push(j);
    }
    p
}

/// Scans the hypothesis from its end; `pick` returns the reference position a word matches (and
/// consumes it). Returns the matches and both lists without the matched words.
fn align(
    hyp: &Enum,
    refs: &Enum,
    mut pick: impl FnMut(&str) -> Option<usize>,
) -> (Vec<(usize, usize)>, Enum, Enum) {
    let (mut matches, mut mh, mut mr) = (vec![], vec![false; hyp.len()], vec![false; refs.len()]);
    for i in (0..hyp.len()).rev() {
        if let Some(j) = pick(&hyp[i].1) {
            mh[i] = true;
            mr[j] = true;
            matches.push((hyp[i].0, refs[j].0));
        }
    }
    let keep = |v: &Enum, m: &[bool]| {
        v.iter()
            .zip(m)
            .filter(|(_, &x)| !x)
            .map(|(p, _)| p.clone())
            .collect()
    };
    (matches, keep(hyp, &mh), keep(refs, &mr))
}

/// `_match_enums`: exact matches, scanning the hypothesis backwards, last reference position first.
fn match_enums(hyp: &Enum, refs: &Enum) -> (Vec<(usize, usize)>, Enum, Enum) {
    let mut pos = positions(refs);
    align(hyp, refs, |w| pos.get_mut(w).and_then(Vec::pop))
}

/// `_enum_wordnetsyn_match`: a hypothesis word matches the free reference position furthest right
/// among its WordNet synonyms (itself included).
fn wordnet_match(hyp: &Enum, refs: &Enum, wn: &WordNet) -> (Vec<(usize, usize)>, Enum, Enum) {
    let mut pos = positions(refs);
    align(hyp, refs, |w| {
        let syns = wn.synonyms(w);
        let best = syns
            .iter()
            .filter_map(|s| pos.get(s.as_str()).and_then(|p| p.last()).map(|&j| (j, s)))
            .max_by_key(|(j, _)| *j)?;
        let (j, syn) = (best.0, best.1.clone());
        pos.get_mut(syn.as_str()).and_then(Vec::pop);
        Some(j)
    })
}

fn count_chunks(matches: &[(usize, usize)]) -> usize {
    let mut chunks = 1;
    for w in matches.windows(2) {
        if !(w[1].0 == w[0].0 + 1 && w[1].1 == w[0].1 + 1) {
            chunks += 1;
        }
    }
    chunks
}

/// `single_meteor_score(reference, hypothesis)` on pre-tokenised words.
pub fn meteor(reference: &[&str], hypothesis: &[&str], wn: &WordNet) -> f64 {
    let (alpha, beta, gamma) = (0.9, 3.0, 0.5);
    let hyp: Enum = hypothesis
        .iter()
        .map(|w| w.to_lowercase())
        .enumerate()
        .collect();
    let refs: Enum = reference
        .iter()
        .map(|w| w.to_lowercase())
        .enumerate()
        .collect();
    let (exact, h, r) = match_enums(&hyp, &refs);
    let stem_of = |v: &Enum| -> Enum { v.iter().map(|(i, w)| (*i, stem(w))).collect() };
    let (stemmed, h2, r2) = match_enums(&stem_of(&h), &stem_of(&r));
    // As in nltk, the words left after the stem stage go on to the synonym stage *stemmed*.
    let (syn, _, _) = wordnet_match(&h2, &r2, wn);
    let mut matches: Vec<(usize, usize)> = exact.into_iter().chain(stemmed).chain(syn).collect();
    matches.sort_by_key(|m| m.0);
    let n = matches.len() as f64;
    if n == 0.0 || hyp.is_empty() || refs.is_empty() {
        return 0.0;
    }
    let (precision, recall) = (n / hyp.len() as f64, n / refs.len() as f64);
    let fmean = precision * recall / (alpha * precision + (1.0 - alpha) * recall);
    let frag = count_chunks(&matches) as f64 / n;
    (1.0 - gamma * frag.powf(beta)) * fmean
}
