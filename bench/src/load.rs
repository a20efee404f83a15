//! The load generator: hyper's HTTP/1.1 and HTTP/2 clients over rustls
//! with the client certificate, used for tmpvault and the baseline alike
//! (`oha` is used instead for the HTTP/1.1 keep-alive runs when it is on
//! `PATH`; see [`crate::oha`]).
//!
//! - [`keep_alive`]: N keep-alive connections, each sending one request at a
//!   time in a loop, for a fixed time or until a shared count of requests is
//!   used up; every latency goes into an HDR histogram.
//! - [`multiplexed`]: the same over HTTP/2 (ALPN `h2`): N connections with
//!   S stream loops on each, every loop sending one request at a time, so
//!   that N × S requests are in flight.
//! - [`new_connections`]: N loops that each open a new TCP + TLS 1.3
//!   connection (full handshake with the client certificate, no session
//!   resumption), send one GET with `Connection: close`, and wait for the
//!   close.
//! - [`first_ok`]: polls a just-started server until it answers 200.
//! - [`plain_get`]: one plain-HTTP GET, for the ops listener's `/metrics`.
//!
//! Connections are set up before the clock starts, so keep-alive figures
//! hold no handshakes; the server's CPU time is read over the same window.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::http2;
use hyper::header::{CONNECTION, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tmpvault::tls::ClientTlsFiles;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::failure::{Failure, Step};
use crate::process;

/// Longest wait for one connection's setup or one request's answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Latencies above this are recorded as this (the histogram's top).
const MAX_LATENCY_US: u64 = 60_000_000;

/// A TLS server to load: its address and how to connect to it.
#[derive(Clone)]
pub struct Target {
    addr: SocketAddr,
    connector: TlsConnector,
    /// The same TLS settings with ALPN `h2`.
    h2_connector: TlsConnector,
}

/// A request body for every request, built per request from its slot.
pub type MakeRequest = Arc<dyn Fn(Slot) -> Request<Full<Bytes>> + Send + Sync>;

/// Which request this is: the loop sending it and a run-wide index.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    /// The loop sending it: 0..connections over HTTP/1.1, 0..connections ×
    /// streams over HTTP/2 (stream loop `s` of connection `c` is
    /// `c × streams + s`), so that each loop has one request in flight.
    pub connection: usize,
    /// 0.. across the whole run.
    pub index: u64,
}

/// When a keep-alive run ends.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// After this long (requests in flight then still complete).
    After(Duration),
    /// Once this many requests have been sent, across all connections.
    Total(u64),
}

/// What a keep-alive run sends and checks.
#[derive(Clone)]
pub struct Load {
    /// Concurrent connections, each with one request in flight.
    pub connections: usize,
    /// When to stop.
    pub stop: Stop,
    /// The request for each slot.
    pub request: MakeRequest,
    /// The body length a successful answer must have, if checked.
    pub body_len: Option<usize>,
    /// Keep each successful request's send and answer times.
    pub record_times: bool,
}

/// The figures of one run.
pub struct Outcome {
    /// Successful requests (2xx, and the right body length when checked).
    pub requests: u64,
    /// Failed requests: other statuses, wrong bodies, transport errors.
    pub errors: u64,
    /// The first failure, to show when `errors` is not zero.
    pub first_error: Option<String>,
    /// From the start of the clock to the end of the last request.
    pub elapsed: Duration,
    /// Latency of each successful request, in microseconds.
    pub latency: Histogram<u64>,
    /// CPU time the server used over `elapsed`, when its pid was given.
    pub server_cpu: Option<Duration>,
    /// CPU time the generator itself (this process) used over `elapsed`.
    pub generator_cpu: Option<Duration>,
    /// (sent, answered) of each successful request, with `record_times`.
    pub times: Vec<(Instant, Instant)>,
}

impl Outcome {
    /// Successful requests per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A latency percentile in microseconds.
    pub fn percentile_us(&self, percentile: f64) -> f64 {
        self.latency.value_at_quantile(percentile / 100.0) as f64
    }

    /// Server CPU microseconds per successful request.
    pub fn cpu_us_per_request(&self) -> Option<f64> {
        per_request(self.server_cpu?, self.requests)
    }

    /// The generator's CPU microseconds per successful request.
    pub fn generator_cpu_us_per_request(&self) -> Option<f64> {
        per_request(self.generator_cpu?, self.requests)
    }
}

