//! The v1 HTTP API: routing, request parsing, handlers and responses.
//!
//! Handlers return `Result<Response, ApiError>`; [`Api::handle`] turns every
//! error into a problem response through [`ApiError::into_response`], the only
//! place that happens. Secret bytes reach the response as a
//! `Bytes::from_owner` over the stored `Arc<SecretBytes>`: no copy, and the
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

use crate::audit::AuditInfo;
use crate::identity::Identity;
use crate::key::{validate_prefix, Key};
use crate::policy::{Operation, Policy};
use crate::problem::ApiError;
use crate::ratelimit::RateLimiter;
use crate::secret::SecretBytes;
use crate::store::{End, MediaType, Meta, Precondition, PutOptions, Store};
use crate::units::{format_duration, parse_duration};

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

/// Limits and defaults the handlers apply.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// TTL when a write gives none.
    pub default_ttl: Duration,
    /// Longest TTL a write may ask for.
    pub max_ttl: Duration,
    /// Largest secret or list item, in bytes.
    pub max_value_bytes: u64,
    /// Deadline for receiving a whole request body.
    pub body_read_timeout: Duration,
    /// Longest `?wait=` a GET may hold (longer asks are shortened to it).
    pub max_wait: Duration,
}

/// The default `--max-wait`: Consul's default blocking-query wait.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(300);

/// A source of the live self-check report as JSON, for `/v1/selfcheck`.
pub type SelfcheckJson = Arc<dyn Fn() -> String + Send + Sync>;

/// Who may do what: the policy (swapped whole on reload) and the rate
/// limiter. Without a policy every client the CA trusts may do everything.
#[derive(Debug, Default)]
pub struct Access {
    /// The current policy, if `--policy` was given.
    pub policy: arc_swap::ArcSwapOption<Policy>,
    /// Per-identity rate limit, if `--rate-limit` was given.
    pub limiter: Option<RateLimiter>,
}

impl Access {
    fn allows(&self, identity: &str, key: &str, operation: Operation) -> bool {
        self.policy
            .load()
            .as_ref()
            .is_none_or(|policy| policy.allows(identity, key, operation))
    }
}

/// The API: the store plus the settings and access rules the handlers apply.
#[derive(Clone)]
pub struct Api {
    store: Store,
    settings: ApiSettings,
    selfcheck: Option<SelfcheckJson>,
    access: Arc<Access>,
}

/// The route a path names, with the raw key where it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route<'a> {
    Secret(&'a str),
    Secrets,
    Push(&'a str),
    Pop(&'a str),
    Selfcheck,
    OpenApi,
}

impl Route<'_> {
    fn parse(path: &str) -> Option<Route<'_>> {
        match path {
            "/v1/secrets" => return Some(Route::Secrets),
            "/v1/selfcheck" => return Some(Route::Selfcheck),
            "/v1/openapi.json" => return Some(Route::OpenApi),
            _ => {}
        }
        if let Some(key) = path.strip_prefix("/v1/secrets/") {
            return Some(Route::Secret(key));
        }
        let list = path.strip_prefix("/v1/lists/")?;
        if let Some(key) = list.strip_suffix("/push") {
            return Some(Route::Push(key));
        }
        list.strip_suffix("/pop").map(Route::Pop)
    }

    /// The route template, for logs and metrics: never the key itself.
    fn template(self) -> &'static str {
        match self {
            Route::Secret(_) => "/v1/secrets/{key}",
            Route::Secrets => "/v1/secrets",
            Route::Push(_) => "/v1/lists/{key}/push",
            Route::Pop(_) => "/v1/lists/{key}/pop",
            Route::Selfcheck => "/v1/selfcheck",
            Route::OpenApi => "/v1/openapi.json",
        }
    }

    fn allow(self) -> &'static str {
        match self {
            Route::Secret(_) => "GET, HEAD, PUT, PATCH, DELETE",
            Route::Secrets | Route::Selfcheck | Route::OpenApi => "GET, HEAD",
            Route::Push(_) | Route::Pop(_) => "POST",
        }
    }
}

