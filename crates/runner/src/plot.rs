//! The end-of-training plot: loss and reward margin per step, one PNG (plotters, bitmap backend).
//!
//! Text needs a TrueType font; DejaVu Sans is read from the system (`MMEDPO_PLOT_FONT` overrides).
//! Without one the curves are still drawn, unlabelled, and a warning says so.

use std::path::Path;

use anyhow::{anyhow, Result};
use mmedpo_dpo::StepLog;
use plotters::prelude::*;

const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/Library/Fonts/Arial.ttf",
];

fn register_font() -> bool {
    let candidates: Vec<String> = std::env::var("MMEDPO_PLOT_FONT")
        .into_iter()
        .chain(FONTS.iter().map(|s| s.to_string()))
        .collect();
    for path in candidates {
        if let Ok(bytes) = std::fs::read(&path) {
            let leaked: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, leaked).is_ok() {
                return true;
            }
        }
    }
    false
}

/// Draws `loss` and `rewards/margins` against the step into `path` (PNG, 1200×500).
pub fn plot_training(logs: &[StepLog], path: &Path) -> Result<()> {
    if logs.is_empty() {
        return Err(anyhow!("nothing to plot"));
    }
    let text = register_font();
    if !text {
        tracing::warn!("no TrueType font found (set MMEDPO_PLOT_FONT); the plot has no labels");
    }
    let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let panels = root.split_evenly((1, 2));
    type Series<'a> = (&'a str, &'a str, fn(&StepLog) -> f64, RGBColor);
    let series: [Series; 2] = [
        (
            "DPO loss (weighted)",
            "loss",
            |l| l.loss,
            RGBColor(31, 119, 180),
        ),
        (
            "reward margin (chosen − rejected)",
            "rewards/margins",
            |l| l.rewards_margins,
            RGBColor(214, 39, 40),
        ),
    ];
    let last = logs.last().map_or(1, |l| l.step) as f64;
    for (area, (title, label, f, color)) in panels.iter().zip(series) {
        let ys: Vec<f64> = logs.iter().map(&f).collect();
        // Non-finite values are left out of the range and the curve (a NaN range never ends).
        let (mut lo, mut hi) = ys
            .iter()
            .filter(|y| y.is_finite())
            .fold((f64::MAX, f64::MIN), |(a, b), &y| (a.min(y), b.max(y)));
        if lo > hi {
            (lo, hi) = (0.0, 1.0);
        }
        if (hi - lo).abs() < 1e-12 {
            lo -= 0.5;
            hi += 0.5;
        }
        let pad = 0.05 * (hi - lo);
        let mut builder = ChartBuilder::on(area);
        builder
            .margin(15)
            .x_label_area_size(if text { 35 } else { 5 })
            .y_label_area_size(if text { 60 } else { 5 });
        if text {
            builder.caption(title, ("sans-serif", 22));
        }
        let mut chart = builder
            .build_cartesian_2d(1f64..last.max(2.0), (lo - pad)..(hi + pad))
            .map_err(|e| anyhow!("{e}"))?;
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc("optimizer step").y_desc(label);
        } else {
            mesh.disable_x_mesh().disable_y_mesh();
        }
        mesh.draw().map_err(|e| anyhow!("{e}"))?;
        chart
            .draw_series(LineSeries::new(
                logs.iter()
                    .zip(&ys)
                    .filter(|(_, y)| y.is_finite())
                    .map(|(l, &y)| (l.step as f64, y)),
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow!("{e}"))?;
    }
    root.present()
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(())
}

/// A bar chart of clinical-relevance scores in bins 0.0, 0.1, …, 1.0 into `path` (PNG, 800×450).
pub fn plot_score_histogram(counts: &[usize; 11], title: &str, path: &Path) -> Result<()> {
    let text = register_font();
    let root = BitMapBackend::new(path, (800, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let top = counts.iter().copied().max().unwrap_or(0).max(1) as u32;
    let mut builder = ChartBuilder::on(&root);
    builder
        .margin(15)
        .x_label_area_size(if text { 40 } else { 5 })
        .y_label_area_size(if text { 50 } else { 5 });
    if text {
        builder.caption(title, ("sans-serif", 22));
    }
    let mut chart = builder
        .build_cartesian_2d(-0.05f64..1.05f64, 0u32..top + top / 10 + 1)
        .map_err(|e| anyhow!("{e}"))?;
    if text {
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("clinical-relevance score")
            .y_desc("pairs")
            .x_labels(11)
            .x_label_formatter(&|x| format!("{x:.1}"))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .draw_series(counts.iter().enumerate().map(|(i, &n)| {
            let x = i as f64 / 10.0;
            Rectangle::new(
                [(x - 0.04, 0), (x + 0.04, n as u32)],
                RGBColor(31, 119, 180).filled(),
            )
        }))
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
