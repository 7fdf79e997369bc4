//! LLaVA-Med's answer normalisation (`normalize_word` in the authors' `eval/eval_vqa.py` and
//! `eval/eval_report.py`, commit ec5ea44 of Odyssni/MMedPO), reproduced behaviour for behaviour:
//!
//! 1. for each punctuation mark in a fixed list: if the *original* text has it followed or preceded
//!    by a space, or contains a digit-comma-digit, delete it; otherwise replace it by a space;
//! 2. delete each `.` not followed by a digit — only the first 32 of them (the script passes
//!    `re.UNICODE`, whose value is 32, as `re.sub`'s `count`);
//! 3. lowercase, split on whitespace, number words → digits (none/zero…ten), drop a/an/the,
//!    expand contractions written without apostrophe (the VQA toolkit's table);
//! 4. join with spaces and delete every `,`.
//!
//! Difference: `\d` is taken as ASCII digits (Python's also matches other Unicode decimal digits).

const PUNCT: &[char] = &[
    ';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',',
    '?', '!',
];

const NUMBERS: &[(&str, &str)] = &[
    ("none", "0"),
    ("zero", "0"),
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
];

const ARTICLES: &[&str] = &["a", "an", "the"];

/// Contractions written without an apostrophe, as the VQA evaluation toolkit lists them.
const CONTRACTIONS: &[(&str, &str)] = &[
    ("aint", "ain't"),
    ("arent", "aren't"),
    ("cant", "can't"),
    ("couldve", "could've"),
    ("couldnt", "couldn't"),
    ("couldn'tve", "couldn't've"),
    ("couldnt've", "couldn't've"),
    ("didnt", "didn't"),
    ("doesnt", "doesn't"),
    ("dont", "don't"),
    ("hadnt", "hadn't"),
    ("hadnt've", "hadn't've"),
    ("hadn'tve", "hadn't've"),
    ("hasnt", "hasn't"),
    ("havent", "haven't"),
    ("hed", "he'd"),
    ("hed've", "he'd've"),
    ("he'dve", "he'd've"),
    ("hes", "he's"),
    ("howd", "how'd"),
    ("howll", "how'll"),
    ("hows", "how's"),
    ("Id've", "I'd've"),
    ("I'dve", "I'd've"),
    ("Im", "I'm"),
    ("Ive", "I've"),
    ("isnt", "isn't"),
    ("itd", "it'd"),
    ("itd've", "it'd've"),
    ("it'dve", "it'd've"),
    ("itll", "it'll"),
    ("let's", "let's"),
    ("maam", "ma'am"),
    ("mightnt", "mightn't"),
    ("mightnt've", "mightn't've"),
    ("mightn'tve", "mightn't've"),
    ("mightve", "might've"),
    ("mustnt", "mustn't"),
    ("mustve", "must've"),
    ("neednt", "needn't"),
    ("notve", "not've"),
    ("oclock", "o'clock"),
    ("oughtnt", "oughtn't"),
    ("ow's'at", "'ow's'at"),
    ("'ows'at", "'ow's'at"),
    ("'ow'sat", "'ow's'at"),
    ("shant", "shan't"),
    ("shed've", "she'd've"),
    ("she'dve", "she'd've"),
    ("she's", "she's"),
    ("shouldve", "should've"),
    ("shouldnt", "shouldn't"),
    ("shouldnt've", "shouldn't've"),
    ("shouldn'tve", "shouldn't've"),
    ("somebody'd", "somebodyd"),
    ("somebodyd've", "somebody'd've"),
    ("somebody'dve", "somebody'd've"),
    ("somebodyll", "somebody'll"),
    ("somebodys", "somebody's"),
    ("someoned", "someone'd"),
    ("someoned've", "someone'd've"),
    ("someone'dve", "someone'd've"),
    ("someonell", "someone'll"),
    ("someones", "someone's"),
    ("somethingd", "something'd"),
    ("somethingd've", "something'd've"),
    ("something'dve", "something'd've"),
    ("somethingll", "something'll"),
    ("thats", "that's"),
    ("thered", "there'd"),
    ("thered've", "there'd've"),
    ("there'dve", "there'd've"),
    ("therere", "there're"),
    ("theres", "there's"),
    ("theyd", "they'd"),
    ("theyd've", "they'd've"),
    ("they'dve", "they'd've"),
    ("theyll", "they'll"),
    ("theyre", "they're"),
    ("theyve", "they've"),
    ("twas", "'twas"),
    ("wasnt", "wasn't"),
    ("wed've", "we'd've"),
    ("we'dve", "we'd've"),
    ("weve", "we've"),
    ("werent", "weren't"),
    ("whatll", "what'll"),
    ("whatre", "what're"),
    ("whats", "what's"),
    ("whatve", "what've"),
    ("whens", "when's"),
    ("whered", "where'd"),
    ("wheres", "where's"),
    ("whereve", "where've"),
    ("whod", "who'd"),
    ("whod've", "who'd've"),
    ("who'dve", "who'd've"),
    ("wholl", "who'll"),
    ("whos", "who's"),
    ("whove", "who've"),
    ("whyll", "why'll"),
    ("whyre", "why're"),
    ("whys", "why's"),
    ("wont", "won't"),
    ("wouldve", "would've"),
    ("wouldnt", "wouldn't"),
    ("wouldnt've", "wouldn't've"),
    ("wouldn'tve", "wouldn't've"),
    ("yall", "y'all"),
    ("yall'll", "y'all'll"),
    ("y'allll", "y'all'll"),
    ("yall'd've", "y'all'd've"),
    ("y'alld've", "y'all'd've"),
    ("y'all'dve", "y'all'd've"),
    ("youd", "you'd"),
    ("youd've", "you'd've"),
    ("you'dve", "you'd've"),
    ("youll", "you'll"),
    ("youre", "you're"),
    ("youve", "you've"),
];

