//! The measurements, in the order they run:
//!
//! 1. start the servers on the run's certificates: the baseline, tmpvault
//!    with default logging, tmpvault with `RUST_LOG=warn`, tmpvault with
//!    default logging and a policy of [`POLICY_RULES`] rules, Redis;
//! 2. keep-alive GET, keep-alive PUT and new-connection GET, each for
//!    `rounds` rounds in which every system runs once, back to back (A B A
//!    B ...), so that a ratio pairs two runs made under the same load;
//!    then GET and PUT over HTTP/2 (a few connections, many streams each)
//!    the same way, for the baseline, tmpvault and tmpvault `warn`;
//! 3. start-to-first-200 of fresh `tmpvault serve` processes;
//! 4. RSS idle and with N secrets, and Redis's `used_memory` for the same;
//! 5. expiry precision with N secrets written with `ttl=2s`;
//! 6. 1,000 waiting GETs (`?wait=`) held by a fresh server, for each of
//!    [`waiters::SHAPES`]: RSS, idle CPU, and one PUT answering them all.
//!
//! Every tmpvault runs with stdout and stderr on /dev/null: the default
//! one still formats and writes its audit line per request (to /dev/null,
//! which costs the `write` but no disk or pipe), the `warn` one does not
//! produce it at all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, Uri};
use tokio::time::Instant;

use crate::failure::{Failure, Step};
use crate::load::{self, Load, Slot, Stop, Target};
use crate::oha::{self, OhaLoad};
use crate::process::{self, ChildGuard};
use crate::redis::{self, Redis};
use crate::report::{Column, Expiry, Figures, Memory, RedisMemory, Scenario, Throughput, Waiters};
use crate::waiters;
use crate::workdir::Workdir;

/// Size of the GET and PUT values.
const VALUE_LEN: usize = 1024;
/// Size of the values in the memory and expiry tests.
const SMALL_VALUE_LEN: usize = 32;
/// TTL of the expiry test.
const EXPIRY_TTL: Duration = Duration::from_secs(2);
/// How often `/metrics` is read while waiting for the expiry.
const EXPIRY_POLL: Duration = Duration::from_millis(1);
/// From spawn to first 200, at most.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The key every GET reads: the same in tmpvault and (by name) in Redis,
/// where `redis-benchmark` without `-r` uses this literal key.
const GET_PATH: &str = "/v1/secrets/bench/get";
const REDIS_KEY: &str = "key:__rand_int__";

/// What the command line asked for.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Length of one load run.
    pub duration: Duration,
    /// Concurrent connections (and new-connection loops).
    pub connections: usize,
    /// HTTP/2 connections of the HTTP/2 runs.
    pub h2_connections: usize,
    /// Concurrent streams on each of them.
    pub h2_streams: usize,
    /// Rounds of each load scenario.
    pub rounds: usize,
    /// Secrets in the memory and expiry tests.
    pub secrets: u64,
    /// Fresh starts timed for start-to-first-200.
    pub starts: usize,
    /// A short unmeasured load on each server before the first round.
    pub warmup: Duration,
    /// Pause before reading RSS, for the allocator and kernel to settle.
    pub settle: Duration,
    /// The window the waiting GETs' idle CPU is read over.
    pub idle: Duration,
    /// Servers on some CPUs, load generators on another (`--pin`).
    pub pin: bool,
    /// `--secret-arena` for every tmpvault (none: its default, `auto`).
    pub secret_arena: Option<tmpvault::config::SecretArena>,
}

/// Rules in the policy of the `tmpvault+policy` column. The bench's own
/// rule is the last one, so every request is checked against all of them:
/// the worst case for a policy of this size.
const POLICY_RULES: usize = 64;

/// How a tmpvault process under test is configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// As shipped without a policy: `info`, one JSON audit line per
    /// request, to stderr.
    Default,
    /// `RUST_LOG=warn`: no audit line.
    Warn,
    /// As `Default`, with `--policy` and [`POLICY_RULES`] rules.
    Policy,
}

/// A policy of [`POLICY_RULES`] rules in which only the last one names the
/// bench's client (`cn:tmpvault-bench`, from [`Workdir`]): the others are
/// SPIFFE wildcards for other workloads, as a shared sidecar would have.
fn policy_json() -> String {
    let mut rules: Vec<String> = (1..POLICY_RULES)
        .map(|team| {
            format!(
                r#"{{"identity": "spiffe://example.org/ns/team-{team}/*", "prefix": "team-{team}/", "allow": ["read", "list"]}}"#
            )
        })
        .collect();
    rules.push(
        r#"{"identity": "cn:tmpvault-bench", "prefix": "bench/", "allow": ["read", "write", "delete", "list"]}"#
            .into(),
    );
    format!("{{\"rules\": [\n  {}\n]}}\n", rules.join(",\n  "))
}

/// A server process under test and how to reach it.
struct Server {
    child: ChildGuard,
    target: Target,
}

