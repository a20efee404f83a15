//! Waiting GETs (`?wait=` with `If-None-Match`): what a thousand of them
//! cost a server that is otherwise idle, and how fast one PUT answers them
//! all.
//!
//! For each [`Shape`], a fresh `tmpvault serve` with its ops listener:
//!
//! 1. one secret is stored, and the server's VmRSS read (after `settle`);
//! 2. the waiting GETs are sent, over HTTP/2 connections (ALPN `h2`,
//!    several streams each, under the server's 64 per connection) or one
//!    per HTTP/1.1 connection, until `/metrics` says
//!    `tmpvault_waiting_requests` is the full count;
//! 3. after `settle`, VmRSS again, then utime + stime over an idle window
//!    in which nothing is sent (not even a scrape);
//! 4. one PUT of a new value, and the time until the last waiter has its
//!    200 with the new bytes, from the PUT's answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::header::{ETAG, HOST, IF_NONE_MATCH};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::failure::{Failure, Step};
use crate::load;
use crate::process::{self, ChildGuard};
use crate::report::Waiters;

/// The key every waiter waits on.
const PATH: &str = "/v1/secrets/bench/wait";
/// What each waiter asks for: far longer than the measurement.
const WAIT: &str = "60s";
/// Connection setups (TCP + mTLS handshake) in flight at once.
const PARALLEL_SETUPS: usize = 32;
/// For every waiter to be registered, and for every answer after the PUT.
const DEADLINE: Duration = Duration::from_secs(60);

/// How the waiting GETs reach the server.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// HTTP/2 connections.
    pub h2_connections: usize,
    /// Waiting streams on each of them.
    pub h2_streams: usize,
    /// HTTP/1.1 connections, one waiting GET each.
    pub http1_connections: usize,
}

impl Shape {
    /// Waiting GETs in all.
    pub fn total(&self) -> usize {
        self.h2_connections * self.h2_streams + self.http1_connections
    }

    /// `20 HTTP/2 connections × 50 streams`, `+` `1,000 HTTP/1.1
    /// connections`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.h2_connections > 0 {
            parts.push(format!(
                "{} HTTP/2 connections × {} streams",
                self.h2_connections, self.h2_streams
            ));
        }
        if self.http1_connections > 0 {
            parts.push(format!("{} HTTP/1.1 connections", self.http1_connections));
        }
        parts.join(" + ")
    }
}

/// The shapes measured: all over HTTP/2 (how a multiplexing client, or a
/// proxy in front of many, waits), and one connection each (how `tmpvault
/// run --watch` waits, one HTTP/1.1 connection per secret it follows).
pub const SHAPES: [Shape; 2] = [
    Shape {
        h2_connections: 20,
        h2_streams: 50,
        http1_connections: 0,
    },
    Shape {
        h2_connections: 0,
        h2_streams: 0,
        http1_connections: 1_000,
    },
];

/// TLS connectors for both protocols, on the run's client certificate.
pub struct Connectors {
    addr: SocketAddr,
    h2: TlsConnector,
    http1: TlsConnector,
}

impl Connectors {
    pub fn new(addr: SocketAddr, files: &tmpvault::tls::ClientTlsFiles) -> Result<Self, Failure> {
        let config = |alpn: &[u8]| {
            let mut config = tmpvault::tls::client_config(files)
                .step(|| "building the waiters' TLS client configuration".into())?;
            config.alpn_protocols = vec![alpn.to_vec()];
            Ok::<_, Failure>(TlsConnector::from(Arc::new(config)))
        };
        Ok(Connectors {
            addr,
            h2: config(b"h2")?,
            http1: config(b"http/1.1")?,
        })
    }

    async fn tls(
        &self,
        connector: &TlsConnector,
    ) -> Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>, Failure> {
        let step = || format!("connecting to {}", self.addr);
        let setup = async {
            let tcp = TcpStream::connect(self.addr).await.step(step)?;
            tcp.set_nodelay(true).step(step)?;
            let name = ServerName::IpAddress(self.addr.ip().into());
            let tls = connector.connect(name, tcp).await.step(step)?;
            Ok(TokioIo::new(tls))
        };
        tokio::time::timeout(Duration::from_secs(30), setup)
            .await
            .step(step)?
    }