fn has_digit_comma_digit(s: &str) -> bool {
    let c: Vec<char> = s.chars().collect();
    c.windows(3)
        .any(|w| w[0].is_ascii_digit() && w[1] == ',' && w[2].is_ascii_digit())
}

/// `normalize_word`.
pub fn normalize_word(text: &str) -> String {
    let comma_digits = has_digit_comma_digit(text);
    let mut t = text.to_string();
    for &p in PUNCT {
        let (before, after) = (format!("{p} "), format!(" {p}"));
        let delete = text.contains(&before) || text.contains(&after) || comma_digits;
        t = t.replace(p, if delete { "" } else { " " });
    }
    // Periods not followed by a digit, at most 32 of them.
    let chars: Vec<char> = t.chars().collect();
    let mut stripped = String::with_capacity(t.len());
    let mut removed = 0;
    for (i, &c) in chars.iter().enumerate() {
        let next_digit = chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
        if c == '.' && !next_digit && removed < 32 {
            removed += 1;
            continue;
        }
        stripped.push(c);
    }
    let words: Vec<String> = stripped
        .to_lowercase()
        .split_whitespace()
        .map(|w| {
            NUMBERS
                .iter()
                .find(|(k, _)| *k == w)
                .map_or(w, |(_, v)| v)
                .to_string()
        })
        .filter(|w| !ARTICLES.contains(&w.as_str()))
        .map(|w| {
            CONTRACTIONS
                .iter()
                .find(|(k, _)| *k == w)
                .map_or(w.clone(), |(_, v)| v.to_string())
        })
        .collect();
    words.join(" ").replace(',', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_the_python_function() {
        assert_eq!(normalize_word(" Yes"), "yes");
        assert_eq!(
            normalize_word("The left lung, two nodules."),
            "left lung 2 nodules"
        );
        assert_eq!(normalize_word("size 3.5 cm."), "size 3.5 cm");
        // A "p " or " p" anywhere deletes that mark everywhere; otherwise it becomes a space.
        assert_eq!(
            normalize_word("x-ray (left) chest-wall"),
            "x ray left chest wall"
        );
        assert_eq!(normalize_word("x-ray - chest-wall"), "xray chestwall");
        assert_eq!(normalize_word("1,000 cells; dont"), "1000 cells don't");
        assert_eq!(normalize_word("?!."), "");
        assert_eq!(normalize_word(""), "");
    }

    #[test]
    fn only_32_periods_are_removed() {
        let dots = ".".repeat(40);
        assert_eq!(
            normalize_word(&format!("a{dots}b")),
            format!("{}b", "a".to_string() + &".".repeat(8))
        );
    }
}
