//! What a key is: 1 to 256 bytes of `[A-Za-z0-9._-]` segments joined by `/`,
//! with no empty, `.` or `..` segment and no leading or trailing `/`.
//!
//! Keys come straight from request paths and query strings, so a key that
//! passes [`Key::parse`] is safe to log, to sort and to use as a prefix.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 256;

/// A validated key. Cheap to clone: the store keeps it in two indexes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(Arc<str>);

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Zero bytes.
    #[error("the key is empty")]
    Empty,
    /// Longer than [`MAX_KEY_LEN`].
    #[error("the key is {0} bytes long; at most {MAX_KEY_LEN} are allowed")]
    TooLong(usize),
    /// A byte outside `[A-Za-z0-9._-/]`.
    #[error("the key contains a character outside [A-Za-z0-9._-] and '/'")]
    BadCharacter,
    /// `a//b`, `/a` or `a/`.
    #[error("the key has an empty segment (a leading, trailing or doubled '/')")]
    EmptySegment,
    /// `a/./b` or `a/../b`.
    #[error("the key has a '.' or '..' segment")]
    DotSegment,
}

fn allowed_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-')
}

/// Checks a key prefix (used by listing and by policy rules): like a key, but
/// it may be empty and may end with `/`.
pub fn validate_prefix(prefix: &str) -> Result<(), KeyError> {
    if prefix.is_empty() {
        return Ok(());
    }
    match Key::parse(prefix.strip_suffix('/').unwrap_or(prefix)) {
        Ok(_) => Ok(()),
        Err(KeyError::Empty) => Err(KeyError::EmptySegment),
        Err(other) => Err(other),
    }
}

impl Key {
    /// Validates `raw` as a key.
    pub fn parse(raw: &str) -> Result<Key, KeyError> {
        if raw.is_empty() {
            return Err(KeyError::Empty);
        }
        if raw.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong(raw.len()));
        }
        if !raw.bytes().all(|b| b == b'/' || allowed_byte(b)) {
            return Err(KeyError::BadCharacter);
        }
        for segment in raw.split('/') {
            match segment {
                "" => return Err(KeyError::EmptySegment),
                "." | ".." => return Err(KeyError::DotSegment),
                _ => {}
            }
        }
        Ok(Key(Arc::from(raw)))
    }

    /// A key the store held (the bytes of an entry's block, which were a
    /// `Key` when stored): no second validation.
    pub(super) fn stored(raw: &str) -> Key {
        debug_assert!(Key::parse(raw).is_ok(), "{raw:?}");
        Key(Arc::from(raw))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_keys() {
        for raw in [
            "a",
            "db/password",
            "payments/api-key_v2.json",
            "A.b-c_d/e",
            "..a",
            "a..",
        ] {
            assert_eq!(
                Key::parse(raw).map(|k| k.to_string()),
                Ok(raw.to_owned()),
                "{raw}"
            );
        }
        assert!(Key::parse(&"k".repeat(MAX_KEY_LEN)).is_ok());
    }

    #[test]
    fn bad_keys_say_why() {
        assert_eq!(Key::parse(""), Err(KeyError::Empty));
        assert_eq!(Key::parse(&"k".repeat(257)), Err(KeyError::TooLong(257)));
        assert_eq!(Key::parse("a//b"), Err(KeyError::EmptySegment));
        assert_eq!(Key::parse("/a"), Err(KeyError::EmptySegment));
        assert_eq!(Key::parse("a/"), Err(KeyError::EmptySegment));
        assert_eq!(Key::parse("a/../b"), Err(KeyError::DotSegment));
        assert_eq!(Key::parse("./a"), Err(KeyError::DotSegment));
        assert_eq!(Key::parse(".."), Err(KeyError::DotSegment));
        for bad in ["a b", "a%2Fb", "ä", "a\0b", "a\\b", "a?b", "a:b"] {
            assert_eq!(Key::parse(bad), Err(KeyError::BadCharacter), "{bad:?}");
        }
    }

    #[test]
    fn prefixes_may_be_empty_or_end_in_slash() {
        assert_eq!(validate_prefix(""), Ok(()));
        assert_eq!(validate_prefix("payments/"), Ok(()));
        assert_eq!(validate_prefix("pay"), Ok(()));
        assert_eq!(validate_prefix("/"), Err(KeyError::EmptySegment));
        assert_eq!(validate_prefix("a//"), Err(KeyError::EmptySegment));
        assert_eq!(validate_prefix("../"), Err(KeyError::DotSegment));
    }
}
