//! WordNet 3.0 synonyms, as METEOR asks nltk's `WordNetCorpusReader` for them: the lemma names
//! of `wordnet.synsets(word)` over nouns, verbs, adjectives and adverbs, each part of speech looked
//! up through nltk's `_morphy` (the exception list if the word is in it, else one pass of the
//! detachment rules; then every candidate that the index has for that part of speech).
//!
//! Data: the WordNet database files (`index.{noun,verb,adj,adv}`, `data.*`, `*.exc`), e.g. Debian's
//! `wordnet-base` in `/usr/share/wordnet` — the same files nltk's `wordnet` corpus holds.
//! The `data.*` files are read into memory and parsed lazily at the offsets the index gives.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The default location of the WordNet files (Debian/Ubuntu `wordnet-base`).
pub const DEFAULT_DIR: &str = "/usr/share/wordnet";

const POS: [(char, &str); 4] = [('n', "noun"), ('v', "verb"), ('a', "adj"), ('r', "adv")];

fn substitutions(pos: char) -> &'static [(&'static str, &'static str)] {
    match pos {
        'n' => &[
            ("s", ""),
            ("ses", "s"),
            ("ves", "f"),
            ("xes", "x"),
            ("zes", "z"),
            ("ches", "ch"),
            ("shes", "sh"),
            ("men", "man"),
            ("ies", "y"),
        ],
        'v' => &[
            ("s", ""),
            ("ies", "y"),
            ("es", "e"),
            ("es", ""),
            ("ed", "e"),
            ("ed", ""),
            ("ing", "e"),
            ("ing", ""),
        ],
        'a' => &[("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
        _ => &[],
    }
}

/// A loaded WordNet.
pub struct WordNet {
    /// lemma → part of speech → synset offsets.
    index: HashMap<String, HashMap<char, Vec<usize>>>,
    exceptions: HashMap<char, HashMap<String, Vec<String>>>,
    data: HashMap<char, Vec<u8>>,
}

impl std::fmt::Debug for WordNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WordNet")
            .field("lemmas", &self.index.len())
            .finish()
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::WordNet {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

impl WordNet {
    /// Loads the database from `dir` (`$MMEDPO_WORDNET` or [`DEFAULT_DIR`] when `None`).
    pub fn open(dir: Option<&Path>) -> Result<Self> {
        let dir: PathBuf = match dir {
            Some(d) => d.to_path_buf(),
            None => std::env::var_os("MMEDPO_WORDNET")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR)),
        };
        let mut index: HashMap<String, HashMap<char, Vec<usize>>> = HashMap::new();
        let mut exceptions = HashMap::new();
        let mut data = HashMap::new();
        for (pos, name) in POS {
            let path = dir.join(format!("index.{name}"));
            for (n, line) in read(&path)?.lines().enumerate() {
                if line.starts_with(' ') {
                    continue;
                }
                let bad = || Error::WordNet {
                    path: path.clone(),
                    message: format!("line {}: malformed", n + 1),
                };
                let t: Vec<&str> = line.split_whitespace().collect();
                let (lemma, n_synsets, n_pointers) = (
                    t.first().ok_or_else(bad)?,
                    t.get(2).ok_or_else(bad)?,
                    t.get(3).ok_or_else(bad)?,
                );
                let n_synsets: usize = n_synsets.parse().map_err(|_| bad())?;
                let n_pointers: usize = n_pointers.parse().map_err(|_| bad())?;
                let start = 4 + n_pointers + 2;
                let offsets: Vec<usize> = t
                    .get(start..start + n_synsets)
                    .ok_or_else(bad)?
                    .iter()
                    .map(|o| o.parse().map_err(|_| bad()))
                    .collect::<Result<_>>()?;
                index
                    .entry(lemma.to_string())
                    .or_default()
                    .insert(pos, offsets);
            }
            let exc_path = dir.join(format!("{name}.exc"));
            let mut exc = HashMap::new();
            for line in read(&exc_path)?.lines() {
                let mut t = line.split_whitespace();
                if let Some(inflected) = t.next() {
                    exc.insert(inflected.to_string(), t.map(String::from).collect());
                }
            }
            exceptions.insert(pos, exc);
            let data_path = dir.join(format!("data.{name}"));
            data.insert(
                pos,
                std::fs::read(&data_path).map_err(|e| Error::WordNet {
                    path: data_path,
                    message: e.to_string(),
                })?,
            );
        }
        Ok(Self {
            index,
            exceptions,
            data,
        })
    }

    fn has(&self, form: &str, pos: char) -> bool {
        self.index.get(form).is_some_and(|m| m.contains_key(&pos))
    }

    /// `_morphy(form, pos)`.
    fn morphy(&self, form: &str, pos: char) -> Vec<String> {
        let forms: Vec<String> = match self.exceptions.get(&pos).and_then(|e| e.get(form)) {
            Some(bases) => bases.clone(),
            None => substitutions(pos)
                .iter()
                .filter(|(old, _)| form.ends_with(old))
                .map(|(old, new)| format!("{}{new}", &form[..form.len() - old.len()]))
                .collect(),
        };
        let mut seen = HashSet::new();
        std::iter::once(form.to_string())
            .chain(forms)
            .filter(|f| self.has(f, pos) && seen.insert(f.clone()))
            .collect()
    }

    /// Lemma names of the synset at `offset` of `pos` (adjective markers like `(a)` removed).
    fn lemma_names(&self, pos: char, offset: usize) -> Vec<String> {
        let Some(bytes) = self.data.get(&pos) else {
            return vec![];
        };
        let Some(rest) = bytes.get(offset..) else {
            return vec![];
        };
        let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let line = String::from_utf8_lossy(&rest[..end]);
        let t: Vec<&str> = line.split_whitespace().collect();
        let Some(count) = t.get(3).and_then(|c| usize::from_str_radix(c, 16).ok()) else {
            return vec![];
        };
        (0..count)
            .filter_map(|k| t.get(4 + 2 * k))
            .map(|w| match w.find('(') {
                Some(i) if w.ends_with(')') => w[..i].to_string(),
                _ => w.to_string(),
            })
            .collect()
    }

    /// METEOR's synonym set of a word: lemma names without `_` of all its synsets, plus the word.
    pub fn synonyms(&self, word: &str) -> HashSet<String> {
        let lemma = word.to_lowercase();
        let mut out: HashSet<String> = HashSet::new();
        for (pos, _) in POS {
            for form in self.morphy(&lemma, pos) {
                for &offset in self
                    .index
                    .get(&form)
                    .and_then(|m| m.get(&pos))
                    .map(Vec::as_slice)
                    .unwrap_or(&[])
                {
                    out.extend(
                        self.lemma_names(pos, offset)
                            .into_iter()
                            .filter(|n| !n.contains('_')),
                    );
                }
            }
        }
        out.insert(word.to_string());
        out
    }
}
