//! Build-time import of MedKLIP with burn-onnx.
//!
//! By default the tiny test model `fixture/tiny-medklip.onnx` is compiled in (random weights, the
//! real graph's I/O contract). `MEDKLIP_ONNX=/path/to/medklip.onnx` (a relative path is taken from
//! the workspace root) builds against a user's own export instead (docs/medklip-export.md). The
//! file is checked against the contract (`src/contract.rs`) first; a graph that breaks it stops the
//! build with a message naming the input or output. The code is generated as
//! `$OUT_DIR/model/medklip.rs`, the weights as `$OUT_DIR/model/medklip.bpk`, loaded at run time.

use std::path::{Path, PathBuf};

#[path = "src/contract.rs"]
#[allow(dead_code)]
mod contract;

use onnx_ir::{ModelProto, ValueInfoProto};
use protobuf::Message;

const FIXTURE: &str = "fixture/tiny-medklip.onnx";

/// The graph's declared input/output, read from the protobuf as written (the importer renames
/// values, so names are checked on the raw graph).
fn spec(value: &ValueInfoProto) -> contract::IoSpec {
    let ty = value.type_.tensor_type();
    let dims = &ty.shape.dim;
    contract::IoSpec {
        name: value.name.clone(),
        dtype: match ty.elem_type {
            1 => "f32".into(),
            10 => "f16".into(),
            11 => "f64".into(),
            16 => "bf16".into(),
            0 => "none (not a tensor)".into(),
            other => format!("ONNX type {other}"),
        },
        rank: dims.len(),
        shape: Some(
            dims.iter()
                .map(|d| d.has_dim_value().then(|| d.dim_value() as usize))
                .collect(),
        ),
    }
}

fn fail(source: &Path, message: &str) -> ! {
    eprintln!(
        "error: MedKLIP ONNX file {}: {message}\n\
         The contract (mmedpo-v1): one input `image` f32 [N,3,224,224]; outputs `logits` f32 \
         [N,75,2] then `attn` f32 [N,L,75,196]. See docs/medklip-export.md.",
        source.display()
    );
    std::process::exit(1);
}

/// FNV-1a of the file, so that a weights file can be matched to the graph it was built with.
fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

fn main() {
    println!("cargo::rerun-if-env-changed=MEDKLIP_ONNX");
    println!("cargo::rerun-if-changed=src/contract.rs");
    println!("cargo::rustc-check-cfg=cfg(medklip_tiny)");
    let (source, tiny) = match std::env::var_os("MEDKLIP_ONNX") {
        // Relative paths are taken from the workspace root (build scripts run in the crate's folder).
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            let manifest =
                PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
            (
                if p.is_absolute() {
                    p
                } else {
                    manifest.join("../..").join(p)
                },
                false,
            )
        }
        _ => (PathBuf::from(FIXTURE), true),
    };
    println!("cargo::rerun-if-changed={}", source.display());
    let bytes =
        std::fs::read(&source).unwrap_or_else(|e| fail(&source, &format!("cannot be read ({e})")));

    let model = ModelProto::parse_from_bytes(&bytes)
        .unwrap_or_else(|e| fail(&source, &format!("is not an ONNX model ({e})")));
    let graph = &model.graph;
    // Since IR 4 initializers may also be listed as inputs; they are not graph inputs here.
    let inputs: Vec<_> = graph
        .input
        .iter()
        .filter(|i| !graph.initializer.iter().any(|t| t.name == i.name))
        .map(spec)
        .collect();
    let outputs: Vec<_> = graph.output.iter().map(spec).collect();
    let layers = match contract::check(&inputs, &outputs) {
        Ok(layers) => layers,
        Err(e) => fail(&source, &format!("breaks the I/O contract: {e}")),
    };

    // A fixed stem keeps the generated file name stable: $OUT_DIR/model/medklip.rs.
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let staged = out_dir.join("medklip.onnx");
    std::fs::write(&staged, &bytes).expect("write the staged ONNX file into OUT_DIR");
    burn_onnx::ModelGen::new()
        .input(staged.to_str().expect("OUT_DIR is UTF-8"))
        .out_dir("model/")
        .load_strategy(burn_onnx::LoadStrategy::Bytes)
        .run_from_script();

    let shown = if tiny {
        format!("tiny test model ({FIXTURE})")
    } else {
        std::fs::canonicalize(&source)
            .unwrap_or(source)
            .display()
            .to_string()
    };
    println!("cargo::rustc-env=MEDKLIP_SOURCE={shown}");
    println!(
        "cargo::rustc-env=MEDKLIP_FINGERPRINT={:016x}",
        fingerprint(&bytes)
    );
    println!(
        "cargo::rustc-env=MEDKLIP_LAYERS={}",
        layers.map_or("?".to_string(), |l| l.to_string())
    );
    if tiny {
        println!("cargo::rustc-cfg=medklip_tiny");
    }
}
