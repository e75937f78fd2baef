//! Node keys: secp256k1 secret keys (with a key file format), 33-byte
//! compressed public keys, and low-S ECDSA over SHA-256 with domain separation.
//!
//! Key file format (`anchormq-node-key-v1`), UTF-8 text:
//!
//! ```text
//! anchormq-node-key-v1
//! <64 lowercase or uppercase hex digits of the secret scalar>
//! ```
//!
//! with an optional final newline and nothing else. The parser never echoes
//! the file content in an error.

use std::fmt;

use k256::ecdsa::signature::{DigestSigner, DigestVerifier};
use k256::ecdsa::{SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{KeyError, KeyFileError};

/// First line of a node key file.
pub const KEY_FILE_HEADER: &str = "anchormq-node-key-v1";

/// A node's (or the bridge's) secp256k1 secret key.
///
/// The scalar is wiped on drop (k256 zeroizes `SigningKey`); `Debug` only shows
/// the public key.
#[derive(Clone)]
pub struct NodeSecretKey {
    signing: SigningKey,
}

impl NodeSecretKey {
    /// A fresh key from the caller's randomness.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        Self {
            signing: SigningKey::random(rng),
        }
    }

    /// From the 32-byte big-endian scalar.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        SigningKey::from_slice(bytes)
            .map(|signing| Self { signing })
            .map_err(|_| KeyError::InvalidSecretKey)
    }

    /// The 32-byte scalar, in a buffer that is wiped when dropped.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes().into())
    }

    /// The matching public key.
    pub fn public_key(&self) -> NodePublicKey {
        NodePublicKey::from_verifying(*self.signing.verifying_key())
    }

    /// Reads a key file (see the module docs).
    pub fn from_key_file(content: &[u8]) -> Result<Self, KeyFileError> {
        let rest = content
            .strip_prefix(KEY_FILE_HEADER.as_bytes())
            .and_then(|r| r.strip_prefix(b"\n"))
            .ok_or(KeyFileError::WrongHeader)?;
        if rest.len() < 64 {
            return Err(KeyFileError::BadSecretLine);
        }
        let (hex_line, tail) = rest.split_at(64);
        if !(tail.is_empty() || tail == b"\n") {
            return if tail.first() == Some(&b'\n') {
                Err(KeyFileError::TrailingContent)
            } else {
                Err(KeyFileError::BadSecretLine)
            };
        }
        let mut secret = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex_line, secret.as_mut()).map_err(|_| KeyFileError::BadSecretLine)?;
        Self::from_bytes(&secret).map_err(KeyFileError::InvalidKey)
    }

    /// Writes the key file text (header, lowercase hex, final newline).
    pub fn to_key_file(&self) -> Zeroizing<String> {
        let secret = self.to_bytes();
        let hex_secret = Zeroizing::new(hex::encode(secret.as_ref()));
        Zeroizing::new(format!("{KEY_FILE_HEADER}\n{}\n", hex_secret.as_str()))
    }

    /// Signs SHA-256(domain || parts...) with RFC 6979 nonces, low-S.
    pub(crate) fn sign_parts(&self, domain: &[u8], parts: &[&[u8]]) -> Signature {
        let digest = digest_parts(domain, parts);
        let sig: k256::ecdsa::Signature = self.signing.sign_digest(digest);
        let sig = sig.normalize_s().unwrap_or(sig);
        Signature(sig.to_bytes().into())
    }

    /// ECDH via the `ecies` crate's curve code: the x coordinate of `self * peer`.
    /// Exposed for the Wycheproof ECDH checks; protocols use [`crate::sender_key`].
    #[doc(hidden)]
    pub fn ecdh_x(&self, peer: &NodePublicKey) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        let secret = self.to_bytes();
        let sk = ecies::SecretKey::parse_slice(secret.as_ref())
            .map_err(|_| KeyError::InvalidSecretKey)?;
        let mut point = peer.to_ecies()?;
        point
            .tweak_mul_assign(&sk)
            .map_err(|_| KeyError::InvalidPublicKey)?;
        let compressed = point.serialize_compressed();
        let mut x = Zeroizing::new([0u8; 32]);
        x.copy_from_slice(&compressed[1..]);
        Ok(x)
    }
}

