//! `src/http/api/openapi.json` against what the server implements: every route and
//! method, the exact set of statuses each operation can return, the query
//! parameters each route accepts, the problem codes of `src/http/problem.rs`, the
//! metadata object of `src/http/api/mod.rs`, and every `$ref` resolving inside the
//! document. No network: the document is read at compile time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use serde_json::Value;
use tmpvault::http::api::{meta_json, OPENAPI_JSON};
use tmpvault::http::problem::ApiError;
use tmpvault::store::key::{Key, KeyError};
use tmpvault::store::{Kind, Meta};

const DOC: &str = include_str!("../src/http/api/openapi.json");

/// Statuses every operation lists, reserved for the policy (401, 403) and
/// rate-limit (429) features.
const RESERVED: [u16; 3] = [401, 403, 429];

/// Route, method, and every status the code path of that operation can
/// return (plus [`RESERVED`]). Read off `Api::dispatch` and the handlers.
const OPERATIONS: &[(&str, &str, &[u16])] = &[
    ("/v1/secrets/{key}", "get", &[200, 304, 400, 404, 409, 503]),
    ("/v1/secrets/{key}", "head", &[200, 400, 404, 409]),
    (
        "/v1/secrets/{key}",
        "put",
        &[200, 201, 400, 408, 409, 412, 413, 503, 507],
    ),
    ("/v1/secrets/{key}", "patch", &[200, 400, 404, 408, 503]),
    ("/v1/secrets/{key}", "delete", &[204, 400, 404, 503]),
    ("/v1/secrets", "get", &[200, 400]),
    ("/v1/secrets", "head", &[200, 400]),
    (
        "/v1/lists/{key}/push",
        "post",
        &[200, 201, 400, 408, 409, 413, 503, 507],
    ),
    ("/v1/lists/{key}/pop", "post", &[200, 400, 404, 409, 503]),
    ("/v1/selfcheck", "get", &[200, 400, 503]),
    ("/v1/selfcheck", "head", &[200, 400, 503]),
    ("/v1/openapi.json", "get", &[200, 400]),
    ("/v1/openapi.json", "head", &[200, 400]),
];

/// The `Allow` header of each path (`Route::allow` in `src/http/api/mod.rs`).
const ALLOW: &[(&str, &str)] = &[
    ("/v1/secrets/{key}", "GET, HEAD, PUT, PATCH, DELETE"),
    ("/v1/secrets", "GET, HEAD"),
    ("/v1/lists/{key}/push", "POST"),
    ("/v1/lists/{key}/pop", "POST"),
    ("/v1/selfcheck", "GET, HEAD"),
    ("/v1/openapi.json", "GET, HEAD"),
];

/// Query parameters each operation accepts; anything else is a 400.
const QUERY: &[(&str, &str, &[&str])] = &[
    ("/v1/secrets/{key}", "get", &["wait"]),
    ("/v1/secrets/{key}", "head", &[]),
    ("/v1/secrets/{key}", "put", &["ttl", "max_reads"]),
    ("/v1/secrets/{key}", "patch", &[]),
    ("/v1/secrets/{key}", "delete", &[]),
    ("/v1/secrets", "get", &["prefix", "limit", "after"]),
    ("/v1/secrets", "head", &["prefix", "limit", "after"]),
    ("/v1/lists/{key}/push", "post", &["ttl"]),
    ("/v1/lists/{key}/pop", "post", &["from"]),
    ("/v1/selfcheck", "get", &[]),
    ("/v1/selfcheck", "head", &[]),
    ("/v1/openapi.json", "get", &[]),
    ("/v1/openapi.json", "head", &[]),
];

