//! `entmaxkv figure`: the headline figure from a `bench --json` result — stacked bars of
//! step time relative to dense softmax with the stage breakdown (as in the original's
//! README figure), and a Pareto plot of error vs time. SVG, or PNG by the output's suffix.

use anyhow::{bail, Context, Result};
use clap::Args;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Args)]
pub struct FigureArgs {
    /// A `bench --json` file.
    pub input: String,
    /// Output path (.svg or .png); the Pareto plot goes next to it with `-pareto`.
    #[arg(short, long, default_value = "figure.svg")]
    pub output: String,
    /// Plot this α only (default: the first α in the file).
    #[arg(long)]
    pub alpha: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
struct Cell {
    method: String,
    context: usize,
    alpha: f64,
    budget: Option<f64>,
    median_ms: f64,
    selection_ms: f64,
    attention_ms: f64,
    #[serde(default)]
    certificate_ms: f64,
    rel: Option<f64>,
    /// torch SDPA on the same shape, merged by `bench --sdpa-json`.
    #[serde(default)]
    sdpa_ms: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
struct Input {
    device: String,
    cells: Vec<Cell>,
    #[serde(default)]
    external: Vec<External>,
}

/// External dense baselines merged into the JSON (e.g. torch SDPA on the GPU).
#[derive(Debug, Clone, Deserialize)]
struct External {
    name: String,
    context: usize,
    median_ms: f64,
}

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

pub(crate) fn register_font() -> Result<()> {
    for p in FONT_PATHS {
        if let Ok(bytes) = std::fs::read(p) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if register_font_bytes(bytes).is_ok() {
                return Ok(());
            }
        }
    }
    bail!("no TrueType font found for the figure text (install fonts-dejavu-core)")
}

fn register_font_bytes(bytes: &'static [u8]) -> std::result::Result<(), ()> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| ())
}

fn label(c: &Cell) -> String {
    match c.budget {
        Some(b) if b < 1.0 => format!("{} ({:.3})", c.method, b),
        _ => c.method.clone(),
    }
}

pub fn run(a: &FigureArgs) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(&a.input).with_context(|| format!("reading {}", a.input))?;
    let mut inp: Input =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", a.input))?;
    // SDPA times merged into the cells become one external bar per context.
    for c in &inp.cells {
        if let Some(ms) = c.sdpa_ms {
            if !inp
                .external
                .iter()
                .any(|e| e.name == "torch SDPA" && e.context == c.context)
            {
                inp.external.push(External {
                    name: "torch SDPA".into(),
                    context: c.context,
                    median_ms: ms,
                });
            }
        }
    }
    let alpha = a
        .alpha
        .or_else(|| inp.cells.iter().find(|c| c.alpha != 1.0).map(|c| c.alpha))
        .unwrap_or(1.0);
    let cells: Vec<&Cell> = inp
        .cells
        .iter()
        .filter(|c| c.alpha == alpha || c.method.contains("softmax"))
        .collect();
    if cells.is_empty() {
        bail!("{}: no cells for alpha {alpha}", a.input);
    }
    let contexts: Vec<usize> = {
        let mut v: Vec<usize> = cells.iter().map(|c| c.context).collect();
        v.sort();
        v.dedup();
        v
    };
    let mut methods: Vec<String> = Vec::new();
    for c in &cells {
        let l = label(c);
        if !methods.contains(&l) {
            methods.push(l);
        }
    }
    let ext_names: Vec<String> = {
        let mut v: Vec<String> = inp.external.iter().map(|e| e.name.clone()).collect();
        v.dedup();
        v
    };
    let png = a.output.ends_with(".png");
    // Text is measured with the registered font in both backends.
    register_font()?;
    let pareto = a
        .output
        .rsplit_once('.')
        .map(|(stem, ext)| format!("{stem}-pareto.{ext}"))
        .unwrap_or_else(|| format!("{}-pareto.svg", a.output));
    let title = format!(
        "decode step time relative to dense softmax — {} — α = {alpha}",
        inp.device
    );
    if png {
        let root = BitMapBackend::new(&a.output, (1400, 700)).into_drawing_area();
        bars(
            &root,
            &title,
            &contexts,
            &methods,
            &ext_names,
            &cells,
            &inp.external,
        )?;
        root.present()?;
        let root = BitMapBackend::new(&pareto, (900, 650)).into_drawing_area();
        pareto_plot(&root, &cells)?;
        root.present()?;
    } else {
        let root = SVGBackend::new(&a.output, (1400, 700)).into_drawing_area();
        bars(
            &root,
            &title,
            &contexts,
            &methods,
            &ext_names,
            &cells,
            &inp.external,
        )?;
        root.present()?;
        let root = SVGBackend::new(&pareto, (900, 650)).into_drawing_area();
        pareto_plot(&root, &cells)?;
        root.present()?;
    }
    Ok(vec![a.output.clone(), pareto])
}

const STAGE_COLORS: [RGBColor; 4] = [
    RGBColor(76, 114, 176),
    RGBColor(221, 132, 82),
    RGBColor(85, 168, 104),
    RGBColor(160, 160, 160),
];

