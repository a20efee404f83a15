//! Who a client is, from its verified certificate: the first URI SAN (a
//! SPIFFE ID), else the first DNS SAN, else `cn:<common name>`.
//!
//! The identity is computed once per connection, after the handshake has
//! verified the chain, and travels with every request on that connection.

use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A client identity such as `spiffe://example.org/ns/app/sa/api`,
/// `app.example.org` or `cn:deployer`.
pub type Identity = Arc<str>;

/// The identity of a connection without a usable name in its certificate.
pub const ANONYMOUS: &str = "anonymous";

/// Derives the identity from a verified leaf certificate.
pub fn from_certificate(cert: &CertificateDer<'_>) -> Identity {
    let Ok((_, parsed)) = X509Certificate::from_der(cert.as_ref()) else {
        return Arc::from(ANONYMOUS);
    };
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        let names = &san.value.general_names;
        let uri = names.iter().find_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        });
        let dns = names.iter().find_map(|name| match name {
            GeneralName::DNSName(dns) => Some(*dns),
            _ => None,
        });
        if let Some(name) = uri.or(dns) {
            return Arc::from(name);
        }
    }
    let common_name = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(|cn| format!("cn:{cn}"));
    common_name.map_or_else(|| Arc::from(ANONYMOUS), Arc::from)
}