/// Where the programs are and what every run shares.
struct Bench<'a> {
    settings: &'a Settings,
    workdir: &'a Workdir,
    tmpvault: PathBuf,
    own_exe: PathBuf,
    oha: Option<PathBuf>,
    /// A 1 KiB file, the PUT body for oha.
    put_body_file: PathBuf,
    /// The policy file of the `tmpvault+policy` column.
    policy_file: PathBuf,
}

/// The `tmpvault` binary next to this one (same target directory and
/// profile), as `cargo build --bin tmpvault --bin tmpvault-bench` leaves it.
fn sibling_tmpvault(own_exe: &Path) -> Result<PathBuf, Failure> {
    let path = own_exe.with_file_name("tmpvault");
    if path.is_file() {
        Ok(path)
    } else {
        Err(Failure::new(
            "finding the tmpvault binary",
            format!(
                "{} does not exist; build both binaries first: cargo build --release --bin tmpvault --bin tmpvault-bench",
                path.display()
            ),
        ))
    }
}

fn parse_uri(path: &str) -> Result<Uri, Failure> {
    path.parse()
        .map_err(|error| Failure::new("building the request paths", format!("{path}: {error}")))
}

fn value(len: usize) -> Bytes {
    // Printable, so the same bytes can go to Redis on a command line.
    Bytes::from(vec![b'x'; len])
}

impl Bench<'_> {
    fn target(&self, addr: SocketAddr) -> Result<Target, Failure> {
        Target::new(addr, &self.workdir.client_files())
    }

    /// The run's server certificate, key and client CA, as the flags both
    /// `tmpvault serve` and the baseline take.
    fn server_tls_args(&self, command: &mut Command) {
        let files = self.workdir.server_files();
        command
            .arg("--tls-cert")
            .arg(&files.cert)
            .arg("--tls-key")
            .arg(&files.key)
            .arg("--client-ca")
            .arg(&files.client_ca);
    }

    /// The `tmpvault serve` command, with every output on /dev/null and no
    /// `TMPVAULT_*` or `RUST_LOG` from our environment.
    fn serve_command(
        &self,
        listen: SocketAddr,
        variant: Variant,
        ops: Option<SocketAddr>,
    ) -> Result<Command, Failure> {
        let mut command = Command::new(&self.tmpvault);
        command
            .arg("serve")
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--scratch-dir")
            .arg(self.workdir.subdir("scratch")?)
            .arg("--allow-root");
        if let Some(mode) = self.settings.secret_arena {
            command.arg("--secret-arena").arg(arena_name(mode));
        }
        self.server_tls_args(&mut command);
        if let Some(ops) = ops {
            command.arg("--ops-listen").arg(ops.to_string());
        }
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("TMPVAULT_") {
                command.env_remove(name);
            }
        }
        command.env_remove("RUST_LOG");
        match variant {
            Variant::Default => {}
            Variant::Warn => {
                command.env("RUST_LOG", "warn");
            }
            Variant::Policy => {
                command.arg("--policy").arg(&self.policy_file);
            }
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Ok(command)
    }

    async fn start_tmpvault(
        &self,
        variant: Variant,
        ops: Option<SocketAddr>,
    ) -> Result<Server, Failure> {
        let listen = process::free_address()?;
        let mut command = self.serve_command(listen, variant, ops)?;
        let child = ChildGuard::spawn("tmpvault serve", &mut command)?;
        let target = self.target(listen)?;
        load::first_ok(&target, "/v1/openapi.json", child.pid(), START_TIMEOUT)
            .await
            .map_err(|error| {
                Failure::new(
                    "starting tmpvault serve",
                    format!("{error}; to see why, run by hand: {command:?} (its stderr is on /dev/null here)"),
                )
            })?;
        Ok(Server { child, target })
    }

    async fn start_baseline(&self) -> Result<Server, Failure> {
        let listen = process::free_address()?;
        let mut command = Command::new(&self.own_exe);
        command
            .arg("baseline")
            .arg("--listen")
            .arg(listen.to_string());
        self.server_tls_args(&mut command);
        command
            // The baseline exits when this pipe closes, i.e. when we do.
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        let child = ChildGuard::spawn("the baseline server", &mut command)?;
        let target = self.target(listen)?;
        load::first_ok(&target, "/", child.pid(), START_TIMEOUT).await?;
        Ok(Server { child, target })
    }

    /// One keep-alive run of GETs or PUTs against `server`, with the
    /// in-repo generator.
    async fn keep_alive(
        &self,
        server: &Server,
        method: &Method,
        duration: Duration,
    ) -> Result<Throughput, Failure> {
        let settings = self.settings;
        let outcome = load::keep_alive(
            &server.target,
            &Load {
                connections: settings.connections,
                stop: Stop::After(duration),
                request: get_or_put(method, settings.connections)?,
                body_len: (*method == Method::GET).then_some(VALUE_LEN),
                record_times: false,
            },
            Some(server.child.pid()),
        )
        .await?;
        Ok(throughput(&outcome))
    }

    /// The same run with oha.
    async fn keep_alive_oha(
        &self,
        oha: &Path,
        server: &Server,
        method: &Method,
        duration: Duration,
    ) -> Result<Throughput, Failure> {
        let put = *method == Method::PUT;
        // oha sends one URL: every PUT goes to the same key.
        let path = if put {
            "/v1/secrets/bench/put/0"
        } else {
            GET_PATH
        };
        let run = oha::run(
            oha,
            &OhaLoad {
                url: format!("https://{}{path}", server.target.addr()),
                connections: self.settings.connections,
                duration,
                body: put.then_some(self.put_body_file.as_path()),
            },
            &self.workdir.client_files(),
            Some(server.child.pid()),
        )
        .await?;
        Ok(Throughput {
            rate: run.rate,
            p50_us: run.p50_us,
            p99_us: run.p99_us,
            cpu_us: run.cpu_us_per_request,
            generator_cpu_us: run.generator_cpu_us_per_request,
            errors: run.errors,
            first_error: None,
        })
    }

    /// One HTTP/2 run of GETs or PUTs against `server`:
    /// `h2_connections` connections × `h2_streams` streams.
    async fn multiplexed(
        &self,
        server: &Server,
        method: &Method,
        duration: Duration,
    ) -> Result<Throughput, Failure> {
        let settings = self.settings;
        let outcome = load::multiplexed(
            &server.target,
            &Load {
                connections: settings.h2_connections,
                stop: Stop::After(duration),
                request: get_or_put(method, settings.h2_connections * settings.h2_streams)?,
                body_len: (*method == Method::GET).then_some(VALUE_LEN),
                record_times: false,
            },
            settings.h2_streams,
            Some(server.child.pid()),
        )
        .await?;
        Ok(throughput(&outcome))
    }

    /// One new-connection run against `server`.
    async fn new_connections(&self, server: &Server) -> Result<Throughput, Failure> {
        let outcome = load::new_connections(
            &server.target,
            self.settings.connections,
            self.settings.duration,
            GET_PATH,
            Some(server.child.pid()),
        )
        .await?;
        Ok(throughput(&outcome))
    }
}

