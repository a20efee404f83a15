//! Responses and headers: JSON bodies, a secret's metadata and headers,
//! ETags, and the request headers read (preconditions, `If-None-Match`,
//! `Content-Type`, `Content-Length`).

use super::*;

/// A 200 with a JSON body that is already text; its Content-Length is set
/// explicitly so a HEAD answer (whose body is dropped) still carries it.
pub(super) fn json_text_response(body: Bytes) -> Response<ResponseBody> {
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
pub(super) const RESPONSE_HEADERS: usize = 8;

pub(super) fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.reserve(RESPONSE_HEADERS);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub(super) fn rfc3339(time: SystemTime) -> crate::text::timefmt::Rfc3339 {
    crate::text::timefmt::rfc3339(time, crate::text::timefmt::Fraction::Millis)
}

/// A header value that differs from answer to answer (the request id,
/// reads or items left), marked so that HTTP/2's HPACK encoder writes it as
/// a never-indexed literal and keeps it out of the connection's dynamic
/// table. Indexed, every new value is inserted, later evicted, and first
/// compared with each earlier value of its name still in the table: with
/// `x-request-id` that was a third of the encoder's time (memcmp and the
/// table's chain walk, docs/BENCHMARKS.md), and it pushed out the headers
/// that do repeat (`cache-control`, `content-type`,
/// `x-content-type-options`). HTTP/1.1 ignores the mark. h2 already treats
/// `etag`, `content-length` and `location` this way. A secret's expiry
/// stays indexed: a client reads the same few secrets again and again.
pub fn unindexed(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

pub(super) fn etag(revision: u64) -> HeaderValue {
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

/// The metadata JSON object of the API (never a value), written by hand
/// (see [`crate::text::json`] for why): the object every write answers and every
/// listing is made of.
pub(super) struct MetaJson<'a>(pub(super) &'a Meta);

impl MetaJson<'_> {
    /// A metadata object is about 250 bytes: room for it up front, so the
    /// buffer is not grown (copied and wiped) on the way.
    pub(super) const CAPACITY: usize = 384;

    /// Appends the object to `out`.
    pub(super) fn write(&self, out: &mut Vec<u8>) {
        use crate::text::json::{push_plain_str, push_str, push_u64};
        let meta = self.0;
        out.extend_from_slice(b"{\"key\":");
        push_plain_str(out, meta.key.as_str());
        out.extend_from_slice(b",\"kind\":");
        push_plain_str(out, meta.kind.as_str());
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
            push_plain_str(out, rfc3339(time).as_bytes());
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
    pub(super) fn bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(Self::CAPACITY);
        self.write(&mut out);
        Bytes::from(out)
    }
}

/// The metadata JSON object of the API (never a value), as a value.
pub fn meta_json(meta: &Meta) -> serde_json::Value {
    serde_json::from_slice(&MetaJson(meta).bytes()).unwrap_or(serde_json::Value::Null)
}

pub(super) fn meta_response(status: StatusCode, meta: &Meta) -> Response<ResponseBody> {
    let mut response = json_response(status, MetaJson(meta).bytes());
    response.headers_mut().insert(ETAG, etag(meta.revision));
    response
}

/// 201 for a write that created the key, 200 for one that replaced it.
pub(super) fn created_or_ok(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

/// Headers a secret's GET and HEAD share.
pub(super) fn secret_headers(headers: &mut HeaderMap, meta: &Meta) {
    let content_type = match &meta.content_type {
        None | Some(MediaType::Default) => HeaderValue::from_static(DEFAULT_CONTENT_TYPE),
        Some(other) => {
            HeaderValue::from_str(other).unwrap_or(HeaderValue::from_static(DEFAULT_CONTENT_TYPE))
        }
    };
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(ETAG, etag(meta.revision));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(value) =
        HeaderValue::from_bytes(crate::text::timefmt::http_date(meta.expires_at).as_bytes())
    {
        headers.insert(EXPIRES, value);
    }
    if let Ok(value) = HeaderValue::from_bytes(rfc3339(meta.expires_at).as_bytes()) {
        headers.insert(EXPIRES_AT, value);
    }
    if let Some(left) = meta.reads_left {
        headers.insert(READS_LEFT, unindexed(HeaderValue::from(left)));
    }
}

/// Owns secret bytes for the duration of a response body, then wipes them
/// (through [`SecretBytes`]'s drop).
pub(super) struct SecretBody<T>(pub(super) T);

impl AsRef<[u8]> for SecretBody<SecretRef> {
    fn as_ref(&self) -> &[u8] {
        self.0.expose()
    }
}

impl AsRef<[u8]> for SecretBody<SecretBytes> {
    fn as_ref(&self) -> &[u8] {
        self.0.expose()
    }
}

pub(super) fn header_str<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'h str>, ApiError> {
    headers
        .get(name)
        .map(|value| {
            value.to_str().map_err(|_| {
                ApiError::InvalidRequest(format!("the {name} header is not visible ASCII"))
            })
        })
        .transpose()
}

pub(super) fn precondition(headers: &HeaderMap) -> Result<Precondition, ApiError> {
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
pub(super) fn has_wait(query: Option<&str>) -> bool {
    query.is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair == "wait" || pair.starts_with("wait="))
    })
}

/// The strong ETag a waiting GET waits to see change, if `If-None-Match`
/// gives one; it must name one ETag as issued.
pub(super) fn if_none_match_etag(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
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

pub(super) fn revision_from_etag(tag: &str) -> Option<u64> {
    if tag.is_empty() || tag.len() > 16 || !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(tag, 16).ok()
}

/// The media type to store. curl's `--data-binary` labels every body
/// `application/x-www-form-urlencoded` unless told otherwise; a secret is
/// never a form, so that label is stored as the default instead of being
/// served back on every GET.
pub(super) fn content_type(headers: &HeaderMap) -> Result<MediaType, ApiError> {
    match header_str(headers, &CONTENT_TYPE)?.map(str::trim) {
        None | Some("" | "application/x-www-form-urlencoded") => Ok(MediaType::Default),
        Some(value) if value.len() > MAX_CONTENT_TYPE_LEN => Err(ApiError::InvalidRequest(
            format!("the Content-Type is longer than {MAX_CONTENT_TYPE_LEN} bytes"),
        )),
        Some(value) => Ok(MediaType::from(value)),
    }
}

pub(super) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
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
pub(super) async fn read_body<B>(
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
