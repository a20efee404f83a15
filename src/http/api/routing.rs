//! Routes: which handler a path names, its template for logs and metrics,
//! the methods it allows, the query string and the key in the path.

use super::*;

/// The route a path names, with the raw key where it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Route<'a> {
    Secret(&'a str),
    Secrets,
    Push(&'a str),
    Pop(&'a str),
    Selfcheck,
    OpenApi,
}

impl Route<'_> {
    pub(super) fn parse(path: &str) -> Option<Route<'_>> {
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
    pub(super) fn template(self) -> &'static str {
        match self {
            Route::Secret(_) => "/v1/secrets/{key}",
            Route::Secrets => "/v1/secrets",
            Route::Push(_) => "/v1/lists/{key}/push",
            Route::Pop(_) => "/v1/lists/{key}/pop",
            Route::Selfcheck => "/v1/selfcheck",
            Route::OpenApi => "/v1/openapi.json",
        }
    }

    pub(super) fn allow(self) -> &'static str {
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
pub(super) struct Query<'a> {
    pub(super) pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Query<'a> {
    pub(super) fn parse(raw: Option<&'a str>, allowed: &[&str]) -> Result<Query<'a>, ApiError> {
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

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_ref())
    }
}

/// Parses a key from a request path, percent-decoded first: generic HTTP
/// clients (and OpenAPI tooling) send `a%2Fb` for the key `a/b`.
pub(super) fn parse_key(raw: &str) -> Result<Key, ApiError> {
    if !raw.contains('%') {
        return Ok(Key::parse(raw)?);
    }
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::InvalidKey(crate::store::key::KeyError::BadCharacter))?;
    Ok(Key::parse(&decoded)?)
}
