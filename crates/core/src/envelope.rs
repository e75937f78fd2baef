//! The message envelope: versioned, compact, encrypted and signed.
//!
//! ```text
//! off  len  field
//!   0    1  version (1)
//!   1    1  suite (1 = secp256k1-ECDSA-SHA256 low-S, HKDF-SHA256, XChaCha20-Poly1305)
//!   2   32  group ID
//!  34    8  epoch
//!  42   32  sender node ID
//!  74   32  sender key ID (commitment to the sender key, see sender_key)
//! 106    8  sequence number
//! 114   24  XChaCha20 nonce (random)
//! 138    4  ciphertext length n (plaintext length + 16)
//! 142    n  ciphertext || Poly1305 tag
//! 142+n 64  ECDSA signature r || s by the sender's node key
//! ```
//!
//! Associated data: `"anchormq/v1 envelope-aad\0" || topic length (u16) || topic || bytes 0..138`.
//! Signature over SHA-256(`"anchormq/v1 envelope\0" || topic length (u16) || topic || bytes 0..142+n`).
//! The topic is not carried: the opener supplies the topic the message arrived on.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::error::{DecodeError, KeyError};
use crate::ids::{GroupId, NodeId};
use crate::keys::{NodePublicKey, NodeSecretKey, Signature};
use crate::sender_key::StreamId;
use crate::wire::{Reader, put_u16, put_u32, put_u64};

/// Envelope format version.
pub const VERSION_V1: u8 = 1;
/// Cipher suite 1: secp256k1 ECDSA-SHA256 (low S), HKDF-SHA256, XChaCha20-Poly1305.
pub const SUITE_V1: u8 = 1;
/// Bytes before the ciphertext length (what the AEAD authenticates as header).
pub const HEADER_LEN: usize = 138;
/// Fixed overhead over the plaintext.
pub const OVERHEAD: usize = HEADER_LEN + 4 + 16 + Signature::LEN;
/// Largest plaintext sealed (MQTT's payload limit is 256 MiB).
pub const MAX_PLAINTEXT_LEN: usize = 256 * 1024 * 1024 - OVERHEAD;

const AAD_DOMAIN: &[u8] = b"anchormq/v1 envelope-aad\0";
const SIG_DOMAIN: &[u8] = b"anchormq/v1 envelope\0";

/// A decoded envelope (nothing verified yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Group ID.
    pub group: GroupId,
    /// Group epoch.
    pub epoch: u64,
    /// Sender node ID.
    pub sender: NodeId,
    /// Sender key ID.
    pub key_id: [u8; 32],
    /// Sequence number in the (group, sender, epoch, key) stream.
    pub seq: u64,
    /// XChaCha20 nonce.
    pub nonce: [u8; 24],
    /// Ciphertext with tag.
    pub ciphertext: Vec<u8>,
    /// Raw signature bytes.
    pub signature: [u8; 64],
}

impl Envelope {
    /// The stream this envelope belongs to.
    pub const fn stream(&self) -> StreamId {
        StreamId {
            group: self.group,
            sender: self.sender,
            epoch: self.epoch,
        }
    }

    fn header(&self) -> [u8; HEADER_LEN] {
        let mut h = Vec::with_capacity(HEADER_LEN);
        h.push(VERSION_V1);
        h.push(SUITE_V1);
        h.extend_from_slice(self.group.as_bytes());
        put_u64(&mut h, self.epoch);
        h.extend_from_slice(self.sender.as_bytes());
        h.extend_from_slice(&self.key_id);
        put_u64(&mut h, self.seq);
        h.extend_from_slice(&self.nonce);
        let mut out = [0u8; HEADER_LEN];
        out.copy_from_slice(&h);
        out
    }

