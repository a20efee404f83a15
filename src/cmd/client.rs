//! [`Client`]: the async mTLS client behind the CLI's `put`, `get`, `rm`,
//! `ls`, `renew`, `push` and `pop`, configured like Vault's CLI by
//! `TMPVAULT_ADDR`, `TMPVAULT_CACERT`, `TMPVAULT_CLIENT_CERT` and
//! `TMPVAULT_CLIENT_KEY`.
//!
//! It keeps connections alive (hyper-util's pooled client over hyper-rustls),
//! so one `Client` serves many requests. Values it returns are
//! [`Zeroizing`] buffers.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use zeroize::Zeroizing;

use crate::tls::{self, ClientTlsFiles, TlsError};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TLS files could not be loaded.
    #[error("loading client TLS configuration: {0}")]
    Tls(#[from] TlsError),
    /// `TMPVAULT_ADDR` is not an `https://host:port` URL.
    #[error("invalid server address {0:?}: expected https://host:port")]
    Address(String),
    /// The request could not be sent or the response not read.
    #[error("talking to {addr}: {reason}")]
    Transport {
        /// The server.
        addr: String,
        /// What went wrong (with its sources).
        reason: String,
    },
    /// The server refused the request with a problem document.
    #[error("{code}: {detail} (HTTP {status})")]
    Problem {
        /// HTTP status.
        status: u16,
        /// The problem's stable `code`.
        code: String,
        /// The problem's `detail`.
        detail: String,
    },
}

impl ClientError {
    /// The problem `code`, if the server answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Problem { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A response as received, for callers that need every detail. Its
/// `Debug` shows the status and headers, never the body (it may be a value).
pub struct RawResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, wiped on drop.
    pub body: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for RawResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field(
                "body",
                &format_args!("[redacted {} bytes]", self.body.len()),
            )
            .finish()
    }
}

/// How long one request may take, from sending to the end of the body,
/// before the client gives up: a stalled server must not hang a CLI
/// command (or a test) forever.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An mTLS client for one tmpvault server.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: HttpClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Options of a write.
#[derive(Clone, Debug, Default)]
pub struct PutOptions<'a> {
    /// Time to live, e.g. `10m`.
    pub ttl: Option<&'a str>,
    /// Reads before the secret is wiped.
    pub max_reads: Option<u32>,
    /// Media type to store.
    pub content_type: Option<&'a str>,
}

fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={}", encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

