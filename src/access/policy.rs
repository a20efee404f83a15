//! The access policy: which client identity may do what under which key
//! prefix.
//!
//! ```json
//! {"rules": [
//!   {"identity": "spiffe://example.org/ns/payments/*", "prefix": "payments/", "allow": ["read", "list"]},
//!   {"identity": "cn:deployer", "prefix": "", "allow": ["read", "write", "delete", "list"]}
//! ]}
//! ```
//!
//! A pattern is exact or ends in `*` (a prefix match), and names one kind of
//! identity ([`crate::tls::identity`]): `dns:...`, `cn:...` or a URI such as
//! `spiffe://...`; only the bare `*` matches every kind. An untyped pattern
//! (`billing.example.org`, the spelling of a DNS identity before identities
//! were typed) is refused at load with the spelling to use instead. DNS
//! patterns are matched in lower case, as DNS identities are spelled.
//! A request is allowed
//! when some rule matches the identity, the key starts with the rule's
//! prefix, and the operation is in `allow`. Everything else is denied. The
//! file is read in two stages: serde with `deny_unknown_fields` (JSON errors
//! carry line and column), then validation that reports every mistake, one
//! line each, naming the rule.

use std::fmt;
use std::path::Path;

use crate::store::key::validate_prefix;
use crate::tls::identity::{validate_dns, validate_uri, Kind, DNS_PREFIX};

/// What a request does to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// GET, HEAD, pop.
    Read,
    /// PUT, PATCH, push.
    Write,
    /// DELETE.
    Delete,
    /// Listing metadata.
    List,
}

impl Operation {
    fn bit(self) -> u8 {
        match self {
            Operation::Read => 1,
            Operation::Write => 2,
            Operation::Delete => 4,
            Operation::List => 8,
        }
    }