    /// Encodes the envelope.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 4 + self.ciphertext.len() + 64);
        out.extend_from_slice(&self.header());
        put_u32(&mut out, self.ciphertext.len() as u32);
        out.extend_from_slice(&self.ciphertext);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes an envelope; rejects unknown versions and suites and any trailing byte.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("envelope.version")?;
        if version != VERSION_V1 {
            return Err(DecodeError::UnsupportedVersion { version });
        }
        let suite = r.u8("envelope.suite")?;
        if suite != SUITE_V1 {
            return Err(DecodeError::UnsupportedSuite { suite });
        }
        let group = GroupId::from_bytes(r.array("envelope.group")?);
        let epoch = r.u64("envelope.epoch")?;
        let sender = NodeId::from_bytes(r.array("envelope.sender")?);
        let key_id = r.array("envelope.key_id")?;
        let seq = r.u64("envelope.seq")?;
        let nonce = r.array("envelope.nonce")?;
        let len = r.u32("envelope.ciphertext_len")? as usize;
        if len < 16 {
            return Err(DecodeError::malformed("envelope.ciphertext_len"));
        }
        let ciphertext = r.bytes(len, "envelope.ciphertext")?.to_vec();
        let signature = r.array("envelope.signature")?;
        r.finish()?;
        Ok(Self {
            group,
            epoch,
            sender,
            key_id,
            seq,
            nonce,
            ciphertext,
            signature,
        })
    }

    /// Checks the sender's signature, binding `topic`.
    pub fn verify(&self, topic: &str, sender: &NodePublicKey) -> Result<(), KeyError> {
        let signed = self.signed_prefix();
        sender.verify_parts(
            SIG_DOMAIN,
            &[&topic_prefix(topic), topic.as_bytes(), &signed],
            &Signature(self.signature),
        )
    }

    /// Decrypts with the stream's message key; `None` if authentication fails.
    pub(crate) fn decrypt(&self, topic: &str, message_key: &[u8; 32]) -> Option<Vec<u8>> {
        let aad = aad(topic, &self.header());
        XChaCha20Poly1305::new(message_key.into())
            .decrypt(
                XNonce::from_slice(&self.nonce),
                Payload {
                    msg: &self.ciphertext,
                    aad: &aad,
                },
            )
            .ok()
    }

    fn signed_prefix(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 4 + self.ciphertext.len());
        out.extend_from_slice(&self.header());
        put_u32(&mut out, self.ciphertext.len() as u32);
        out.extend_from_slice(&self.ciphertext);
        out
    }
}

fn topic_prefix(topic: &str) -> [u8; 2] {
    // topics are validated (at most 65535 bytes) before sealing; longer never verifies
    (topic.len().min(u16::MAX as usize) as u16).to_be_bytes()
}

fn aad(topic: &str, header: &[u8; HEADER_LEN]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + 2 + topic.len() + HEADER_LEN);
    aad.extend_from_slice(AAD_DOMAIN);
    put_u16(&mut aad, topic.len().min(u16::MAX as usize) as u16);
    aad.extend_from_slice(topic.as_bytes());
    aad.extend_from_slice(header);
    aad
}

/// Everything `seal` needs besides the plaintext.
pub(crate) struct SealParams<'a> {
    pub(crate) stream: StreamId,
    pub(crate) key_id: [u8; 32],
    pub(crate) seq: u64,
    pub(crate) nonce: [u8; 24],
    pub(crate) message_key: &'a [u8; 32],
    pub(crate) signer: &'a NodeSecretKey,
}

/// Encrypts and signs; the topic must already be validated.
pub(crate) fn seal(p: &SealParams<'_>, topic: &str, plaintext: &[u8]) -> Option<Vec<u8>> {
    let mut env = Envelope {
        group: p.stream.group,
        epoch: p.stream.epoch,
        sender: p.stream.sender,
        key_id: p.key_id,
        seq: p.seq,
        nonce: p.nonce,
        ciphertext: Vec::new(),
        signature: [0; 64],
    };
    let aad = aad(topic, &env.header());
    env.ciphertext = XChaCha20Poly1305::new(p.message_key.into())
        .encrypt(
            XNonce::from_slice(&p.nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .ok()?;
    let signed = env.signed_prefix();
    env.signature = p
        .signer
        .sign_parts(
            SIG_DOMAIN,
            &[&topic_prefix(topic), topic.as_bytes(), &signed],
        )
        .0;
    Some(env.encode())
}