/// The requests of a GET or PUT run with `loops` request loops: every GET
/// reads [`GET_PATH`]; every loop PUTs 1 KiB to a key of its own, a steady
/// overwrite, as a client that refreshes its secret does.
fn get_or_put(method: &Method, loops: usize) -> Result<load::MakeRequest, Failure> {
    if *method == Method::PUT {
        let body = value(VALUE_LEN);
        let uris: Vec<Uri> = (0..loops)
            .map(|connection| parse_uri(&format!("/v1/secrets/bench/put/{connection}")))
            .collect::<Result<_, _>>()?;
        Ok(Arc::new(move |slot: Slot| {
            load::request_to(Method::PUT, uris[slot.connection].clone(), body.clone())
        }))
    } else {
        let uri = parse_uri(GET_PATH)?;
        Ok(Arc::new(move |_| {
            load::request_to(Method::GET, uri.clone(), Bytes::new())
        }))
    }
}

fn throughput(outcome: &load::Outcome) -> Throughput {
    Throughput {
        rate: outcome.rate(),
        p50_us: outcome.percentile_us(50.0),
        p99_us: outcome.percentile_us(99.0),
        cpu_us: outcome.cpu_us_per_request(),
        generator_cpu_us: outcome.generator_cpu_us_per_request(),
        errors: outcome.errors,
        first_error: outcome.first_error.clone(),
    }
}

/// The servers that stay up through the load scenarios.
struct Servers {
    baseline: Server,
    default: Server,
    quiet: Server,
    policy: Server,
    redis: Result<Redis, String>,
}

impl Servers {
    /// The HTTP servers, in the order each round runs them.
    fn http(&self) -> [&Server; 4] {
        [&self.baseline, &self.default, &self.quiet, &self.policy]
    }
}

/// Runs everything and returns the figures.
/// The programs and files every scenario uses.
fn bench<'a>(settings: &'a Settings, workdir: &'a Workdir) -> Result<Bench<'a>, Failure> {
    let own_exe = std::env::current_exe().step(|| "finding this program's path".into())?;
    let tmpvault = sibling_tmpvault(&own_exe)?;
    let put_body_file = workdir.path().join("put-body");
    std::fs::write(&put_body_file, value(VALUE_LEN))
        .step(|| format!("writing {}", put_body_file.display()))?;
    let policy_file = workdir.path().join("policy.json");
    std::fs::write(&policy_file, policy_json())
        .step(|| format!("writing {}", policy_file.display()))?;
    Ok(Bench {
        settings,
        workdir,
        tmpvault,
        own_exe,
        oha: oha::find(),
        put_body_file,
        policy_file,
    })
}

