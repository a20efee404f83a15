//! The post-quantum hybrid key exchange X25519MLKEM768 for rustls's ring
//! provider, which has X25519 but no ML-KEM.
//!
//! X25519MLKEM768 (TLS group 0x11ec, draft-ietf-tls-ecdhe-mlkem) is what
//! Chrome, Firefox, Go 1.24+, OpenSSL 3.5 and rustls's aws-lc-rs provider
//! offer first. It combines ML-KEM-768 (FIPS 203, from RustCrypto's pure
//! Rust `ml-kem`) with X25519 (ring, through rustls's own group), so the
//! session stays secret unless both are broken. Unlike the other hybrids,
//! the ML-KEM part comes first everywhere:
//!
//! - client share: ML-KEM encapsulation key (1184 bytes) ‖ X25519 key (32);
//! - server share: ML-KEM ciphertext (1088 bytes) ‖ X25519 key (32);
//! - shared secret: ML-KEM shared key (32 bytes) ‖ X25519 secret (32).
//!
//! Why not the aws-lc-rs provider, which has it built in: README, "Crypto
//! provider" (measured: start-up, binary size, build time, and a C
//! toolchain in the static build).

use rand_core::OsRng;
use rustls::crypto::ring::kx_group::X25519;
use rustls::crypto::{ActiveKeyExchange, CompletedKeyExchange, SharedSecret, SupportedKxGroup};
use rustls::{Error, NamedGroup, PeerMisbehaved, ProtocolVersion};
use zeroize::Zeroizing;

use ml_kem::kem::{Decapsulate, DecapsulationKey, Encapsulate, EncapsulationKey};
use ml_kem::{EncodedSizeUser, KemCore, MlKem768, MlKem768Params};

/// The hybrid group, for [`rustls::crypto::CryptoProvider::kx_groups`].
pub static X25519MLKEM768: &dyn SupportedKxGroup = &X25519MlKem768;

/// Bytes of an ML-KEM-768 encapsulation key.
const ENCAPSULATION_KEY_LEN: usize = 1184;
/// Bytes of an ML-KEM-768 ciphertext.
const CIPHERTEXT_LEN: usize = 1088;
/// Bytes of an X25519 public key.
const X25519_LEN: usize = 32;

#[derive(Debug)]
struct X25519MlKem768;

impl SupportedKxGroup for X25519MlKem768 {
    /// The client side: a fresh ML-KEM key pair and X25519 key.
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let x25519 = X25519.start()?;
        let (decapsulation, encapsulation) = MlKem768::generate(&mut OsRng);
        let mut pub_key = Vec::with_capacity(ENCAPSULATION_KEY_LEN + X25519_LEN);
        pub_key.extend_from_slice(&encapsulation.as_bytes());
        pub_key.extend_from_slice(x25519.pub_key());
        Ok(Box::new(ClientExchange {
            x25519,
            decapsulation,
            pub_key,
        }))
    }

    /// The server side, in one step: encapsulate to the client's ML-KEM key
    /// and agree on X25519.
    fn start_and_complete(&self, client_share: &[u8]) -> Result<CompletedKeyExchange, Error> {
        if client_share.len() != ENCAPSULATION_KEY_LEN + X25519_LEN {
            return Err(PeerMisbehaved::InvalidKeyShare.into());
        }
        let (encapsulation_key, client_x25519) = client_share.split_at(ENCAPSULATION_KEY_LEN);
        let encoded = encapsulation_key
            .try_into()
            .map_err(|_| Error::from(PeerMisbehaved::InvalidKeyShare))?;
        let encapsulation = EncapsulationKey::<MlKem768Params>::from_bytes(encoded);
        let (ciphertext, mlkem_secret) = encapsulation
            .encapsulate(&mut OsRng)
            .map_err(|()| Error::General("ML-KEM encapsulation failed".into()))?;
        let mlkem_secret = Zeroizing::new(mlkem_secret);
        let x25519 = X25519.start_and_complete(client_x25519)?;
        let mut pub_key = Vec::with_capacity(CIPHERTEXT_LEN + X25519_LEN);
        pub_key.extend_from_slice(&ciphertext);
        pub_key.extend_from_slice(&x25519.pub_key);
        Ok(CompletedKeyExchange {
            group: self.name(),
            pub_key,
            secret: combine(mlkem_secret.as_slice(), &x25519.secret),
        })
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519MLKEM768
    }

    fn usable_for_version(&self, version: ProtocolVersion) -> bool {
        version == ProtocolVersion::TLSv1_3
    }
}

/// ML-KEM's shared key, then X25519's; the copy in the `Vec` is wiped by
/// `SharedSecret` when rustls drops it.
fn combine(mlkem: &[u8], x25519: &SharedSecret) -> SharedSecret {
    let mut secret = Vec::with_capacity(mlkem.len() + x25519.secret_bytes().len());
    secret.extend_from_slice(mlkem);
    secret.extend_from_slice(x25519.secret_bytes());
    SharedSecret::from(secret)
}

/// A client's half-done exchange: its keys, until the server's share comes.
struct ClientExchange {
    x25519: Box<dyn ActiveKeyExchange>,
    decapsulation: DecapsulationKey<MlKem768Params>,
    pub_key: Vec<u8>,
}

impl ActiveKeyExchange for ClientExchange {
    fn complete(self: Box<Self>, server_share: &[u8]) -> Result<SharedSecret, Error> {
        if server_share.len() != CIPHERTEXT_LEN + X25519_LEN {
            return Err(PeerMisbehaved::InvalidKeyShare.into());
        }
        let (ciphertext, server_x25519) = server_share.split_at(CIPHERTEXT_LEN);
        let ciphertext = ciphertext
            .try_into()
            .map_err(|_| Error::from(PeerMisbehaved::InvalidKeyShare))?;
        let mlkem_secret = Zeroizing::new(
            self.decapsulation
                .decapsulate(ciphertext)
                .map_err(|()| Error::General("ML-KEM decapsulation failed".into()))?,
        );
        let x25519 = self.x25519.complete(server_x25519)?;
        Ok(combine(mlkem_secret.as_slice(), &x25519))
    }

    fn pub_key(&self) -> &[u8] {
        &self.pub_key
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519MLKEM768
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_agree_and_shares_have_the_sizes_of_the_draft() {
        let client = X25519MLKEM768.start().unwrap();
        assert_eq!(client.pub_key().len(), 1216);
        let server = X25519MLKEM768.start_and_complete(client.pub_key()).unwrap();
        assert_eq!(server.group, NamedGroup::X25519MLKEM768);
        assert_eq!(server.pub_key.len(), 1120);
        let client_secret = client.complete(&server.pub_key).unwrap();
        assert_eq!(client_secret.secret_bytes().len(), 64);
        assert_eq!(client_secret.secret_bytes(), server.secret.secret_bytes());
    }

    #[test]
    fn shares_of_the_wrong_size_are_refused() {
        assert!(X25519MLKEM768.start_and_complete(&[0u8; 32]).is_err());
        assert!(X25519MLKEM768.start_and_complete(&[0u8; 1217]).is_err());
        let client = X25519MLKEM768.start().unwrap();
        assert!(client.complete(&[0u8; 1119]).is_err());
    }

    #[test]
    fn a_tampered_ciphertext_gives_a_different_secret() {
        let client = X25519MLKEM768.start().unwrap();
        let server = X25519MLKEM768.start_and_complete(client.pub_key()).unwrap();
        let mut share = server.pub_key.clone();
        share[7] ^= 1;
        let secret = client.complete(&share).unwrap();
        assert_ne!(secret.secret_bytes(), server.secret.secret_bytes());
    }
}
