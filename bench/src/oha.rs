//! `oha`, a second generator for the keep-alive GET and PUT figures when it
//! is on `PATH` (`cargo install oha`): `--no-tui --output-format json`, the
//! client certificate through `--cacert/--cert/--key`.
//!
//! Its JSON gives requests per second over the run and latency percentiles
//! in seconds; the server's CPU time is read around the whole process, so
//! with oha it includes the 50 handshakes (a few ms in a 5 s run).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tmpvault::tls::ClientTlsFiles;

use crate::failure::{Failure, Step};
use crate::load::per_request;
use crate::process::{self, run_captured};

/// What one oha run measured.
#[derive(Clone, Copy, Debug)]
pub struct OhaRun {
    /// Successful requests per second.
    pub rate: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Requests answered with a non-2xx status, or failed.
    pub errors: u64,
    /// Server CPU µs per request, when the server's pid was given.
    pub cpu_us_per_request: Option<f64>,
    /// oha's own CPU µs per request.
    pub generator_cpu_us_per_request: Option<f64>,
}

/// One oha run: `connections` keep-alive connections for `duration` against
/// `url`, with `body` (a file) sent as PUT when given, else GET.
pub struct OhaLoad<'a> {
    /// `https://127.0.0.1:P/path`.
    pub url: String,
    /// Concurrent connections.
    pub connections: usize,
    /// How long.
    pub duration: Duration,
    /// The PUT body file.
    pub body: Option<&'a Path>,
}

/// `oha` on `PATH`, if any.
pub fn find() -> Option<PathBuf> {
    process::which("oha")
}

/// Runs oha as described by `load`, reading the CPU time of `server_pid`
/// around it.
pub async fn run(
    oha: &Path,
    load: &OhaLoad<'_>,
    client: &ClientTlsFiles,
    server_pid: Option<u32>,
) -> Result<OhaRun, Failure> {
    let mut command = Command::new(oha);
    command
        .args(["--no-tui", "--output-format", "json", "-c"])
        .arg(load.connections.to_string())
        .arg("-z")
        .arg(format!("{}ms", load.duration.as_millis()))
        .arg("--cacert")
        .arg(&client.ca)
        .arg("--cert")
        .arg(&client.cert)
        .arg("--key")
        .arg(&client.key);
    if let Some(body) = load.body {
        command.args(["-m", "PUT", "-D"]).arg(body);
    }
    command.arg(&load.url);
    if let Some(pid) = server_pid {
        process::pin_server(pid)?;
    }
    let cpu_before = server_pid.map(process::cpu_time).transpose()?;
    let oha_cpu_before = process::reaped_children_cpu_time()?;
    let json = run_captured(
        "oha",
        command,
        None,
        load.duration + Duration::from_secs(30),
    )
    .await?;
    let cpu_after = server_pid.map(process::cpu_time).transpose()?;
    let oha_cpu = process::reaped_children_cpu_time()?.saturating_sub(oha_cpu_before);
    let step = || format!("reading oha's JSON for {}", load.url);
    let value: serde_json::Value = serde_json::from_str(&json).step(step)?;
    let seconds = |pointer: &str| {
        value
            .pointer(pointer)
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| Failure::new(step(), format!("no number at {pointer}")))
    };
    let total_seconds = seconds("/summary/total")?;
    let mut succeeded = 0u64;
    let mut failed = 0u64;
    if let Some(statuses) = value
        .pointer("/statusCodeDistribution")
        .and_then(serde_json::Value::as_object)
    {
        for (status, count) in statuses {
            let count = count.as_u64().unwrap_or(0);
            if status.starts_with('2') {
                succeeded += count;
            } else {
                failed += count;
            }
        }
    }
    if let Some(errors) = value
        .pointer("/errorDistribution")
        .and_then(serde_json::Value::as_object)
    {
        // Requests cut off at the deadline are not failures of the server.
        failed += errors
            .iter()
            .filter(|(kind, _)| !kind.contains("deadline"))
            .filter_map(|(_, count)| count.as_u64())
            .sum::<u64>();
    }
    let cpu = cpu_before
        .zip(cpu_after)
        .map(|(before, after)| after.saturating_sub(before));
    Ok(OhaRun {
        rate: succeeded as f64 / total_seconds.max(1e-9),
        p50_us: seconds("/latencyPercentiles/p50")? * 1e6,
        p99_us: seconds("/latencyPercentiles/p99")? * 1e6,
        errors: failed,
        cpu_us_per_request: cpu.and_then(|cpu| per_request(cpu, succeeded)),
        generator_cpu_us_per_request: per_request(oha_cpu, succeeded),
    })
}