    /// `read`, `write`, `delete` or `list`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Delete => "delete",
            Operation::List => "list",
        }
    }

    fn parse(name: &str) -> Option<Operation> {
        match name {
            "read" => Some(Operation::Read),
            "write" => Some(Operation::Write),
            "delete" => Some(Operation::Delete),
            "list" => Some(Operation::List),
            _ => None,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    rules: Vec<RawRule>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    identity: String,
    prefix: String,
    allow: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn matches(&self, identity: &str) -> bool {
        match self {
            Pattern::Exact(exact) => exact == identity,
            Pattern::Prefix(prefix) => identity.starts_with(prefix.as_str()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    identity: Pattern,
    prefix: String,
    allow: u8,
}

/// A validated policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
}

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("reading policy {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not JSON of the expected shape (serde's message has line and column).
    #[error("policy {path}: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// serde's message, e.g. `unknown field "alow" at line 3 column 12`.
        message: String,
    },
    /// Well-formed JSON with mistakes in it; one line per mistake.
    #[error("policy {path} has {count} mistake(s):\n{}", .mistakes.join("\n"), count = .mistakes.len())]
    Invalid {
        /// The file.
        path: String,
        /// Each mistake, naming the rule.
        mistakes: Vec<String>,
    },
}

/// Checks that an identity pattern (an exact identity, or the text before a
/// trailing `*`) names one kind of identity, so that no rule written for
/// one kind can match another: `dns:...`, `cn:...` or `scheme://...`; only
/// the bare `*` (an empty `text` with `prefix`) matches every kind. Returns
/// the pattern as it is matched: a DNS name in lower case, as identities
/// spell it.
///
/// Untyped patterns were how identities were written before they were
/// typed (`billing.example.org` for a DNS SAN); they are refused with the
/// spelling to use instead, so that an old policy stops loading with a
/// reason rather than denying everyone with a silent 403.
fn typed_pattern(text: &str, prefix: bool) -> Result<String, String> {
    if text.is_empty() && prefix {
        return Ok(String::new());
    }
    let whole = if prefix {
        format!("{text}*")
    } else {
        text.to_owned()
    };
    match Kind::of(text) {
        Some(Kind::Dns) => {
            let name = text[DNS_PREFIX.len()..].to_ascii_lowercase();
            let valid = if prefix {
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            } else {
                validate_dns(&name).is_ok()
            };
            if valid {
                Ok(format!("{DNS_PREFIX}{name}"))
            } else {
                Err(format!(
                    "{whole:?} is not a DNS identity: after dns: comes a hostname (letters, digits, '-', '.')"
                ))
            }
        }
        Some(Kind::Cn) => Ok(text.to_owned()),
        Some(Kind::Uri) if prefix => Ok(text.to_owned()),
        Some(Kind::Uri) => validate_uri(text)
            .map(|()| text.to_owned())
            .map_err(|reason| format!("{whole:?} is not a URI identity: {reason}")),
        None => {
            let hint = if validate_dns(text.trim_end_matches('.')).is_ok() && text.contains('.') {
                format!("write \"dns:{text}{star}\" for a certificate's DNS SAN (or \"cn:{text}{star}\" for its subject CN)", star = if prefix { "*" } else { "" })
            } else if !text.contains(':') {
                format!("write \"cn:{text}{star}\" for a certificate's subject CN (or \"dns:{text}{star}\" for its DNS SAN)", star = if prefix { "*" } else { "" })
            } else {
                "start it with dns: (a DNS SAN), cn: (the subject CN) or scheme:// (a URI SAN, e.g. spiffe://)".to_owned()
            };
            Err(format!(
                "{whole:?} names no kind of identity; identities are typed (dns:, cn:, or a URI such as spiffe://), so that one kind cannot pass for another: {hint}"
            ))
        }
    }
}

/// Largest policy file read.
const MAX_POLICY_BYTES: u64 = 1 << 20;

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let display = path.display().to_string();
        let read_error = |source| PolicyError::Read {
            path: display.clone(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read_error)?.len();
        if size > MAX_POLICY_BYTES {
            return Err(PolicyError::Invalid {
                path: display,
                mistakes: vec![format!(
                    "the file is {size} bytes; at most {MAX_POLICY_BYTES} are read"
                )],
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        Policy::parse(&text, &display)
    }

    /// Parses and validates policy text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let raw: RawPolicy = serde_json::from_str(text).map_err(|error| PolicyError::Syntax {
            path: origin.to_owned(),
            message: error.to_string(),
        })?;
        let mut mistakes = Vec::new();
        let mut rules = Vec::with_capacity(raw.rules.len());
        for (index, rule) in raw.rules.into_iter().enumerate() {
            let at = format!("rules[{index}]");
            let identity = match rule.identity.find('*') {
                _ if rule.identity.is_empty() => {
                    mistakes.push(format!(
                        "{at}.identity: empty; use an exact identity or a pattern ending in *"
                    ));
                    None
                }
                None => typed_pattern(&rule.identity, false)
                    .map(Pattern::Exact)
                    .map_err(|mistake| mistakes.push(format!("{at}.identity: {mistake}")))
                    .ok(),
                Some(star) if star == rule.identity.len() - 1 => {
                    typed_pattern(&rule.identity[..star], true)
                        .map(Pattern::Prefix)
                        .map_err(|mistake| mistakes.push(format!("{at}.identity: {mistake}")))
                        .ok()
                }
                Some(_) => {
                    mistakes.push(format!(
                        "{at}.identity: {:?} has a * that is not at the end; only a trailing * is supported",
                        rule.identity
                    ));
                    None
                }
            };
            if let Err(error) = validate_prefix(&rule.prefix) {
                mistakes.push(format!("{at}.prefix: {:?}: {error}", rule.prefix));
            }
            let mut allow = 0u8;
            if rule.allow.is_empty() {
                mistakes.push(format!(
                    "{at}.allow: empty; list some of read, write, delete, list"
                ));
            }
            for (op_index, name) in rule.allow.iter().enumerate() {
                match Operation::parse(name) {
                    Some(operation) => allow |= operation.bit(),
                    None => mistakes.push(format!(
                        "{at}.allow[{op_index}]: unknown operation {name:?}; use read, write, delete or list"
                    )),
                }
            }
            if let Some(identity) = identity {
                rules.push(Rule {
                    identity,
                    prefix: rule.prefix,
                    allow,
                });
            }
        }
        if mistakes.is_empty() {
            Ok(Policy { rules })
        } else {
            Err(PolicyError::Invalid {
                path: origin.to_owned(),
                mistakes,
            })
        }
    }

    /// Whether `identity` may do `operation` on `key`.
    pub fn allows(&self, identity: &str, key: &str, operation: Operation) -> bool {
        self.rules.iter().any(|rule| {
            rule.allow & operation.bit() != 0
                && key.starts_with(rule.prefix.as_str())
                && rule.identity.matches(identity)
        })
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True for a policy with no rules (it denies everything).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"rules": [
      {"identity": "spiffe://example.org/ns/payments/*", "prefix": "payments/", "allow": ["read", "list"]},
      {"identity": "cn:deployer", "prefix": "", "allow": ["read", "write", "delete", "list"]}
    ]}"#;

    #[test]
    fn the_contract_example_means_what_it_says() {
        let policy = Policy::parse(EXAMPLE, "example").unwrap();
        let api = "spiffe://example.org/ns/payments/sa/api";
        assert!(policy.allows(api, "payments/db", Operation::Read));
        assert!(policy.allows(api, "payments/db", Operation::List));
        assert!(!policy.allows(api, "payments/db", Operation::Write));
        assert!(!policy.allows(api, "billing/db", Operation::Read));
        assert!(!policy.allows(
            "spiffe://example.org/ns/billing/sa/api",
            "payments/db",
            Operation::Read
        ));
        assert!(policy.allows("cn:deployer", "anything", Operation::Delete));
        assert!(
            !policy.allows("cn:deployer2", "anything", Operation::Read),
            "exact means exact"
        );
    }

    #[test]
    fn json_errors_carry_line_and_column() {
        let error = Policy::parse(
            "{\"rules\": [\n {\"identity\": \"a\", \"prefix\": \"\", \"alow\": []}]}",
            "p.json",
        )
        .unwrap_err();
        let text = error.to_string();
        assert!(text.contains("unknown field `alow`"), "{text}");
        assert!(text.contains("line 2"), "{text}");
    }

    #[test]
    fn every_mistake_is_reported_once() {
        let text = r#"{"rules": [
          {"identity": "spiffe://*/x", "prefix": "a//", "allow": ["read", "rw"]},
          {"identity": "", "prefix": "", "allow": []}
        ]}"#;
        let PolicyError::Invalid { mistakes, .. } = Policy::parse(text, "p").unwrap_err() else {
            panic!("expected Invalid");
        };
        assert_eq!(mistakes.len(), 5, "{mistakes:#?}");
        assert!(mistakes[0].starts_with("rules[0].identity"));
        assert!(mistakes[1].starts_with("rules[0].prefix"));
        assert!(mistakes[2].starts_with("rules[0].allow[1]: unknown operation \"rw\""));
        assert!(mistakes[3].starts_with("rules[1].identity: empty"));
        assert!(mistakes[4].starts_with("rules[1].allow: empty"));
    }

    #[test]
    fn untyped_patterns_are_refused_with_the_spelling_to_use() {
        let text = r#"{"rules": [
          {"identity": "billing.example.org", "prefix": "", "allow": ["read"]},
          {"identity": "deployer", "prefix": "", "allow": ["read"]},
          {"identity": "app.*", "prefix": "", "allow": ["read"]},
          {"identity": "anonymous", "prefix": "", "allow": ["read"]},
          {"identity": "dns:*.example.org", "prefix": "", "allow": ["read"]},
          {"identity": "dns:a_b", "prefix": "", "allow": ["read"]},
          {"identity": "cn://deployer", "prefix": "", "allow": ["read"]},
          {"identity": "https:/x", "prefix": "", "allow": ["read"]},
          {"identity": "spiffe://example.org/../x", "prefix": "", "allow": ["read"]}
        ]}"#;
        let PolicyError::Invalid { mistakes, .. } = Policy::parse(text, "p").unwrap_err() else {
            panic!("expected Invalid");
        };
        // `cn://deployer` is the CN "//deployer": a URI can never have the
        // scheme cn, so it is no URI look-alike.
        assert_eq!(mistakes.len(), 8, "{mistakes:#?}");
        assert!(
            mistakes[0].contains(r#"write "dns:billing.example.org" for a certificate's DNS SAN"#),
            "{}",
            mistakes[0]
        );
        assert!(
            mistakes[1].contains(r#"write "cn:deployer" for"#),
            "{}",
            mistakes[1]
        );
        assert!(
            mistakes[2].contains(r#"write "dns:app.*" for"#),
            "{}",
            mistakes[2]
        );
        assert!(
            mistakes[3].contains(r#"write "cn:anonymous""#),
            "{}",
            mistakes[3]
        );
        assert!(mistakes[4].contains("only a trailing *"), "{}", mistakes[4]);
        assert!(
            mistakes[5].contains("is not a DNS identity"),
            "{}",
            mistakes[5]
        );
        assert!(
            mistakes[6].contains("names no kind of identity"),
            "{}",
            mistakes[6]
        );
        assert!(
            mistakes[7].contains("is not a URI identity"),
            "{}",
            mistakes[7]
        );
    }

    #[test]
    fn typed_patterns_match_only_their_kind() {
        let text = r#"{"rules": [
          {"identity": "dns:Billing.Example.org", "prefix": "billing/", "allow": ["read"]},
          {"identity": "cn:*", "prefix": "cn-only/", "allow": ["read"]},
          {"identity": "dns:*", "prefix": "dns-only/", "allow": ["read"]},
          {"identity": "*", "prefix": "all/", "allow": ["read"]}
        ]}"#;
        let policy = Policy::parse(text, "p").unwrap();
        let read = Operation::Read;
        assert!(policy.allows("dns:billing.example.org", "billing/db", read));
        assert!(!policy.allows("cn:billing.example.org", "billing/db", read));
        assert!(!policy.allows("billing.example.org", "billing/db", read));
        assert!(policy.allows("cn:x", "cn-only/k", read));
        assert!(!policy.allows("dns:x", "cn-only/k", read));
        assert!(!policy.allows("spiffe://cn:x", "cn-only/k", read));
        assert!(policy.allows("dns:x", "dns-only/k", read));
        assert!(!policy.allows("cn:dns:x", "dns-only/k", read));
        for identity in ["dns:x", "cn:x", "spiffe://x", "anonymous"] {
            assert!(policy.allows(identity, "all/k", read), "{identity}");
        }
    }

    #[test]
    fn an_empty_rule_list_denies_everything() {
        let policy = Policy::parse(r#"{"rules": []}"#, "p").unwrap();
        assert!(policy.is_empty());
        assert!(!policy.allows("cn:anyone", "k", Operation::Read));
    }
}