fn bars<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    contexts: &[usize],
    methods: &[String],
    ext: &[String],
    cells: &[&Cell],
    external: &[External],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let base: BTreeMap<usize, f64> = cells
        .iter()
        .filter(|c| c.method == "dense-softmax")
        .map(|c| (c.context, c.median_ms))
        .collect();
    if base.is_empty() {
        bail!("the figure needs dense-softmax cells as the baseline");
    }
    let groups = methods.len() + ext.len();
    let slot = groups as f64 + 1.0;
    let mut ymax: f64 = 1.2;
    for c in cells {
        if let Some(b) = base.get(&c.context) {
            ymax = ymax.max(c.median_ms / b * 1.1);
        }
    }
    for e in external {
        if let Some(b) = base.get(&e.context) {
            ymax = ymax.max(e.median_ms / b * 1.1);
        }
    }
    // Headroom for the value labels and the legend lines.
    let ymax = ymax * 1.15;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(20)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..contexts.len() as f64 * slot, 0f64..ymax)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("time / dense softmax")
        .draw()?;
    for (ci, &c) in contexts.iter().enumerate() {
        let name = if c >= 1 << 20 {
            format!("{}M tokens", c >> 20)
        } else {
            format!("{}K tokens", c >> 10)
        };
        chart.draw_series(std::iter::once(Text::new(
            name,
            (ci as f64 * slot + slot / 2.0 - 1.0, ymax * 0.965),
            ("sans-serif", 15),
        )))?;
    }
    for (ci, &ctx) in contexts.iter().enumerate() {
        let Some(&b) = base.get(&ctx) else { continue };
        for (mi, m) in methods.iter().enumerate() {
            let Some(c) = cells.iter().find(|c| c.context == ctx && &label(c) == m) else {
                continue;
            };
            let x0 = ci as f64 * slot + mi as f64 + 0.5;
            let stages = [
                c.selection_ms,
                c.attention_ms,
                c.certificate_ms,
                (c.median_ms - c.selection_ms - c.attention_ms - c.certificate_ms).max(0.0),
            ];
            let mut y = 0.0;
            for (si, s) in stages.iter().enumerate() {
                let h = s / b;
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x0, y), (x0 + 0.85, y + h)],
                    STAGE_COLORS[si]
                        .mix(0.4 + 0.6 * (mi + 1) as f64 / methods.len() as f64)
                        .filled(),
                )))?;
                y += h;
            }
            chart.draw_series(std::iter::once(Text::new(
                format!("{:.2}", c.median_ms / b),
                (x0, y + ymax * 0.02),
                ("sans-serif", 11),
            )))?;
        }
        for (ei, name) in ext.iter().enumerate() {
            if let Some(e) = external
                .iter()
                .find(|e| e.context == ctx && &e.name == name)
            {
                let x0 = ci as f64 * slot + (methods.len() + ei) as f64 + 0.5;
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x0, 0.0), (x0 + 0.85, e.median_ms / b)],
                    BLACK.mix(0.6).filled(),
                )))?;
            }
        }
    }
    // Legend: method order and stage colours.
    let mut legend = String::from("bars per context, left to right: ");
    legend += &methods.join(", ");
    if !ext.is_empty() {
        legend += &format!(", then {} (black)", ext.join(", "));
    }
    root.draw(&Text::new(legend, (80, 40), ("sans-serif", 13)))?;
    root.draw(&Text::new(
        "stages: blue = selection, orange = attention, green = certificate, grey = other",
        (80, 58),
        ("sans-serif", 13),
    ))?;
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(0.0, 1.0), (contexts.len() as f64 * slot, 1.0)],
        BLACK.stroke_width(1),
    )))?;
    Ok(())
}

fn pareto_plot<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, cells: &[&Cell]) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let pts: Vec<(f64, f64, String)> = cells
        .iter()
        .filter_map(|c| c.rel.map(|r| (c.median_ms, r.max(1e-9), label(c))))
        .collect();
    if pts.is_empty() {
        bail!("no accuracy figures in the input (bench was run with --no-accuracy)");
    }
    let xmax = pts.iter().map(|p| p.0).fold(0.0, f64::max) * 1.1;
    let xmin = pts.iter().map(|p| p.0).fold(f64::INFINITY, f64::min) * 0.9;
    let ymax = pts.iter().map(|p| p.1).fold(0.0, f64::max) * 2.0;
    let mut chart = ChartBuilder::on(root)
        .caption("error vs step time (every context)", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((xmin..xmax).log_scale(), (1e-9..ymax).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("step time (ms)")
        .y_desc("relative error vs f64 oracle")
        .draw()?;
    let mut names: Vec<String> = pts.iter().map(|p| p.2.clone()).collect();
    names.dedup();
    names.sort();
    names.dedup();
    for (i, n) in names.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(
                pts.iter()
                    .filter(|p| &p.2 == n)
                    .map(|p| Circle::new((p.0, p.1), 5, color.filled())),
            )?
            .label(n.clone())
            .legend(move |(x, y)| Circle::new((x, y), 5, color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
