//! The `entmaxkv` command: benchmarks, accuracy checks, figures and model traces.
//!
//! Errors are printed as one readable line with a nonzero exit, never a backtrace.

mod bench;
mod check;
mod eval;
mod figure;
mod gpu_bench;
mod meta;
mod methods;
mod probe;
mod soak;
mod trace;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "entmaxkv",
    version,
    about = "Sparse α-entmax decode attention over a paged KV cache"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Time dense and sparse decode methods on synthetic data (CPU by default, `--device cuda`).
    Bench(bench::BenchArgs),
    /// Accuracy of every method against the f64 oracle; nonzero exit on a broken tolerance.
    Check(check::CheckArgs),
    /// Plot a `bench --json` result: stacked stage bars relative to dense softmax, and a
    /// Pareto plot of error vs time (SVG or PNG by the output's suffix).
    Figure(figure::FigureArgs),
    /// Long append + decode run: statistics drift and memory growth.
    Soak(soak::SoakArgs),
    /// Fetch the SmolLM2 GGUF and the texts (runs scripts/fetch_models.sh).
    Fetch(eval::FetchArgs),
    /// Capture Q/K/V traces from SmolLM2, or evaluate every method on them.
    Trace(trace::TraceArgs),
    /// SmolLM2 decoding with dense vs sparse attention: perplexity, greedy agreement,
    /// needle in a haystack.
    Eval(eval::EvalArgs),
}

fn main() {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Bench(a) => run_bench(&a),
        Cmd::Check(a) => run_check(&a),
        Cmd::Soak(a) => run_soak(&a),
        Cmd::Fetch(a) => eval::fetch(&a),
        Cmd::Trace(a) => trace::run(&a),
        Cmd::Eval(a) => eval::run(&a),
        Cmd::Figure(a) => figure::run(&a).map(|files| {
            for f in files {
                eprintln!("wrote {f}");
            }
        }),
    };
    if let Err(e) = res {
        eprintln!("entmaxkv: error: {e:#}");
        std::process::exit(1);
    }
}

fn run_bench(a: &bench::BenchArgs) -> anyhow::Result<()> {
    let r = bench::run(a)?;
    bench::print_table(&r);
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&r)?)?;
        eprintln!("wrote {p}");
    }
    if let Some(p) = &a.csv {
        bench::write_csv(&r, p)?;
        eprintln!("wrote {p}");
    }
    Ok(())
}

fn run_check(a: &check::CheckArgs) -> anyhow::Result<()> {
    let r = check::run(a)?;
    check::print_table(&r);
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&r)?)?;
        eprintln!("wrote {p}");
    }
    if r.failures > 0 {
        anyhow::bail!(
            "{} of {} rows broke their tolerance",
            r.failures,
            r.rows.len()
        );
    }
    Ok(())
}

fn run_soak(a: &soak::SoakArgs) -> anyhow::Result<()> {
    let r = match a.device.as_str() {
        "cpu" => soak::run(a)?,
        "cuda" => soak::run_gpu(a)?,
        d => anyhow::bail!("--device {d}: expected cpu or cuda"),
    };
    println!("device: {}", r.device);
    if let (Some(eq), Some(fc)) = (r.device_equals_host, r.device_free_change_mib) {
        println!(
            "device K/V/statistics/sketch equal to the host mirror after phase A: {eq}; device free memory change over phase B after warm-up: {fc:.2} MiB"
        );
    }
    println!(
        "phase A: {} steps in {:.1} s; {} page rows checked, max mean/std rel diff {:.2e}, min/max exact: {}; last step rel vs oracle {:.2e}",
        r.steps, r.phase_a_seconds, r.pages_checked, r.max_stat_rel_diff, r.min_max_exact, r.last_step_rel
    );
    println!(
        "phase B: {} steps in {:.1} s; {} sequences released; free pages / RSS MiB samples: {:?}; RSS growth after warm-up {:.2} MiB",
        r.phase_b_steps, r.phase_b_seconds, r.sequences_released, r.phase_b_samples, r.rss_growth_mib
    );
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&r)?)?;
        eprintln!("wrote {p}");
    }
    if !(r.min_max_exact
        && r.max_stat_rel_diff <= 1e-5
        && r.last_step_rel <= 2e-3
        && r.device_equals_host != Some(false))
    {
        anyhow::bail!("soak found statistics drift or a wrong result");
    }
    Ok(())
}
