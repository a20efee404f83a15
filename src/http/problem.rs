//! API errors and the one place where they become RFC 9457
//! `application/problem+json` responses.
//!
//! Every rejection the server makes is an [`ApiError`] with a stable `code`
//! that clients can match on; the `detail` explains this particular case and
//! never contains a stored value.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};

use crate::store::key::KeyError;
use crate::store::StoreError;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The key in the path or query is not a valid key.
    #[error("invalid key: {0}")]
    InvalidKey(#[from] KeyError),
    /// The `ttl` is unparsable, zero, or above `--max-ttl`.
    #[error("invalid ttl: {0}")]
    InvalidTtl(String),
    /// Anything else malformed: query, headers, JSON body.
    #[error("{0}")]
    InvalidRequest(String),
    /// No verified client identity.
    #[error("a client certificate is required")]
    Unauthenticated,
    /// The policy does not allow this operation on this key.
    #[error("{0}")]
    Forbidden(String),
    /// No such key or route.
    #[error("{0}")]
    NotFound(&'static str),
    /// The route exists but not with this method.
    #[error("method not allowed; this route allows {allow}")]
    MethodNotAllowed {
        /// The `Allow` header value.
        allow: &'static str,
    },
    /// A secret where a list was expected, or the other way round.
    #[error("{0}")]
    WrongKind(String),
    /// `If-Match` or `If-None-Match` did not hold.
    #[error("{0}")]
    PreconditionFailed(&'static str),
    /// The body is larger than `--max-value-bytes`.
    #[error("the value is larger than the limit of {limit} bytes")]
    ValueTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The body did not arrive before the read deadline.
    #[error("the request body did not arrive within {seconds}s")]
    RequestTimeout {
        /// The deadline in seconds.
        seconds: u64,
    },
    /// The request's header fields are larger than the server takes
    /// (HTTP/2; over HTTP/1.1 hyper answers 431 itself).
    #[error("the request header fields are larger than the limit of {limit} bytes")]
    HeadersTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The identity's request rate is over `--rate-limit`.
    #[error("rate limit exceeded; retry in {retry_after}s")]
    RateLimited {
        /// Seconds until a request would be accepted.
        retry_after: u64,
    },
    /// The server is not ready or is shutting down.
    #[error("{0}")]
    Unavailable(&'static str),
    /// The write would exceed `--max-memory`.
    #[error("{0}")]
    MemoryBudgetExceeded(String),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidKey(_) | ApiError::InvalidTtl(_) | ApiError::InvalidRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::WrongKind(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::ValueTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::MemoryBudgetExceeded(_) => StatusCode::INSUFFICIENT_STORAGE,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidKey(_) => "invalid_key",
            ApiError::InvalidTtl(_) => "invalid_ttl",
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::RequestTimeout { .. } => "request_timeout",
            ApiError::WrongKind(_) => "wrong_kind",
            ApiError::PreconditionFailed(_) => "precondition_failed",
            ApiError::ValueTooLarge { .. } => "value_too_large",
            ApiError::HeadersTooLarge { .. } => "headers_too_large",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::MemoryBudgetExceeded(_) => "memory_budget_exceeded",
        }
    }

    /// The problem document's `title`: a short summary that does not vary.
    fn title(&self) -> &'static str {
        match self {
            ApiError::InvalidKey(_) => "Invalid key",
            ApiError::InvalidTtl(_) => "Invalid TTL",
            ApiError::InvalidRequest(_) => "Invalid request",
            ApiError::Unauthenticated => "Unauthenticated",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::NotFound(_) => "Not found",
            ApiError::MethodNotAllowed { .. } => "Method not allowed",
            ApiError::RequestTimeout { .. } => "Request timeout",
            ApiError::WrongKind(_) => "Wrong kind",
            ApiError::PreconditionFailed(_) => "Precondition failed",
            ApiError::ValueTooLarge { .. } => "Value too large",
            ApiError::HeadersTooLarge { .. } => "Request header fields too large",
            ApiError::RateLimited { .. } => "Rate limited",
            ApiError::Unavailable(_) => "Unavailable",
            ApiError::MemoryBudgetExceeded(_) => "Memory budget exceeded",
        }
    }

    /// The RFC 9457 response. This is the only place an error becomes HTTP.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let status = self.status();
        let body = serde_json::json!({
            "type": format!("urn:tmpvault:problem:{}", self.code()),
            "title": self.title(),
            "status": status.as_u16(),
            "detail": self.to_string(),
            "code": self.code(),
        });
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            ApiError::MethodNotAllowed { allow } => {
                headers.insert(ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::RateLimited { retry_after } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(retry_after));
            }
            ApiError::Unavailable(_) => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::NotFound => ApiError::NotFound("no such key"),
            StoreError::WrongKind { .. } => ApiError::WrongKind(error.to_string()),
            StoreError::PreconditionFailed(reason) => ApiError::PreconditionFailed(reason),
            StoreError::BudgetExceeded { .. } => ApiError::MemoryBudgetExceeded(error.to_string()),
            StoreError::Unavailable(reason) => ApiError::Unavailable(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn problem_document_has_the_rfc_9457_members_and_a_code() {
        let response = ApiError::MethodNotAllowed { allow: "GET, HEAD" }.into_response();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[ALLOW], "GET, HEAD");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["code"], "method_not_allowed");
        assert_eq!(json["status"], 405);
        assert_eq!(json["type"], "urn:tmpvault:problem:method_not_allowed");
        assert_eq!(json["title"], "Method not allowed");
    }

    #[test]
    fn rate_limited_carries_retry_after() {
        let response = ApiError::RateLimited { retry_after: 3 }.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[RETRY_AFTER], "3");
    }
}