    /// An HTTP/2 connection, driven by a spawned task.
    async fn h2(&self) -> Result<http2::SendRequest<Full<Bytes>>, Failure> {
        let io = self.tls(&self.h2).await?;
        let (sender, connection) = http2::handshake(TokioExecutor::new(), io)
            .await
            .step(|| "HTTP/2 handshake".into())?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// An HTTP/1.1 connection, driven by a spawned task.
    async fn http1(&self) -> Result<http1::SendRequest<Full<Bytes>>, Failure> {
        let io = self.tls(&self.http1).await?;
        let (sender, connection) = http1::handshake(io)
            .await
            .step(|| "HTTP/1.1 handshake".into())?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

fn request(method: Method, path: &str, etag: Option<&str>, body: Bytes) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, "127.0.0.1");
    if let Some(etag) = etag {
        builder = builder.header(IF_NONE_MATCH, etag);
    }
    builder
        .body(Full::new(body))
        .unwrap_or_else(|_| unreachable!("method, path and headers are valid"))
}

/// One answer: status, body, when it was complete.
type Answer = Result<(StatusCode, Bytes, Instant), String>;

async fn complete(
    response: Result<hyper::Response<hyper::body::Incoming>, hyper::Error>,
) -> Answer {
    let response = response.map_err(|error| error.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|error| error.to_string())?
        .to_bytes();
    Ok((status, body, Instant::now()))
}

/// PUTs `value` over `control`; returns the new ETag.
async fn put(
    control: &mut http2::SendRequest<Full<Bytes>>,
    value: &[u8],
) -> Result<String, Failure> {
    let step = || format!("PUT {PATH}");
    control.ready().await.step(step)?;
    let response = control
        .send_request(request(
            Method::PUT,
            PATH,
            None,
            Bytes::copy_from_slice(value),
        ))
        .await
        .step(step)?;
    if !response.status().is_success() {
        return Err(Failure::new(
            step(),
            format!("answered {}", response.status()),
        ));
    }
    response
        .headers()
        .get(ETAG)
        .and_then(|etag| etag.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| Failure::new(step(), "no ETag"))
}

/// Reads `tmpvault_waiting_requests` from the ops listener.
async fn waiting(ops: SocketAddr) -> Result<usize, Failure> {
    let text = load::plain_get(ops, "/metrics").await?;
    text.lines()
        .find_map(|line| line.strip_prefix("tmpvault_waiting_requests "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as usize)
        .ok_or_else(|| Failure::new("reading /metrics", "no tmpvault_waiting_requests line"))
}

/// Opens the connections of `shape` and sends every waiting GET; each
/// task ends with its answer. The few HTTP/2 connections are opened one
/// after the other, the HTTP/1.1 ones [`PARALLEL_SETUPS`] at a time.
async fn send_waiters(
    connectors: &Arc<Connectors>,
    shape: Shape,
    etag: &str,
) -> Result<Vec<JoinHandle<Answer>>, Failure> {
    let setups = Arc::new(Semaphore::new(PARALLEL_SETUPS));
    let path: Arc<str> = format!("{PATH}?wait={WAIT}").into();
    let etag: Arc<str> = etag.into();
    let mut tasks = Vec::with_capacity(shape.total());
    for _ in 0..shape.h2_connections {
        let connection = connectors.h2().await?;
        for _ in 0..shape.h2_streams {
            let mut sender = connection.clone();
            let (path, etag) = (Arc::clone(&path), Arc::clone(&etag));
            tasks.push(tokio::spawn(async move {
                sender.ready().await.map_err(|error| error.to_string())?;
                let response = sender
                    .send_request(request(Method::GET, &path, Some(&etag), Bytes::new()))
                    .await;
                complete(response).await
            }));
        }
    }
    for _ in 0..shape.http1_connections {
        let (connectors, setups) = (Arc::clone(connectors), Arc::clone(&setups));
        let (path, etag) = (Arc::clone(&path), Arc::clone(&etag));
        tasks.push(tokio::spawn(async move {
            let mut sender = {
                let _permit = setups.acquire().await;
                connectors
                    .http1()
                    .await
                    .map_err(|error| error.to_string())?
            };
            sender.ready().await.map_err(|error| error.to_string())?;
            let response = sender
                .send_request(request(Method::GET, &path, Some(&etag), Bytes::new()))
                .await;
            complete(response).await
        }));
    }
    Ok(tasks)
}

/// What the requests that ended before the server held them got: how
/// many, and the first one's answer or error.
async fn ended_early(tasks: &mut [JoinHandle<Answer>]) -> String {
    let mut ended = 0;
    let mut first = None;
    for task in tasks.iter_mut().filter(|task| task.is_finished()) {
        ended += 1;
        let said = match task.await {
            Ok(Ok((status, ..))) => format!("answered {status}"),
            Ok(Err(error)) => error,
            Err(error) => format!("the task failed: {error}"),
        };
        first.get_or_insert(said);
    }
    match first {
        Some(first) => format!("{ended} of the requests ended unheld, the first: {first}"),
        None => "none of the requests ended: the rest are still on their way".to_owned(),
    }
}

/// Measures `shape` against a fresh server (`server`, whose ops listener
/// is `ops`); `settle` before each RSS reading, `idle` the window CPU is
/// read over.
pub async fn measure(
    server: &ChildGuard,
    connectors: Connectors,
    ops: SocketAddr,
    shape: Shape,
    settle: Duration,
    idle: Duration,
) -> Result<Waiters, Failure> {
    let pid = server.pid();
    let connectors = Arc::new(connectors);
    let mut control = connectors.h2().await?;
    let etag = put(&mut control, b"before").await?;
    tokio::time::sleep(settle).await;
    let rss_before = process::rss(pid)?;

    let started = Instant::now();
    let mut tasks = send_waiters(&connectors, shape, &etag).await?;
    let total = shape.total();
    loop {
        let now = waiting(ops).await?;
        if now == total {
            break;
        }
        if started.elapsed() > DEADLINE {
            return Err(Failure::new(
                "waiting for the server to hold every waiting GET",
                format!(
                    "{now} of {total} after {DEADLINE:?}; {}",
                    ended_early(&mut tasks).await
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let setup = started.elapsed();
    tokio::time::sleep(settle).await;
    let rss_waiting = process::rss(pid)?;
    let cpu_before = process::cpu_time(pid)?;
    tokio::time::sleep(idle).await;
    let idle_cpu = process::cpu_time(pid)?.saturating_sub(cpu_before);
    let rss_after_idle = process::rss(pid)?;

    let new_value: &[u8] = b"after, a new value";
    let put_sent = Instant::now();
    put(&mut control, new_value).await?;
    let put_answered = Instant::now();
    let mut last = put_answered;
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let answer = tokio::time::timeout_at(put_answered + DEADLINE, task)
            .await
            .map_err(|_| format!("no answer within {DEADLINE:?} of the PUT"))
            .and_then(|joined| joined.map_err(|error| error.to_string()))
            .and_then(|answer| answer);
        match answer {
            Ok((StatusCode::OK, body, at)) if body.as_ref() == new_value => last = last.max(at),
            Ok((status, body, _)) => {
                errors += 1;
                first_error.get_or_insert(format!("{status} with {} bytes", body.len()));
            }
            Err(error) => {
                errors += 1;
                first_error.get_or_insert(error);
            }
        }
    }
    Ok(Waiters {
        shape: shape.describe(),
        count: total,
        setup_ms: setup.as_secs_f64() * 1000.0,
        rss_before,
        rss_waiting: rss_waiting.max(rss_after_idle),
        idle_s: idle.as_secs_f64(),
        idle_cpu_ms: idle_cpu.as_secs_f64() * 1000.0,
        put_ms: (put_answered - put_sent).as_secs_f64() * 1000.0,
        all_answered_ms: (last - put_answered).as_secs_f64() * 1000.0,
        errors,
        first_error,
    })
}
