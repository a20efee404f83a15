//! The handlers of `/v1/lists`: push and pop.

use super::*;

impl Api {
    pub(super) async fn push<B>(
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
        let (key, query) = self.admit(&mut who, raw, Operation::Write, query, &["ttl"])?;
        let ttl = self.ttl(query.get("ttl"))?;
        let item = self.read_value(body, headers, who.audit).await?;
        let (meta, created) = self.store.push(&key, item, ttl)?;
        Ok(meta_response(created_or_ok(created), &meta))
    }

    pub(super) fn pop(
        &self,
        mut who: Caller<'_>,
        raw: &str,
        query: Option<&str>,
    ) -> Result<Response<ResponseBody>, ApiError> {
        let (key, query) = self.admit(&mut who, raw, Operation::Read, query, &["from"])?;
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
        headers.insert(ITEMS_LEFT, unindexed(HeaderValue::from(left)));
        Ok(response)
    }
}
