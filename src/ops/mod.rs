//! The ops listener: plain HTTP for the kubelet and Docker, never secrets.
//!
//! - `GET /healthz`: 200 while the process serves at all (liveness).
//! - `GET /readyz`: 200 when the self-check passed, the snapshot (if any)
//!   is loaded and shutdown has not begun; 503 otherwise (readiness).
//! - `GET /metrics`: Prometheus text (see [`crate::ops::metrics`]).
//!
//! It carries no key name or value, so it needs no TLS; bind it to
//! 127.0.0.1 unless a kubelet on the pod IP must reach it. `tmpvault
//! healthcheck` is its client, for images without a shell.

pub mod logging;
pub mod metrics;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::http::server::Health;
use crate::persist::Persistence;
use crate::posture::selfcheck::SelfcheckInputs;
use crate::store::Store;

/// Connections the ops listener serves at once.
const MAX_OPS_CONNECTIONS: usize = 32;

/// What the ops endpoints read.
pub struct Ops {
    /// Flags and counters shared with the TLS server.
    pub health: Arc<Health>,
    /// The store, for item and byte counts.
    pub store: Store,
    /// Snapshots and journal, when on.
    pub persistence: Option<Arc<Persistence>>,
    /// Re-runs the self-check for each scrape.
    pub selfcheck: SelfcheckInputs,
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

impl Ops {
    fn answer(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        if !matches!(path, "/healthz" | "/readyz" | "/metrics") {
            return text(StatusCode::NOT_FOUND, "not found\n");
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match path {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => {
                if self.health.ready() {
                    text(StatusCode::OK, "ready\n")
                } else if self.health.draining.load(Ordering::Acquire) {
                    text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }
            _ => {
                let report = self.selfcheck.run();
                let body = metrics::render(&metrics::Scrape {
                    requests: &self.health.requests,
                    store: self.store.stats(),
                    memory_budget: self.store.budget(),
                    persistence: self.persistence.as_deref().map(Persistence::metrics),
                    handshake_failures: self.health.handshake_failures.load(Ordering::Relaxed),
                    handshakes: self.health.handshakes.load(Ordering::Relaxed),
                    handshakes_post_quantum: self
                        .health
                        .handshakes_post_quantum
                        .load(Ordering::Relaxed),
                    closed_untrusted: self.health.closed_untrusted.load(Ordering::Relaxed),
                    closed_max_age: self.health.closed_max_age.load(Ordering::Relaxed),
                    handshakes_evicted: self.health.handshakes_evicted.load(Ordering::Relaxed),
                    closed_for_room: self.health.closed_for_room.load(Ordering::Relaxed),
                    refused_no_place: self.health.refused_no_place.load(Ordering::Relaxed),
                    closed_stalled: self.health.closed_stalled.load(Ordering::Relaxed),
                    http2_flood_closed: self.health.http2_flood_closed.load(Ordering::Relaxed),
                    connections_open: self.health.connections_open.load(Ordering::Relaxed),
                    ready: self.health.ready(),
                    draining: self.health.draining.load(Ordering::Acquire),
                    selfcheck: &report,
                    reload: self.selfcheck.reload_status(),
                });
                let mut response = text(StatusCode::OK, body);
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
        }
    }
}

/// Serves the ops endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, ops: Arc<Ops>) {
    let permits = Arc::new(Semaphore::new(MAX_OPS_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "ops listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ops = Arc::clone(&ops);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = ops.answer(&request);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .keep_alive(false)
                .serve_connection(TokioIo::new(tcp), service);
            let _ = tokio::time::timeout(Duration::from_secs(30), connection).await;
            drop(permit);
        });
    }
}

/// Why a health check did not pass.
#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    /// The URL is not `http://host:port/path`.
    #[error("invalid ops URL {0:?}: expected http://host:port/path")]
    Url(String),
    /// No answer in time, or the connection failed.
    #[error("{url}: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server answered, but not 200.
    #[error("{url} answered {status}")]
    NotReady {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
}

/// The URL `healthcheck` uses by default: `/readyz` on the configured ops
/// listener (`TMPVAULT_OPS_LISTEN`, where an unspecified IP means loopback),
/// else on 127.0.0.1:9090.
pub fn default_ops_url(ops_listen: Option<SocketAddr>) -> String {
    let mut addr = ops_listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9090)));
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv6() {
            std::net::Ipv6Addr::LOCALHOST.into()
        } else {
            std::net::Ipv4Addr::LOCALHOST.into()
        });
    }
    format!("http://{addr}/readyz")
}

/// The URL a `--ops-url` names: the ops listener's base address
/// (`http://127.0.0.1:9090`, with or without the trailing `/`) means its
/// `/readyz`, which is what people pass; any other path is asked as given.
pub fn readiness_url(ops_url: &str) -> String {
    let Some(rest) = ops_url.strip_prefix("http://") else {
        return ops_url.to_owned();
    };
    match rest.find(['/', '?', '#']) {
        None => format!("{ops_url}/readyz"),
        Some(at) if &rest[at..] == "/" => format!("{ops_url}readyz"),
        Some(_) => ops_url.to_owned(),
    }
}

/// GETs `url` with a deadline; Ok only on 200. A base URL without a path
/// asks `/readyz` ([`readiness_url`]).
pub async fn healthcheck(url: &str, timeout: Duration) -> Result<(), HealthcheckError> {
    let url = &readiness_url(url);
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| HealthcheckError::Url(url.to_owned()))?;
    let (Some("http"), Some(authority)) = (uri.scheme_str(), uri.authority().cloned()) else {
        return Err(HealthcheckError::Url(url.to_owned()));
    };
    let unreachable = |reason: String| HealthcheckError::Unreachable {
        url: url.to_owned(),
        reason,
    };
    let exchange = async {
        let tcp = TcpStream::connect(authority.as_str())
            .await
            .map_err(|error| unreachable(error.to_string()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|error| unreachable(error.to_string()))?;
        tokio::spawn(connection);
        let request = Request::get(uri.clone())
            .header(hyper::header::HOST, authority.as_str())
            .body(Empty::<Bytes>::new())
            .map_err(|error| unreachable(error.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| unreachable(error.to_string()))?;
        let status = response.status();
        let _ = response.into_body().collect().await;
        Ok(status)
    };
    let status = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| unreachable(format!("no answer within {}s", timeout.as_secs())))??;
    if status == StatusCode::OK {
        Ok(())
    } else {
        Err(HealthcheckError::NotReady {
            url: url.to_owned(),
            status: status.as_u16(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::readiness_url;

    #[test]
    fn a_base_url_means_readyz() {
        for (given, asked) in [
            ("http://127.0.0.1:9090", "http://127.0.0.1:9090/readyz"),
            ("http://127.0.0.1:9090/", "http://127.0.0.1:9090/readyz"),
            ("http://[::1]:9090", "http://[::1]:9090/readyz"),
            (
                "http://127.0.0.1:9090/readyz",
                "http://127.0.0.1:9090/readyz",
            ),
            (
                "http://127.0.0.1:9090/healthz",
                "http://127.0.0.1:9090/healthz",
            ),
            ("http://127.0.0.1:9090/nope", "http://127.0.0.1:9090/nope"),
            ("ftp://x", "ftp://x"),
        ] {
            assert_eq!(readiness_url(given), asked, "{given}");
        }
    }
}