/// `cpu` spread over `requests`, in microseconds; `None` for no requests.
pub fn per_request(cpu: Duration, requests: u64) -> Option<f64> {
    (requests > 0).then(|| cpu.as_secs_f64() * 1e6 / requests as f64)
}

fn histogram() -> Histogram<u64> {
    // Fixed, valid bounds: construction cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap_or_else(|_| unreachable!())
}

fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.clamp(1, MAX_LATENCY_US));
}

impl Target {
    /// A target at `addr` whose certificate the CA in `files` signed, reached
    /// with the client certificate in `files`: tmpvault's own client TLS
    /// settings (ring, TLS 1.3), ALPN `http/1.1` (or `h2` for
    /// [`Target::connect_h2`]), and no session resumption so that every new
    /// connection is a full mTLS handshake.
    pub fn new(addr: SocketAddr, files: &ClientTlsFiles) -> Result<Target, Failure> {
        let mut config = tmpvault::tls::client_config(files)
            .step(|| "building the load generator's TLS client configuration".into())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = rustls::client::Resumption::disabled();
        let mut h2_config = config.clone();
        h2_config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Target {
            addr,
            connector: TlsConnector::from(Arc::new(config)),
            h2_connector: TlsConnector::from(Arc::new(h2_config)),
        })
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Opens one connection: TCP, TLS handshake, HTTP/1.1 handshake. The
    /// connection is driven by a spawned task, which ends when it closes.
    pub async fn connect(&self) -> Result<(SendRequest<Full<Bytes>>, JoinHandle<()>), Failure> {
        let step = || format!("connecting to {}", self.addr);
        let setup = async {
            let tcp = TcpStream::connect(self.addr).await.step(step)?;
            tcp.set_nodelay(true).step(step)?;
            self.handshake(tcp).await
        };
        tokio::time::timeout(REQUEST_TIMEOUT, setup)
            .await
            .step(step)?
    }

    /// Opens one HTTP/2 connection: TCP, TLS handshake with ALPN `h2`, the
    /// HTTP/2 preface and SETTINGS. The returned sender can be cloned, one
    /// clone per stream loop; the spawned task drives the connection.
    pub async fn connect_h2(
        &self,
    ) -> Result<(http2::SendRequest<Full<Bytes>>, JoinHandle<()>), Failure> {
        let step = || format!("TLS and HTTP/2 handshake with {}", self.addr);
        let setup = async {
            let tcp = TcpStream::connect(self.addr).await.step(step)?;
            tcp.set_nodelay(true).step(step)?;
            let name = ServerName::IpAddress(self.addr.ip().into());
            let tls = self.h2_connector.connect(name, tcp).await.step(step)?;
            if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err(Failure::new(step(), "the server did not choose h2"));
            }
            let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .step(step)?;
            let driver = tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok((sender, driver))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, setup)
            .await
            .step(step)?
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
    ) -> Result<(SendRequest<Full<Bytes>>, JoinHandle<()>), Failure> {
        let step = || format!("TLS and HTTP/1.1 handshake with {}", self.addr);
        let name = ServerName::IpAddress(self.addr.ip().into());
        let tls = self.connector.connect(name, tcp).await.step(step)?;
        let (sender, connection) = http1::handshake(TokioIo::new(tls)).await.step(step)?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok((sender, driver))
    }
}

/// A request with the headers every request carries.
pub fn request(method: Method, path: &str, body: Bytes) -> Request<Full<Bytes>> {
    request_to(
        method,
        path.parse()
            .unwrap_or_else(|_| unreachable!("a valid path")),
        body,
    )
}

/// As [`request`], with the path already parsed: a load loop builds its
/// URIs before the clock starts, so that each request costs the load
/// generator a clone instead of a parse.
pub fn request_to(method: Method, uri: Uri, body: Bytes) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(HOST, "127.0.0.1")
        .body(Full::new(body))
        .unwrap_or_else(|_| unreachable!("method, path and headers are valid"))
}

/// Sends one request and reads the whole answer.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), String> {
    let answer = async {
        sender.ready().await.map_err(|error| error.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| error.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| error.to_string())?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, answer)
        .await
        .map_err(|_| format!("no answer within {REQUEST_TIMEOUT:?}"))?
}

/// [`exchange`] on a stream of an HTTP/2 connection.
async fn exchange_h2(
    sender: &mut http2::SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), String> {
    let answer = async {
        sender.ready().await.map_err(|error| error.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| error.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| error.to_string())?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, answer)
        .await
        .map_err(|_| format!("no answer within {REQUEST_TIMEOUT:?}"))?
}

