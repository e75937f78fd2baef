//! The message envelope (version 2): compact, encrypted, and signed by the sender's stream key.
//!
//! ```text
//! off     len  field
//!   0       1  version (2)
//!   1       8  stream tag (names group, sender, epoch, sender key and signing key; see StreamTag)
//!   9       8  sequence number (u64 BE), from 0 under each sender key
//!  17       n  ChaCha20 ciphertext of the n-byte plaintext
//!  17+n    16  Poly1305 tag
//!  33+n    64  Ed25519 signature by the stream's signing key
//! ```
//!
//! Overhead: [`OVERHEAD`] = 97 bytes. The ciphertext length is the payload length minus 97.
//! ChaCha20-Poly1305 (RFC 8439) under the stream's message key, nonce = 4 zero bytes || seq (u64
//! BE): a message key belongs to one sender key, and a sender never repeats a sequence number
//! under one key. Associated data: `"anchormq/v2 envelope\0" || topic length (u16 BE) || topic ||
//! bytes 0..17`. Signature (RFC 8032 Ed25519) over `"anchormq/v2 envelope-sig\0" || topic length
//! (u16 BE) || topic || bytes 0..33+n`. The topic is not carried: the opener supplies the topic the
//! message arrived on.

use std::fmt;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::DecodeError;
use crate::sender_key::StreamId;

/// Envelope format version.
pub const VERSION: u8 = 2;
/// Bytes before the ciphertext: version, stream tag, sequence number.
pub const HEADER_LEN: usize = 1 + 8 + 8;
/// Fixed overhead over the plaintext: header, Poly1305 tag, Ed25519 signature.
pub const OVERHEAD: usize = HEADER_LEN + 16 + 64;
/// Largest plaintext sealed (MQTT's payload limit is 256 MiB).
pub const MAX_PLAINTEXT_LEN: usize = 256 * 1024 * 1024 - OVERHEAD;

const AAD_DOMAIN: &[u8] = b"anchormq/v2 envelope\0";
const SIG_DOMAIN: &[u8] = b"anchormq/v2 envelope-sig\0";
const TAG_DOMAIN: &[u8] = b"anchormq/v2 stream-tag\0";
/// The encoding of the Ed25519 identity point.
const IDENTITY: [u8; 32] = {
    let mut p = [0u8; 32];
    p[0] = 1;
    p
};

/// The 8 bytes that name a stream in every envelope: the first 8 bytes of
/// SHA-256(`"anchormq/v2 stream-tag\0"` || group || sender || epoch (u64 BE) || key ID || signing
/// key). Readers compute it from the sender-key note, so a sender cannot choose it: another
/// member's note naming the same tag would take a 2^64 search.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamTag(pub [u8; 8]);

impl StreamTag {
    /// The tag of a stream announced with `key_id` and `signing_key`.
    pub fn derive(stream: &StreamId, key_id: &[u8; 32], signing_key: &VerifyingKey) -> Self {
        let digest = Sha256::new()
            .chain_update(TAG_DOMAIN)
            .chain_update(stream.context())
            .chain_update(key_id)
            .chain_update(signing_key.as_bytes())
            .finalize();
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&digest[..8]);
        Self(tag)
    }
}

impl fmt::Display for StreamTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for StreamTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamTag({self})")
    }
}

/// A decoded envelope (nothing verified yet), borrowing the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The stream.
    pub tag: StreamTag,
    /// Sequence number under the stream's sender key.
    pub seq: u64,
    bytes: &'a [u8],
}

