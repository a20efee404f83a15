//! The baseline: the bare stack tmpvault is built on, as a separate process
//! (`tmpvault-bench baseline ...`, hidden from `--help`).
//!
//! Same runtime (tokio, multi-threaded, one worker per core), same TLS
//! (`tmpvault::tls::server_config`: ring, TLS 1.3 only, client certificates
//! required, the same ALPN), same HTTP layer (hyper-util's auto builder over
//! tokio-rustls, with tmpvault's HTTP/2 settings: the `HTTP2_*` constants
//! of `tmpvault::http::server`), and nothing else: GET answers a fixed 1 KiB
//! body, PUT reads the body and answers 204. No routing, store, audit line,
//! deadlines, metrics or HTTP/2 flood guard, so it is the most this stack
//! can do on this machine and tmpvault's figures are read as a fraction of
//! it.
//!
//! The process stops on SIGTERM (the default action) and also when its
//! stdin closes, so it never outlives a bench that was killed outright.

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tmpvault::config::Limits;
use tmpvault::http::server::configure_http2;
use tmpvault::tls::ServerTlsFiles;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::failure::{Failure, Step};

/// The body every GET answers: 1 KiB, like the secret tmpvault serves.
static BODY: [u8; 1024] = [b'x'; 1024];
/// Largest PUT body read (tmpvault's default `--max-value-bytes`).
const MAX_BODY: usize = 64 * 1024;
/// A client that connects and never finishes its handshake is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Flags of the hidden `baseline` subcommand.
#[derive(Debug, clap::Args)]
pub struct BaselineArgs {
    /// Address to listen on.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Server certificate (PEM).
    #[arg(long)]
    pub tls_cert: PathBuf,
    /// Server key (PEM).
    #[arg(long)]
    pub tls_key: PathBuf,
    /// CA that signs client certificates (PEM).
    #[arg(long)]
    pub client_ca: PathBuf,
}

/// Runs the baseline server until killed or until stdin closes.
pub fn run(args: &BaselineArgs) -> Result<(), Failure> {
    std::thread::spawn(|| {
        // EOF (or an error) on stdin means the bench is gone.
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(1..)) {}
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .step(|| "starting the baseline's runtime".into())?;
    runtime.block_on(serve(args))
}

/// Serves on `args.listen` until the process ends (also run in-process by
/// the load generator's tests).
pub async fn serve(args: &BaselineArgs) -> Result<(), Failure> {
    let tls = tmpvault::tls::server_config(&ServerTlsFiles {
        cert: args.tls_cert.clone(),
        key: args.tls_key.clone(),
        client_ca: args.client_ca.clone(),
    })
    .step(|| "loading the baseline's TLS configuration".into())?;
    let listener = TcpListener::bind(args.listen)
        .await
        .step(|| format!("binding the baseline on {}", args.listen))?;
    let acceptor = TlsAcceptor::from(tls);
    let builder = Arc::new(builder());
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let builder = Arc::clone(&builder);
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            else {
                return;
            };
            let _ = builder
                .serve_connection(TokioIo::new(tls), service_fn(answer))
                .await;
        });
    }
}

/// hyper-util's auto builder with tmpvault's HTTP/2 settings, applied by
/// the server's own `configure_http2` (with the default
/// `--max-header-bytes`), so that an HTTP/2 ratio compares the same
/// windows, frame sizes and stream limits. HTTP/1.1 keeps hyper's
/// defaults, as it always has here.
fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    configure_http2(&mut builder, Limits::default().max_header_bytes);
    builder
}

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match *request.method() {
        Method::GET => (StatusCode::OK, Bytes::from_static(&BODY)),
        Method::PUT => match Limited::new(request.into_body(), MAX_BODY).collect().await {
            Ok(_) => (StatusCode::NO_CONTENT, Bytes::new()),
            Err(_) => (StatusCode::PAYLOAD_TOO_LARGE, Bytes::new()),
        },
        _ => (StatusCode::METHOD_NOT_ALLOWED, Bytes::new()),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    if status == StatusCode::OK {
        response.headers_mut().insert(
            CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/octet-stream"),
        );
    }
    Ok(response)
}
