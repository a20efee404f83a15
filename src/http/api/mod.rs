//! The v1 HTTP API: routing, request parsing, handlers and responses.
//!
//! Handlers return `Result<Response, ApiError>`; [`Api::handle`] turns every
//! error into a problem response through [`ApiError::into_response`], the only
//! place that happens. Secret bytes reach the response as a
//! `Bytes::from_owner` over the stored entry (a `SecretRef`): no copy, and the
//! last owner wipes them.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, ETAG, EXPIRES,
    IF_MATCH, IF_NONE_MATCH, LOCATION,
};
use hyper::{Method, Request, Response, StatusCode};
use zeroize::Zeroizing;

use crate::access::audit::AuditInfo;
use crate::access::policy::Operation;
use crate::access::Access;
use crate::config::ApiSettings;
use crate::http::problem::ApiError;
use crate::store::key::{validate_prefix, Key};
use crate::store::secret::SecretBytes;
use crate::store::{End, MediaType, Meta, Precondition, PutOptions, SecretRef, Store};
use crate::text::units::{format_duration, parse_duration};
use crate::tls::identity::Identity;

mod headers;
mod lists;
mod routing;
mod secrets;

pub use self::headers::*;
pub use self::routing::*;

/// The response body type of every route.
pub type ResponseBody = Full<Bytes>;

/// Header with the RFC 3339 expiry of a secret.
pub const EXPIRES_AT: HeaderName = HeaderName::from_static("x-tmpvault-expires-at");
/// Header with the reads left of a secret that has `max_reads`.
pub const READS_LEFT: HeaderName = HeaderName::from_static("x-tmpvault-reads-left");
/// Header with the items left in a list after a pop.
pub const ITEMS_LEFT: HeaderName = HeaderName::from_static("x-tmpvault-items-left");

const DEFAULT_CONTENT_TYPE: &str = MediaType::DEFAULT;
const MAX_CONTENT_TYPE_LEN: usize = 255;
/// Largest JSON body PATCH accepts.
const MAX_JSON_BODY: u64 = 4096;
/// Largest page a list request may ask for.
pub const MAX_LIST_LIMIT: usize = 1000;
const DEFAULT_LIST_LIMIT: usize = 100;

/// The OpenAPI 3 description served on `/v1/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// A source of the live self-check report as JSON, for `/v1/selfcheck`.
pub type SelfcheckJson = Arc<dyn Fn() -> String + Send + Sync>;

/// The API: the store plus the settings and access rules the handlers apply.
#[derive(Clone)]
pub struct Api {
    store: Store,
    settings: ApiSettings,
    selfcheck: Option<SelfcheckJson>,
    access: Arc<Access>,
}

/// The caller of a handler: who it is, and where the handler notes what it
/// did for the audit line.
struct Caller<'a> {
    identity: &'a Identity,
    audit: &'a mut AuditInfo,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewBody {
    ttl: TtlValue,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum TtlValue {
    Seconds(u64),
    Text(String),
}

impl Api {
    /// Builds the API over a store.
    pub fn new(store: Store, settings: ApiSettings) -> Api {
        Api {
            store,
            settings,
            selfcheck: None,
            access: Arc::new(Access::default()),
        }
    }

    /// Applies `access` (policy and rate limit) to every request.
    pub fn with_access(mut self, access: Arc<Access>) -> Api {
        self.access = access;
        self
    }

