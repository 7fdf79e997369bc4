//! Reading a score out of an agent's reply: a JSON object (`{"score": 0.8}`, also inside a
//! Markdown code fence or surrounded by prose), else a bare number. Scores must lie in [0, 1].

/// Why a reply is not a usable score (shown to the agent in the corrective message).
#[derive(Debug, Clone, PartialEq)]
pub enum ParseProblem {
    /// No number could be found.
    NoScore,
    /// A number outside [0, 1].
    OutOfRange(f64),
}

impl std::fmt::Display for ParseProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseProblem::NoScore => write!(f, "no score found"),
            ParseProblem::OutOfRange(x) => write!(f, "the score {x} is outside [0, 1]"),
        }
    }
}

const KEYS: &[&str] = &["score", "clinical_relevance", "relevance", "rating"];

fn from_json(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        serde_json::Value::Object(m) => KEYS.iter().find_map(|k| m.get(*k).and_then(from_json)),
        _ => None,
    }
}

/// JSON objects found in the text, outermost first (balanced braces, strings respected).
fn json_objects(text: &str) -> Vec<serde_json::Value> {
    let bytes: Vec<char> = text.chars().collect();
    let mut out = vec![];
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == '{' {
            let (mut depth, mut in_str, mut esc) = (0i32, false, false);
            for j in i..bytes.len() {
                let c = bytes[j];
                if in_str {
                    match (esc, c) {
                        (true, _) => esc = false,
                        (false, '\\') => esc = true,
                        (false, '"') => in_str = false,
                        _ => {}
                    }
                    continue;
                }
                match c {
                    '"' => in_str = true,
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            let s: String = bytes[i..=j].iter().collect();
                            if let Ok(v) = serde_json::from_str(&s) {
                                out.push(v);
                            }
                            i = j;
                            break;
                        }
                    }
                    _ => {}
                }
            }
        }
        i += 1;
    }
    out
}

/// The first decimal number in the text (`0.8`, `.8`, `1`, `8e-1`).
fn first_number(text: &str) -> Option<f64> {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let starts = chars[i].is_ascii_digit()
            || (chars[i] == '.' && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()));
        if starts {
            let mut j = i;
            while j < chars.len()
                && (chars[j].is_ascii_digit()
                    || chars[j] == '.'
                    || chars[j] == 'e'
                    || chars[j] == 'E'
                    || chars[j] == '-')
            {
                j += 1;
            }
            let s: String = chars[i..j].iter().collect();
            // Trim trailing characters that cannot end a number ("0.8." or "8e").
            let s = s.trim_end_matches(['.', 'e', 'E', '-']);
            if let Ok(x) = s.parse::<f64>() {
                let negative = i > 0 && chars[i - 1] == '-';
                return Some(if negative { -x } else { x });
            }
            i = j;
        }
        i += 1;
    }
    None
}

/// The score in a reply.
pub fn parse_score(reply: &str) -> Result<f64, ParseProblem> {
    let x = json_objects(reply)
        .iter()
        .find_map(from_json)
        .or_else(|| first_number(reply))
        .ok_or(ParseProblem::NoScore)?;
    if (0.0..=1.0).contains(&x) && x.is_finite() {
        Ok(x)
    } else {
        Err(ParseProblem::OutOfRange(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_fenced_json_prose_and_bare_numbers() {
        assert_eq!(
            parse_score(r#"{"score": 0.8, "rationale": "wrong side"}"#),
            Ok(0.8)
        );
        assert_eq!(parse_score("```json\n{\"score\": \"0.7\"}\n```"), Ok(0.7));
        assert_eq!(
            parse_score("I agree. {\"rationale\": \"a {nested} brace\", \"score\": 0.9} Thanks."),
            Ok(0.9)
        );
        assert_eq!(parse_score("0.6"), Ok(0.6));
        assert_eq!(parse_score("Score: .5."), Ok(0.5));
        assert_eq!(parse_score("1"), Ok(1.0));
    }

    #[test]
    fn garbage_and_out_of_range_are_problems() {
        assert_eq!(
            parse_score("I cannot rate this."),
            Err(ParseProblem::NoScore)
        );
        assert_eq!(
            parse_score(r#"{"score": 8}"#),
            Err(ParseProblem::OutOfRange(8.0))
        );
        assert_eq!(parse_score("-0.3"), Err(ParseProblem::OutOfRange(-0.3)));
    }
}
