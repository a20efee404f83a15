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
//! A pattern is exact or ends in `*` (a prefix match). A request is allowed
//! when some rule matches the identity, the key starts with the rule's
//! prefix, and the operation is in `allow`. Everything else is denied. The
//! file is read in two stages: serde with `deny_unknown_fields` (JSON errors
//! carry line and column), then validation that reports every mistake, one
//! line each, naming the rule.

use std::fmt;
use std::path::Path;

use crate::key::validate_prefix;

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
                None => Some(Pattern::Exact(rule.identity)),
                Some(star) if star == rule.identity.len() - 1 => {
                    Some(Pattern::Prefix(rule.identity[..star].to_owned()))
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
    fn an_empty_rule_list_denies_everything() {
        let policy = Policy::parse(r#"{"rules": []}"#, "p").unwrap();
        assert!(policy.is_empty());
        assert!(!policy.allows("cn:anyone", "k", Operation::Read));
    }
}