/// The route template of a path, for logs and metrics (`"unknown"` if none).
pub fn route_template(path: &str) -> &'static str {
    Route::parse(path).map_or("unknown", Route::template)
}

/// Parsed query parameters, refusing names the route does not know and
/// repeated names (a typo like `?tll=5m` must not silently use the default).
struct Query<'a> {
    pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Query<'a> {
    fn parse(raw: Option<&'a str>, allowed: &[&str]) -> Result<Query<'a>, ApiError> {
        let pairs: Vec<_> = form_urlencoded::parse(raw.unwrap_or("").as_bytes()).collect();
        for (index, (name, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&name.as_ref()) {
                return Err(ApiError::InvalidRequest(format!(
                    "unknown query parameter {name:?}; this route accepts: {}",
                    if allowed.is_empty() {
                        "none".to_owned()
                    } else {
                        allowed.join(", ")
                    }
                )));
            }
            if pairs[..index].iter().any(|(earlier, _)| earlier == name) {
                return Err(ApiError::InvalidRequest(format!(
                    "query parameter {name:?} is given more than once"
                )));
            }
        }
        Ok(Query { pairs })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_ref())
    }
}

/// Parses a key from a request path, percent-decoded first: generic HTTP
/// clients (and OpenAPI tooling) send `a%2Fb` for the key `a/b`.
fn parse_key(raw: &str) -> Result<Key, ApiError> {
    if !raw.contains('%') {
        return Ok(Key::parse(raw)?);
    }
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::InvalidKey(crate::key::KeyError::BadCharacter))?;
    Ok(Key::parse(&decoded)?)
}

/// A 200 with a JSON body that is already text; its Content-Length is set
/// explicitly so a HEAD answer (whose body is dropped) still carries it.
fn json_text_response(body: Bytes) -> Response<ResponseBody> {
    let length = body.len();
    let mut response = json_response(StatusCode::OK, body);
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(length));
    response
}

/// Headers a response usually ends with (type, cache, ETag, dates, request
/// id, nosniff, location): room for them up front, so that the map is not
/// grown and rehashed on the way.
const RESPONSE_HEADERS: usize = 8;

fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.reserve(RESPONSE_HEADERS);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn rfc3339(time: SystemTime) -> crate::timefmt::Rfc3339 {
    crate::timefmt::rfc3339(time, crate::timefmt::Fraction::Millis)
}

fn etag(revision: u64) -> HeaderValue {
    // `"<hex>"` without leading zeros, formed on the stack: the header
    // value is then the only allocation.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (64 - revision.leading_zeros()).div_ceil(4).max(1) as usize;
    let mut tag = [b'"'; 18];
    for index in 0..digits {
        tag[digits - index] = HEX[((revision >> (4 * index)) & 0xf) as usize];
    }
    // Hex digits and quotes are always a valid header value.
    HeaderValue::from_bytes(&tag[..digits + 2]).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// A header value that takes over `text`'s buffer instead of copying it.
fn header_text(text: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(Bytes::from(text)).ok()
}

/// The metadata JSON object of the API (never a value), written by hand
/// (see [`crate::json`] for why): the object every write answers and every
/// listing is made of.
struct MetaJson<'a>(&'a Meta);