/// Checks an answer; `None` when it counts as a success.
fn judge(status: StatusCode, body: &Bytes, body_len: Option<usize>) -> Option<String> {
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Some(format!("status {status}: {text}"));
    }
    match body_len {
        Some(expected) if body.len() != expected => Some(format!(
            "status {status} with a {} byte body, expected {expected}",
            body.len()
        )),
        _ => None,
    }
}

/// What one connection's loop brings back.
struct Tally {
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    latency: Histogram<u64>,
    times: Vec<(Instant, Instant)>,
    /// When this loop's last request ended (before its connection is torn
    /// down, which is not part of the measurement).
    last_end: Option<Instant>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            requests: 0,
            errors: 0,
            first_error: None,
            latency: histogram(),
            times: Vec::new(),
            last_end: None,
        }
    }

    fn error(&mut self, message: String) {
        self.errors += 1;
        self.first_error.get_or_insert(message);
    }

    /// Counts an answer to a request sent at `sent`, received just now.
    fn answer(&mut self, load: &Load, sent: Instant, status: StatusCode, body: &Bytes) {
        let answered = Instant::now();
        match judge(status, body, load.body_len) {
            None => {
                self.requests += 1;
                record(&mut self.latency, answered - sent);
                if load.record_times {
                    self.times.push((sent, answered));
                }
            }
            Some(error) => self.error(error),
        }
    }
}

/// Sums the tallies of every connection into an outcome.
/// Sums the loops' tallies. The run lasted from `start` to the end of the
/// last request of any loop (or until now, if none ended one).
fn merge(tallies: Vec<Tally>, start: Instant) -> Result<Outcome, Failure> {
    let end = tallies
        .iter()
        .filter_map(|tally| tally.last_end)
        .max()
        .unwrap_or_else(Instant::now);
    let mut outcome = Outcome {
        requests: 0,
        errors: 0,
        first_error: None,
        elapsed: end.saturating_duration_since(start),
        latency: histogram(),
        server_cpu: None,
        generator_cpu: None,
        times: Vec::new(),
    };
    for tally in tallies {
        outcome.requests += tally.requests;
        outcome.errors += tally.errors;
        if outcome.first_error.is_none() {
            outcome.first_error = tally.first_error;
        }
        outcome
            .latency
            .add(&tally.latency)
            .step(|| "merging latency histograms".into())?;
        outcome.times.extend(tally.times);
    }
    Ok(outcome)
}

/// CPU time of `pid` now, if a pid was given.
fn cpu_now(pid: Option<u32>) -> Result<Option<Duration>, Failure> {
    pid.map(process::cpu_time).transpose()
}

/// The start of a measured run: the time, and the server's and the
/// generator's CPU time then.
struct Clock {
    start: Instant,
    server_pid: Option<u32>,
    cpu_before: Option<Duration>,
    own_cpu_before: Duration,
}

impl Clock {
    fn start(server_pid: Option<u32>) -> Result<Clock, Failure> {
        if let Some(pid) = server_pid {
            process::pin_server(pid)?;
        }
        let cpu_before = cpu_now(server_pid)?;
        Ok(Clock {
            start: Instant::now(),
            server_pid,
            cpu_before,
            own_cpu_before: process::own_cpu_time()?,
        })
    }
}

/// Waits for the loops (bounded by `limit`) and sums their tallies, with
/// the server CPU used since `clock` started.
async fn finish(
    tasks: Vec<JoinHandle<Tally>>,
    limit: Duration,
    clock: Clock,
) -> Result<Outcome, Failure> {
    let tallies = join_all(tasks, limit).await?;
    let cpu_after = cpu_now(clock.server_pid)?;
    let own_cpu_after = process::own_cpu_time()?;
    let mut outcome = merge(tallies, clock.start)?;
    outcome.server_cpu = clock
        .cpu_before
        .zip(cpu_after)
        .map(|(before, after)| after.saturating_sub(before));
    outcome.generator_cpu = Some(own_cpu_after.saturating_sub(clock.own_cpu_before));
    Ok(outcome)
}