/// Success responses and the headers the handlers always or sometimes send.
const SUCCESS_HEADERS: &[(&str, &str, &str, &[&str])] = &[
    (
        "/v1/secrets/{key}",
        "get",
        "200",
        &[
            "ETag",
            "Cache-Control",
            "Expires",
            "X-Tmpvault-Expires-At",
            "X-Tmpvault-Reads-Left",
        ],
    ),
    (
        "/v1/secrets/{key}",
        "head",
        "200",
        &[
            "ETag",
            "Cache-Control",
            "Content-Length",
            "Expires",
            "X-Tmpvault-Expires-At",
            "X-Tmpvault-Reads-Left",
        ],
    ),
    (
        "/v1/secrets/{key}",
        "put",
        "200",
        &["ETag", "Cache-Control"],
    ),
    (
        "/v1/secrets/{key}",
        "put",
        "201",
        &["ETag", "Cache-Control", "Location"],
    ),
    (
        "/v1/secrets/{key}",
        "patch",
        "200",
        &["ETag", "Cache-Control"],
    ),
    ("/v1/secrets/{key}", "delete", "204", &[]),
    ("/v1/secrets", "get", "200", &["Cache-Control"]),
    (
        "/v1/lists/{key}/push",
        "post",
        "200",
        &["ETag", "Cache-Control"],
    ),
    (
        "/v1/lists/{key}/push",
        "post",
        "201",
        &["ETag", "Cache-Control"],
    ),
    (
        "/v1/lists/{key}/pop",
        "post",
        "200",
        &["Cache-Control", "X-Tmpvault-Items-Left"],
    ),
    ("/v1/selfcheck", "get", "200", &["Cache-Control"]),
    ("/v1/openapi.json", "get", "200", &[]),
];

/// Every problem code of `src/http/problem.rs` with its status.
const PROBLEM_CODES: [(&str, u16); 15] = [
    ("invalid_key", 400),
    ("invalid_ttl", 400),
    ("invalid_request", 400),
    ("unauthenticated", 401),
    ("forbidden", 403),
    ("not_found", 404),
    ("method_not_allowed", 405),
    ("request_timeout", 408),
    ("wrong_kind", 409),
    ("precondition_failed", 412),
    ("value_too_large", 413),
    ("headers_too_large", 431),
    ("rate_limited", 429),
    ("unavailable", 503),
    ("memory_budget_exceeded", 507),
];

const HTTP_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

const KEY_PATTERN: &str = r"^(?:[A-Za-z0-9_-][A-Za-z0-9._-]*|\.[A-Za-z0-9_-][A-Za-z0-9._-]*|\.\.[A-Za-z0-9._-]+)(?:/(?:[A-Za-z0-9_-][A-Za-z0-9._-]*|\.[A-Za-z0-9_-][A-Za-z0-9._-]*|\.\.[A-Za-z0-9._-]+))*$";

fn doc() -> Value {
    serde_json::from_str(DOC).expect("src/http/api/openapi.json is JSON")
}

/// Follows a local `$ref` (once or repeatedly) to the object it names.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    let mut value = value;
    while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("non-local $ref {reference}"));
        value = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("unresolved $ref {reference}"));
    }
    value
}

fn operation<'a>(doc: &'a Value, path: &str, method: &str) -> &'a Value {
    doc["paths"][path]
        .get(method)
        .unwrap_or_else(|| panic!("{method} {path} is missing"))
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .map(|object| object.keys().cloned().collect())
        .unwrap_or_default()
}