/// Only the memory per secret, tmpvault's and Redis's (`--memory-only`):
/// the figure to check after a change to the store, in about 20 s instead
/// of a full run's minutes. No start times and no baseline.
pub async fn memory_only(settings: &Settings, workdir: &Workdir) -> Result<Memory, Failure> {
    let bench = bench(settings, workdir)?;
    let (idle, full_rss) = tmpvault_memory(&bench).await?;
    let redis = match redis::Tools::find() {
        Ok(tools) => match Redis::start(workdir, tools).await {
            Ok(redis) => redis_memory(&redis, settings)
                .await
                .map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        },
        Err(why) => Err(why),
    };
    Ok(Memory {
        start_ms: Vec::new(),
        idle_rss: idle.rss,
        idle_anon: idle.anon,
        full_rss,
        baseline_idle_rss: 0,
        baseline_idle_anon: 0,
        secrets: settings.secrets,
        value_len: SMALL_VALUE_LEN,
        redis,
    })
}

pub async fn run(settings: &Settings, workdir: &Workdir) -> Result<Figures, Failure> {
    let bench = bench(settings, workdir)?;
    let mut preamble = preamble(settings, &bench);

    // 1. The servers.
    let baseline = bench.start_baseline().await?;
    let baseline_idle = Resident::of(&baseline.child)?;
    let servers = Servers {
        baseline,
        default: bench.start_tmpvault(Variant::Default, None).await?,
        quiet: bench.start_tmpvault(Variant::Warn, None).await?,
        policy: bench.start_tmpvault(Variant::Policy, None).await?,
        redis: match redis::Tools::find() {
            Ok(tools) => Redis::start(workdir, tools)
                .await
                .map_err(|error| error.to_string()),
            Err(why) => Err(why),
        },
    };
    preamble.push(match &servers.redis {
        Ok(_) => "redis: redis-server with TLS 1.3, tls-auth-clients yes, the same certificates, no persistence; driven by redis-benchmark -c N -d 1024 --csv".into(),
        Err(why) => format!("redis: skipped ({why})"),
    });
    prepare(&bench, &servers).await?;

    // 2. Load, alternating systems within each round.
    let mut redis_rate = RedisRate::default();
    let (get, oha_get) = load_scenario(
        &bench,
        &servers,
        ["GET 1 KiB", "GET 1 KiB, oha"],
        &Method::GET,
        &mut redis_rate,
    )
    .await?;
    let (put, oha_put) = load_scenario(
        &bench,
        &servers,
        ["PUT 1 KiB", "PUT 1 KiB, oha"],
        &Method::PUT,
        &mut redis_rate,
    )
    .await?;
    let connect = connect_scenario(&bench, &servers).await?;
    warm_up_h2(&bench, &servers).await?;
    let h2_get = h2_scenario(&bench, &servers, "HTTP/2 GET 1 KiB", &Method::GET).await?;
    let h2_put = h2_scenario(&bench, &servers, "HTTP/2 PUT 1 KiB", &Method::PUT).await?;
    // Stop the HTTP servers now; Redis stays for the memory figure.
    let Servers {
        baseline,
        default,
        quiet,
        policy,
        redis,
    } = servers;
    drop((baseline, default, quiet, policy));

    // 3. Start-to-first-200.
    let start_ms = start_times(&bench).await?;

    // 4. Memory.
    let (idle, full_rss) = tmpvault_memory(&bench).await?;
    let memory = Memory {
        start_ms,
        idle_rss: idle.rss,
        idle_anon: idle.anon,
        full_rss,
        baseline_idle_rss: baseline_idle.rss,
        baseline_idle_anon: baseline_idle.anon,
        secrets: settings.secrets,
        value_len: SMALL_VALUE_LEN,
        redis: match &redis {
            Ok(redis) => redis_memory(redis, settings)
                .await
                .map_err(|error| error.to_string()),
            Err(why) => Err(why.clone()),
        },
    };
    drop(redis);

    // 5. Expiry.
    let expiry = expiry(&bench).await?;

    // 6. Waiting GETs.
    let mut waiters = Vec::with_capacity(waiters::SHAPES.len());
    for shape in waiters::SHAPES {
        waiters.push(waiting_gets(&bench, shape).await?);
    }

    Ok(Figures {
        preamble,
        get,
        oha_get,
        put,
        oha_put,
        connect,
        h2_get,
        h2_put,
        memory,
        expiry,
        waiters,
    })
}

/// Stores the value every GET reads, then warms every HTTP server up
/// (first connections, allocator growth, page faults) without measuring.
async fn prepare(bench: &Bench<'_>, servers: &Servers) -> Result<(), Failure> {
    for server in [&servers.default, &servers.quiet, &servers.policy] {
        seed(&server.target).await?;
    }
    if let Ok(redis) = &servers.redis {
        redis
            .set(REDIS_KEY, &String::from_utf8_lossy(&value(VALUE_LEN)))
            .await?;
    }
    for server in servers.http() {
        bench
            .keep_alive(server, &Method::GET, bench.settings.warmup)
            .await?;
    }
    Ok(())
}

