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
