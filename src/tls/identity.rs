//! Who a client is, from its verified certificate, typed by where the name
//! came from so that one kind can never spell another:
//!
//! | source in the certificate | identity |
//! | --- | --- |
//! | the URI SAN | the URI itself: `spiffe://example.org/ns/app/sa/api` |
//! | else the first DNS SAN | `dns:` + the name in lower case: `dns:app.example.org` |
//! | else the subject's first CN | `cn:` + the name: `cn:deployer` |
//!
//! Why typed: before, a DNS SAN was the identity as written, so a CA that
//! signs DNS names for any purpose could mint `DNS:cn:deployer` and be the
//! deployer. Now each kind has its own namespace: a DNS name is always
//! `dns:...`, a CN always `cn:...`, and a URI needs `scheme://` with a
//! scheme other than `cn` and `dns`, so none of them can start like another.
//!
//! A certificate is refused (in the handshake, by
//! [`crate::tls::ClientVerifier`]) when a SAN of a kind used here is not
//! valid for its kind (every URI and DNS SAN is checked, not only the one
//! that names the client), when it has more than one URI SAN (a SPIFFE
//! X.509-SVID has exactly one; two would make the identity depend on their
//! order), or when it has no name at all. IP and e-mail SANs are ignored.
//!
//! The identity is computed once per connection, after the handshake has
//! verified the chain, and travels with every request on that connection.

use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A client identity such as `spiffe://example.org/ns/app/sa/api`,
/// `dns:app.example.org` or `cn:deployer`.
pub type Identity = Arc<str>;

/// The identity of a connection without a certificate. No certificate can
/// spell it: every certificate identity has a `:`.
pub const ANONYMOUS: &str = "anonymous";

/// The prefix of identities from a DNS SAN.
pub const DNS_PREFIX: &str = "dns:";
/// The prefix of identities from the subject CN.
pub const CN_PREFIX: &str = "cn:";

/// Longest URI accepted as an identity (SPIFFE's limit).
const MAX_URI_BYTES: usize = 2048;
/// Longest CN accepted (X.520's `ub-common-name` is 64 characters; some
/// CAs allow more, so bytes, with room).
const MAX_CN_BYTES: usize = 256;

/// Why a certificate cannot name a client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Not a certificate x509-parser can read (webpki already accepted it,
    /// so this is rare).
    #[error("the client certificate cannot be parsed: {0}")]
    Unparsable(String),
    /// More than one URI SAN.
    #[error("the client certificate has {0} URI SANs; exactly one may name a client")]
    SeveralUris(usize),
    /// A URI SAN that is not a valid URI of the accepted form.
    #[error("the client certificate's URI SAN {uri:?} is refused: {reason}")]
    InvalidUri {
        /// The SAN, as written.
        uri: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A DNS SAN that is not a hostname.
    #[error("the client certificate's DNS SAN {name:?} is refused: {reason}")]
    InvalidDns {
        /// The SAN, as written.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A CN that cannot be an identity.
    #[error("the client certificate's subject CN is refused: {0}")]
    InvalidCn(&'static str),
    /// No URI SAN, no DNS SAN and no CN.
    #[error("the client certificate has no URI SAN, DNS SAN or subject CN to name the client")]
    NoName,
}

/// Derives the typed identity from a verified leaf certificate.
pub fn from_certificate(cert: &CertificateDer<'_>) -> Result<Identity, IdentityError> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref())
        .map_err(|error| IdentityError::Unparsable(error.to_string()))?;
    let mut uris = Vec::new();
    let mut dns_names = Vec::new();
    match parsed.subject_alternative_name() {
        Ok(Some(san)) => {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(uri) => uris.push(*uri),
                    GeneralName::DNSName(dns) => dns_names.push(*dns),
                    _ => {}
                }
            }
        }
        Ok(None) => {}
        Err(error) => return Err(IdentityError::Unparsable(error.to_string())),
    }
    if uris.len() > 1 {
        return Err(IdentityError::SeveralUris(uris.len()));
    }
    for uri in &uris {
        validate_uri(uri).map_err(|reason| IdentityError::InvalidUri {
            uri: printable(uri),
            reason,
        })?;
    }
    let mut typed_dns = None;
    for name in &dns_names {
        validate_dns(name).map_err(|reason| IdentityError::InvalidDns {
            name: printable(name),
            reason,
        })?;
        typed_dns.get_or_insert_with(|| format!("{DNS_PREFIX}{}", name.to_ascii_lowercase()));
    }
    if let Some(uri) = uris.first() {
        return Ok(Arc::from(*uri));
    }
    if let Some(dns) = typed_dns {
        return Ok(Arc::from(dns));
    }
    let common_name = match parsed.subject().iter_common_name().next() {
        None => return Err(IdentityError::NoName),
        Some(cn) => cn
            .as_str()
            .map_err(|_| IdentityError::InvalidCn("not a string"))?,
    };
    validate_cn(common_name).map_err(IdentityError::InvalidCn)?;
    Ok(Arc::from(format!("{CN_PREFIX}{common_name}")))
}