impl MetaJson<'_> {
    /// A metadata object is about 250 bytes: room for it up front, so the
    /// buffer is not grown (copied and wiped) on the way.
    const CAPACITY: usize = 384;

    /// Appends the object to `out`.
    fn write(&self, out: &mut Vec<u8>) {
        use crate::json::{push_str, push_u64};
        let meta = self.0;
        out.extend_from_slice(b"{\"key\":");
        push_str(out, meta.key.as_str());
        out.extend_from_slice(b",\"kind\":");
        push_str(out, meta.kind.as_str());
        out.extend_from_slice(b",\"size\":");
        push_u64(out, meta.size);
        out.extend_from_slice(b",\"version\":");
        push_u64(out, meta.version);
        for (name, time) in [
            (&b",\"created_at\":"[..], meta.created_at),
            (b",\"updated_at\":", meta.updated_at),
            (b",\"expires_at\":", meta.expires_at),
        ] {
            out.extend_from_slice(name);
            push_str(out, rfc3339(time).as_str());
        }
        out.extend_from_slice(b",\"reads_left\":");
        match meta.reads_left {
            Some(left) => push_u64(out, u64::from(left)),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"content_type\":");
        match meta.content_type.as_deref() {
            Some(content_type) => push_str(out, content_type),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
    }

    /// The object alone, as a response body.
    fn bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(Self::CAPACITY);
        self.write(&mut out);
        Bytes::from(out)
    }
}

/// The metadata JSON object of the API (never a value), as a value.
pub fn meta_json(meta: &Meta) -> serde_json::Value {
    serde_json::from_slice(&MetaJson(meta).bytes()).unwrap_or(serde_json::Value::Null)
}

fn meta_response(status: StatusCode, meta: &Meta) -> Response<ResponseBody> {
    let mut response = json_response(status, MetaJson(meta).bytes());
    response.headers_mut().insert(ETAG, etag(meta.revision));
    response
}

/// 201 for a write that created the key, 200 for one that replaced it.
fn created_or_ok(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

/// Headers a secret's GET and HEAD share.
fn secret_headers(headers: &mut HeaderMap, meta: &Meta) {
    let content_type = match &meta.content_type {
        None | Some(MediaType::Default) => HeaderValue::from_static(DEFAULT_CONTENT_TYPE),
        Some(other) => {
            HeaderValue::from_str(other).unwrap_or(HeaderValue::from_static(DEFAULT_CONTENT_TYPE))
        }
    };
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(ETAG, etag(meta.revision));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(value) = header_text(httpdate::fmt_http_date(meta.expires_at)) {
        headers.insert(EXPIRES, value);
    }
    if let Ok(value) = HeaderValue::from_str(rfc3339(meta.expires_at).as_str()) {
        headers.insert(EXPIRES_AT, value);
    }
    if let Some(left) = meta.reads_left {
        headers.insert(READS_LEFT, HeaderValue::from(left));
    }
}

/// Owns secret bytes for the duration of a response body, then wipes them
/// (through [`SecretBytes`]'s drop).
struct SecretBody<T>(T);

impl AsRef<[u8]> for SecretBody<Arc<SecretBytes>> {
    fn as_ref(&self) -> &[u8] {
        self.0.expose()
    }
}

impl AsRef<[u8]> for SecretBody<SecretBytes> {
    fn as_ref(&self) -> &[u8] {
        self.0.expose()
    }
}

fn header_str<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<Option<&'h str>, ApiError> {
    headers
        .get(name)
        .map(|value| {
            value.to_str().map_err(|_| {
                ApiError::InvalidRequest(format!("the {name} header is not visible ASCII"))
            })
        })
        .transpose()
}

fn precondition(headers: &HeaderMap) -> Result<Precondition, ApiError> {
    // Each header's syntax first (400), then whether they can hold (412).
    let if_match = header_str(headers, &IF_MATCH)?
        .map(|value| match value.trim() {
            "*" => Ok(Precondition::Present),
            // A strong ETag as issued; a bare hex token is accepted too,
            // since some clients drop the quotes.
            tag => revision_from_etag(
                tag.strip_prefix('"')
                    .and_then(|tag| tag.strip_suffix('"'))
                    .unwrap_or(tag),
            )
            .map(Precondition::Revision)
            .ok_or_else(|| {
                ApiError::InvalidRequest(
                    "If-Match must be \"*\" or one strong ETag as returned by the server".into(),
                )
            }),
        })
        .transpose()?;
    let if_none_match = header_str(headers, &IF_NONE_MATCH)?
        .map(|value| match value.trim() {
            "*" => Ok(Precondition::Absent),
            _ => Err(ApiError::InvalidRequest(
                "If-None-Match supports only \"*\" (create only) on writes".into(),
            )),
        })
        .transpose()?;
    match (if_match, if_none_match) {
        (None, None) => Ok(Precondition::None),
        (Some(condition), None) | (None, Some(condition)) => Ok(condition),
        // If-Match needs the key to exist and If-None-Match: * needs it
        // absent: both together can never hold (RFC 9110 evaluates both).
        (Some(_), Some(_)) => Err(ApiError::PreconditionFailed(
            "If-Match and If-None-Match cannot both hold",
        )),
    }
}

