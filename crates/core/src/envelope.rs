//! The message envelope (version 2): compact, encrypted, and signed by the sender's stream key,
//! one message at a time or once per batch.
//!
//! ```text
//! off     len  field
//!   0       1  kind: 2 signed, 3 batched (signed later), 4 batch end (signs the batch)
//!   1       8  stream tag (names group, sender, epoch, sender key and signing key; see StreamTag)
//!   9       8  sequence number (u64 BE), from 0 under each sender key
//!  17       n  ChaCha20 ciphertext of the n-byte plaintext
//!  17+n    16  Poly1305 tag
//!  33+n     1  kind 4 only: count c of the batched envelopes before it (1..=255)
//!   ...    64  kinds 2 and 4: Ed25519 signature by the stream's signing key
//! ```
//!
//! Overhead: 97 bytes signed, 33 batched, 98 batch end. ChaCha20-Poly1305 (RFC 8439) under the
//! stream's message key, nonce = 4 zero bytes || seq (u64 BE): a message key belongs to one sender
//! key, and a sender never repeats a sequence number under one key. Associated data:
//! `"anchormq/v2 envelope\0" || topic length (u16 BE) || topic || bytes 0..17`. Signatures (RFC 8032
//! Ed25519): kind 2 over `"anchormq/v2 envelope-sig\0" || topic length || topic || every byte
//! before the signature`; kind 4 over `"anchormq/v2 batch-sig\0" || topic length || topic ||
//! SHA-256 of each of the c batched envelopes (sequence numbers seq - c .. seq - 1, same topic, in
//! order) || every byte before the signature`. The topic is not carried: the opener supplies the
//! topic the message arrived on.

use std::fmt;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::DecodeError;
use crate::sender_key::StreamId;

/// First byte of a signed envelope (format version 2).
pub const SIGNED: u8 = 2;
/// First byte of a batched envelope, authenticated by the batch end that follows it.
pub const BATCHED: u8 = 3;
/// First byte of a batch end, whose signature covers the batched envelopes before it.
pub const BATCH_END: u8 = 4;
/// Most envelopes in one batch (the batched ones and their end).
pub const MAX_BATCH: usize = 256;
/// Bytes before the ciphertext: kind, stream tag, sequence number.
pub const HEADER_LEN: usize = 1 + 8 + 8;
/// Overhead of a signed envelope over its plaintext: header, Poly1305 tag, Ed25519 signature.
pub const OVERHEAD: usize = HEADER_LEN + 16 + 64;
/// Overhead of a batched envelope: header and Poly1305 tag.
pub const BATCHED_OVERHEAD: usize = HEADER_LEN + 16;
/// Overhead of a batch end: header, Poly1305 tag, count, Ed25519 signature.
pub const BATCH_END_OVERHEAD: usize = HEADER_LEN + 16 + 1 + 64;
/// Largest plaintext sealed (MQTT's payload limit is 256 MiB).
pub const MAX_PLAINTEXT_LEN: usize = 256 * 1024 * 1024 - BATCH_END_OVERHEAD;

const AAD_DOMAIN: &[u8] = b"anchormq/v2 envelope\0";
const SIG_DOMAIN: &[u8] = b"anchormq/v2 envelope-sig\0";
const BATCH_DOMAIN: &[u8] = b"anchormq/v2 batch-sig\0";
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

/// How an envelope is authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Carries its own signature.
    Signed,
    /// Authenticated by the batch end that follows it.
    Batched,
    /// Signs itself and the `count` batched envelopes before it.
    BatchEnd {
        /// Batched envelopes covered (sequence numbers seq - count .. seq - 1).
        count: u8,
    },
}

impl Kind {
    const fn trailer(self) -> usize {
        match self {
            Self::Signed => 16 + 64,
            Self::Batched => 16,
            Self::BatchEnd { .. } => 16 + 1 + 64,
        }
    }
}

/// A decoded envelope (nothing verified yet), borrowing the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// How it is authenticated.
    pub kind: Kind,
    /// The stream.
    pub tag: StreamTag,
    /// Sequence number under the stream's sender key.
    pub seq: u64,
    bytes: &'a [u8],
}

