//! Certificate generation for `tmpvault dev` and for the tests: a private CA
//! and the server and client certificates it signs, all ECDSA P-256, made at
//! run time so that no private key is ever committed.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

/// Why a certificate could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused the parameters.
    #[error("generating {what}: {source}")]
    Generate {
        /// Which certificate.
        what: &'static str,
        /// rcgen's reason.
        source: rcgen::Error,
    },
    /// A file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// How a client certificate names its holder.
#[derive(Clone, Debug)]
pub enum ClientName {
    /// Subject common name only: identity `cn:<name>`.
    CommonName(String),
    /// A URI SAN such as a SPIFFE ID (plus a CN).
    Uri(String),
    /// A DNS SAN (plus a CN).
    Dns(String),
}

/// A certificate and its private key, PEM-encoded.
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The private key; wiped on drop.
    pub key_pem: Zeroizing<String>,
    /// The certificate's serial number, as lowercase hex.
    pub serial_hex: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("serial_hex", &self.serial_hex)
            .field("key_pem", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// A private certificate authority.
pub struct Authority {
    params: CertificateParams,
    key: KeyPair,
    cert_pem: String,
}

fn generate<T>(what: &'static str, result: Result<T, rcgen::Error>) -> Result<T, PkiError> {
    result.map_err(|source| PkiError::Generate { what, source })
}

fn random_serial() -> (SerialNumber, String) {
    let mut bytes = [0u8; 16];
    // getrandom only fails without an OS entropy source; a fixed serial is
    // harmless for these certificates, so fall back instead of failing.
    let _ = getrandom::fill(&mut bytes);
    bytes[0] &= 0x7f; // a positive DER integer
    let hex = bytes.iter().map(|b| format!("{b:02x}")).collect();
    (SerialNumber::from_slice(&bytes), hex)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// Validity window of generated certificates.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    /// Not valid before.
    pub not_before: OffsetDateTime,
    /// Not valid after.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (clock skew) for `days` days.
    pub fn days(days: i64) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(days),
        }
    }

    /// A window that ended a day ago: for testing expired certificates.
    pub fn expired() -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::days(30),
            not_after: now - Duration::days(1),
        }
    }
}

impl Authority {
    /// A new self-signed CA valid for 30 days.
    pub fn new(common_name: &str) -> Result<Authority, PkiError> {
        let key = generate("the CA key", KeyPair::generate())?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let validity = Validity::days(30);
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.serial_number = Some(random_serial().0);
        let cert = generate("the CA certificate", params.self_signed(&key))?;
        Ok(Authority {
            cert_pem: cert.pem(),
            params,
            key,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    fn issue(
        &self,
        what: &'static str,
        mut params: CertificateParams,
        validity: Validity,
    ) -> Result<Issued, PkiError> {
        let key = generate(what, KeyPair::generate())?;
        let (serial, serial_hex) = random_serial();
        params.serial_number = Some(serial);
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = generate(what, params.signed_by(&key, &issuer))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
            serial_hex,
        })
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn issue_server(&self, names: &[&str]) -> Result<Issued, PkiError> {
        let owned: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = generate("the server certificate", CertificateParams::new(owned))?;
        params.distinguished_name = name(names.first().copied().unwrap_or("tmpvault"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue("the server certificate", params, Validity::days(30))
    }

    /// A client certificate valid for 30 days.
    pub fn issue_client(&self, client: &ClientName) -> Result<Issued, PkiError> {
        self.issue_client_with_validity(client, Validity::days(30))
    }

    /// A client certificate with an explicit validity window.
    pub fn issue_client_with_validity(
        &self,
        client: &ClientName,
        validity: Validity,
    ) -> Result<Issued, PkiError> {
        let what = "the client certificate";
        let mut params = CertificateParams::default();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        match client {
            ClientName::CommonName(cn) => params.distinguished_name = name(cn),
            ClientName::Uri(uri) => {
                params.distinguished_name = name("tmpvault client");
                let uri = generate(what, uri.clone().try_into())?;
                params.subject_alt_names = vec![SanType::URI(uri)];
            }
            ClientName::Dns(dns) => {
                params.distinguished_name = name(dns);
                let dns = generate(what, dns.clone().try_into())?;
                params.subject_alt_names = vec![SanType::DnsName(dns)];
            }
        }
        self.issue(what, params, validity)
    }

    /// A client certificate from `params` exactly as given (its subject,
    /// SANs and EKU), valid for 30 days: for tests that need unusual
    /// certificates (no EKU, several URI SANs, a DNS SAN that reads like
    /// another kind of identity).
    pub fn issue_client_params(&self, params: CertificateParams) -> Result<Issued, PkiError> {
        self.issue("the client certificate", params, Validity::days(30))
    }
}

/// Writes `contents` to a new file with mode 0600; refuses to overwrite.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    let error = |source| PkiError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(error)?;
    file.write_all(contents).map_err(error)?;
    file.sync_all().map_err(error)
}

/// A CA, a server certificate for localhost and a client certificate,
/// written as PEM files into a directory.
#[derive(Clone, Debug)]
pub struct DevPki {
    /// The CA certificate (trust it as a client; it also signs clients).
    pub ca_cert: std::path::PathBuf,
    /// The server certificate.
    pub server_cert: std::path::PathBuf,
    /// The server key.
    pub server_key: std::path::PathBuf,
    /// The client certificate.
    pub client_cert: std::path::PathBuf,
    /// The client key.
    pub client_key: std::path::PathBuf,
}

impl DevPki {
    /// Generates the files in `dir` (which must exist and be private).
    pub fn generate(dir: &Path, client: &ClientName) -> Result<DevPki, PkiError> {
        let ca = Authority::new("tmpvault dev CA")?;
        let server = ca.issue_server(&["localhost", "127.0.0.1", "::1"])?;
        let client = ca.issue_client(client)?;
        let pki = DevPki {
            ca_cert: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
        };
        write_private(&pki.ca_cert, ca.cert_pem().as_bytes())?;
        write_private(&pki.server_cert, server.cert_pem.as_bytes())?;
        write_private(&pki.server_key, server.key_pem.as_bytes())?;
        write_private(&pki.client_cert, client.cert_pem.as_bytes())?;
        write_private(&pki.client_key, client.key_pem.as_bytes())?;
        Ok(pki)
    }
}
