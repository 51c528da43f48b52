//! `entmaxkv fetch` and `entmaxkv eval`: SmolLM2 decoding with dense vs sparse attention.
//!
//! Every decode step of every layer goes through [`EntmaxKvAttention`] (a paged cache and a
//! planned decoder per layer). The prompt is prefilled once by the teacher-forced forward
//! (dense causal attention), its K/V recorded and then loaded into each method's caches, so
//! all methods start from the same prefix and differ only in their decode attention.
//!
//! * Perplexity: prefill `prefix` tokens, then teacher-forced decode of the remaining
//!   tokens one step at a time; NLL of each next token, and whether the method's greedy
//!   (argmax) token equals dense's at that step.
//! * Needle in a haystack: a sentence with a number is planted at a depth of the text; the
//!   question is fed through decode steps (sparse attention) and the answer decoded greedily.

use crate::meta::{provenance, Provenance};
use crate::methods::MethodSpec;
use crate::trace::{data_files, text_path};
use anyhow::{bail, Context, Result};
use clap::Args;
use entmaxkv::selection::GqaMode;
use entmaxkv::DType;
use entmaxkv_models::{
    nll_of, AttentionShape, Backend, DataFiles, DecodeAttention, EntmaxKvAttention,
    EntmaxKvOptions, Model,
};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone, Args)]
pub struct FetchArgs {
    /// Destination directory (default `<repo>/.data`).
    pub dest: Option<PathBuf>,
}

/// Runs `scripts/fetch_models.sh` of this source tree.
pub fn fetch(a: &FetchArgs) -> Result<()> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch_models.sh");
    if !script.is_file() {
        bail!("fetch script not found at {}", script.display());
    }
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(&script);
    if let Some(d) = &a.dest {
        cmd.arg(d);
    }
    let st = cmd.status().context("running the fetch script")?;
    if !st.success() {
        bail!("{} failed ({st})", script.display());
    }
    Ok(())
}