impl<'a> Envelope<'a> {
    /// Decodes an envelope; refuses other versions (naming the first byte) and short payloads.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let first = *bytes
            .first()
            .ok_or(DecodeError::malformed("envelope.version"))?;
        let mut kind = match first {
            SIGNED => Kind::Signed,
            BATCHED => Kind::Batched,
            BATCH_END => Kind::BatchEnd { count: 0 },
            version => return Err(DecodeError::UnsupportedVersion { version }),
        };
        if bytes.len() < HEADER_LEN + kind.trailer() {
            return Err(DecodeError::malformed("envelope length"));
        }
        if let Kind::BatchEnd { count } = &mut kind {
            *count = bytes[bytes.len() - 65];
            if *count == 0 {
                return Err(DecodeError::malformed("envelope.count"));
            }
        }
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&bytes[1..9]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&bytes[9..17]);
        Ok(Self {
            kind,
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
        self.bytes.len() - HEADER_LEN - self.kind.trailer()
    }

    /// SHA-256 of the whole envelope: what a batch end signs for a batched envelope.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.bytes).into()
    }

    fn signature(&self) -> Signature {
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&self.bytes[self.bytes.len() - 64..]);
        Signature::from_bytes(&sig)
    }

    /// Checks the stream key's signature, binding `topic` and, for a batch end, `batched`: the
    /// digests of the batched envelopes it covers, in order. RFC 8032 with canonical S, the
    /// cofactorless equation, and R not the identity: with the torsion-free keys sender-key notes
    /// carry, exactly what `verify_strict` accepts, without decompressing R. A batched envelope
    /// carries no signature and never verifies here.
    pub fn verify(&self, topic: &str, key: &VerifyingKey, batched: &[[u8; 32]]) -> bool {
        let signed = &self.bytes[..self.bytes.len() - 64];
        let message = match self.kind {
            Kind::Signed if batched.is_empty() => signed_message(SIG_DOMAIN, topic, &[], signed),
            Kind::BatchEnd { count } if usize::from(count) == batched.len() => {
                signed_message(BATCH_DOMAIN, topic, batched, signed)
            }
            _ => return false,
        };
        let signature = self.signature();
        *signature.r_bytes() != IDENTITY && key.verify(&message, &signature).is_ok()
    }

    /// Decrypts with the stream's message key; `None` if authentication fails.
    pub(crate) fn decrypt(&self, topic: &str, message_key: &[u8; 32]) -> Option<Vec<u8>> {
        let end = HEADER_LEN + self.plaintext_len();
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

fn signed_message(domain: &[u8], topic: &str, batched: &[[u8; 32]], signed: &[u8]) -> Vec<u8> {
    let mut msg =
        Vec::with_capacity(domain.len() + 2 + topic.len() + 32 * batched.len() + signed.len());
    msg.extend_from_slice(domain);
    msg.extend_from_slice(&topic_len(topic));
    msg.extend_from_slice(topic.as_bytes());
    for digest in batched {
        msg.extend_from_slice(digest);
    }
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

/// Encrypts (and, unless `kind` is [`Kind::Batched`], signs) one message; the topic must already
/// be validated, the plaintext within [`MAX_PLAINTEXT_LEN`], and for a batch end `batched` the
/// digests of the `count` envelopes before it.
pub(crate) fn seal(
    p: &SealParams<'_>,
    kind: Kind,
    topic: &str,
    plaintext: &[u8],
    batched: &[[u8; 32]],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + kind.trailer() + plaintext.len());
    out.push(match kind {
        Kind::Signed => SIGNED,
        Kind::Batched => BATCHED,
        Kind::BatchEnd { .. } => BATCH_END,
    });
    out.extend_from_slice(&p.tag.0);
    out.extend_from_slice(&p.seq.to_be_bytes());
    out.extend_from_slice(plaintext);
    let aad = aad(topic, &out[..HEADER_LEN]);
    let tag = ChaCha20Poly1305::new(p.message_key.into())
        .encrypt_in_place_detached(&nonce(p.seq), &aad, &mut out[HEADER_LEN..])
        // only fails past ChaCha20's 256 GiB per nonce, far above MAX_PLAINTEXT_LEN
        .unwrap_or_default();
    out.extend_from_slice(&tag);
    let domain = match kind {
        Kind::Batched => return out,
        Kind::Signed => SIG_DOMAIN,
        Kind::BatchEnd { count } => {
            out.push(count);
            BATCH_DOMAIN
        }
    };
    let signature = p.signer.sign(&signed_message(domain, topic, batched, &out));
    out.extend_from_slice(&signature.to_bytes());
    out
}
