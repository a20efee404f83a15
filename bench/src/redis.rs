//! Redis with TLS on the run's certificates, driven by `redis-benchmark`.
//!
//! Redis listens on TLS only (`port 0`, `tls-port P`), requires client
//! certificates (`tls-auth-clients yes`), speaks TLS 1.3 only like tmpvault,
//! and keeps nothing on disk (`save ""`, `appendonly no`). Everything is
//! skipped, with the reason shown in the table, when `redis-server`,
//! `redis-benchmark` or `redis-cli` is not on `PATH`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use tmpvault::tls::ClientTlsFiles;

use crate::failure::Failure;
use crate::process::{self, run_captured, ChildGuard};
use crate::workdir::Workdir;

/// How long Redis gets to start answering PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one `redis-cli` call may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// The Redis programs, found on `PATH`.
#[derive(Clone, Debug)]
pub struct Tools {
    server: PathBuf,
    benchmark: PathBuf,
    cli: PathBuf,
}

impl Tools {
    /// The three programs, or why they cannot be used.
    pub fn find() -> Result<Tools, String> {
        let find =
            |name: &str| process::which(name).ok_or_else(|| format!("{name} is not on PATH"));
        Ok(Tools {
            server: find("redis-server")?,
            benchmark: find("redis-benchmark")?,
            cli: find("redis-cli")?,
        })
    }
}

/// One `redis-benchmark` test.
#[derive(Clone, Copy, Debug)]
pub struct BenchmarkRun {
    /// Requests per second.
    pub rate: f64,
    /// Median latency in microseconds.
    pub p50_us: f64,
    /// 99th percentile latency in microseconds.
    pub p99_us: f64,
    /// Requests sent.
    pub requests: u64,
    /// CPU time of redis-server over the run.
    pub server_cpu: Duration,
    /// CPU time of redis-benchmark itself.
    pub generator_cpu: Duration,
}

impl BenchmarkRun {
    /// Server CPU microseconds per request.
    pub fn cpu_us_per_request(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }

    /// redis-benchmark's CPU microseconds per request.
    pub fn generator_cpu_us_per_request(&self) -> f64 {
        self.generator_cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }
}

/// A running redis-server.
pub struct Redis {
    child: ChildGuard,
    port: u16,
    tools: Tools,
    client: ClientTlsFiles,
}