#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// Data directory (default `$ENTMAXKV_DATA` or `<repo>/.data`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Methods, `NAME[@BUDGET]` (top-k budget as a fraction of the closed pages). Softmax
    /// methods (`dense-softmax`, `topk-softmax`) run at α = 1; the others at `--alpha`.
    /// `dense-softmax` always runs first: it is the reference for agreement.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "dense-softmax,topk-softmax@0.125,topk-softmax@0.0625,dense-entmax,topk@0.125,gaussian-robust"
    )]
    pub methods: Vec<String>,
    /// Sparse selection over a GQA group: `per-head` (each query head its own pages, the
    /// original's semantics) or `shared` (one page set per kv head, read once for the group).
    #[arg(long, default_value = "per-head", value_parser = crate::bench::parse_gqa)]
    pub gqa: GqaMode,
    /// α of the entmax (non-softmax) methods.
    #[arg(long, default_value_t = 1.5)]
    pub alpha: f64,
    /// K/V dtype of the caches.
    #[arg(long, default_value = "f16")]
    pub kv_dtype: DType,
    /// Where the decode attention runs: `cpu` (entmaxkv's CPU pipeline) or `cuda` (its CUDA
    /// backend: each layer's cache on the GPU, each step a replayed graph; the model's
    /// matmuls stay on the CPU).
    #[arg(long, default_value = "cpu", value_parser = parse_backend)]
    pub device: Backend,
    /// Layers that stay dense (same α) whatever the method.
    #[arg(long, value_delimiter = ',')]
    pub dense_layers: Vec<usize>,
    /// Perplexity texts (`kjv`, `jargon` or paths).
    #[arg(long, value_delimiter = ',', default_value = "kjv,jargon")]
    pub texts: Vec<String>,
    /// Tokens per perplexity run (from the start of the text).
    #[arg(long, default_value_t = 2048)]
    pub ppl_tokens: usize,
    /// Tokens prefilled before the decode steps start.
    #[arg(long, default_value_t = 1024)]
    pub ppl_prefix: usize,
    #[arg(long)]
    pub skip_ppl: bool,
    /// Haystack text of the needle test.
    #[arg(long, default_value = "kjv")]
    pub needle_text: String,
    /// Haystack lengths in tokens.
    #[arg(long, value_delimiter = ',', default_value = "2048,4096")]
    pub needle_lengths: Vec<usize>,
    /// Depths of the needle, fractions of the haystack.
    #[arg(long, value_delimiter = ',', default_value = "0,0.25,0.5,0.75,1")]
    pub needle_depths: Vec<f64>,
    /// Methods of the needle test (default: the softmax methods of `--methods`).
    #[arg(long, value_delimiter = ',')]
    pub needle_methods: Option<Vec<String>>,
    /// Tokens generated for the answer.
    #[arg(long, default_value_t = 8)]
    pub needle_gen: usize,
    #[arg(long)]
    pub skip_needle: bool,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PplRow {
    pub text: String,
    pub tokens: usize,
    pub prefix: usize,
    pub method: String,
    pub alpha: f64,
    pub budget: Option<f64>,
    /// Perplexity of the decoded tokens (positions prefix..tokens).
    pub ppl: f64,
    pub mean_nll: f64,
    pub n_predicted: usize,
    /// ppl / ppl(dense-softmax through entmaxkv) − 1.
    pub ppl_rel_to_dense: f64,
    /// Fraction of steps whose argmax token equals dense-softmax's.
    pub greedy_agreement: f64,
    /// Mean fraction of pages kept over steps, layers and heads.
    pub pages_kept_frac: f64,
    /// Bytes read by the attention relative to a dense K+V read.
    pub bytes_frac: f64,
    pub ms_per_token: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NeedleRow {
    pub haystack_tokens: usize,
    pub prompt_tokens: usize,
    pub depth: f64,
    pub needle_at: usize,
    pub method: String,
    pub alpha: f64,
    pub budget: Option<f64>,
    pub answer: String,
    pub output: String,
    pub correct: bool,
    pub pages_kept_frac: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NeedleSummary {
    pub method: String,
    pub alpha: f64,
    pub budget: Option<f64>,
    pub correct: usize,
    pub total: usize,
    pub accuracy: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalResult {
    pub provenance: Provenance,
    pub command: String,
    pub kv_dtype: DType,
    /// Where the decode attention ran.
    pub device: Backend,
    /// The GPU's name, driver and compute capability (CUDA backend only).
    pub gpu: Option<String>,
    pub dense_layers: Vec<usize>,
    /// Teacher-forced f32 perplexity of the same positions (the model crate's forward).
    pub teacher_forced: Vec<(String, f64)>,
    pub ppl: Vec<PplRow>,
    pub needle: Vec<NeedleRow>,
    pub needle_summary: Vec<NeedleSummary>,
    pub seconds: f64,
}

/// K/V of a teacher-forced prefill, recorded once and replayed into every method's caches.
struct Recorded {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    t: usize,
    logits: Vec<f32>,
}

struct Recorder<'a>(&'a mut Recorded);

impl DecodeAttention for Recorder<'_> {
    fn prefill(
        &mut self,
        layer: usize,
        k: &[f32],
        v: &[f32],
        t: usize,
    ) -> entmaxkv_models::Result<()> {
        let r = &mut *self.0;
        if r.k.len() <= layer {
            r.k.resize(layer + 1, Vec::new());
            r.v.resize(layer + 1, Vec::new());
        }
        r.k[layer] = k.to_vec();
        r.v[layer] = v.to_vec();
        r.t = t;
        Ok(())
    }
    fn step(
        &mut self,
        _: usize,
        _: &[f32],
        _: &[f32],
        _: &[f32],
        _: &mut [f32],
    ) -> entmaxkv_models::Result<()> {
        unreachable!("the recorder only prefills")
    }
}

fn record(model: &Model, tokens: &[u32]) -> Result<Recorded> {
    let mut r = Recorded {
        k: Vec::new(),
        v: Vec::new(),
        t: 0,
        logits: Vec::new(),
    };
    r.logits = model.prefill(tokens, &mut Recorder(&mut r))?;
    Ok(r)
}

fn replay(r: &Recorded, attn: &mut dyn DecodeAttention) -> Result<()> {
    for l in 0..r.k.len() {
        attn.prefill(l, &r.k[l], &r.v[l], r.t)?;
    }
    Ok(())
}

fn argmax(x: &[f32]) -> u32 {
    let mut b = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[b] {
            b = i;
        }
    }
    b as u32
}

