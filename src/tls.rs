//! TLS configuration: rustls with the ring provider, TLS 1.3 only, client
//! certificates required and verified against the client CA bundle.
//!
//! Why ring and not aws-lc-rs: aws-lc-rs brings post-quantum hybrid key
//! exchange (X25519MLKEM768) but its first random-number use costs about
//! 45 ms of entropy seeding, which would blow the 20 ms start-to-first-200
//! budget of a sidecar; ring starts in about 6 ms. Both sides of every
//! connection here are ours (sidecar and app in one pod), so the key
//! exchange is X25519 until ring gains ML-KEM. The README records this.
//!
//! Why TLS 1.3 only: every client we target (curl, Go, Rust, Python, Java
//! 11+) speaks it, and it removes every non-AEAD and non-forward-secret
//! suite from consideration.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

/// Why a TLS configuration could not be built. Each variant names the step.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {what} {path}: {source}")]
    Read {
        /// What the file is for.
        what: &'static str,
        /// Where it is.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// A file holds no usable PEM section of the expected type.
    #[error("reading {what} {path}: {reason}")]
    Pem {
        /// What the file is for.
        what: &'static str,
        /// Where it is.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the combination (key does not match the certificate,
    /// CA unusable, ...).
    #[error("{step}: {source}")]
    Rustls {
        /// What was being built, naming the files.
        step: String,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// The client verifier could not be built from the CA bundle.
    #[error("building the client certificate verifier from {path}: {source}")]
    Verifier {
        /// The CA bundle.
        path: PathBuf,
        /// Why.
        source: rustls::server::VerifierBuilderError,
    },
}

/// The crypto provider every config in tmpvault uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Zeroizing<Vec<u8>>, TlsError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|source| TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        })
}

/// Loads every certificate in a PEM file; at least one is required.
pub fn load_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Pem {
            what,
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            path: path.to_owned(),
            reason: "no certificates found".into(),
        });
    }
    Ok(certs)
}

/// Loads the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(what, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| TlsError::Pem {
        what,
        path: path.to_owned(),
        reason: match error {
            rustls_pki_types::pem::Error::NoItemsFound => "no private key found".into(),
            other => other.to_string(),
        },
    })
}

fn root_store(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs("CA bundle", path)? {
        roots.add(cert).map_err(|source| TlsError::Rustls {
            step: format!(
                "adding a CA certificate from {} to the trust store",
                path.display()
            ),
            source,
        })?;
    }
    Ok(roots)
}

/// Where the server's TLS material lives.
#[derive(Clone, Debug)]
pub struct ServerTlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM bundle of the CAs that sign client certificates.
    pub client_ca: PathBuf,
}

/// Builds the server config: TLS 1.3, ALPN `h2` and `http/1.1`, client
/// certificates required.
pub fn server_config(files: &ServerTlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let certs = load_certs("server certificate", &files.cert)?;
    let key = load_key("server private key", &files.key)?;
    let roots = root_store(&files.client_ca)?;
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .map_err(|source| TlsError::Verifier {
                path: files.client_ca.clone(),
                source,
            })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| TlsError::Rustls {
            step: "selecting TLS 1.3".into(),
            source,
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::Rustls {
            step: format!(
                "pairing the server key {} with the certificate {} (does the key match the certificate?)",
                files.key.display(),
                files.cert.display()
            ),
            source,
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Where a client's TLS material lives.
#[derive(Clone, Debug)]
pub struct ClientTlsFiles {
    /// PEM bundle of the CA that signed the server's certificate.
    pub ca: PathBuf,
    /// PEM client certificate chain.
    pub cert: PathBuf,
    /// PEM client private key.
    pub key: PathBuf,
}

/// Builds a client config that trusts `files.ca` and presents the client
/// certificate. ALPN is left to the caller (hyper-rustls sets it).
pub fn client_config(files: &ClientTlsFiles) -> Result<ClientConfig, TlsError> {
    let roots = root_store(&files.ca)?;
    let certs = load_certs("client certificate", &files.cert)?;
    let key = load_key("client private key", &files.key)?;
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| TlsError::Rustls {
            step: "selecting TLS 1.3".into(),
            source,
        })?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|source| TlsError::Rustls {
            step: format!(
                "pairing the client key {} with the certificate {} (does the key match the certificate?)",
                files.key.display(),
                files.cert.display()
            ),
            source,
        })
}