/// Waits for every task, bounded by `limit`; a task that panicked or is
/// still running past `limit` fails the run, and then every task still
/// running is aborted.
async fn join_all<T>(tasks: Vec<JoinHandle<T>>, limit: Duration) -> Result<Vec<T>, Failure> {
    let deadline = Instant::now() + limit;
    let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
    let abort_all = || aborts.iter().for_each(tokio::task::AbortHandle::abort);
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(result)) => results.push(result),
            Ok(Err(error)) => {
                abort_all();
                return Err(Failure::new("a load task failed", error.to_string()));
            }
            Err(_) => {
                abort_all();
                return Err(Failure::new(
                    "waiting for the load tasks",
                    format!("still running {limit:?} after the start"),
                ));
            }
        }
    }
    Ok(results)
}

/// Runs `load` against `target`, reading the CPU time of `server_pid` over
/// the measured window.
pub async fn keep_alive(
    target: &Target,
    load: &Load,
    server_pid: Option<u32>,
) -> Result<Outcome, Failure> {
    // Set every connection up first, so the measured window has no
    // handshakes in it.
    let mut setups = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        let target = target.clone();
        setups.push(tokio::spawn(async move { target.connect().await }));
    }
    let mut connections = Vec::with_capacity(load.connections);
    for setup in join_all(setups, REQUEST_TIMEOUT * 2).await? {
        connections.push(setup?);
    }

    let next = Arc::new(AtomicU64::new(0));
    let clock = Clock::start(server_pid)?;
    let start = clock.start;
    let (deadline, total) = match load.stop {
        Stop::After(duration) => (Some(start + duration), u64::MAX),
        Stop::Total(total) => (None, total),
    };
    let mut tasks = Vec::with_capacity(connections.len());
    for (connection, (sender, driver)) in connections.into_iter().enumerate() {
        let target = target.clone();
        let load = load.clone();
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let mut sender = sender;
            let mut driver = driver;
            let mut tally = Tally::new();
            loop {
                if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                    break;
                }
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    break;
                }
                let request = (load.request)(Slot { connection, index });
                let sent = Instant::now();
                match exchange(&mut sender, request).await {
                    Ok((status, body)) => tally.answer(&load, sent, status, &body),
                    Err(error) => {
                        // The connection is broken: count it and open a new
                        // one, or give up on this connection's share.
                        tally.error(error);
                        driver.abort();
                        match target.connect().await {
                            Ok((new_sender, new_driver)) => {
                                sender = new_sender;
                                driver = new_driver;
                            }
                            Err(error) => {
                                tally.error(error.to_string());
                                break;
                            }
                        }
                    }
                }
            }
            tally.last_end = Some(Instant::now());
            // Closing the sender ends the connection; the driver task exits.
            drop(sender);
            let _ = tokio::time::timeout(Duration::from_secs(2), driver).await;
            tally
        }));
    }
    let limit = match load.stop {
        Stop::After(duration) => duration + REQUEST_TIMEOUT * 2,
        // A count-bounded run gets a generous but finite time.
        Stop::Total(total) => Duration::from_secs(60) + Duration::from_millis(total / 2),
    };
    finish(tasks, limit, clock).await
}

