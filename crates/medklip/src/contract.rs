//! The ONNX I/O contract "mmedpo-v1" that a MedKLIP export must keep (shared/docs/medklip.md §3).
//!
//! One input `image` f32 `[N,3,224,224]`; two outputs in this order, `logits` f32 `[N,75,2]` and
//! `attn` f32 `[N,L,75,196]` (per decoder layer, the head-averaged cross-attention of the 75
//! queries to the 14×14 patches). `N` and `L` may be symbolic. The build script checks an export
//! against it before generating code (this file is compiled into `build.rs` too, so it has no
//! dependencies), and the library re-checks the generated model's output shapes at run time.

/// One graph input or output as the checker sees it: name, element type and shape
/// (`None` = symbolic dimension; `shape: None` = rank only).
#[derive(Debug, Clone, PartialEq)]
pub struct IoSpec {
    /// ONNX value name.
    pub name: String,
    /// Element type, `"f32"` for float32 (other types are named as the importer reports them).
    pub dtype: String,
    /// Rank.
    pub rank: usize,
    /// Static sizes where the graph declares them.
    pub shape: Option<Vec<Option<usize>>>,
}

/// The number of queries (observations) MedKLIP scores.
pub const QUERIES: usize = 75;
/// Image patches: a 14×14 grid at 224 px and output stride 16.
pub const PATCHES: usize = 196;
/// Input resolution.
pub const IMAGE_SIZE: usize = 224;

fn check_one(
    kind: &str,
    spec: &IoSpec,
    name: &str,
    expect: &[Option<usize>],
) -> Result<(), String> {
    let shown: Vec<String> = expect
        .iter()
        .map(|d| d.map_or("N".to_string(), |v| v.to_string()))
        .collect();
    let want = format!("{kind} `{name}`: f32 [{}]", shown.join(","));
    if spec.name != name {
        return Err(format!("{want} expected, found {kind} `{}`", spec.name));
    }
    if spec.dtype != "f32" {
        return Err(format!(
            "{want} expected, `{name}` has element type {}",
            spec.dtype
        ));
    }
    if spec.rank != expect.len() {
        return Err(format!("{want} expected, `{name}` has rank {}", spec.rank));
    }
    if let Some(shape) = &spec.shape {
        for (axis, (have, want_dim)) in shape.iter().zip(expect).enumerate() {
            if let (Some(h), Some(w)) = (have, want_dim) {
                if h != w {
                    return Err(format!(
                        "{want} expected, `{name}` has size {h} on axis {axis}"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Checks a graph's inputs and outputs; returns the number of attention layers `L` when the
/// graph declares it. The error names the input or output that is wrong and what was expected.
pub fn check(inputs: &[IoSpec], outputs: &[IoSpec]) -> Result<Option<usize>, String> {
    let s = Some(IMAGE_SIZE);
    if inputs.len() != 1 {
        let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        return Err(format!(
            "exactly one input `image` expected, found {}: {names:?}",
            inputs.len()
        ));
    }
    check_one("input", &inputs[0], "image", &[None, Some(3), s, s])?;
    if outputs.len() != 2 {
        let names: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
        return Err(format!(
            "exactly two outputs `logits`, `attn` (in this order) expected, found {}: {names:?}",
            outputs.len()
        ));
    }
    check_one(
        "output 1",
        &outputs[0],
        "logits",
        &[None, Some(QUERIES), Some(2)],
    )?;
    check_one(
        "output 2",
        &outputs[1],
        "attn",
        &[None, None, Some(QUERIES), Some(PATCHES)],
    )?;
    Ok(outputs[1].shape.as_ref().and_then(|s| s[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, shape: &[Option<usize>]) -> IoSpec {
        IoSpec {
            name: name.into(),
            dtype: "f32".into(),
            rank: shape.len(),
            shape: Some(shape.to_vec()),
        }
    }

    fn good() -> (Vec<IoSpec>, Vec<IoSpec>) {
        (
            vec![spec("image", &[None, Some(3), Some(224), Some(224)])],
            vec![
                spec("logits", &[None, Some(75), Some(2)]),
                spec("attn", &[None, Some(4), Some(75), Some(196)]),
            ],
        )
    }

    #[test]
    fn the_contract_accepts_the_real_layout_and_reports_the_layers() {
        let (i, o) = good();
        assert_eq!(check(&i, &o), Ok(Some(4)));
    }

    #[test]
    fn each_kind_of_break_is_named() {
        let (i, mut o) = good();
        o.swap(0, 1);
        let e = check(&i, &o).unwrap_err();
        assert!(
            e.contains("output 1 `logits`") && e.contains("found output 1 `attn`"),
            "{e}"
        );

        let (mut i, o) = good();
        i[0].shape = Some(vec![None, Some(3), Some(256), Some(256)]);
        let e = check(&i, &o).unwrap_err();
        assert!(
            e.contains("input `image`") && e.contains("size 256 on axis 2"),
            "{e}"
        );

        let (mut i, o) = good();
        i[0].dtype = "f16".into();
        assert!(check(&i, &o).unwrap_err().contains("element type f16"));

        let (i, mut o) = good();
        o[1] = spec("attn", &[None, Some(75), Some(196)]);
        assert!(check(&i, &o).unwrap_err().contains("`attn` has rank 3"));

        let (i, mut o) = good();
        o.push(spec("extra", &[None]));
        assert!(check(&i, &o).unwrap_err().contains("exactly two outputs"));

        let (mut i, o) = good();
        i.push(spec("labels", &[None]));
        assert!(check(&i, &o).unwrap_err().contains("exactly one input"));
    }
}
