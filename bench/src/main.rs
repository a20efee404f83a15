//! `tmpvault-bench`: tmpvault side by side with the limit of its own stack
//! (a bare hyper + rustls server, the "baseline") and with Redis over TLS,
//! on the same certificates, on this machine, in one run.
//!
//! ```text
//! cargo build --release --workspace --bins
//! target/release/tmpvault-bench [--duration 5s] [--connections 50] [--rounds 3]
//!     [--h2-connections 4] [--h2-streams 16] [--pin] [--secret-arena MODE] [--quick]
//! ```
//!
//! Progress goes to stderr; the table (every figure, and PASS or MISS beside
//! each target) goes to stdout. `docs/BENCHMARKS.md` says what the figures
//! mean and holds the latest full run.
//!
//! # Layout
//!
//! - `failure`: the one error type, naming the step that failed.
//! - `workdir`: the private directory under `/dev/shm` and the certificates.
//! - `process`: child processes under a kill-on-drop guard (and killed by
//!   the panic hook too, since release builds abort on panic), bounded
//!   waits, `/proc`.
//! - `baseline`: the hidden `baseline` subcommand, the bare server.
//! - `load`: the in-repo load generator (hyper client + rustls, HDR
//!   histograms), the first-200 poller and the plain-HTTP `/metrics` reader.
//! - `oha`: `oha` in place of the generator when it is on `PATH`.
//! - `redis`: redis-server with TLS, `redis-benchmark`, `redis-cli`.
//! - `scenarios`: every measurement, in order.
//! - `waiters`: 1,000 waiting GETs (`?wait=`) over HTTP/2 or HTTP/1.1.
//! - `report`: medians, ratios, targets and the table.

mod baseline;
mod failure;
mod load;
mod oha;
mod process;
mod redis;
mod report;
mod scenarios;
mod waiters;
mod workdir;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::failure::Failure;
use crate::scenarios::Settings;

fn duration_arg(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw).map_err(|error| error.to_string())
}

/// Benchmark tmpvault against a bare hyper + rustls server and Redis-TLS.
#[derive(Debug, Parser)]
#[command(name = "tmpvault-bench", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Hidden>,
    /// Length of each load run [default: 5s; --quick: 500ms].
    #[arg(long, value_parser = duration_arg)]
    duration: Option<Duration>,
    /// Concurrent keep-alive connections (and new-connection loops).
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// HTTP/2 connections of the HTTP/2 GET and PUT runs.
    #[arg(long, default_value_t = 4)]
    h2_connections: usize,
    /// Concurrent streams on each HTTP/2 connection (at most the server's
    /// 64 per connection).
    #[arg(long, default_value_t = 16)]
    h2_streams: usize,
    /// Rounds of each load scenario; medians are taken over them [default: 3; --quick: 1].
    #[arg(long)]
    rounds: Option<usize>,
    /// Secrets stored for the memory and expiry figures [default: 100000; --quick: 2000].
    #[arg(long)]
    secrets: Option<u64>,
    /// A smoke run of a few seconds that still prints every figure.
    #[arg(long)]
    quick: bool,
    /// Measure only the RSS per secret (tmpvault's, and Redis's when it is
    /// installed), with --secrets secrets of 32 B.
    #[arg(long)]
    memory_only: bool,
    /// Run the load generators on the last CPU and the servers on the
    /// others, so that they do not share time slices (p99 under load).
    #[arg(long)]
    pin: bool,
    /// Pass `--secret-arena MODE` to every tmpvault (to measure what the
    /// arena costs against `heap`) [default: tmpvault's own, auto].
    #[arg(long, value_enum)]
    secret_arena: Option<tmpvault::config::SecretArena>,
}

#[derive(Debug, Subcommand)]
enum Hidden {
    /// The baseline server (started by the bench itself).
    #[command(hide = true)]
    Baseline(baseline::BaselineArgs),
}

impl Cli {
    fn settings(&self) -> Result<Settings, Failure> {
        let quick = self.quick;
        let settings = Settings {
            duration: self.duration.unwrap_or(if quick {
                Duration::from_millis(500)
            } else {
                Duration::from_secs(5)
            }),
            connections: self.connections,
            h2_connections: self.h2_connections,
            h2_streams: self.h2_streams,
            rounds: self.rounds.unwrap_or(if quick { 1 } else { 3 }),
            secrets: self.secrets.unwrap_or(if quick { 2_000 } else { 100_000 }),
            starts: 10,
            warmup: Duration::from_millis(if quick { 200 } else { 1_000 }),
            settle: Duration::from_millis(if quick { 200 } else { 500 }),
            idle: Duration::from_secs(if quick { 1 } else { 5 }),
            pin: self.pin,
            secret_arena: self.secret_arena,
        };
        if settings.connections == 0 || settings.rounds == 0 || settings.secrets == 0 {
            return Err(Failure::new(
                "reading the command line",
                "--connections, --rounds and --secrets must be at least 1",
            ));
        }
        let most_streams = tmpvault::http::server::HTTP2_MAX_CONCURRENT_STREAMS as usize;
        if settings.h2_connections == 0 || !(1..=most_streams).contains(&settings.h2_streams) {
            return Err(Failure::new(
                "reading the command line",
                format!("--h2-connections must be at least 1 and --h2-streams from 1 to {most_streams} (the server's streams per connection)"),
            ));
        }
        if settings.duration < Duration::from_millis(100) {
            return Err(Failure::new(
                "reading the command line",
                "--duration must be at least 100ms",
            ));
        }
        Ok(settings)
    }
}

/// Completes on SIGINT or SIGTERM, so that the run's guards are dropped
/// (and its children stopped) instead of the process dying under them.
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn bench(settings: &Settings, memory_only: bool) -> Result<String, Failure> {
    if settings.pin {
        process::pin()?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| Failure::new("starting the async runtime", error.to_string()))?;
    let workdir = workdir::Workdir::create()?;
    runtime.block_on(async {
        tokio::select! {
            text = async {
                if memory_only {
                    let memory = scenarios::memory_only(settings, &workdir).await?;
                    let mut text = String::new();
                    memory.render_per_secret(&mut text);
                    Ok(text)
                } else {
                    scenarios::run(settings, &workdir).await.map(|figures| figures.render())
                }
            } => text,
            () = interrupted() => Err(Failure::new("running the benchmark", "interrupted")),
        }
    })
}

/// Installs a panic hook that stops every child and removes the private
/// directory (release builds abort on panic, so no guard's `Drop` runs),
/// then runs the default hook, which prints the message.
fn clean_up_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        process::kill_all();
        workdir::remove_all();
        default(info);
    }));
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Hidden::Baseline(args)) = &cli.command {
        return match baseline::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("tmpvault-bench baseline: {error}");
                ExitCode::FAILURE
            }
        };
    }
    clean_up_on_panic();
    let started = Instant::now();
    let outcome = cli
        .settings()
        .and_then(|settings| bench(&settings, cli.memory_only));
    match outcome {
        Ok(text) => {
            print!("{text}");
            eprintln!(
                "tmpvault-bench: finished in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("tmpvault-bench: {error}");
            ExitCode::FAILURE
        }
    }
}