/// A SAN as it may be quoted in an error (with `{:?}`, which escapes control
/// characters): at most 300 characters.
fn printable(text: &str) -> String {
    let mut shown: String = text.chars().take(300).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    shown
}

/// Checks a URI SAN: `scheme://...` with a lower-case scheme other than
/// `cn` and `dns` (which would read like the other kinds), only the
/// characters RFC 3986 allows, no `.` or `..` path segment and no
/// percent-encoded `.` or `/` (which would let a path look like another
/// under a prefix pattern). `spiffe://` IDs get the SPIFFE rules on top.
pub fn validate_uri(uri: &str) -> Result<(), &'static str> {
    if uri.len() > MAX_URI_BYTES {
        return Err("longer than 2048 bytes");
    }
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err("not of the form scheme://...");
    };
    validate_scheme(scheme)?;
    if !rest.bytes().all(is_uri_byte) {
        return Err("has a character a URI may not contain");
    }
    let lower = rest.to_ascii_lowercase();
    if lower.contains("%2e") || lower.contains("%2f") {
        return Err("has a percent-encoded '.' or '/'");
    }
    let path = rest.split(['?', '#']).next().unwrap_or_default();
    if path
        .split('/')
        .skip(1)
        .any(|segment| segment == "." || segment == "..")
    {
        return Err("has a '.' or '..' path segment");
    }
    if scheme == "spiffe" {
        validate_spiffe(rest)?;
    }
    Ok(())
}

/// Checks a URI scheme as RFC 3986 spells it, in lower case, and not one of
/// the prefixes of the other identity kinds.
pub fn validate_scheme(scheme: &str) -> Result<(), &'static str> {
    let mut bytes = scheme.bytes();
    let first_is_letter = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
    if !first_is_letter
        || !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
    {
        return Err("the scheme must be a lower-case letter followed by a-z, 0-9, '+', '-' or '.'");
    }
    if scheme == "cn" || scheme == "dns" {
        return Err("the schemes cn and dns are reserved for the other identity kinds");
    }
    Ok(())
}

fn is_uri_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=%".contains(&byte)
}

/// The SPIFFE ID rules (SPIFFE-ID spec §2): a lower-case trust domain of
/// `[a-z0-9._-]`, path segments of `[A-Za-z0-9._-]`, no empty segment, no
/// trailing `/`, no query, fragment, port, user info or percent-encoding.
fn validate_spiffe(rest: &str) -> Result<(), &'static str> {
    let (trust_domain, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, ""),
    };
    if trust_domain.is_empty()
        || !trust_domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return Err("a SPIFFE trust domain is lower-case letters, digits, '.', '_' and '-'");
    }
    if path.is_empty() {
        return Ok(());
    }
    let segments_ok = path[1..].split('/').all(|segment| {
        !segment.is_empty()
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    });
    if segments_ok {
        Ok(())
    } else {
        Err("a SPIFFE path is non-empty segments of letters, digits, '.', '_' and '-'")
    }
}

/// Checks a DNS SAN: a hostname of letters, digits and `-` in labels of 1
/// to 63 bytes that do not start or end with `-`, at most 253 bytes, no
/// trailing dot, no wildcard.
pub fn validate_dns(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("a hostname is 1 to 253 bytes");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(
                "each label of a hostname is 1 to 63 bytes (no empty label, no trailing dot)",
            );
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("a hostname is letters, digits, '-' and '.' (no wildcard, no ':')");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a hostname label does not start or end with '-'");
        }
    }
    Ok(())
}

