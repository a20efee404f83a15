//! The handlers of `/v1/secrets`: get (and wait), put, renew, delete, list.

use super::*;

impl Api {
    pub(super) fn get_secret(
        &self,
        mut who: Caller<'_>,
        raw: &str,
        query: Option<&str>,
        consume: bool,
    ) -> Result<Response<ResponseBody>, ApiError> {
        let (key, _) = self.admit(&mut who, raw, Operation::Read, query, &[])?;
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
    /// key's [`crate::store::watch::Watch`], and wakes at the entry's expiry.
    pub(super) async fn wait_secret(
        &self,
        mut who: Caller<'_>,
        raw: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Response<ResponseBody>, ApiError> {
        let (key, parsed) = self.admit(&mut who, raw, Operation::Read, query, &["wait"])?;
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

    pub(super) async fn put_secret<B>(
        &self,
        mut who: Caller<'_>,
        raw: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: B,
    ) -> Result<Response<ResponseBody>, ApiError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let (key, query) = self.admit(
            &mut who,
            raw,
            Operation::Write,
            query,
            &["ttl", "max_reads"],
        )?;
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

    pub(super) async fn renew<B>(
        &self,
        mut who: Caller<'_>,
        raw: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: B,
    ) -> Result<Response<ResponseBody>, ApiError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let (key, _) = self.admit(&mut who, raw, Operation::Write, query, &[])?;
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

    pub(super) fn delete(
        &self,
        mut who: Caller<'_>,
        raw: &str,
        query: Option<&str>,
    ) -> Result<Response<ResponseBody>, ApiError> {
        let (key, _) = self.admit(&mut who, raw, Operation::Delete, query, &[])?;
        self.store.delete(&key)?;
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NO_CONTENT;
        Ok(response)
    }

    pub(super) fn list(
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
            Some(key) => crate::text::json::push_str(&mut body, key.as_str()),
            None => body.extend_from_slice(b"null"),
        }
        body.push(b'}');
        Ok(json_text_response(Bytes::from(body)))
    }
}