fn strings(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|item| item.as_str().expect("an array of strings").to_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

/// One error of every kind, from the real `ApiError`.
fn every_api_error() -> Vec<ApiError> {
    let all = vec![
        ApiError::InvalidKey(KeyError::Empty),
        ApiError::InvalidTtl(String::new()),
        ApiError::InvalidRequest(String::new()),
        ApiError::Unauthenticated,
        ApiError::Forbidden(String::new()),
        ApiError::NotFound(""),
        ApiError::MethodNotAllowed { allow: "GET" },
        ApiError::RequestTimeout { seconds: 1 },
        ApiError::WrongKind(String::new()),
        ApiError::PreconditionFailed(""),
        ApiError::ValueTooLarge { limit: 1 },
        ApiError::HeadersTooLarge { limit: 1 },
        ApiError::RateLimited { retry_after: 1 },
        ApiError::Unavailable(""),
        ApiError::MemoryBudgetExceeded(String::new()),
    ];
    for error in &all {
        // No wildcard: a new variant stops this test from compiling until it
        // is added to the list above, to PROBLEM_CODES and to the document.
        match error {
            ApiError::InvalidKey(_)
            | ApiError::InvalidTtl(_)
            | ApiError::InvalidRequest(_)
            | ApiError::Unauthenticated
            | ApiError::Forbidden(_)
            | ApiError::NotFound(_)
            | ApiError::MethodNotAllowed { .. }
            | ApiError::RequestTimeout { .. }
            | ApiError::WrongKind(_)
            | ApiError::PreconditionFailed(_)
            | ApiError::ValueTooLarge { .. }
            | ApiError::HeadersTooLarge { .. }
            | ApiError::RateLimited { .. }
            | ApiError::Unavailable(_)
            | ApiError::MemoryBudgetExceeded(_) => {}
        }
    }
    all
}

#[test]
fn the_served_document_is_this_file_and_openapi_3_0() {
    assert_eq!(DOC, OPENAPI_JSON);
    let doc = doc();
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.0."), "openapi is {version}");
    for member in ["title", "version", "description"] {
        assert!(doc["info"][member].is_string(), "info.{member}");
    }
    assert_eq!(doc["servers"][0]["url"], "https://127.0.0.1:8443");
}

#[test]
fn exactly_the_implemented_routes_and_methods() {
    let doc = doc();
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            keys(item)
                .into_iter()
                .filter(|name| HTTP_METHODS.contains(&name.as_str()))
                .map(move |method| (path.clone(), method))
        })
        .collect();
    let expected: BTreeSet<(String, String)> = OPERATIONS
        .iter()
        .map(|(path, method, _)| ((*path).to_owned(), (*method).to_owned()))
        .collect();
    assert_eq!(documented, expected);
    let paths: BTreeSet<&str> = ALLOW.iter().map(|(path, _)| *path).collect();
    assert_eq!(
        keys(&doc["paths"]),
        set(&paths.into_iter().collect::<Vec<_>>())
    );
}

#[test]
fn each_path_documents_the_methods_of_its_allow_header() {
    let doc = doc();
    for (path, allow) in ALLOW {
        let item = &doc["paths"][path];
        assert_eq!(item["x-tmpvault-allow"], *allow, "{path}");
        let from_allow: BTreeSet<String> = allow
            .split(", ")
            .map(|method| method.to_ascii_lowercase())
            .collect();
        let documented: BTreeSet<String> = keys(item)
            .into_iter()
            .filter(|name| HTTP_METHODS.contains(&name.as_str()))
            .collect();
        assert_eq!(documented, from_allow, "{path}");
    }
}

#[test]
fn each_operation_lists_exactly_the_statuses_it_can_return() {
    let doc = doc();
    for (path, method, statuses) in OPERATIONS {
        let documented = keys(&operation(&doc, path, method)["responses"]);
        let expected: BTreeSet<String> = statuses
            .iter()
            .chain(RESERVED.iter())
            .map(u16::to_string)
            .collect();
        assert_eq!(documented, expected, "{} {path}", method.to_uppercase());
    }
}

#[test]
fn problem_codes_are_exactly_those_of_the_server() {
    let from_code: BTreeSet<(String, u16)> = every_api_error()
        .iter()
        .map(|error| (error.code().to_owned(), error.status().as_u16()))
        .collect();
    let listed: BTreeSet<(String, u16)> = PROBLEM_CODES
        .iter()
        .map(|(code, status)| ((*code).to_owned(), *status))
        .collect();
    assert_eq!(from_code, listed);
    let doc = doc();
    let problem = &doc["components"]["schemas"]["Problem"];
    let codes: Vec<&str> = PROBLEM_CODES.iter().map(|(code, _)| *code).collect();
    assert_eq!(strings(&problem["properties"]["code"]["enum"]), set(&codes));
    assert_eq!(
        strings(&problem["required"]),
        set(&["type", "title", "status", "detail", "code"])
    );
    assert_eq!(
        keys(&problem["properties"]),
        set(&["type", "title", "status", "detail", "code"])
    );
}