impl fmt::Debug for NodeSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeSecretKey")
            .field("public", &self.public_key())
            .field("secret", &"<redacted>")
            .finish()
    }
}

fn digest_parts(domain: &[u8], parts: &[&[u8]]) -> Sha256 {
    let mut h = Sha256::new();
    h.update(domain);
    for p in parts {
        h.update(p);
    }
    h
}

/// A secp256k1 public key, validated (on the curve, not the identity).
/// Its wire form is the 33-byte SEC1 compressed point.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NodePublicKey {
    compressed: [u8; 33],
    verifying: VerifyingKey,
}

impl NodePublicKey {
    fn from_verifying(verifying: VerifyingKey) -> Self {
        let point = verifying.to_encoded_point(true);
        let mut compressed = [0u8; 33];
        compressed.copy_from_slice(point.as_bytes());
        Self {
            compressed,
            verifying,
        }
    }

    /// From the 33-byte compressed form (the only form on the wire and on chain).
    pub fn from_compressed(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() != 33 {
            return Err(KeyError::InvalidPublicKey);
        }
        Self::from_sec1_bytes(bytes)
    }

    fn sec1_shape_ok(bytes: &[u8]) -> bool {
        // k256 also accepts the 0x05 "compact" tag and the identity; SEC1 keys here are
        // only 0x02/0x03 + x, or 0x04 + x + y
        matches!(
            (bytes.len(), bytes.first()),
            (33, Some(2 | 3)) | (65, Some(4))
        )
    }

    /// From any SEC1 encoding (33-byte compressed or 65-byte uncompressed).
    /// Rejects points off the curve, the identity and bad prefixes.
    pub fn from_sec1_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if !Self::sec1_shape_ok(bytes) {
            return Err(KeyError::InvalidPublicKey);
        }
        VerifyingKey::from_sec1_bytes(bytes)
            .map(Self::from_verifying)
            .map_err(|_| KeyError::InvalidPublicKey)
    }

    /// The 33-byte compressed form.
    pub const fn to_bytes(&self) -> [u8; 33] {
        self.compressed
    }

    /// The 65-byte uncompressed SEC1 form.
    pub fn to_uncompressed(&self) -> [u8; 65] {
        let point = self.verifying.to_encoded_point(false);
        let mut out = [0u8; 65];
        out.copy_from_slice(point.as_bytes());
        out
    }

    pub(crate) fn to_ecies(self) -> Result<ecies::PublicKey, KeyError> {
        ecies::PublicKey::parse_slice(&self.compressed, None)
            .map_err(|_| KeyError::InvalidPublicKey)
    }

    /// Verifies a signature over SHA-256(domain || parts...). High-S is refused.
    pub(crate) fn verify_parts(
        &self,
        domain: &[u8],
        parts: &[&[u8]],
        sig: &Signature,
    ) -> Result<(), KeyError> {
        self.verify_digest(digest_parts(domain, parts), sig)
    }

    /// Verifies an ECDSA signature over the SHA-256 hash of `msg`, with anchormq's
    /// policy: 64-byte r||s, 0 < r,s < n, and low S. Used by the Wycheproof checks.
    pub fn verify_sha256(&self, msg: &[u8], sig: &[u8]) -> Result<(), KeyError> {
        let sig = Signature::from_slice(sig)?;
        self.verify_digest(Sha256::new_with_prefix(msg), &sig)
    }

    fn verify_digest(&self, digest: Sha256, sig: &Signature) -> Result<(), KeyError> {
        let parsed = sig.to_k256()?;
        self.verifying
            .verify_digest(digest, &parsed)
            .map_err(|_| KeyError::BadSignature)
    }
}

impl fmt::Debug for NodePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodePublicKey(0x{})", hex::encode(self.compressed))
    }
}

impl fmt::Display for NodePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.compressed))
    }
}

/// A 64-byte ECDSA signature `r || s` (big-endian), as carried on the wire.
///
/// Holding one says nothing about validity: [`Signature::from_slice`] checks the
/// ranges and the low-S rule, verification happens against a key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub(crate) [u8; 64]);

impl Signature {
    /// Length on the wire.
    pub const LEN: usize = 64;