impl<'a> Envelope<'a> {
    /// Decodes an envelope; refuses other versions (naming the version) and short payloads.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let version = *bytes
            .first()
            .ok_or(DecodeError::malformed("envelope.version"))?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion { version });
        }
        if bytes.len() < OVERHEAD {
            return Err(DecodeError::malformed("envelope length"));
        }
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&bytes[1..9]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&bytes[9..17]);
        Ok(Self {
            tag: StreamTag(tag),
            seq: u64::from_be_bytes(seq),
            bytes,
        })
    }

    /// The whole envelope.
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Plaintext length.
    pub const fn plaintext_len(&self) -> usize {
        self.bytes.len() - OVERHEAD
    }

    fn signature(&self) -> Signature {
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&self.bytes[self.bytes.len() - 64..]);
        Signature::from_bytes(&sig)
    }

    /// The signed message: domain, topic, and every byte before the signature.
    pub(crate) fn signed_message(&self, topic: &str) -> Vec<u8> {
        signed_message(topic, &self.bytes[..self.bytes.len() - 64])
    }

    /// Checks the stream key's signature, binding `topic`: RFC 8032 with canonical S, the
    /// cofactorless equation, and R not the identity. With the torsion-free keys sender-key notes
    /// carry, that accepts exactly what `verify_strict` accepts, without decompressing R.
    pub fn verify(&self, topic: &str, key: &VerifyingKey) -> bool {
        let signature = self.signature();
        *signature.r_bytes() != IDENTITY
            && key
                .verify(&self.signed_message(topic), &signature)
                .is_ok()
    }

    /// Decrypts with the stream's message key; `None` if authentication fails.
    pub(crate) fn decrypt(&self, topic: &str, message_key: &[u8; 32]) -> Option<Vec<u8>> {
        let end = self.bytes.len() - 64 - 16;
        let mut buf = self.bytes[HEADER_LEN..end].to_vec();
        let tag = Tag::from_slice(&self.bytes[end..end + 16]);
        ChaCha20Poly1305::new(message_key.into())
            .decrypt_in_place_detached(
                &nonce(self.seq),
                &aad(topic, &self.bytes[..HEADER_LEN]),
                &mut buf,
                tag,
            )
            .ok()?;
        Some(buf)
    }
}

fn signed_message(topic: &str, signed: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIG_DOMAIN.len() + 2 + topic.len() + signed.len());
    msg.extend_from_slice(SIG_DOMAIN);
    msg.extend_from_slice(&topic_len(topic));
    msg.extend_from_slice(topic.as_bytes());
    msg.extend_from_slice(signed);
    msg
}

fn topic_len(topic: &str) -> [u8; 2] {
    // topics are validated (at most 65535 bytes) before sealing; longer never verifies
    (topic.len().min(u16::MAX as usize) as u16).to_be_bytes()
}

fn nonce(seq: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&seq.to_be_bytes());
    n.into()
}

fn aad(topic: &str, header: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + 2 + topic.len() + HEADER_LEN);
    aad.extend_from_slice(AAD_DOMAIN);
    aad.extend_from_slice(&topic_len(topic));
    aad.extend_from_slice(topic.as_bytes());
    aad.extend_from_slice(header);
    aad
}

/// Everything `seal` needs besides the topic and plaintext.
pub(crate) struct SealParams<'a> {
    pub(crate) tag: StreamTag,
    pub(crate) seq: u64,
    pub(crate) message_key: &'a [u8; 32],
    pub(crate) signer: &'a SigningKey,
}

/// Encrypts and signs; the topic must already be validated and the plaintext within
/// [`MAX_PLAINTEXT_LEN`].
pub(crate) fn seal(p: &SealParams<'_>, topic: &str, plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.push(VERSION);
    out.extend_from_slice(&p.tag.0);
    out.extend_from_slice(&p.seq.to_be_bytes());
    out.extend_from_slice(plaintext);
    let aad = aad(topic, &out[..HEADER_LEN]);
    let tag = ChaCha20Poly1305::new(p.message_key.into())
        .encrypt_in_place_detached(&nonce(p.seq), &aad, &mut out[HEADER_LEN..])
        // only fails past ChaCha20's 256 GiB per nonce, far above MAX_PLAINTEXT_LEN
        .unwrap_or_default();
    out.extend_from_slice(&tag);
    let signature = p.signer.sign(&signed_message(topic, &out));
    out.extend_from_slice(&signature.to_bytes());
    out
}