/// A parsed `NAME[@BUDGET]`.
#[derive(Debug, Clone)]
struct Run {
    label: String,
    spec: MethodSpec,
    alpha: f64,
}

fn parse_runs(names: &[String], alpha: f64) -> Result<Vec<Run>> {
    let mut runs = Vec::new();
    for n in names {
        let (name, budget) = match n.split_once('@') {
            Some((a, b)) => (a, b.parse::<f64>().context(format!("bad budget in `{n}`"))?),
            None => (n.as_str(), 0.125),
        };
        let spec = MethodSpec::parse(name, budget)?;
        let alpha = if spec.softmax { 1.0 } else { alpha };
        if !spec.supports_alpha(alpha) {
            bail!("method `{name}` does not run at α = {alpha}");
        }
        let label = match spec.budget {
            Some(b) if b < 1.0 => format!("{name}@{b}"),
            _ => name.to_string(),
        };
        runs.push(Run { label, spec, alpha });
    }
    if let Some(i) = runs.iter().position(|r| r.label == "dense-softmax") {
        let r = runs.remove(i);
        runs.insert(0, r);
    } else {
        runs.insert(
            0,
            Run {
                label: "dense-softmax".into(),
                spec: MethodSpec::parse("dense-softmax", 0.125)?,
                alpha: 1.0,
            },
        );
    }
    Ok(runs)
}

fn parse_backend(s: &str) -> std::result::Result<Backend, String> {
    match s {
        "cpu" => Ok(Backend::Cpu),
        "cuda" => Ok(Backend::Cuda),
        o => Err(format!("--device {o}: expected cpu or cuda")),
    }
}

fn backend(
    shape: AttentionShape,
    run: &Run,
    a: &EvalArgs,
    max_tokens: usize,
) -> Result<EntmaxKvAttention> {
    let cfg = run.spec.config(run.alpha, shape.n_heads, a.gqa, None);
    let mut opts = EntmaxKvOptions::new(a.kv_dtype, max_tokens).with_backend(a.device);
    opts.dense_layers = a.dense_layers.clone();
    Ok(EntmaxKvAttention::new(shape, cfg, opts)?)
}