    /// Records the operation and key in the audit info, then checks the
    /// policy: 403 when no rule allows it.
    /// Every keyed handler's first steps, in this order: the key in the
    /// path is valid, the caller may do `operation` on it, and the query
    /// names only `allowed` parameters, each once.
    fn admit<'q>(
        &self,
        who: &mut Caller<'_>,
        raw: &str,
        operation: Operation,
        query: Option<&'q str>,
        allowed: &[&str],
    ) -> Result<(Key, Query<'q>), ApiError> {
        let key = parse_key(raw)?;
        self.authorize(who.identity, &key, operation, who.audit)?;
        let query = Query::parse(query, allowed)?;
        Ok((key, query))
    }

    fn authorize(
        &self,
        identity: &Identity,
        key: &Key,
        operation: Operation,
        audit: &mut AuditInfo,
    ) -> Result<(), ApiError> {
        audit.operation = Some(operation.as_str());
        audit.key = Some(key.clone());
        if self.access.allows(identity, key.as_str(), operation) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "{identity} may not {operation} {key}: no policy rule allows it"
            )))
        }
    }

    /// Serves `/v1/selfcheck` from `report`, which re-runs the checks.
    pub fn with_selfcheck(mut self, report: SelfcheckJson) -> Api {
        self.selfcheck = Some(report);
        self
    }

    /// The store behind the API.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Answers one request. Never fails: errors become problem responses.
    /// Also returns what the handler did, for the audit line.
    pub async fn handle<B>(
        &self,
        identity: &Identity,
        request: Request<B>,
    ) -> (Response<ResponseBody>, AuditInfo)
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let head = request.method() == Method::HEAD;
        let mut audit = AuditInfo::default();
        let limited = match &self.access.limiter {
            Some(limiter) => limiter
                .check(identity)
                .map_err(|retry_after| ApiError::RateLimited { retry_after }),
            None => Ok(()),
        };
        let outcome = match limited {
            Ok(()) => self.dispatch(identity, request, &mut audit).await,
            Err(error) => Err(error),
        };
        let mut response = match outcome {
            Ok(response) => response,
            Err(error) => error.into_response(),
        };
        if head {
            // A HEAD answer has the GET answer's headers and no body: a body
            // here is a protocol error to HTTP/2 peers. Content-Length stays
            // when a handler set it explicitly.
            *response.body_mut() = Full::new(Bytes::new());
        }
        response.headers_mut().insert(
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        );
        (response, audit)
    }

    async fn dispatch<B>(
        &self,
        identity: &Identity,
        request: Request<B>,
        audit: &mut AuditInfo,
    ) -> Result<Response<ResponseBody>, ApiError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let (parts, body) = request.into_parts();
        let route = Route::parse(parts.uri.path()).ok_or(ApiError::NotFound("no such route"))?;
        let query = parts.uri.query();
        let headers = &parts.headers;
        let who = Caller { identity, audit };
        match (route, &parts.method) {
            (Route::Secret(raw), &Method::GET)
                if has_wait(query) || headers.contains_key(IF_NONE_MATCH) =>
            {
                Box::pin(self.wait_secret(who, raw, query, headers)).await
            }
            (Route::Secret(raw), &Method::GET) => self.get_secret(who, raw, query, true),
            (Route::Secret(raw), &Method::HEAD) => self.get_secret(who, raw, query, false),
            (Route::Secret(raw), &Method::PUT) => {
                Box::pin(self.put_secret(who, raw, query, headers, body)).await
            }
            (Route::Secret(raw), &Method::PATCH) => {
                Box::pin(self.renew(who, raw, query, headers, body)).await
            }
            (Route::Secret(raw), &Method::DELETE) => self.delete(who, raw, query),
            (Route::Secrets, &Method::GET | &Method::HEAD) => self.list(who, query),
            (Route::Push(raw), &Method::POST) => {
                Box::pin(self.push(who, raw, query, headers, body)).await
            }
            (Route::Pop(raw), &Method::POST) => self.pop(who, raw, query),
            (Route::Selfcheck, &Method::GET | &Method::HEAD) => self.selfcheck(query),
            (Route::OpenApi, &Method::GET | &Method::HEAD) => {
                Query::parse(query, &[])?;
                Ok(json_text_response(Bytes::from_static(
                    OPENAPI_JSON.as_bytes(),
                )))
            }
            (route, _) => Err(ApiError::MethodNotAllowed {
                allow: route.allow(),
            }),
        }
    }

    /// Reads a secret or list item body (at most `--max-value-bytes`) and
    /// notes its size for the audit line.
    async fn read_value<B>(
        &self,
        body: B,
        headers: &HeaderMap,
        audit: &mut AuditInfo,
    ) -> Result<SecretBytes, ApiError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let settings = &self.settings;
        let value = read_body(
            body,
            headers,
            settings.max_value_bytes,
            settings.body_read_timeout,
        )
        .await?;
        audit.bytes_in = value.len() as u64;
        SecretBytes::new(value).map_err(|full| ApiError::MemoryBudgetExceeded(full.to_string()))
    }

    /// The `ttl` query parameter: the default when absent, else parsed and
    /// bounded.
    fn ttl(&self, raw: Option<&str>) -> Result<Duration, ApiError> {
        match raw {
            None => Ok(self.settings.default_ttl),
            Some(raw) => self.bounded_ttl(
                parse_duration(raw).map_err(|error| ApiError::InvalidTtl(error.to_string()))?,
            ),
        }
    }

    /// Refuses a zero TTL and one over `--max-ttl`.
    fn bounded_ttl(&self, ttl: Duration) -> Result<Duration, ApiError> {
        if ttl.is_zero() {
            return Err(ApiError::InvalidTtl(
                "the ttl must be greater than zero".into(),
            ));
        }
        if ttl > self.settings.max_ttl {
            return Err(ApiError::InvalidTtl(format!(
                "{} is longer than the server's --max-ttl of {}",
                format_duration(ttl),
                format_duration(self.settings.max_ttl)
            )));
        }
        Ok(ttl)
    }

    fn selfcheck(&self, query: Option<&str>) -> Result<Response<ResponseBody>, ApiError> {
        Query::parse(query, &[])?;
        let report = self
            .selfcheck
            .as_ref()
            .ok_or(ApiError::Unavailable("the self-check is not available"))?;
        Ok(json_text_response(Bytes::from(report())))
    }
}

#[cfg(test)]
mod tests;