/// The revision in an ETag: 1 to 16 hex digits.
/// Whether a query asks to wait (`wait=` present), before it is parsed.
fn has_wait(query: Option<&str>) -> bool {
    query.is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair == "wait" || pair.starts_with("wait="))
    })
}

/// The strong ETag a waiting GET waits to see change, if `If-None-Match`
/// gives one; it must name one ETag as issued.
fn if_none_match_etag(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = header_str(headers, &IF_NONE_MATCH)? else {
        return Ok(None);
    };
    let value = value.trim();
    let tag = value
        .strip_prefix('"')
        .and_then(|tag| tag.strip_suffix('"'))
        .unwrap_or(value);
    revision_from_etag(tag).map(Some).ok_or_else(|| {
            ApiError::InvalidRequest(
                "If-None-Match on a GET must be one ETag as the server issued it, such as \"17c3f0a2b\"".into(),
            )
        })
}

fn revision_from_etag(tag: &str) -> Option<u64> {
    if tag.is_empty() || tag.len() > 16 || !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(tag, 16).ok()
}

/// The media type to store. curl's `--data-binary` labels every body
/// `application/x-www-form-urlencoded` unless told otherwise; a secret is
/// never a form, so that label is stored as the default instead of being
/// served back on every GET.
fn content_type(headers: &HeaderMap) -> Result<MediaType, ApiError> {
    match header_str(headers, &CONTENT_TYPE)?.map(str::trim) {
        None | Some("" | "application/x-www-form-urlencoded") => Ok(MediaType::Default),
        Some(value) if value.len() > MAX_CONTENT_TYPE_LEN => Err(ApiError::InvalidRequest(
            format!("the Content-Type is longer than {MAX_CONTENT_TYPE_LEN} bytes"),
        )),
        Some(value) => Ok(MediaType::from(value)),
    }
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    header_str(headers, &CONTENT_LENGTH)?
        .map(|value| {
            value
                .parse::<u64>()
                .map_err(|_| ApiError::InvalidRequest("Content-Length is not a number".into()))
        })
        .transpose()
}