/// The last rate redis-benchmark reached for GET and SET: it counts
/// requests, not time, so each run is sized from the previous one to last
/// about `duration`.
struct RedisRate {
    get: f64,
    set: f64,
}

impl Default for RedisRate {
    fn default() -> RedisRate {
        // What Redis-TLS did here when this was written; only a first guess.
        RedisRate {
            get: 40_000.0,
            set: 40_000.0,
        }
    }
}

/// Keep-alive GET or PUT: every round runs the baseline, tmpvault,
/// tmpvault `warn`, tmpvault with a policy and Redis, back to back; and,
/// when oha is on `PATH`, the baseline, tmpvault and tmpvault `warn` again
/// with oha (the second scenario).
async fn load_scenario(
    bench: &Bench<'_>,
    servers: &Servers,
    names: [&'static str; 2],
    method: &Method,
    redis_rate: &mut RedisRate,
) -> Result<(Scenario, Option<Scenario>), Failure> {
    let [name, oha_name] = names;
    let settings = bench.settings;
    let (test, rate) = if *method == Method::PUT {
        ("set", &mut redis_rate.set)
    } else {
        ("get", &mut redis_rate.get)
    };
    let mut columns: [Vec<Throughput>; 4] = Default::default();
    let mut oha_columns: [Vec<Throughput>; 3] = Default::default();
    let mut redis_rounds = Vec::new();
    let mut redis_error = None;
    for round in 0..settings.rounds {
        for (column, server) in columns.iter_mut().zip(servers.http()) {
            column.push(bench.keep_alive(server, method, settings.duration).await?);
        }
        if let Some(oha) = &bench.oha {
            let systems = [&servers.baseline, &servers.default, &servers.quiet];
            for (column, server) in oha_columns.iter_mut().zip(systems) {
                column.push(
                    bench
                        .keep_alive_oha(oha, server, method, settings.duration)
                        .await?,
                );
            }
        }
        if let Ok(redis) = &servers.redis {
            let requests = ((*rate * settings.duration.as_secs_f64()) as u64).max(5_000);
            match redis
                .benchmark(test, settings.connections, requests, VALUE_LEN)
                .await
            {
                Ok(run) => {
                    *rate = run.rate;
                    redis_rounds.push(Throughput {
                        rate: run.rate,
                        p50_us: run.p50_us,
                        p99_us: run.p99_us,
                        cpu_us: Some(run.cpu_us_per_request()),
                        generator_cpu_us: Some(run.generator_cpu_us_per_request()),
                        errors: 0,
                        first_error: None,
                    });
                }
                Err(error) => {
                    redis_error.get_or_insert(error.to_string());
                }
            }
        }
        eprintln!(
            "tmpvault-bench: {name} round {} of {} done",
            round + 1,
            settings.rounds
        );
    }
    let [baseline, tmpvault, quiet, policy] = columns;
    let scenario = Scenario {
        name,
        unit: "req/s",
        baseline: Column::Rounds(baseline),
        tmpvault: Column::Rounds(tmpvault),
        quiet: Column::Rounds(quiet),
        policy: Column::Rounds(policy),
        redis: match (&servers.redis, redis_error) {
            (Err(why), _) => Column::Skipped(why.clone()),
            (Ok(_), Some(error)) => Column::Skipped(error),
            (Ok(_), None) => Column::Rounds(redis_rounds),
        },
    };
    let with_oha = bench.oha.is_some().then(|| {
        let [baseline, tmpvault, quiet] = oha_columns;
        Scenario {
            name: oha_name,
            unit: "req/s",
            baseline: Column::Rounds(baseline),
            tmpvault: Column::Rounds(tmpvault),
            quiet: Column::Rounds(quiet),
            policy: Column::Skipped("measured with the in-repo generator only".into()),
            redis: Column::Skipped("Redis is driven by redis-benchmark".into()),
        }
    });
    Ok((scenario, with_oha))
}

/// A short unmeasured HTTP/2 load on each server that the HTTP/2
/// scenarios measure: its first HTTP/2 connections and streams.
async fn warm_up_h2(bench: &Bench<'_>, servers: &Servers) -> Result<(), Failure> {
    for server in [&servers.baseline, &servers.default, &servers.quiet] {
        bench
            .multiplexed(server, &Method::GET, bench.settings.warmup)
            .await?;
    }
    Ok(())
}

/// GET or PUT over HTTP/2: every round runs the baseline, tmpvault and
/// tmpvault `warn`, back to back, with the same connections × streams.
async fn h2_scenario(
    bench: &Bench<'_>,
    servers: &Servers,
    name: &'static str,
    method: &Method,
) -> Result<Scenario, Failure> {
    let settings = bench.settings;
    let mut columns: [Vec<Throughput>; 3] = Default::default();
    for round in 0..settings.rounds {
        let systems = [&servers.baseline, &servers.default, &servers.quiet];
        for (column, server) in columns.iter_mut().zip(systems) {
            column.push(bench.multiplexed(server, method, settings.duration).await?);
        }
        eprintln!(
            "tmpvault-bench: {name} round {} of {} done",
            round + 1,
            settings.rounds
        );
    }
    let [baseline, tmpvault, quiet] = columns;
    Ok(Scenario {
        name,
        unit: "req/s",
        baseline: Column::Rounds(baseline),
        tmpvault: Column::Rounds(tmpvault),
        quiet: Column::Rounds(quiet),
        policy: Column::Skipped(
            "not measured over HTTP/2: the policy check does not depend on the protocol".into(),
        ),
        redis: Column::Skipped("Redis does not speak HTTP/2".into()),
    })
}

/// A new connection per GET: the baseline and tmpvault, alternating.
async fn connect_scenario(bench: &Bench<'_>, servers: &Servers) -> Result<Scenario, Failure> {
    let rounds = bench.settings.rounds;
    let mut baseline = Vec::with_capacity(rounds);
    let mut tmpvault = Vec::with_capacity(rounds);
    for round in 0..rounds {
        baseline.push(bench.new_connections(&servers.baseline).await?);
        tmpvault.push(bench.new_connections(&servers.default).await?);
        eprintln!(
            "tmpvault-bench: new-connection round {} of {rounds} done",
            round + 1
        );
    }
    Ok(Scenario {
        name: "new conn GET",
        unit: "conn/s",
        baseline: Column::Rounds(baseline),
        tmpvault: Column::Rounds(tmpvault),
        quiet: Column::Skipped("not measured: a handshake dwarfs one audit line".into()),
        policy: Column::Skipped("not measured: a handshake dwarfs one policy check".into()),
        redis: Column::Skipped("not measured: redis-benchmark keeps its connections open".into()),
    })
}

/// PUTs the value every GET reads.
async fn seed(target: &Target) -> Result<(), Failure> {
    let outcome = load::keep_alive(
        target,
        &Load {
            connections: 1,
            stop: Stop::Total(1),
            request: Arc::new(|_| load::request(Method::PUT, GET_PATH, value(VALUE_LEN))),
            body_len: None,
            record_times: false,
        },
        None,
    )
    .await?;
    if outcome.requests == 1 {
        Ok(())
    } else {
        Err(Failure::new(
            format!("storing the GET value at {GET_PATH}"),
            outcome.first_error.unwrap_or_else(|| "no answer".into()),
        ))
    }
}

/// Milliseconds from spawn to first 200 of `settings.starts` fresh
/// `tmpvault serve` processes.
async fn start_times(bench: &Bench<'_>) -> Result<Vec<f64>, Failure> {
    let mut start_ms = Vec::with_capacity(bench.settings.starts);
    for _ in 0..bench.settings.starts {
        let listen = process::free_address()?;
        let mut command = bench.serve_command(listen, Variant::Default, None)?;
        let target = bench.target(listen)?;
        let spawned = Instant::now();
        let child = ChildGuard::spawn("tmpvault serve", &mut command)?;
        let answered =
            load::first_ok(&target, "/v1/openapi.json", child.pid(), START_TIMEOUT).await?;
        start_ms.push((answered - spawned).as_secs_f64() * 1000.0);
        drop(child);
    }
    Ok(start_ms)
}

/// A resident set and its anonymous part, bytes.
struct Resident {
    rss: u64,
    anon: u64,
}

impl Resident {
    fn of(child: &ChildGuard) -> Result<Resident, Failure> {
        Ok(Resident {
            rss: child.rss()?,
            anon: child.rss_anon()?,
        })
    }
}

/// tmpvault's resident set after start and one request, then its RSS with
/// `secrets` small secrets stored.
async fn tmpvault_memory(bench: &Bench<'_>) -> Result<(Resident, u64), Failure> {
    let settings = bench.settings;
    let server = bench.start_tmpvault(Variant::Default, None).await?;
    tokio::time::sleep(settings.settle).await;
    let idle = Resident::of(&server.child)?;
    let outcome = fill(&server.target, settings, "mem", None, false).await?;
    if outcome.errors > 0 {
        return Err(Failure::new(
            "storing the secrets for the memory figure",
            format!(
                "{} writes failed; first: {}",
                outcome.errors,
                outcome.first_error.unwrap_or_default()
            ),
        ));
    }
    tokio::time::sleep(settings.settle).await;
    Ok((idle, server.child.rss()?))
}

/// Writes `settings.secrets` secrets of 32 bytes to `{prefix}/000000`...
async fn fill(
    target: &Target,
    settings: &Settings,
    prefix: &'static str,
    ttl: Option<Duration>,
    record_times: bool,
) -> Result<load::Outcome, Failure> {
    let body = value(SMALL_VALUE_LEN);
    let query = ttl.map_or_else(String::new, |ttl| format!("?ttl={}s", ttl.as_secs()));
    load::keep_alive(
        target,
        &Load {
            connections: settings.connections,
            stop: Stop::Total(settings.secrets),
            request: Arc::new(move |slot: Slot| {
                load::request(
                    Method::PUT,
                    &format!("/v1/secrets/{prefix}/{:06}{query}", slot.index),
                    body.clone(),
                )
            }),
            body_len: None,
            record_times,
        },
        None,
    )
    .await
}

/// Redis's `used_memory` and RSS before and after the same secrets.
async fn redis_memory(redis: &Redis, settings: &Settings) -> Result<RedisMemory, Failure> {
    redis.flush().await?;
    tokio::time::sleep(settings.settle).await;
    let used_before = redis.used_memory().await?;
    let rss_before = redis.rss()?;
    redis.fill(settings.secrets, SMALL_VALUE_LEN).await?;
    tokio::time::sleep(settings.settle).await;
    let used_after = redis.used_memory().await?;
    let rss_after = redis.rss()?;
    redis.flush().await?;
    Ok(RedisMemory {
        used_before,
        used_after,
        rss_before,
        rss_after,
    })
}

/// Reads `tmpvault_items` from the ops listener.
async fn items(ops: SocketAddr) -> Result<u64, Failure> {
    let text = load::plain_get(ops, "/metrics").await?;
    text.lines()
        .find_map(|line| line.strip_prefix("tmpvault_items "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
        .ok_or_else(|| Failure::new("reading /metrics", "no tmpvault_items line"))
}

/// Writes the secrets with `ttl=2s`, then reads `/metrics` every 1-2 ms
/// until none is left.
///
/// A secret's deadline is set by the server between the request being sent
/// and answered, so the last deadline lies in
/// `[last sent + ttl, last answered + ttl]`, and the moment the store
/// became empty lies between the last read that saw secrets and the first
/// that saw none. The figures are the bounds that follow from that.
async fn expiry(bench: &Bench<'_>) -> Result<Expiry, Failure> {
    let settings = bench.settings;
    let ops = process::free_address()?;
    let server = bench.start_tmpvault(Variant::Default, Some(ops)).await?;
    let started = Instant::now();
    let outcome = fill(&server.target, settings, "exp", Some(EXPIRY_TTL), true).await?;
    let fill_s = started.elapsed().as_secs_f64();
    let mut sent: Vec<Instant> = outcome.times.iter().map(|(sent, _)| *sent).collect();
    let mut answered: Vec<Instant> = outcome
        .times
        .iter()
        .map(|(_, answered)| *answered)
        .collect();
    sent.sort_unstable();
    answered.sort_unstable();
    let (Some(&last_sent), Some(&last_answered)) = (sent.last(), answered.last()) else {
        return Err(Failure::new(
            "writing the expiring secrets",
            outcome
                .first_error
                .unwrap_or_else(|| "no write succeeded".into()),
        ));
    };
    let written = sent.len();

    // (read sent, read answered, items)
    let mut samples: Vec<(Instant, Instant, u64)> = Vec::new();
    let deadline = last_answered + EXPIRY_TTL + Duration::from_secs(10);
    loop {
        let before = Instant::now();
        let count = items(ops).await?;
        samples.push((before, Instant::now(), count));
        if count == 0 {
            break;
        }
        if Instant::now() >= deadline {
            return Err(Failure::new(
                "waiting for the secrets to expire",
                format!("{count} still stored 10 s after the last deadline"),
            ));
        }
        tokio::time::sleep(EXPIRY_POLL).await;
    }
    drop(server);

    let millis = |later: Instant, earlier: Instant| {
        if later >= earlier {
            (later - earlier).as_secs_f64() * 1000.0
        } else {
            -((earlier - later).as_secs_f64() * 1000.0)
        }
    };
    let gone_at_most = samples.last().map_or(started, |sample| sample.1);
    let gone_at_least = samples
        .iter()
        .rev()
        .nth(1)
        .map_or(gone_at_most, |sample| sample.0);
    // Survivors are the ones with the latest deadlines, so with `count`
    // left the oldest survivor is number `written - count` in deadline
    // order, and its deadline is at most that one's answer time + ttl.
    let worst_late_ms = samples
        .iter()
        .filter(|(_, _, count)| *count > 0 && (*count as usize) <= written)
        .map(|(read, _, count)| {
            let oldest = answered[written - *count as usize];
            millis(*read, oldest + EXPIRY_TTL)
        })
        .fold(0.0f64, f64::max);
    let poll_ms = match (samples.first(), samples.last()) {
        (Some(first), Some(last)) if samples.len() > 1 => {
            millis(last.0, first.0) / (samples.len() - 1) as f64
        }
        _ => 0.0,
    };
    Ok(Expiry {
        secrets: written as u64,
        ttl_s: EXPIRY_TTL.as_secs_f64(),
        fill_s,
        poll_ms,
        last_late_max_ms: millis(gone_at_most, last_sent + EXPIRY_TTL),
        last_late_min_ms: millis(gone_at_least, last_answered + EXPIRY_TTL).max(0.0),
        worst_late_ms,
        errors: outcome.errors,
    })
}

/// One shape of waiting GETs against a fresh server with its ops listener
/// (whose `/metrics` counts them).
async fn waiting_gets(bench: &Bench<'_>, shape: waiters::Shape) -> Result<Waiters, Failure> {
    let ops = process::free_address()?;
    let server = bench.start_tmpvault(Variant::Default, Some(ops)).await?;
    let connectors = waiters::Connectors::new(server.target.addr(), &bench.workdir.client_files())?;
    let figures = waiters::measure(
        &server.child,
        connectors,
        ops,
        shape,
        bench.settings.settle,
        bench.settings.idle,
    )
    .await?;
    eprintln!(
        "tmpvault-bench: {} waiting GETs over {} done",
        figures.count, figures.shape
    );
    Ok(figures)
}

/// The lines that say how this run was made.
fn preamble(settings: &Settings, bench: &Bench<'_>) -> Vec<String> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = process::machine_cpus();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |text| text.trim().to_owned());
    let load = std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".into(),
        |text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        },
    );
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let generator = match &bench.oha {
        Some(oha) => format!("in-repo (hyper 1 client + rustls/ring, TLS 1.3, client certificate, no resumption); and oha ({}) for keep-alive GET/PUT, the rows marked oha", oha.display()),
        None => "in-repo (hyper 1 client + rustls/ring, TLS 1.3, client certificate, no resumption); oha is not on PATH (`cargo install oha` adds its rows)".into(),
    };
    vec![
        format!(
            "tmpvault-bench ({profile} build): {} round(s) of {} ms per system and scenario, systems alternating within each round",
            settings.rounds,
            settings.duration.as_millis()
        ),
        format!("connections: {}", settings.connections),
        format!(
            "HTTP/2: {} connections × {} concurrent streams ({} requests in flight; the server allows {} streams per connection), ALPN h2, the in-repo generator (hyper 1 HTTP/2 client) for every system",
            settings.h2_connections,
            settings.h2_streams,
            settings.h2_connections * settings.h2_streams,
            tmpvault::http::server::HTTP2_MAX_CONCURRENT_STREAMS
        ),
        format!("machine: {cpus} CPUs, {cpu}, Linux {kernel}, load average at start {load}"),
        process::pinning().map_or_else(
            || "CPUs: shared by the servers and the load generators (--pin separates them)".to_owned(),
            str::to_owned,
        ),
        format!("load generator: {generator}"),
        format!("tmpvault: {} serve{}, stderr to /dev/null; 'tmpvault' = default logging (one JSON audit line per request), 'tmpvault warn' = RUST_LOG=warn (no audit line), 'tmpvault+policy' = default logging and --policy with {POLICY_RULES} rules, the client's rule last", bench.tmpvault.display(), settings.secret_arena.map_or_else(String::new, |mode| format!(" --secret-arena {}", arena_name(mode)))),
        "baseline: hyper-util auto builder + tokio-rustls with tmpvault::tls::server_config (ring, TLS 1.3, client certificates required) and tmpvault's HTTP/2 settings (tmpvault::http::server::HTTP2_*); GET -> fixed 1 KiB, PUT -> read body, 204".into(),
    ]
}

/// The command-line name of a `--secret-arena` mode.
fn arena_name(mode: tmpvault::config::SecretArena) -> String {
    use clap::ValueEnum as _;
    mode.to_possible_value()
        .map_or_else(String::new, |value| value.get_name().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tmpvault::access::policy::{Operation, Policy};

    #[test]
    fn the_bench_policy_is_valid_and_only_its_last_rule_serves_the_bench() {
        let policy = Policy::parse(&policy_json(), "bench policy").expect("a valid policy");
        assert_eq!(policy.len(), POLICY_RULES);
        let me = "cn:tmpvault-bench";
        assert!(policy.allows(me, "bench/get", Operation::Read));
        assert!(policy.allows(me, "bench/put/7", Operation::Write));
        assert!(!policy.allows(me, "team-1/x", Operation::Read));
        let other = "spiffe://example.org/ns/team-3/sa/api";
        assert!(policy.allows(other, "team-3/db", Operation::Read));
        assert!(!policy.allows(other, "team-3/db", Operation::Write));
        assert!(!policy.allows(other, "bench/get", Operation::Read));
    }
}