    /// Parses `r || s`, refusing out-of-range scalars and high S.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let arr: [u8; 64] = bytes.try_into().map_err(|_| KeyError::MalformedSignature)?;
        let sig = Self(arr);
        sig.to_k256()?;
        Ok(sig)
    }

    /// The raw bytes.
    pub const fn to_bytes(&self) -> [u8; 64] {
        self.0
    }

    fn to_k256(self) -> Result<k256::ecdsa::Signature, KeyError> {
        let sig = k256::ecdsa::Signature::from_slice(&self.0)
            .map_err(|_| KeyError::MalformedSignature)?;
        if sig.normalize_s().is_some() {
            return Err(KeyError::HighS);
        }
        Ok(sig)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature(0x{})", hex::encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn key_file_round_trip_and_errors() {
        let key = NodeSecretKey::generate(&mut OsRng);
        let text = key.to_key_file();
        let back = NodeSecretKey::from_key_file(text.as_bytes()).expect("round trip");
        assert_eq!(back.public_key(), key.public_key());
        let no_newline = text.trim_end();
        assert!(NodeSecretKey::from_key_file(no_newline.as_bytes()).is_ok());
        assert_eq!(
            NodeSecretKey::from_key_file(b"-----BEGIN EC PRIVATE KEY-----\n").err(),
            Some(KeyFileError::WrongHeader)
        );
        let short = format!("{KEY_FILE_HEADER}\nabcd\n");
        assert_eq!(
            NodeSecretKey::from_key_file(short.as_bytes()).err(),
            Some(KeyFileError::BadSecretLine)
        );
        let extra = format!("{}more\n", text.as_str());
        assert_eq!(
            NodeSecretKey::from_key_file(extra.as_bytes()).err(),
            Some(KeyFileError::TrailingContent)
        );
        let zero = format!("{KEY_FILE_HEADER}\n{}\n", "0".repeat(64));
        assert_eq!(
            NodeSecretKey::from_key_file(zero.as_bytes()).err(),
            Some(KeyFileError::InvalidKey(KeyError::InvalidSecretKey))
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = NodeSecretKey::from_bytes(&[7u8; 32]).expect("valid");
        let shown = format!("{key:?}");
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains(&hex::encode([7u8; 32])));
        // and an error about a bad key file never contains its content
        let secretish = format!("{KEY_FILE_HEADER}\n{}zz\n", "07".repeat(31));
        let err = NodeSecretKey::from_key_file(secretish.as_bytes()).expect_err("bad hex");
        assert!(!err.to_string().contains("0707"));
    }

    #[test]
    fn sign_verify_domain_separated_and_low_s() {
        let key = NodeSecretKey::generate(&mut OsRng);
        let public = key.public_key();
        let sig = key.sign_parts(b"domain-a", &[b"hello"]);
        assert!(
            public
                .verify_parts(b"domain-a", &[b"hel", b"lo"], &sig)
                .is_ok()
        );
        assert_eq!(
            public.verify_parts(b"domain-b", &[b"hello"], &sig),
            Err(KeyError::BadSignature)
        );
        // the high-S twin of a valid signature verifies mathematically but is refused
        let k = k256::ecdsa::Signature::from_slice(&sig.0).expect("valid");
        let (r, s) = k.split_scalars();
        let high = k256::ecdsa::Signature::from_scalars(r, -*s).expect("valid scalars");
        let high = Signature(high.to_bytes().into());
        assert_eq!(
            public.verify_parts(b"domain-a", &[b"hello"], &high),
            Err(KeyError::HighS)
        );
        assert_eq!(Signature::from_slice(&high.0), Err(KeyError::HighS));
    }

    #[test]
    fn public_key_parsing_rejects_junk() {
        assert_eq!(
            NodePublicKey::from_compressed(&[0u8; 33]),
            Err(KeyError::InvalidPublicKey)
        );
        assert_eq!(
            NodePublicKey::from_compressed(&[2u8; 32]),
            Err(KeyError::InvalidPublicKey)
        );
        let key = NodeSecretKey::generate(&mut OsRng).public_key();
        assert_eq!(
            NodePublicKey::from_sec1_bytes(&key.to_uncompressed()),
            Ok(key)
        );
        assert_eq!(
            NodePublicKey::from_compressed(&key.to_uncompressed()),
            Err(KeyError::InvalidPublicKey)
        );
    }
}
