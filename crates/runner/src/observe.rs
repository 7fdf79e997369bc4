//! What the stages tell the user: [`Cli`] is the program's [`Observer`]: a progress bar per unit
//! of work, notes on stderr, each finished result printed.

use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use mmedpo::{Event, Observer};

use mmedpo::core::journal::side;

/// The command line's observer.
#[derive(Default)]
pub struct Cli {
    bar: Mutex<Option<ProgressBar>>,
}

fn style(unit: &str) -> ProgressStyle {
    let template = match unit {
        "steps" => "{bar:40} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]".to_string(),
        unit => format!("{{bar:40}} {{pos}}/{{len}} {unit} {{per_sec}} eta {{eta}}"),
    };
    ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl Observer for Cli {
    fn progress(&self, unit: &'static str, done: usize, total: usize, message: &str) {
        let mut bar = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        let bar = bar.get_or_insert_with(|| {
            let b = ProgressBar::new(total as u64);
            b.set_style(style(unit));
            b
        });
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        if !message.is_empty() {
            bar.set_message(message.to_string());
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
    }

    fn note(&self, message: &str) {
        note!("{message}");
    }

    fn event(&self, event: &Event<'_>) {
        match event {
            Event::Curated(r) => {
                note!(
                    "{} text pairs in {}: {} picked from the model's answers, {} written by the judge; \
                     {} item(s) without a usable verdict{}",
                    r.pairs,
                    r.output.display(),
                    r.picked,
                    r.pairs - r.picked,
                    r.failed.len(),
                    if r.failed.is_empty() {
                        String::new()
                    } else {
                        format!(" (run again to retry): {}", r.failed.join(", "))
                    }
                );
                note!(
                    "transcripts: {}\nnext: mmedpo score-relevance --data {} --agent ... --out SCORED.json",
                    r.transcripts.display(),
                    r.output.display()
                );
            }
            Event::Scored(r) => {
                note!(
                    "{} pairs: {} scored ({} by consensus), {} without any score",
                    r.pairs,
                    r.pairs - r.failed.len(),
                    r.consensus,
                    r.failed.len()
                );
                let max = r.histogram.iter().copied().max().unwrap_or(1).max(1);
                for (i, n) in r.histogram.iter().enumerate() {
                    let bar = "#".repeat(n * 40 / max);
                    note!("  {:.1} | {bar:<40} {n}", i as f64 / 10.0);
                }
                let png = side(&r.output, "histogram.png");
                if png.is_file() {
                    note!("histogram: {}", png.display());
                }
                if !r.failed.is_empty() {
                    let ids: Vec<&str> = r.failed.iter().map(|u| u.id.as_str()).collect();
                    note!(
                        "no score (weighted_score removed; a rerun tries these again): {}",
                        ids.join(", ")
                    );
                }
                note!(
                    "written: {}\ntranscripts: {}",
                    r.output.display(),
                    r.transcripts.display()
                );
            }
            Event::Visual(r) => {
                note!(
                    "{} visual pairs in {} ({} items, {} unreadable); this run: {} distinct images and \
                     {} noised images in {:.1} s ({:.1} pairs/s); confidence mean {:.3}, noised area mean {:.1}%",
                    r.pairs,
                    r.output.display(),
                    r.items,
                    r.unreadable.len(),
                    r.images_done,
                    r.items_done,
                    r.seconds,
                    r.items_done as f64 / r.seconds.max(1e-9),
                    r.mean_confidence,
                    100.0 * r.mean_coverage,
                );
                if !r.unreadable.is_empty() {
                    note!(
                        "unreadable images (items left out; fix them and run again to add them):"
                    );
                    for u in &r.unreadable {
                        note!("  item {}: {}: {}", u.id, u.path.display(), u.message);
                    }
                }
            }
            Event::Assembled(r) => note!(
                "{} pairs ({} text, {} visual) written to {}; weights {:?}, mean {:.3}",
                r.pairs,
                r.pairs - r.visual,
                r.visual,
                r.output.display(),
                r.mode,
                r.mean_weight
            ),
            Event::Trained {
                summary,
                config,
                pairs,
            } => {
                let plot = config.out.join("training.png");
                let last = summary.logs.last();
                note!(
                    "trained {} step(s){} on {pairs} pair(s): final loss {:.4}, reward margin {:+.3}, reward accuracy {:.2}",
                    summary.total_steps,
                    if summary.resumed_from > 0 {
                        format!(" (resumed at {})", summary.resumed_from)
                    } else {
                        String::new()
                    },
                    last.map_or(f64::NAN, |l| l.loss),
                    last.map_or(f64::NAN, |l| l.rewards_margins),
                    last.map_or(f64::NAN, |l| l.rewards_accuracies),
                );
                note!("adapter (PEFT): {}", summary.adapter_dir.display());
                note!("log (JSONL):    {}", summary.log_path.display());
                note!("plot:           {}", plot.display());
                note!(
                    "config:         {}",
                    config.out.join("train_config.toml").display()
                );
            }
            Event::Evaluated(r) => {
                say!("{}", r.table);
                note!(
                    "predictions: {}\nmetrics:     {}",
                    r.predictions.display(),
                    r.metrics_path.display()
                );
            }
            _ => {}
        }
    }
}