/// Checks a subject CN: 1 to 256 bytes with no control character.
pub fn validate_cn(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_CN_BYTES {
        return Err("a CN used as an identity is 1 to 256 bytes");
    }
    if name.chars().any(char::is_control) {
        return Err("has a control character");
    }
    Ok(())
}

/// Which kind an identity (or the start of a policy pattern) names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `scheme://...` from a URI SAN.
    Uri,
    /// `dns:...` from a DNS SAN.
    Dns,
    /// `cn:...` from the subject CN.
    Cn,
}

impl Kind {
    /// The kind `text` starts with, if it starts with one.
    pub fn of(text: &str) -> Option<Kind> {
        if text.starts_with(DNS_PREFIX) {
            Some(Kind::Dns)
        } else if text.starts_with(CN_PREFIX) {
            Some(Kind::Cn)
        } else {
            let (scheme, _) = text.split_once("://")?;
            validate_scheme(scheme).ok().map(|()| Kind::Uri)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_of_the_accepted_form_pass() {
        for uri in [
            "spiffe://example.org/ns/payments/sa/api",
            "spiffe://example.org",
            "spiffe://trust_domain-1.example/a.b/c_d",
            "https://id.example.org/workload/7?env=prod",
            "urn+x://thing",
        ] {
            assert_eq!(validate_uri(uri), Ok(()), "{uri}");
        }
    }

    #[test]
    fn uris_that_could_pass_for_another_kind_or_path_are_refused() {
        for uri in [
            "cn:deployer",
            "dns:app.example.org",
            "cn://deployer",
            "dns://app.example.org",
            "SPIFFE://example.org/ns/x",
            "spiffe://Example.org/ns/x",
            "spiffe://example.org/ns/payments/../admin",
            "spiffe://example.org/ns/payments/./x",
            "spiffe://example.org/ns//x",
            "spiffe://example.org/ns/x/",
            "spiffe://example.org/ns/x?y",
            "spiffe://example.org:443/ns/x",
            "spiffe:///ns/x",
            "https://example.org/a/%2e%2e/b",
            "https://example.org/a%2Fb",
            "https://example.org/a b",
            "https://example.org/a\nb",
            "anonymous",
            "://x",
            "1http://x",
        ] {
            assert!(validate_uri(uri).is_err(), "{uri:?} should be refused");
        }
    }

    #[test]
    fn hostnames_are_checked_label_by_label() {
        for ok in ["localhost", "app.example.org", "a-1.B2.example", "x"] {
            assert_eq!(validate_dns(ok), Ok(()), "{ok}");
        }
        let long_label = "a".repeat(64);
        let long_name = ["a"; 127].join(".") + ".bb";
        for bad in [
            "",
            "cn:deployer",
            "spiffe://example.org/x",
            "*.example.org",
            "anonymous.",
            "a..b",
            "-a.example",
            "a-.example",
            "a_b.example",
            "a b",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(validate_dns(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn common_names_without_control_characters_pass() {
        assert_eq!(validate_cn("deployer"), Ok(()));
        assert_eq!(validate_cn("Deploy Bot (prod)"), Ok(()));
        assert!(validate_cn("").is_err());
        assert!(validate_cn("a\u{0}b").is_err());
        assert!(validate_cn(&"x".repeat(257)).is_err());
    }

    #[test]
    fn kinds_are_told_apart_by_their_start() {
        assert_eq!(Kind::of("dns:app.example.org"), Some(Kind::Dns));
        assert_eq!(Kind::of("cn:deployer"), Some(Kind::Cn));
        assert_eq!(Kind::of("spiffe://example.org/x"), Some(Kind::Uri));
        assert_eq!(Kind::of("spiffe://"), Some(Kind::Uri));
        assert_eq!(Kind::of("billing.example.org"), None);
        assert_eq!(Kind::of("deployer"), None);
        assert_eq!(Kind::of("anonymous"), None);
        assert_eq!(Kind::of("DNS:x"), None);
    }
}