#[test]
fn error_responses_are_problems_with_the_codes_of_their_status() {
    let doc = doc();
    for (path, method, _) in OPERATIONS {
        let responses = &operation(&doc, path, method)["responses"];
        for (status, response) in responses.as_object().unwrap() {
            let status: u16 = status.parse().unwrap();
            if status < 400 {
                continue;
            }
            let response = resolve(&doc, response);
            let context = format!("{} {path} {status}", method.to_uppercase());
            if status == 429 {
                assert!(
                    response["headers"].get("Retry-After").is_some(),
                    "{context}"
                );
            }
            if *method == "head" {
                assert!(response.get("content").is_none(), "{context}: no body");
                continue;
            }
            assert_eq!(
                keys(&response["content"]),
                set(&["application/problem+json"]),
                "{context}"
            );
            let schema = &response["content"]["application/problem+json"]["schema"];
            let parts = schema["allOf"].as_array().unwrap();
            assert_eq!(
                parts[0]["$ref"], "#/components/schemas/Problem",
                "{context}"
            );
            let narrowed = &parts[1]["properties"];
            assert_eq!(narrowed["status"]["enum"], serde_json::json!([status]));
            let codes: Vec<&str> = PROBLEM_CODES
                .iter()
                .filter(|(_, code_status)| *code_status == status)
                .map(|(code, _)| *code)
                .collect();
            assert_eq!(strings(&narrowed["code"]["enum"]), set(&codes), "{context}");
        }
    }
    let responses = &doc["components"]["responses"];
    assert!(responses["MethodNotAllowed"]["headers"]["Allow"].is_object());
    assert!(responses["Unavailable"]["headers"]["Retry-After"].is_object());
}

#[test]
fn success_responses_carry_the_headers_the_handlers_send() {
    let doc = doc();
    for (path, method, status, headers) in SUCCESS_HEADERS {
        let response = resolve(&doc, &operation(&doc, path, method)["responses"][status]);
        assert_eq!(
            keys(&response["headers"]),
            set(headers),
            "{} {path} {status}",
            method.to_uppercase()
        );
    }
    let get = resolve(
        &doc,
        &operation(&doc, "/v1/secrets/{key}", "get")["responses"]["200"],
    );
    let reads_left = resolve(&doc, &get["headers"]["X-Tmpvault-Reads-Left"]);
    assert_eq!(reads_left["required"], false);
}

