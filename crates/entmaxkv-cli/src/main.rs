//! The `entmaxkv` command: benchmarks, accuracy checks, figures and model traces.
//!
//! Errors are printed as one readable line with a nonzero exit, never a backtrace.

mod bench;
mod gpu_bench;
mod meta;
mod probe;

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
}

fn main() {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Bench(a) => run_bench(&a),
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
