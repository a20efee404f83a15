//! TLS configuration: rustls with the ring provider, TLS 1.3 only, client
//! certificates required, verified against the client CA bundle, and held
//! to what webpki leaves out ([`ClientVerifier`]: the clientAuth EKU, and a
//! valid typed identity).
//!
//! Key exchange: X25519MLKEM768 first ([`crate::tls::kx`], post-quantum hybrid),
//! then ring's X25519, P-256 and P-384. Why ring and not aws-lc-rs, which
//! has the hybrid built in: README, "Crypto provider".
//!
//! Why TLS 1.3 only: every client we target (curl, Go, Rust, Python, Java
//! 11+) speaks it, and it removes every non-AEAD and non-forward-secret
//! suite from consideration.

pub mod identity;
pub mod kx;
pub mod pki;
pub mod trusted;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};
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

/// The crypto provider every config in tmpvault uses: ring, with the
/// post-quantum hybrid X25519MLKEM768 preferred over ring's own groups.
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups.insert(0, crate::tls::kx::X25519MLKEM768);
    Arc::new(provider)
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

/// Verifies client certificates: webpki's chain check against the client
/// CA bundle, then what webpki leaves out. webpki accepts a leaf with no
/// Extended Key Usage at all (RFC 5280 allows it), so a CA that also signs
/// server or code-signing certificates would let those in as clients; with
/// `require_client_auth_eku` the leaf must name clientAuth. And the leaf
/// must name the client validly ([`identity::from_certificate`]), so a
/// forged-looking SAN is refused in the handshake, not at some later
/// request.
#[derive(Debug)]
pub struct ClientVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
    require_client_auth_eku: bool,
}

/// Why a leaf that chains to the CA is refused anyway.
#[derive(Debug, thiserror::Error)]
enum LeafError {
    #[error("the client certificate has no Extended Key Usage extension; clientAuth is required (--client-eku-required)")]
    NoExtendedKeyUsage,
    #[error("the client certificate's Extended Key Usage does not include clientAuth (--client-eku-required)")]
    NoClientAuth,
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
}

impl ClientVerifier {
    /// Whether a chain (leaf first) still passes, at `now`: for connections
    /// made before a client CA reload.
    pub fn verifies(&self, chain: &[CertificateDer<'_>]) -> bool {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return false;
        };
        self.verify_client_cert(leaf, intermediates, UnixTime::now())
            .is_ok()
    }

    fn check_leaf(&self, leaf: &CertificateDer<'_>) -> Result<(), LeafError> {
        if self.require_client_auth_eku {
            let (_, parsed) = X509Certificate::from_der(leaf.as_ref())
                .map_err(|error| identity::IdentityError::Unparsable(error.to_string()))?;
            match parsed.extended_key_usage() {
                Ok(Some(usage)) if usage.value.client_auth => {}
                Ok(Some(_)) => return Err(LeafError::NoClientAuth),
                Ok(None) => return Err(LeafError::NoExtendedKeyUsage),
                Err(error) => {
                    return Err(identity::IdentityError::Unparsable(error.to_string()).into())
                }
            }
        }
        identity::from_certificate(leaf)?;
        Ok(())
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.webpki.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.webpki.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .webpki
            .verify_client_cert(end_entity, intermediates, now)?;
        self.check_leaf(end_entity).map_err(|error| {
            rustls::Error::InvalidCertificate(match error {
                LeafError::NoExtendedKeyUsage | LeafError::NoClientAuth => {
                    // rustls's own variant (alert unsupported_certificate),
                    // with our reason beside it in the log.
                    tracing::debug!(%error, "client certificate refused");
                    CertificateError::InvalidPurpose
                }
                LeafError::Identity(_) => CertificateError::Other(OtherError(Arc::new(error))),
            })
        })?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// A server TLS configuration and the client verifier inside it, kept so
/// that open connections can be checked again after a client CA reload.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// What new handshakes use.
    pub config: Arc<ServerConfig>,
    /// The client certificate verifier `config` was built with.
    pub client_verifier: Arc<ClientVerifier>,
}

/// Builds the server config: TLS 1.3, ALPN `h2` and `http/1.1`, client
/// certificates required and checked by [`ClientVerifier`], clientAuth EKU
/// required.
pub fn server_config(files: &ServerTlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    server_tls(files, true).map(|tls| tls.config)
}

/// Builds the server config and its client verifier, with the clientAuth
/// EKU required or not (`--client-eku-required`).
pub fn server_tls(
    files: &ServerTlsFiles,
    require_client_auth_eku: bool,
) -> Result<ServerTls, TlsError> {
    let provider = provider();
    let certs = load_certs("server certificate", &files.cert)?;
    let key = load_key("server private key", &files.key)?;
    let roots = root_store(&files.client_ca)?;
    let webpki =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .map_err(|source| TlsError::Verifier {
                path: files.client_ca.clone(),
                source,
            })?;
    let client_verifier = Arc::new(ClientVerifier {
        webpki,
        require_client_auth_eku,
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| TlsError::Rustls {
            step: "selecting TLS 1.3".into(),
            source,
        })?
        .with_client_cert_verifier(Arc::clone(&client_verifier) as Arc<dyn ClientCertVerifier>)
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
    Ok(ServerTls {
        config: Arc::new(config),
        client_verifier,
    })
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