/// Reads a request body of at most `limit` bytes into wiped-on-drop memory,
/// refusing an oversize body as soon as it is known to be one (from
/// Content-Length, or the first chunk past the limit) rather than buffering it.
async fn read_body<B>(
    body: B,
    headers: &HeaderMap,
    limit: u64,
    deadline: Duration,
) -> Result<Zeroizing<Vec<u8>>, ApiError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let declared = content_length(headers)?;
    if declared.is_some_and(|length| length > limit) {
        return Err(ApiError::ValueTooLarge { limit });
    }
    // Bounded by `limit` (itself bounded by --max-value-bytes).
    let capacity = usize::try_from(declared.unwrap_or(0).min(limit)).unwrap_or(0);
    let collect = async move {
        let mut body = body;
        let mut buffer = Zeroizing::new(Vec::with_capacity(capacity));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| {
                ApiError::InvalidRequest(format!("reading the request body: {error}"))
            })?;
            if let Ok(chunk) = frame.into_data() {
                if (buffer.len() + chunk.len()) as u64 > limit {
                    return Err(ApiError::ValueTooLarge { limit });
                }
                if buffer.len() + chunk.len() > buffer.capacity() {
                    // Grow by hand so the old block is wiped, not just freed.
                    let wanted = (buffer.len() + chunk.len()).max(buffer.capacity() * 2);
                    let mut grown = Zeroizing::new(Vec::with_capacity(
                        wanted.min(usize::try_from(limit).unwrap_or(usize::MAX)),
                    ));
                    grown.extend_from_slice(&buffer);
                    buffer = grown;
                }
                buffer.extend_from_slice(&chunk);
            }
        }
        Ok(buffer)
    };
    // A small body usually arrives with its headers and is read in one
    // poll: only a body that has to be waited for costs a timer.
    let mut collect = std::pin::pin!(collect);
    let first = std::future::poll_fn(|cx| Poll::Ready(collect.as_mut().poll(cx))).await;
    if let Poll::Ready(result) = first {
        return result;
    }
    tokio::time::timeout(deadline, collect)
        .await
        .map_err(|_| ApiError::RequestTimeout {
            seconds: deadline.as_secs(),
        })?
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
                self.wait_secret(who, raw, query, headers).await
            }
            (Route::Secret(raw), &Method::GET) => self.get_secret(who, raw, query, true),
            (Route::Secret(raw), &Method::HEAD) => self.get_secret(who, raw, query, false),
            (Route::Secret(raw), &Method::PUT) => {
                self.put_secret(who, raw, query, headers, body).await
            }
            (Route::Secret(raw), &Method::PATCH) => {
                self.renew(who, raw, query, headers, body).await
            }
            (Route::Secret(raw), &Method::DELETE) => self.delete(who, raw, query),
            (Route::Secrets, &Method::GET | &Method::HEAD) => self.list(who, query),
            (Route::Push(raw), &Method::POST) => self.push(who, raw, query, headers, body).await,
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
        Ok(SecretBytes::new(value))
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

    fn get_secret(
        &self,
        who: Caller<'_>,
        raw: &str,
        query: Option<&str>,
        consume: bool,
    ) -> Result<Response<ResponseBody>, ApiError> {
        let key = parse_key(raw)?;
        self.authorize(who.identity, &key, Operation::Read, who.audit)?;
        Query::parse(query, &[])?;
        let (bytes, meta) = self.store.get(&key, consume)?;
        let size = bytes.len();
        let body = if consume {
            Bytes::from_owner(SecretBody(bytes))
        } else {
            Bytes::new()
        };
        let mut response = Response::new(Full::new(body));
        let headers = response.headers_mut();
        headers.reserve(RESPONSE_HEADERS);
        secret_headers(headers, &meta);
        if !consume {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(size));
        }
        Ok(response)
    }

    /// `GET ...?wait=D` with `If-None-Match: "<etag>"`: answers as soon as
    /// the secret's ETag differs from the one given (200 with the value, as
    /// a plain GET), when it is gone (404), or after D, at most
    /// `--max-wait`, unchanged (304). No polling: the request sleeps on its
    /// key's [`crate::watch::Watch`], and wakes at the entry's expiry.
    async fn wait_secret(
        &self,
        who: Caller<'_>,
        raw: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Response<ResponseBody>, ApiError> {
        let key = parse_key(raw)?;
        self.authorize(who.identity, &key, Operation::Read, who.audit)?;
        let parsed = Query::parse(query, &["wait"])?;
        // A conditional GET without `wait` is a wait of zero: 304 when the
        // ETag still holds (no read counted), else the value.
        let wait = match parsed.get("wait") {
            Some(text) => parse_duration(text)
                .map_err(|error| ApiError::InvalidRequest(format!("wait: {error}")))?
                .min(self.settings.max_wait),
            None => Duration::ZERO,
        };
        // Nothing to compare with: the client has no value yet, so the
        // current one is the change it waits for (Consul's index 0).
        let Some(seen) = if_none_match_etag(headers)? else {
            return self.get_secret(who, raw, None, true);
        };
        let deadline = tokio::time::Instant::now() + wait;
        let watch = self.store.watch(&key);
        loop {
            // Registered before the look, so a change in between wakes it.
            let change = watch.next_change();
            let meta = self.store.meta(&key)?;
            if meta.revision != seen {
                drop(change);
                // Answered as the plain GET it now is (`wait` was checked).
                return self.get_secret(who, raw, None, true);
            }
            if watch.closed() {
                break;
            }
            let expires = meta
                .expires_at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            let wake_at = deadline.min(tokio::time::Instant::now() + expires);
            tokio::select! {
                () = change => {}
                () = tokio::time::sleep_until(wake_at) => {
                    if tokio::time::Instant::now() >= deadline {
                        break;
                    }
                }
            }
        }
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        let headers = response.headers_mut();
        headers.insert(ETAG, etag(seen));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(response)
    }

    async fn put_secret<B>(
        &self,
        who: Caller<'_>,
        raw: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: B,
    ) -> Result<Response<ResponseBody>, ApiError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let key = parse_key(raw)?;
        self.authorize(who.identity, &key, Operation::Write, who.audit)?;
        let query = Query::parse(query, &["ttl", "max_reads"])?;
        let ttl = self.ttl(query.get("ttl"))?;
        let max_reads = query
            .get("max_reads")
            .map(|raw| match raw.parse::<u32>() {
                Ok(reads) if reads > 0 => Ok(reads),
                _ => Err(ApiError::InvalidRequest(format!(
                    "max_reads must be a whole number from 1 to {}",
                    u32::MAX
                ))),
            })
            .transpose()?;
        let options = PutOptions {
            ttl,
            max_reads,
            content_type: content_type(headers)?,
            precondition: precondition(headers)?,
        };
        let value = self.read_value(body, headers, who.audit).await?;
        let (meta, created) = self.store.put(&key, value, options)?;
        let mut response = meta_response(created_or_ok(created), &meta);
        if created {
            if let Ok(location) = HeaderValue::from_str(&format!("/v1/secrets/{key}")) {
                response.headers_mut().insert(LOCATION, location);
            }
        }
        Ok(response)
    }

    async fn renew<B>(
        &self,
        who: Caller<'_>,
        raw: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: B,
    ) -> Result<Response<ResponseBody>, ApiError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let key = parse_key(raw)?;
        self.authorize(who.identity, &key, Operation::Write, who.audit)?;
        Query::parse(query, &[])?;
        let body = read_body(
            body,
            headers,
            MAX_JSON_BODY,
            self.settings.body_read_timeout,
        )
        .await
        .map_err(|error| match error {
            ApiError::ValueTooLarge { .. } => ApiError::InvalidRequest(format!(
                "the JSON body is larger than {MAX_JSON_BODY} bytes"
            )),
            other => other,
        })?;
        who.audit.bytes_in = body.len() as u64;
        let renew: RenewBody = serde_json::from_slice(&body).map_err(|error| {
            ApiError::InvalidRequest(format!(
                "the body must be JSON like {{\"ttl\": \"10m\"}}: {error}"
            ))
        })?;
        let ttl = match renew.ttl {
            TtlValue::Seconds(seconds) => self.bounded_ttl(Duration::from_secs(seconds))?,
            TtlValue::Text(text) => self.ttl(Some(&text))?,
        };
        let meta = self.store.renew(&key, ttl)?;
        Ok(meta_response(StatusCode::OK, &meta))
    }

    fn delete(
        &self,
        who: Caller<'_>,
        raw: &str,
        query: Option<&str>,
    ) -> Result<Response<ResponseBody>, ApiError> {
        let key = parse_key(raw)?;
        self.authorize(who.identity, &key, Operation::Delete, who.audit)?;
        Query::parse(query, &[])?;
        self.store.delete(&key)?;
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NO_CONTENT;
        Ok(response)
    }

    fn list(
        &self,
        who: Caller<'_>,
        query: Option<&str>,
    ) -> Result<Response<ResponseBody>, ApiError> {
        let query = Query::parse(query, &["prefix", "limit", "after"])?;
        let prefix = query.get("prefix").unwrap_or("");
        validate_prefix(prefix)?;
        who.audit.operation = Some(Operation::List.as_str());
        who.audit.prefix = Some(prefix.into());
        let after = query.get("after").map(parse_key).transpose()?;
        let limit = match query.get("limit") {
            None => DEFAULT_LIST_LIMIT,
            Some(raw) => match raw.parse::<usize>() {
                Ok(limit) if (1..=MAX_LIST_LIMIT).contains(&limit) => limit,
                _ => {
                    return Err(ApiError::InvalidRequest(format!(
                        "limit must be a whole number from 1 to {MAX_LIST_LIMIT}"
                    )))
                }
            },
        };
        // Listing returns only what this identity may list, and a page is
        // never short because of that filter.
        let identity = who.identity;
        let (page, next) =
            self.store
                .list_filtered(prefix, after.as_ref().map(Key::as_str), limit, |key| {
                    self.access.allows(identity, key.as_str(), Operation::List)
                });
        // `{"items":[...],"next":...}`, the objects written one after another.
        let mut body = Vec::with_capacity(MetaJson::CAPACITY * (page.len() + 1));
        body.extend_from_slice(b"{\"items\":[");
        for (index, meta) in page.iter().enumerate() {
            if index > 0 {
                body.push(b',');
            }
            MetaJson(meta).write(&mut body);
        }
        body.extend_from_slice(b"],\"next\":");
        match &next {
            Some(key) => crate::json::push_str(&mut body, key.as_str()),
            None => body.extend_from_slice(b"null"),
        }
        body.push(b'}');
        Ok(json_text_response(Bytes::from(body)))
    }

    async fn push<B>(
        &self,
        who: Caller<'_>,
        raw: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: B,
    ) -> Result<Response<ResponseBody>, ApiError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let key = parse_key(raw)?;
        self.authorize(who.identity, &key, Operation::Write, who.audit)?;
        let query = Query::parse(query, &["ttl"])?;
        let ttl = self.ttl(query.get("ttl"))?;
        let item = self.read_value(body, headers, who.audit).await?;
        let (meta, created) = self.store.push(&key, item, ttl)?;
        Ok(meta_response(created_or_ok(created), &meta))
    }

    fn pop(
        &self,
        who: Caller<'_>,
        raw: &str,
        query: Option<&str>,
    ) -> Result<Response<ResponseBody>, ApiError> {
        let key = parse_key(raw)?;
        self.authorize(who.identity, &key, Operation::Read, who.audit)?;
        let query = Query::parse(query, &["from"])?;
        let end = match query.get("from") {
            None | Some("newest") => End::Newest,
            Some("oldest") => End::Oldest,
            Some(_) => {
                return Err(ApiError::InvalidRequest(
                    "from must be \"newest\" or \"oldest\"".into(),
                ))
            }
        };
        let (item, left) = self.store.pop(&key, end)?;
        let mut response = Response::new(Full::new(Bytes::from_owner(SecretBody(item))));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(ITEMS_LEFT, HeaderValue::from(left));
        Ok(response)
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
mod tests {
    use super::*;

    fn meta(reads_left: Option<u32>, content_type: Option<&str>) -> Meta {
        let epoch = SystemTime::UNIX_EPOCH;
        Meta {
            key: Key::parse("team-a/db.password").expect("a key"),
            kind: crate::store::Kind::Secret,
            size: 1024,
            version: 7,
            revision: 0x1f,
            created_at: epoch + Duration::from_millis(1_767_225_600_123),
            updated_at: epoch + Duration::from_millis(1_767_225_601_000),
            expires_at: epoch + Duration::from_secs(1_767_229_200),
            reads_left,
            content_type: content_type.map(MediaType::from),
        }
    }

    #[test]
    fn etags_are_quoted_hex_without_leading_zeros() {
        for (revision, tag) in [
            (0, "\"0\""),
            (0x1f, "\"1f\""),
            (0x100, "\"100\""),
            (u64::MAX, "\"ffffffffffffffff\""),
        ] {
            assert_eq!(etag(revision), tag);
            assert_eq!(revision_from_etag(tag.trim_matches('"')), Some(revision));
        }
    }

    #[test]
    fn metadata_objects_are_exact_json() {
        let text = MetaJson(&meta(Some(3), Some("text/plain; x=\"a\\b\""))).bytes();
        assert_eq!(
            std::str::from_utf8(&text).expect("UTF-8"),
            concat!(
                r#"{"key":"team-a/db.password","kind":"secret","size":1024,"version":7,"#,
                r#""created_at":"2026-01-01T00:00:00.123Z","updated_at":"2026-01-01T00:00:01.000Z","#,
                r#""expires_at":"2026-01-01T01:00:00.000Z","reads_left":3,"#,
                r#""content_type":"text/plain; x=\"a\\b\""}"#
            )
        );
        let value: serde_json::Value = serde_json::from_slice(&text).expect("JSON");
        assert_eq!(value["content_type"], "text/plain; x=\"a\\b\"");
        assert_eq!(
            meta_json(&meta(None, None)),
            serde_json::json!({
                "key": "team-a/db.password",
                "kind": "secret",
                "size": 1024,
                "version": 7,
                "created_at": "2026-01-01T00:00:00.123Z",
                "updated_at": "2026-01-01T00:00:01.000Z",
                "expires_at": "2026-01-01T01:00:00.000Z",
                "reads_left": null,
                "content_type": null,
            })
        );
    }

    #[test]
    fn routes() {
        assert_eq!(Route::parse("/v1/secrets/a/b"), Some(Route::Secret("a/b")));
        assert_eq!(Route::parse("/v1/secrets"), Some(Route::Secrets));
        assert_eq!(Route::parse("/v1/secrets/"), Some(Route::Secret("")));
        assert_eq!(
            Route::parse("/v1/lists/pool/push"),
            Some(Route::Push("pool"))
        );
        assert_eq!(
            Route::parse("/v1/lists/a/push/pop"),
            Some(Route::Pop("a/push"))
        );
        assert_eq!(Route::parse("/v1/lists/pool"), None);
        assert_eq!(Route::parse("/v2/secrets"), None);
        assert_eq!(
            route_template("/v1/secrets/db/password"),
            "/v1/secrets/{key}"
        );
    }

    #[test]
    fn preconditions_from_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(precondition(&headers), Ok(Precondition::None));
        headers.insert(IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert_eq!(precondition(&headers), Ok(Precondition::Absent));
        headers.clear();
        headers.insert(IF_MATCH, HeaderValue::from_static("\"1f\""));
        assert_eq!(precondition(&headers), Ok(Precondition::Revision(31)));
        headers.insert(IF_MATCH, HeaderValue::from_static("W/\"1f\""));
        assert!(precondition(&headers).is_err());
        headers.insert(IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(
            matches!(precondition(&headers), Err(ApiError::InvalidRequest(_))),
            "syntax first"
        );
        headers.insert(IF_MATCH, HeaderValue::from_static("\"1f\""));
        assert!(matches!(
            precondition(&headers),
            Err(ApiError::PreconditionFailed(_))
        ));
        headers.insert(IF_MATCH, HeaderValue::from_static("1f"));
        headers.remove(IF_NONE_MATCH);
        assert_eq!(
            precondition(&headers),
            Ok(Precondition::Revision(31)),
            "unquoted is accepted"
        );
    }

    #[test]
    fn queries_refuse_unknown_and_repeated_names() {
        assert!(Query::parse(Some("ttl=5m&max_reads=1"), &["ttl", "max_reads"]).is_ok());
        assert!(Query::parse(Some("tll=5m"), &["ttl"]).is_err());
        assert!(Query::parse(Some("ttl=5m&ttl=1h"), &["ttl"]).is_err());
        assert_eq!(
            Query::parse(Some("prefix=a%2Fb"), &["prefix"])
                .unwrap()
                .get("prefix"),
            Some("a/b")
        );
    }
}