impl Redis {
    /// Starts redis-server on a free port with the workdir's certificates.
    pub async fn start(workdir: &Workdir, tools: Tools) -> Result<Redis, Failure> {
        let port = process::free_port()?;
        let dir = workdir.subdir("redis")?;
        let server = workdir.server_files();
        let mut command = Command::new(&tools.server);
        command
            .arg("--bind")
            .arg("127.0.0.1")
            .args(["--port", "0", "--tls-port"])
            .arg(port.to_string())
            .arg("--tls-cert-file")
            .arg(&server.cert)
            .arg("--tls-key-file")
            .arg(&server.key)
            .arg("--tls-ca-cert-file")
            .arg(&server.client_ca)
            .args(["--tls-auth-clients", "yes", "--tls-protocols", "TLSv1.3"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = ChildGuard::spawn("redis-server", &mut command)?;
        let redis = Redis {
            child,
            port,
            tools,
            client: workdir.client_files(),
        };
        redis.wait_ready().await?;
        Ok(redis)
    }

    async fn wait_ready(&self) -> Result<(), Failure> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(reply) = self.cli(&["PING"], None).await {
                if reply.trim() == "PONG" {
                    return Ok(());
                }
            }
            if !process::is_running(self.child.pid()) {
                return Err(Failure::new(
                    "starting redis-server",
                    "it exited before answering PING (is this redis built with TLS?)",
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Failure::new(
                    "starting redis-server",
                    format!("no PONG within {START_TIMEOUT:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The TLS flags every Redis client program takes.
    fn tls_args(&self, command: &mut Command) {
        command
            .args(["-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("--tls")
            .arg("--cert")
            .arg(&self.client.cert)
            .arg("--key")
            .arg(&self.client.key)
            .arg("--cacert")
            .arg(&self.client.ca);
    }

    /// Runs `redis-cli` with `args`, feeding `input` on stdin; its stdout.
    async fn cli(&self, args: &[&str], input: Option<Vec<u8>>) -> Result<String, Failure> {
        let mut command = Command::new(&self.tools.cli);
        self.tls_args(&mut command);
        command.args(args);
        run_captured("redis-cli", command, input, CLI_TIMEOUT).await
    }

    /// Sets `key` to `value` (printable ASCII).
    pub async fn set(&self, key: &str, value: &str) -> Result<(), Failure> {
        let reply = self.cli(&["SET", key, value], None).await?;
        if reply.trim() == "OK" {
            Ok(())
        } else {
            Err(Failure::new(format!("redis SET {key}"), reply))
        }
    }

    /// Removes every key.
    pub async fn flush(&self) -> Result<(), Failure> {
        self.cli(&["FLUSHALL"], None).await.map(drop)
    }

    /// `used_memory` from `INFO memory`, in bytes.
    pub async fn used_memory(&self) -> Result<u64, Failure> {
        let info = self.cli(&["INFO", "memory"], None).await?;
        info.lines()
            .find_map(|line| line.trim().strip_prefix("used_memory:"))
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| Failure::new("reading redis used_memory", "no used_memory line"))
    }

    /// Resident set size of redis-server, in bytes.
    pub fn rss(&self) -> Result<u64, Failure> {
        self.child.rss()
    }

    /// Stores `count` values of `value_len` bytes under `mem/000000`... with
    /// one pipelined `redis-cli --pipe`.
    pub async fn fill(&self, count: u64, value_len: usize) -> Result<(), Failure> {
        let value = vec![b'v'; value_len];
        let mut protocol = Vec::with_capacity(count as usize * (value_len + 48));
        for index in 0..count {
            let key = format!("mem/{index:06}");
            let _ = write!(
                protocol,
                "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${value_len}\r\n",
                key.len()
            );
            protocol.extend_from_slice(&value);
            protocol.extend_from_slice(b"\r\n");
        }
        let report = self.cli(&["--pipe"], Some(protocol)).await?;
        if report.contains("errors: 0") {
            Ok(())
        } else {
            Err(Failure::new("filling redis with redis-cli --pipe", report))
        }
    }

    /// Runs one `redis-benchmark` test (`get` or `set`) of `requests`
    /// requests over `connections` connections with `value_len`-byte values.
    pub async fn benchmark(
        &self,
        test: &str,
        connections: usize,
        requests: u64,
        value_len: usize,
    ) -> Result<BenchmarkRun, Failure> {
        let mut command = Command::new(&self.tools.benchmark);
        self.tls_args(&mut command);
        command
            .arg("-c")
            .arg(connections.to_string())
            .arg("-n")
            .arg(requests.to_string())
            .arg("-d")
            .arg(value_len.to_string())
            .args(["-t", test, "--csv"]);
        process::pin_server(self.child.pid())?;
        let before = self.child.cpu_time()?;
        let generator_before = process::reaped_children_cpu_time()?;
        // Even at a slow 2k requests/s this is generous, and still bounded.
        let timeout = Duration::from_secs(30) + Duration::from_millis(requests / 2);
        let csv = run_captured("redis-benchmark", command, None, timeout).await?;
        let after = self.child.cpu_time()?;
        let generator_cpu = process::reaped_children_cpu_time()?.saturating_sub(generator_before);
        let (rate, p50_ms, p99_ms) = parse_csv(&csv, test).ok_or_else(|| {
            Failure::new(
                format!("reading redis-benchmark -t {test} output"),
                format!("no CSV row for {test} in: {csv}"),
            )
        })?;
        Ok(BenchmarkRun {
            rate,
            p50_us: p50_ms * 1000.0,
            p99_us: p99_ms * 1000.0,
            requests,
            server_cpu: after.saturating_sub(before),
            generator_cpu,
        })
    }
}

/// From `redis-benchmark --csv` output, the row of `test`: (rps, p50 ms,
/// p99 ms), located by the header's column names.
fn parse_csv(csv: &str, test: &str) -> Option<(f64, f64, f64)> {
    let unquote = |field: &str| field.trim().trim_matches('"').to_owned();
    let mut lines = csv.lines().filter(|line| line.starts_with('"'));
    let header: Vec<String> = lines.next()?.split(',').map(unquote).collect();
    let column = |name: &str| header.iter().position(|field| field == name);
    let (rps, p50, p99) = (
        column("rps")?,
        column("p50_latency_ms")?,
        column("p99_latency_ms")?,
    );
    let row: Vec<String> = lines
        .map(|line| line.split(',').map(unquote).collect::<Vec<_>>())
        .find(|row| {
            row.first()
                .is_some_and(|name| name.eq_ignore_ascii_case(test))
        })?;
    let number = |index: usize| row.get(index)?.parse::<f64>().ok();
    Some((number(rps)?, number(p50)?, number(p99)?))
}

#[cfg(test)]
mod tests {
    use super::parse_csv;

    #[test]
    fn reads_the_row_of_the_test_by_column_name() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                   \"SET\",\"36245.02\",\"0.929\",\"0.184\",\"0.615\",\"3.351\",\"5.183\",\"179.711\"\n\
                   \"GET\",\"34083.16\",\"0.972\",\"0.200\",\"0.647\",\"3.375\",\"5.119\",\"125.439\"\n";
        assert_eq!(parse_csv(csv, "get"), Some((34083.16, 0.647, 5.119)));
        assert_eq!(parse_csv(csv, "set"), Some((36245.02, 0.615, 5.183)));
        assert_eq!(parse_csv(csv, "lpush"), None);
    }
}