/// Runs `load` over HTTP/2 against `target`: `load.connections`
/// connections with `streams` stream loops each, every loop sending one
/// request at a time on its connection, so that `connections × streams`
/// requests are in flight; the CPU time of `server_pid` is read over the
/// measured window.
///
/// A stream error is counted and the loop goes on; a loop whose connection
/// has closed counts that once and ends (a server that ends connections
/// under load is a finding, not something to paper over by reconnecting).
pub async fn multiplexed(
    target: &Target,
    load: &Load,
    streams: usize,
    server_pid: Option<u32>,
) -> Result<Outcome, Failure> {
    let mut setups = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        let target = target.clone();
        setups.push(tokio::spawn(async move { target.connect_h2().await }));
    }
    let mut connections = Vec::with_capacity(load.connections);
    for setup in join_all(setups, REQUEST_TIMEOUT * 2).await? {
        connections.push(setup?);
    }

    let next = Arc::new(AtomicU64::new(0));
    let clock = Clock::start(server_pid)?;
    let (deadline, total) = match load.stop {
        Stop::After(duration) => (Some(clock.start + duration), u64::MAX),
        Stop::Total(total) => (None, total),
    };
    let mut tasks = Vec::with_capacity(connections.len() * streams);
    let mut drivers = Vec::with_capacity(connections.len());
    for (connection, (sender, driver)) in connections.into_iter().enumerate() {
        drivers.push(driver);
        for stream in 0..streams {
            let mut sender = sender.clone();
            let load = load.clone();
            let next = Arc::clone(&next);
            let slot_connection = connection * streams + stream;
            tasks.push(tokio::spawn(async move {
                let mut tally = Tally::new();
                loop {
                    if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                        break;
                    }
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= total {
                        break;
                    }
                    let request = (load.request)(Slot {
                        connection: slot_connection,
                        index,
                    });
                    let sent = Instant::now();
                    match exchange_h2(&mut sender, request).await {
                        Ok((status, body)) => tally.answer(&load, sent, status, &body),
                        Err(error) => {
                            tally.error(error);
                            if sender.is_closed() {
                                tally.error(format!("HTTP/2 connection {connection} closed"));
                                break;
                            }
                        }
                    }
                }
                tally.last_end = Some(Instant::now());
                tally
            }));
        }
    }
    let limit = match load.stop {
        Stop::After(duration) => duration + REQUEST_TIMEOUT * 2,
        Stop::Total(total) => Duration::from_secs(60) + Duration::from_millis(total / 2),
    };
    let outcome = finish(tasks, limit, clock).await;
    // Every sender clone is gone with its loop, which lets each connection
    // close; the teardown is not part of the measurement.
    for mut driver in drivers {
        if tokio::time::timeout(Duration::from_secs(2), &mut driver)
            .await
            .is_err()
        {
            driver.abort();
        }
    }
    outcome
}

/// `concurrency` loops, each opening a new connection per GET of `path`,
/// for `duration`. Latency is from TCP connect to the end of the answer.
pub async fn new_connections(
    target: &Target,
    concurrency: usize,
    duration: Duration,
    path: &str,
    server_pid: Option<u32>,
) -> Result<Outcome, Failure> {
    let clock = Clock::start(server_pid)?;
    let start = clock.start;
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let target = target.clone();
        let path = path.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::new();
            while Instant::now() < deadline {
                let started = Instant::now();
                let (mut sender, driver) = match target.connect().await {
                    Ok(connection) => connection,
                    Err(error) => {
                        tally.error(error.to_string());
                        // Do not spin on a server that refuses.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                };
                let mut get = request(Method::GET, &path, Bytes::new());
                get.headers_mut()
                    .insert(CONNECTION, hyper::header::HeaderValue::from_static("close"));
                let answer = exchange(&mut sender, get).await;
                let latency = started.elapsed();
                drop(sender);
                // The server closes after answering; wait for it so that
                // the next connection does not overlap this one.
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, driver).await;
                match answer {
                    Ok((status, body)) => match judge(status, &body, None) {
                        None => {
                            tally.requests += 1;
                            record(&mut tally.latency, latency);
                        }
                        Some(error) => tally.error(error),
                    },
                    Err(error) => tally.error(error),
                }
                // Here the close is part of each measured connection.
                tally.last_end = Some(Instant::now());
            }
            tally
        }));
    }
    finish(tasks, duration + REQUEST_TIMEOUT * 3, clock).await
}

/// Polls a just-started server until a GET of `path` answers 200, at most
/// `timeout`; fails early if the process `pid` exits. Returns the instant
/// the 200 arrived.
///
/// Connection attempts are made from a blocking thread with a 250 µs pause
/// between refusals: tokio's timer has a 1 ms resolution, too coarse for a
/// start that takes a few milliseconds.
pub async fn first_ok(
    target: &Target,
    path: &str,
    pid: u32,
    timeout: Duration,
) -> Result<Instant, Failure> {
    let deadline = Instant::now() + timeout;
    let step = || format!("waiting for the first 200 from {}", target.addr);
    loop {
        let addr = target.addr;
        let wait = deadline.into_std();
        let tcp = tokio::task::spawn_blocking(move || loop {
            // A full backlog drops SYNs and would leave a plain connect
            // retrying for minutes.
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                Ok(tcp) => return Some(tcp),
                Err(_) if std::time::Instant::now() < wait && process::is_running(pid) => {
                    std::thread::sleep(Duration::from_micros(250));
                }
                Err(_) => return None,
            }
        })
        .await
        .step(step)?;
        let Some(tcp) = tcp else {
            return Err(if process::is_running(pid) {
                Failure::new(step(), format!("nothing listening after {timeout:?}"))
            } else {
                Failure::new(step(), "the process exited before answering")
            });
        };
        let attempt = async {
            tcp.set_nonblocking(true).step(step)?;
            tcp.set_nodelay(true).step(step)?;
            let tcp = TcpStream::from_std(tcp).step(step)?;
            let (mut sender, driver) = target.handshake(tcp).await?;
            let answer = exchange(&mut sender, request(Method::GET, path, Bytes::new())).await;
            let answered = Instant::now();
            drop(sender);
            driver.abort();
            match answer {
                Ok((status, _)) if status == StatusCode::OK => Ok(answered),
                Ok((status, _)) => Err(Failure::new(step(), format!("answered {status}"))),
                Err(error) => Err(Failure::new(step(), error)),
            }
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(answered)) => return Ok(answered),
            // Listening but not yet serving, or not yet ready: try again.
            Ok(Err(_)) if Instant::now() < deadline && process::is_running(pid) => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(Failure::new(step(), format!("no 200 within {timeout:?}"))),
        }
    }
}