#[test]
fn each_operation_accepts_exactly_the_implemented_query_parameters() {
    let doc = doc();
    for (path, method, names) in QUERY {
        let item = &doc["paths"][path];
        let parameters = item["parameters"]
            .as_array()
            .into_iter()
            .chain(operation(&doc, path, method)["parameters"].as_array())
            .flatten()
            .map(|parameter| resolve(&doc, parameter));
        let query: BTreeSet<String> = parameters
            .filter(|parameter| parameter["in"] == "query")
            .map(|parameter| parameter["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(query, set(names), "{} {path}", method.to_uppercase());
    }
    let put = &operation(&doc, "/v1/secrets/{key}", "put")["parameters"];
    let headers: BTreeSet<String> = put
        .as_array()
        .unwrap()
        .iter()
        .map(|parameter| resolve(&doc, parameter))
        .filter(|parameter| parameter["in"] == "header")
        .map(|parameter| parameter["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(headers, set(&["If-Match", "If-None-Match"]));
}

#[test]
fn keyed_paths_declare_the_key_parameter() {
    let doc = doc();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let path_parameters: Vec<&Value> = item["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|parameter| resolve(&doc, parameter))
            .filter(|parameter| parameter["in"] == "path")
            .collect();
        if path.contains("{key}") {
            assert_eq!(path_parameters.len(), 1, "{path}");
            assert_eq!(path_parameters[0]["name"], "key");
            assert_eq!(path_parameters[0]["required"], true);
        } else {
            assert!(path_parameters.is_empty(), "{path}");
        }
    }
    let key = &doc["components"]["schemas"]["Key"];
    assert_eq!(key["type"], "string");
    assert_eq!(key["pattern"], KEY_PATTERN);
    assert_eq!(key["minLength"], 1);
    assert_eq!(key["maxLength"], tmpvault::store::key::MAX_KEY_LEN);
    let limit = resolve(&doc, &doc["components"]["parameters"]["Limit"]);
    assert_eq!(
        limit["schema"]["maximum"],
        tmpvault::http::api::MAX_LIST_LIMIT
    );
    let from = &doc["components"]["parameters"]["From"]["schema"]["enum"];
    assert_eq!(strings(from), set(&["newest", "oldest"]));
}

#[test]
fn metadata_schema_matches_the_served_object() {
    let meta = Meta {
        key: Key::parse("payments/db").unwrap(),
        kind: Kind::Secret,
        size: 3,
        version: 1,
        revision: 1,
        created_at: SystemTime::UNIX_EPOCH,
        updated_at: SystemTime::UNIX_EPOCH,
        expires_at: SystemTime::UNIX_EPOCH,
        reads_left: None,
        content_type: Some(tmpvault::store::MediaType::from("text/plain")),
    };
    let served = meta_json(&meta);
    let doc = doc();
    let schema = &doc["components"]["schemas"]["Metadata"];
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(keys(&schema["properties"]), keys(&served));
    assert_eq!(strings(&schema["required"]), keys(&served));
    assert_eq!(
        strings(&schema["properties"]["kind"]["enum"]),
        set(&[Kind::Secret.as_str(), Kind::List.as_str()])
    );
    for (name, value) in served.as_object().unwrap() {
        let property = resolve(&doc, &schema["properties"][name]);
        let expected = match value {
            Value::String(_) => "string",
            Value::Number(_) => "integer",
            Value::Null => continue,
            other => panic!("unexpected {name}: {other}"),
        };
        assert_eq!(property["type"], expected, "{name}");
    }
    for nullable in ["reads_left", "content_type"] {
        assert_eq!(
            schema["properties"][nullable]["nullable"], true,
            "{nullable}"
        );
    }
    for time in ["created_at", "updated_at", "expires_at"] {
        assert_eq!(schema["properties"][time]["format"], "date-time", "{time}");
    }
    let renew = &doc["components"]["schemas"]["RenewRequest"];
    assert_eq!(renew["additionalProperties"], false);
    assert_eq!(strings(&renew["required"]), set(&["ttl"]));
}

/// Collects every `$ref` in the document.
fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(object) => {
            for (name, member) in object {
                match (name.as_str(), member) {
                    ("$ref", Value::String(reference)) => found.push(reference),
                    _ => refs(member, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| refs(item, found)),
        _ => {}
    }
}

#[test]
fn every_ref_resolves_and_every_component_is_used() {
    let doc = doc();
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for reference in &found {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("non-local $ref {reference}"));
        assert!(
            doc.pointer(pointer).is_some(),
            "unresolved $ref {reference}"
        );
    }
    let used: BTreeSet<&str> = found.into_iter().collect();
    let mut unused: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (kind, components) in doc["components"].as_object().unwrap() {
        for name in keys(components) {
            let reference = format!("#/components/{kind}/{name}");
            // 405 only answers undocumented methods, so no operation refers to it.
            if !used.contains(reference.as_str())
                && reference != "#/components/responses/MethodNotAllowed"
            {
                unused.entry(kind.clone()).or_default().push(name);
            }
        }
    }
    assert!(unused.is_empty(), "unused components: {unused:?}");
}

#[test]
fn operation_ids_are_unique() {
    let doc = doc();
    let ids: Vec<&str> = OPERATIONS
        .iter()
        .map(|(path, method, _)| {
            operation(&doc, path, method)["operationId"]
                .as_str()
                .unwrap()
        })
        .collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
}
