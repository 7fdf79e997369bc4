//! The plots (plotters, bitmap backend): loss and reward margin per step, the relevance-score
//! histogram, and metric bars (the pipeline's base / MMedPO comparison and ablations).
//!
//! Text needs a TrueType font; DejaVu Sans is read from the system (`MMEDPO_PLOT_FONT` overrides).
//! Without one the curves are still drawn, unlabelled, and a warning says so.

use std::path::Path;

use plotters::prelude::*;

use crate::dpo::StepLog;
use crate::{Error, Result};

macro_rules! plot_error {
    ($($arg:tt)*) => {
        Error::Plot(format!($($arg)*))
    };
}

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
        return Err(Error::Plot("nothing to plot".into()));
    }
    let text = register_font();
    if !text {
        tracing::warn!("no TrueType font found (set MMEDPO_PLOT_FONT); the plot has no labels");
    }
    let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error!("{e}"))?;
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
            .map_err(|e| plot_error!("{e}"))?;
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc("optimizer step").y_desc(label);
        } else {
            mesh.disable_x_mesh().disable_y_mesh();
        }
        mesh.draw().map_err(|e| plot_error!("{e}"))?;
        chart
            .draw_series(LineSeries::new(
                logs.iter()
                    .zip(&ys)
                    .filter(|(_, y)| y.is_finite())
                    .map(|(l, &y)| (l.step as f64, y)),
                color.stroke_width(2),
            ))
            .map_err(|e| plot_error!("{e}"))?;
    }
    root.present()
        .map_err(|e| plot_error!("{}: {e}", path.display()))?;
    Ok(())
}

/// A bar chart of clinical-relevance scores in bins 0.0, 0.1, …, 1.0 into `path` (PNG, 800×450).
pub fn plot_score_histogram(counts: &[usize; 11], title: &str, path: &Path) -> Result<()> {
    let text = register_font();
    let root = BitMapBackend::new(path, (800, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error!("{e}"))?;
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
        .map_err(|e| plot_error!("{e}"))?;
    if text {
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("clinical-relevance score")
            .y_desc("pairs")
            .x_labels(11)
            .x_label_formatter(&|x| format!("{x:.1}"))
            .draw()
            .map_err(|e| plot_error!("{e}"))?;
    }
    chart
        .draw_series(counts.iter().enumerate().map(|(i, &n)| {
            let x = i as f64 / 10.0;
            Rectangle::new(
                [(x - 0.04, 0), (x + 0.04, n as u32)],
                RGBColor(31, 119, 180).filled(),
            )
        }))
        .map_err(|e| plot_error!("{e}"))?;
    root.present().map_err(|e| plot_error!("{e}"))?;
    Ok(())
}

/// Grouped bars: one group per metric, one bar per row (`(name, values)`, values ×100 or `None`
/// for a metric without items), into `path` (PNG, 200 px per group + legend).
pub fn plot_metric_bars(
    metrics: &[&str],
    rows: &[(String, Vec<Option<f64>>)],
    title: &str,
    path: &Path,
) -> Result<()> {
    const COLORS: [RGBColor; 8] = [
        RGBColor(127, 127, 127),
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
    ];
    let text = register_font();
    let width = (160 * metrics.len() as u32 + 260).max(600);
    let root = BitMapBackend::new(path, (width, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error!("{e}"))?;
    let top = rows
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .fold(1.0f64, |a, &b| a.max(b));
    let mut builder = ChartBuilder::on(&root);
    builder
        .margin(15)
        .x_label_area_size(if text { 40 } else { 5 })
        .y_label_area_size(if text { 50 } else { 5 });
    if text {
        builder.caption(title, ("sans-serif", 22));
    }
    let n = metrics.len().max(1) as f64;
    // Headroom above the bars for the legend (a row per bar).
    let headroom = 1.15 + 0.09 * rows.len() as f64;
    let mut chart = builder
        .build_cartesian_2d(0f64..n, 0f64..top * headroom)
        .map_err(|e| plot_error!("{e}"))?;
    if text {
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(metrics.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - i as f64 - 0.5).abs() < 1e-6 && i < metrics.len() {
                    metrics[i].to_string()
                } else {
                    String::new()
                }
            })
            .y_desc("score (×100)")
            .y_label_formatter(&|y| {
                if *y <= top * 1.05 {
                    format!("{y:.0}")
                } else {
                    String::new()
                }
            })
            .draw()
            .map_err(|e| plot_error!("{e}"))?;
    }
    let w = 0.8 / rows.len().max(1) as f64;
    for (r, (name, values)) in rows.iter().enumerate() {
        let color = COLORS[r % COLORS.len()];
        let series = chart
            .draw_series(values.iter().enumerate().filter_map(|(m, v)| {
                let x = m as f64 + 0.1 + r as f64 * w;
                v.map(|v| Rectangle::new([(x, 0.0), (x + w * 0.9, v)], color.filled()))
            }))
            .map_err(|e| plot_error!("{e}"))?;
        if text {
            series.label(name.as_str()).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
            });
        }
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| plot_error!("{e}"))?;
    }
    root.present().map_err(|e| plot_error!("{e}"))?;
    Ok(())
}