impl Client {
    /// A client for `addr` (`https://host:port`) with the given TLS files.
    pub fn new(addr: &str, files: &ClientTlsFiles) -> Result<Client, ClientError> {
        let base = addr.trim_end_matches('/').to_owned();
        let valid = base
            .strip_prefix("https://")
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
        if !valid || base.parse::<hyper::Uri>().is_err() {
            return Err(ClientError::Address(addr.to_owned()));
        }
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls::client_config(files)?)
            .https_only()
            .enable_http1()
            .build();
        let http = HttpClient::builder(TokioExecutor::new()).build(connector);
        Ok(Client {
            base,
            http,
            timeout: REQUEST_TIMEOUT,
        })
    }

    /// The same client with another per-request deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// Sends any request; the status is not interpreted.
    pub async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<RawResponse, ClientError> {
        let transport = |reason: String| ClientError::Transport {
            addr: self.base.clone(),
            reason,
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path_and_query}", self.base));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|error| transport(format!("building the request: {error}")))?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|error| transport(error_chain(&error)))?;
            let (parts, body) = response.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(|error| transport(error_chain(&error)))?
                .to_bytes();
            Ok::<_, ClientError>((parts, bytes))
        };
        let (parts, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                transport(format!(
                    "no complete answer within {}s",
                    self.timeout.as_secs()
                ))
            })??;
        Ok(RawResponse {
            status: parts.status,
            headers: parts.headers,
            body: Zeroizing::new(bytes.to_vec()),
        })
    }

    /// Like [`Client::request`], but turns a non-2xx answer into an error.
    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<RawResponse, ClientError> {
        let response = self.request(method, path_and_query, headers, body).await?;
        if response.status.is_success() {
            return Ok(response);
        }
        let problem: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
        Err(ClientError::Problem {
            status: response.status.as_u16(),
            code: problem["code"].as_str().unwrap_or("unknown").to_owned(),
            detail: problem["detail"]
                .as_str()
                .unwrap_or_else(|| response.status.canonical_reason().unwrap_or("error"))
                .to_owned(),
        })
    }

    fn json(&self, response: &RawResponse) -> Result<serde_json::Value, ClientError> {
        serde_json::from_slice(&response.body).map_err(|error| ClientError::Transport {
            addr: self.base.clone(),
            reason: format!("the server answered with invalid JSON: {error}"),
        })
    }

    /// Stores a secret; returns its metadata.
    pub async fn put(
        &self,
        key: &str,
        value: Bytes,
        options: &PutOptions<'_>,
    ) -> Result<serde_json::Value, ClientError> {
        let path = format!(
            "/v1/secrets/{key}{}",
            query(&[
                ("ttl", options.ttl.map(str::to_owned)),
                ("max_reads", options.max_reads.map(|n| n.to_string())),
            ])
        );
        let content_type = options.content_type.unwrap_or("application/octet-stream");
        let response = self
            .call(
                Method::PUT,
                &path,
                &[(CONTENT_TYPE.as_str(), content_type)],
                value,
            )
            .await?;
        self.json(&response)
    }

    /// Reads a secret's bytes.
    pub async fn get(&self, key: &str) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        let response = self
            .call(
                Method::GET,
                &format!("/v1/secrets/{key}"),
                &[],
                Bytes::new(),
            )
            .await?;
        Ok(response.body)
    }

    /// Removes a secret or list.
    pub async fn delete(&self, key: &str) -> Result<(), ClientError> {
        self.call(
            Method::DELETE,
            &format!("/v1/secrets/{key}"),
            &[],
            Bytes::new(),
        )
        .await
        .map(drop)
    }

    /// One page of metadata: `{"items": [...], "next": ...}`.
    pub async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<serde_json::Value, ClientError> {
        let path = format!(
            "/v1/secrets{}",
            query(&[
                ("prefix", (!prefix.is_empty()).then(|| prefix.to_owned())),
                ("after", after.map(str::to_owned)),
                ("limit", limit.map(|n| n.to_string())),
            ])
        );
        let response = self.call(Method::GET, &path, &[], Bytes::new()).await?;
        self.json(&response)
    }

    /// Sets a new TTL.
    pub async fn renew(&self, key: &str, ttl: &str) -> Result<serde_json::Value, ClientError> {
        let body = serde_json::json!({ "ttl": ttl }).to_string();
        let response = self
            .call(
                Method::PATCH,
                &format!("/v1/secrets/{key}"),
                &[(CONTENT_TYPE.as_str(), "application/json")],
                Bytes::from(body),
            )
            .await?;
        self.json(&response)
    }

    /// Appends an item to a list (created with `ttl` if absent).
    pub async fn push(
        &self,
        key: &str,
        item: Bytes,
        ttl: Option<&str>,
    ) -> Result<serde_json::Value, ClientError> {
        let path = format!(
            "/v1/lists/{key}/push{}",
            query(&[("ttl", ttl.map(str::to_owned))])
        );
        let response = self.call(Method::POST, &path, &[], item).await?;
        self.json(&response)
    }

    /// Removes and returns an item of a list (the newest, or the oldest).
    pub async fn pop(&self, key: &str, oldest: bool) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        let from = if oldest { "?from=oldest" } else { "" };
        let response = self
            .call(
                Method::POST,
                &format!("/v1/lists/{key}/pop{from}"),
                &[],
                Bytes::new(),
            )
            .await?;
        Ok(response.body)
    }
}

/// An error and its sources on one line (hyper's errors say little alone).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