pub fn run(a: &EvalArgs) -> Result<()> {
    let t0 = Instant::now();
    let files = data_files(&a.data);
    let model = Model::load(&files.gguf).with_context(|| {
        format!(
            "loading {} (run `entmaxkv fetch` first)",
            files.gguf.display()
        )
    })?;
    let shape = model.attention_shape();
    let runs = parse_runs(&a.methods, a.alpha)?;
    let gpu = match a.device {
        Backend::Cpu => None,
        Backend::Cuda => {
            let g = entmaxkv::gpu::Gpu::get()?;
            let i = g.info();
            let s = format!(
                "{} (cc {}.{}, {} SMs, driver {})",
                i.name, i.cc.0, i.cc.1, i.sm_count, i.driver_version
            );
            println!("[eval] decode attention on {s}");
            Some(s)
        }
    };
    let mut res = EvalResult {
        provenance: provenance(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        kv_dtype: a.kv_dtype,
        device: a.device,
        gpu,
        dense_layers: a.dense_layers.clone(),
        teacher_forced: Vec::new(),
        ppl: Vec::new(),
        needle: Vec::new(),
        needle_summary: Vec::new(),
        seconds: 0.0,
    };
    let write = |res: &mut EvalResult| -> Result<()> {
        res.seconds = t0.elapsed().as_secs_f64();
        if let Some(p) = &a.json {
            std::fs::write(p, serde_json::to_string_pretty(res)?)?;
        }
        Ok(())
    };
    if !a.skip_ppl {
        if a.ppl_prefix == 0 || a.ppl_prefix >= a.ppl_tokens {
            bail!("need 0 < --ppl-prefix < --ppl-tokens");
        }
        for text in &a.texts {
            let path = text_path(&files, text);
            let body = DataFiles::read_text(&path)?;
            let mut ids = model.tokenizer().encode(&body)?;
            if ids.len() < a.ppl_tokens {
                bail!("{} has only {} tokens", path.display(), ids.len());
            }
            ids.truncate(a.ppl_tokens);
            let tf = model.token_nlls(&ids)?;
            let tf_tail = &tf[a.ppl_prefix - 1..];
            let tf_ppl = (tf_tail.iter().sum::<f64>() / tf_tail.len() as f64).exp();
            res.teacher_forced.push((text.clone(), tf_ppl));
            println!(
                "[ppl] {text}: {} tokens, prefix {}; teacher-forced f32 ppl of the decoded positions {tf_ppl:.4}",
                a.ppl_tokens, a.ppl_prefix
            );
            let rec = record(&model, &ids[..a.ppl_prefix])?;
            let mut dense_argmax: Vec<u32> = Vec::new();
            let mut dense_ppl = f64::NAN;
            for run in &runs {
                let ts = Instant::now();
                let mut attn = backend(shape, run, a, a.ppl_tokens)?;
                replay(&rec, &mut attn)?;
                let mut logits = rec.logits.clone();
                let (mut nlls, mut am) = (Vec::new(), Vec::new());
                for pos in a.ppl_prefix..a.ppl_tokens {
                    nlls.push(nll_of(&logits, ids[pos]));
                    am.push(argmax(&logits));
                    if pos + 1 < a.ppl_tokens {
                        logits = model.step(ids[pos], pos, &mut attn)?;
                    }
                }
                let mean = nlls.iter().sum::<f64>() / nlls.len() as f64;
                let ppl = mean.exp();
                if run.label == "dense-softmax" {
                    dense_argmax = am.clone();
                    dense_ppl = ppl;
                }
                let agree = am.iter().zip(&dense_argmax).filter(|(x, y)| x == y).count() as f64
                    / am.len() as f64;
                let tot = attn.totals();
                let secs = ts.elapsed().as_secs_f64();
                let row = PplRow {
                    text: text.clone(),
                    tokens: a.ppl_tokens,
                    prefix: a.ppl_prefix,
                    method: run.label.clone(),
                    alpha: run.alpha,
                    budget: run.spec.budget,
                    ppl,
                    mean_nll: mean,
                    n_predicted: nlls.len(),
                    ppl_rel_to_dense: ppl / dense_ppl - 1.0,
                    greedy_agreement: agree,
                    pages_kept_frac: tot.pages_kept_frac(),
                    bytes_frac: tot.bytes as f64 / tot.dense_bytes.max(1) as f64,
                    ms_per_token: 1e3 * secs / (a.ppl_tokens - a.ppl_prefix) as f64,
                };
                println!(
                    "[ppl] {text} {:<24} α={:<4} ppl {:>9.4} ({:+.2}% vs dense) agreement {:>6.2}% pages {:>5.1}% bytes {:>5.1}% ({:.0} ms/token)",
                    row.method,
                    row.alpha,
                    row.ppl,
                    100.0 * row.ppl_rel_to_dense,
                    100.0 * row.greedy_agreement,
                    100.0 * row.pages_kept_frac,
                    100.0 * row.bytes_frac,
                    row.ms_per_token
                );
                res.ppl.push(row);
                write(&mut res)?;
            }
        }
    }
    if !a.skip_needle {
        let nruns = match &a.needle_methods {
            Some(m) => parse_runs(m, a.alpha)?,
            None => runs.iter().filter(|r| r.spec.softmax).cloned().collect(),
        };
        needle(&model, &files, a, &nruns, &mut res, &write)?;
    }
    write(&mut res)?;
    if let Some(p) = &a.json {
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

/// Five-digit numbers for the needles, one per (length, depth).
fn needle_number(i: usize) -> u32 {
    const N: [u32; 12] = [
        48213, 71956, 30587, 92641, 15378, 64029, 83714, 27495, 56180, 39862, 10473, 75238,
    ];
    N[i % N.len()]
}

fn needle(
    model: &Model,
    files: &DataFiles,
    a: &EvalArgs,
    runs: &[Run],
    res: &mut EvalResult,
    write: &dyn Fn(&mut EvalResult) -> Result<()>,
) -> Result<()> {
    let tok = model.tokenizer();
    let body = DataFiles::read_text(&text_path(files, &a.needle_text))?;
    let hay_all = tok.encode(&body)?;
    let question = tok.encode(
        "\n\nQuestion: What is the secret number mentioned in the text above?\nAnswer: The secret number is",
    )?;
    let mut case = 0usize;
    for &len in &a.needle_lengths {
        if hay_all.len() < len {
            bail!("needle text has only {} tokens", hay_all.len());
        }
        for &depth in &a.needle_depths {
            let num = needle_number(case);
            case += 1;
            let needle = tok.encode(&format!(
                "\nThe secret number is {num}. Remember it: the secret number is {num}.\n"
            ))?;
            // Plant the needle right after a newline at or after the requested depth.
            let mut at = ((depth * len as f64).round() as usize).min(len);
            while at < len && at > 0 && !tok.decode_lossy(&hay_all[at - 1..at])?.ends_with('\n') {
                at += 1;
            }
            let mut prompt: Vec<u32> = hay_all[..at].to_vec();
            prompt.extend_from_slice(&needle);
            prompt.extend_from_slice(&hay_all[at..len]);
            let max_tokens = prompt.len() + question.len() + a.needle_gen + 1;
            if max_tokens > model.config().context_length {
                bail!(
                    "needle prompt of {max_tokens} tokens exceeds the model's context {}",
                    model.config().context_length
                );
            }
            let tp = Instant::now();
            let rec = record(model, &prompt)?;
            eprintln!(
                "[needle] {len} tokens, depth {depth}: prefill of {} tokens in {:.1} s",
                prompt.len(),
                tp.elapsed().as_secs_f64()
            );
            for run in runs {
                let mut attn = backend(model.attention_shape(), run, a, max_tokens)?;
                replay(&rec, &mut attn)?;
                let mut pos = prompt.len();
                let mut logits = Vec::new();
                for &t in &question {
                    logits = model.step(t, pos, &mut attn)?;
                    pos += 1;
                }
                let mut out = Vec::new();
                for _ in 0..a.needle_gen {
                    let t = argmax(&logits);
                    out.push(t);
                    logits = model.step(t, pos, &mut attn)?;
                    pos += 1;
                }
                let text = tok.decode_lossy(&out)?;
                let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
                let correct = digits.starts_with(&num.to_string());
                let tot = attn.totals();
                println!(
                    "[needle] {len:>5} depth {depth:<4} {:<24} α={:<4} {} {:?}",
                    run.label,
                    run.alpha,
                    if correct { "OK  " } else { "MISS" },
                    text
                );
                res.needle.push(NeedleRow {
                    haystack_tokens: len,
                    prompt_tokens: prompt.len(),
                    depth,
                    needle_at: at,
                    method: run.label.clone(),
                    alpha: run.alpha,
                    budget: run.spec.budget,
                    answer: num.to_string(),
                    output: text,
                    correct,
                    pages_kept_frac: tot.pages_kept_frac(),
                });
            }
            summarise_needle(res, runs);
            write(res)?;
        }
    }
    for s in &res.needle_summary {
        println!(
            "[needle] {:<24} α={:<4} accuracy {}/{} = {:.0}%",
            s.method,
            s.alpha,
            s.correct,
            s.total,
            100.0 * s.accuracy
        );
    }
    Ok(())
}

fn summarise_needle(res: &mut EvalResult, runs: &[Run]) {
    res.needle_summary = runs
        .iter()
        .map(|r| {
            let rows: Vec<&NeedleRow> = res
                .needle
                .iter()
                .filter(|n| n.method == r.label && n.alpha == r.alpha)
                .collect();
            let correct = rows.iter().filter(|n| n.correct).count();
            NeedleSummary {
                method: r.label.clone(),
                alpha: r.alpha,
                budget: r.spec.budget,
                correct,
                total: rows.len(),
                accuracy: correct as f64 / rows.len().max(1) as f64,
            }
        })
        .collect();
}