/// GETs `http://{addr}{path}` on a new plain-HTTP connection (the ops
/// listener has no TLS and closes after each answer); the body as text when
/// the answer is 200.
pub async fn plain_get(addr: SocketAddr, path: &str) -> Result<String, Failure> {
    let step = || format!("GET http://{addr}{path}");
    let setup = async {
        let tcp = TcpStream::connect(addr).await.step(step)?;
        tcp.set_nodelay(true).step(step)?;
        http1::handshake(TokioIo::new(tcp)).await.step(step)
    };
    let (mut sender, connection) = tokio::time::timeout(REQUEST_TIMEOUT, setup)
        .await
        .step(step)??;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let answer = exchange(&mut sender, request(Method::GET, path, Bytes::new())).await;
    driver.abort();
    let (status, body) = answer.map_err(|error| Failure::new(step(), error))?;
    if status != StatusCode::OK {
        return Err(Failure::new(step(), format!("answered {status}")));
    }
    String::from_utf8(body.to_vec()).step(step)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    use super::*;
    use crate::baseline::{self, BaselineArgs};
    use crate::workdir::Workdir;

    /// The baseline, in-process on a free port, and a target for it.
    async fn baseline(workdir: &Workdir) -> Target {
        let addr = process::free_address().expect("a free port");
        let files = workdir.server_files();
        let args = BaselineArgs {
            listen: addr,
            tls_cert: files.cert,
            tls_key: files.key,
            client_ca: files.client_ca,
        };
        tokio::spawn(async move { baseline::serve(&args).await });
        let target = Target::new(addr, &workdir.client_files()).expect("a target");
        for _ in 0..200 {
            if target.connect_h2().await.is_ok() {
                return target;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the baseline did not answer over HTTP/2 at {addr}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn multiplexed_sends_every_request_from_every_stream_loop() {
        let workdir = Workdir::create().expect("a work directory");
        let target = baseline(&workdir).await;
        let loops = Arc::new(Mutex::new(BTreeSet::new()));
        let seen = Arc::clone(&loops);
        let load = Load {
            connections: 2,
            stop: Stop::Total(400),
            request: Arc::new(move |slot: Slot| {
                seen.lock().unwrap().insert(slot.connection);
                request(Method::PUT, "/put", Bytes::from_static(b"value"))
            }),
            body_len: None,
            record_times: true,
        };
        let outcome = multiplexed(&target, &load, 8, None).await.expect("a run");
        assert_eq!(outcome.errors, 0, "{:?}", outcome.first_error);
        assert_eq!(outcome.requests, 400);
        assert_eq!(outcome.latency.len(), 400);
        assert_eq!(outcome.times.len(), 400);
        // Every stream loop of both connections sent some of them.
        let loops = loops.lock().unwrap().clone();
        assert_eq!(loops, (0..16).collect::<BTreeSet<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn multiplexed_checks_the_body_length() {
        let workdir = Workdir::create().expect("a work directory");
        let target = baseline(&workdir).await;
        let load = Load {
            connections: 1,
            stop: Stop::Total(10),
            request: Arc::new(|_| request(Method::GET, "/", Bytes::new())),
            body_len: Some(7),
            record_times: false,
        };
        let outcome = multiplexed(&target, &load, 4, None).await.expect("a run");
        assert_eq!(outcome.requests, 0);
        assert_eq!(outcome.errors, 10);
        let error = outcome.first_error.expect("an error");
        assert!(error.contains("1024 byte body, expected 7"), "{error}");
    }
}
