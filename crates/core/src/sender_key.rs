//! Sender keys: one random 32-byte key per (group, sender, epoch) — and per
//! sender restart — distributed as a sender-key note in which the key is
//! wrapped with ECIES once for each reader's current public key, and the whole
//! note is signed by the sender's node key. The note also certifies the stream's
//! Ed25519 signing key, which signs every message of the stream: members share
//! the sender key, so only a key of the sender's own can tell its messages apart.
//!
//! Receivers unwrap once and cache the derived message key, so a message costs
//! the same whatever the group size.
//!
//! ## ECIES wrapping
//!
//! The wrapped form is the `ecies` crate's secp256k1 format with a compressed
//! ephemeral key (its `is_ephemeral_key_compressed` option; 32 bytes less per
//! reader than the default):
//! `ephemeral public key (33, compressed) || nonce (16) || tag (16) || ciphertext (32)`
//! with AES-256-GCM under HKDF-SHA256(ephemeral public || shared point), both
//! points uncompressed inside the HKDF (the KEM is `ecies::utils::encapsulate` /
//! `decapsulate`, called with `compressed = false`, so the crate's global
//! config is never consulted). `ecies::encrypt` draws the ephemeral key and
//! nonce from the OS; to get fixed test vectors the ephemeral secret comes from
//! the caller's RNG (`ecies::SecretKey::generate_from_rng`) and the nonce too,
//! and the AES-256-GCM step is done here with the same `aes-gcm` crate `ecies`
//! uses. Tests check both directions against `ecies::encrypt`/`ecies::decrypt`.

use std::fmt;

use aes_gcm::aead::consts::U16;
use aes_gcm::aes::Aes256;
use aes_gcm::{AeadInOut, AesGcm, KeyInit};
use hkdf::Hkdf;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRngCore, SeedableRng};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use ed25519_dalek::VerifyingKey;

use crate::envelope::StreamTag;
use crate::error::{DecodeError, KeyError, MembershipError, SenderKeyError};
use crate::frame::{self, NoteBody, NoteKind, SignedNote};
use crate::ids::{GroupId, NodeId};
use crate::keys::{NodePublicKey, NodeSecretKey};
use crate::notes::{KeyBook, Roles};
use crate::wire::{Reader, put_u32, put_u64};

/// Recipients wrapped with one generator (and on one thread) by [`SenderKeyNote::wrap`].
pub const WRAP_BATCH: usize = 256;
/// Length of one ECIES-wrapped sender key.
pub const WRAPPED_LEN: usize = 33 + 16 + 16 + 32;
const ENTRY_LEN: usize = 32 + 8 + WRAPPED_LEN;
/// Body bytes before the entries.
const HEADER_LEN: usize = 32 + 32 + 8 + 8 + 32 + 32 + 4;
const HKDF_SALT: &[u8] = b"anchormq/v1 sender-key";

type WrapCipher = AesGcm<Aes256, U16>;

/// Which message stream a sender key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamId {
    /// The group.
    pub group: GroupId,
    /// The sending node.
    pub sender: NodeId,
    /// The group epoch.
    pub epoch: u64,
}

impl StreamId {
    /// `group || sender || epoch (u64 BE)`: the context every derivation is bound to.
    pub fn context(&self) -> [u8; 72] {
        let mut out = [0u8; 72];
        out[..32].copy_from_slice(self.group.as_bytes());
        out[32..64].copy_from_slice(self.sender.as_bytes());
        out[64..].copy_from_slice(&self.epoch.to_be_bytes());
        out
    }
}

/// A sender key: 32 random bytes, wiped on drop, never printed.
#[derive(Clone)]
pub struct SenderKey(Zeroizing<[u8; 32]>);

impl SenderKey {
    /// A fresh key from the caller's randomness.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(k.as_mut());
        Self(k)
    }

    /// Wraps existing key bytes (tests and vectors).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    fn derive(&self, label: &[u8], stream: &StreamId) -> Zeroizing<[u8; 32]> {
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), self.0.as_ref());
        let mut out = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit
        let _ = hk.expand_multi_info(&[label, &stream.context()], out.as_mut());
        out
    }

    /// Public commitment to this key in `stream`: HKDF-SHA256(salt
    /// `"anchormq/v1 sender-key"`, ikm key, info `"key-id" || context`).
    pub fn key_id(&self, stream: &StreamId) -> [u8; 32] {
        *self.derive(b"key-id", stream)
    }

    /// The ChaCha20-Poly1305 key for messages of `stream` (info `"message-key" || context`).
    pub(crate) fn message_key(&self, stream: &StreamId) -> Zeroizing<[u8; 32]> {
        self.derive(b"message-key", stream)
    }
}

impl fmt::Debug for SenderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SenderKey(<redacted>)")
    }
}

/// Wraps `key` for `recipient` (ECIES, see the module docs).
pub(crate) fn ecies_wrap(
    recipient: &NodePublicKey,
    key: &[u8; 32],
    rng: &mut impl CryptoRngCore,
) -> Result<[u8; WRAPPED_LEN], KeyError> {
    let ephemeral = ecies::SecretKey::generate_from_rng(rng);
    let ephemeral_public = ecies::PublicKey::from_secret_key(&ephemeral);
    let receiver = recipient.to_ecies()?;
    let shared = Zeroizing::new(
        ecies::utils::encapsulate(&ephemeral, &receiver, false)
            .map_err(|_| KeyError::InvalidPublicKey)?,
    );
    let mut nonce = [0u8; 16];
    rng.fill_bytes(&mut nonce);
    let cipher =
        WrapCipher::new_from_slice(shared.as_ref()).map_err(|_| KeyError::InvalidSecretKey)?;
    let mut out = [0u8; WRAPPED_LEN];
    out[..33].copy_from_slice(&ephemeral_public.serialize_compressed());
    out[33..49].copy_from_slice(&nonce);
    out[65..].copy_from_slice(key);
    let tag = cipher
        .encrypt_inout_detached(&nonce.into(), &[], (&mut out[65..]).into())
        .map_err(|_| KeyError::InvalidSecretKey)?;
    out[49..65].copy_from_slice(&tag);
    Ok(out)
}

/// Opens an ECIES-wrapped key with our secret key.
pub(crate) fn ecies_unwrap(
    wrapped: &[u8; WRAPPED_LEN],
    secret: &NodeSecretKey,
) -> Option<Zeroizing<[u8; 32]>> {
    let ephemeral_public = ecies::PublicKey::parse_slice(&wrapped[..33], None).ok()?;
    let ours = ecies::SecretKey::parse_slice(secret.to_bytes().as_ref()).ok()?;
    let shared = Zeroizing::new(ecies::utils::decapsulate(&ephemeral_public, &ours, false).ok()?);
    let cipher = WrapCipher::new_from_slice(shared.as_ref()).ok()?;
    let nonce: [u8; 16] = wrapped[33..49].try_into().ok()?;
    let tag: [u8; 16] = wrapped[49..65].try_into().ok()?;
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&wrapped[65..]);
    cipher
        .decrypt_inout_detached(&nonce.into(), &[], key.as_mut_slice().into(), &tag.into())
        .ok()?;
    Some(key)
}

/// One recipient's copy of the sender key.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// The recipient node.
    pub node: NodeId,
    /// The recipient's key version the key was wrapped to.
    pub key_version: u64,
    /// ECIES ciphertext of the sender key.
    pub wrapped: [u8; WRAPPED_LEN],
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey")
            .field("node", &self.node)
            .field("key_version", &self.key_version)
            .finish_non_exhaustive()
    }
}

/// A recipient to wrap for: node, key version, public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipient {
    /// The node.
    pub node: NodeId,
    /// Its current key version.
    pub key_version: u64,
    /// Its public key at that version.
    pub public_key: NodePublicKey,
}

/// A sender's announcement of its key for one stream.
///
/// Body (after `version || kind=3`):
/// `group (32) || sender (32) || epoch (8) || sender key version (8) || key ID (32) ||
/// signing key (32, Ed25519) || entry count (4) || entries`, each entry
/// `node (32) || key version (8) || wrapped (129)`, strictly ascending by node ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderKeyNote {
    stream: StreamId,
    sender_key_version: u64,
    key_id: [u8; 32],
    signing_key: VerifyingKey,
    entries: Vec<WrappedKey>,
}

impl SenderKeyNote {
    /// Wraps `key` for every recipient (duplicates are wrapped once).
    ///
    /// Each wrap is independent, so large groups are wrapped on every core: recipients go in
    /// batches of [`WRAP_BATCH`], each with its own ChaCha20 generator seeded from `rng`. The
    /// batches do not depend on the number of cores, so a seeded `rng` gives the same note on
    /// any machine.
    pub fn wrap(
        stream: StreamId,
        sender_key_version: u64,
        key: &SenderKey,
        signing_key: VerifyingKey,
        recipients: &[Recipient],
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, KeyError> {
        let mut sorted: Vec<&Recipient> = recipients.iter().collect();
        sorted.sort_by_key(|r| r.node);
        sorted.dedup_by_key(|r| r.node);
        let batches: Vec<(&[&Recipient], [u8; 32])> = sorted
            .chunks(WRAP_BATCH)
            .map(|batch| {
                let mut seed = [0u8; 32];
                rng.fill_bytes(&mut seed);
                (batch, seed)
            })
            .collect();
        let wrap_batch = |(batch, seed): &(&[&Recipient], [u8; 32])| {
            let mut rng = ChaCha20Rng::from_seed(*seed);
            batch
                .iter()
                .map(|r| {
                    Ok(WrappedKey {
                        node: r.node,
                        key_version: r.key_version,
                        wrapped: ecies_wrap(&r.public_key, &key.0, &mut rng)?,
                    })
                })
                .collect::<Result<Vec<_>, KeyError>>()
        };
        let workers = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(batches.len());
        let wrapped: Vec<Result<Vec<WrappedKey>, KeyError>> = if workers <= 1 {
            batches.iter().map(wrap_batch).collect()
        } else {
            // worker w takes batches w, w + workers, ...; results go back in batch order
            let mut slots: Vec<Option<Result<Vec<WrappedKey>, KeyError>>> =
                (0..batches.len()).map(|_| None).collect();
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..workers)
                    .map(|w| {
                        let (batches, wrap_batch) = (&batches, &wrap_batch);
                        scope.spawn(move || {
                            (w..batches.len())
                                .step_by(workers)
                                .map(|i| (i, wrap_batch(&batches[i])))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                for handle in handles {
                    // a panic in a worker is a bug in the wrap code: pass it on
                    for (i, result) in handle
                        .join()
                        .unwrap_or_else(|p| std::panic::resume_unwind(p))
                    {
                        slots[i] = Some(result);
                    }
                }
            });
            slots.into_iter().flatten().collect()
        };
        let mut entries = Vec::with_capacity(sorted.len());
        for batch in wrapped {
            entries.extend(batch?);
        }
        Ok(Self {
            stream,
            sender_key_version,
            key_id: key.key_id(&stream),
            signing_key,
            entries,
        })
    }

    /// The stream.
    pub const fn stream(&self) -> &StreamId {
        &self.stream
    }
    /// The sender's node key version that signs this note.
    pub const fn sender_key_version(&self) -> u64 {
        self.sender_key_version
    }
    /// Commitment to the sender key (see [`SenderKey::key_id`]).
    pub const fn key_id(&self) -> &[u8; 32] {
        &self.key_id
    }
    /// The tag every envelope of this stream carries.
    pub fn tag(&self) -> StreamTag {
        StreamTag::derive(&self.stream, &self.key_id, &self.signing_key)
    }
    /// The Ed25519 key that signs the stream's messages.
    pub const fn signing_key(&self) -> &VerifyingKey {
        &self.signing_key
    }
    /// Entries, ascending by node ID.
    pub fn entries(&self) -> &[WrappedKey] {
        &self.entries
    }

    /// Signs with the sender's node key.
    pub fn sign(&self, sender_key: &NodeSecretKey) -> SignedNote {
        frame::sign(self, sender_key)
    }

    /// Decodes a signed sender-key note without checking the signature.
    pub fn decode_signed(bytes: &[u8]) -> Result<(Self, [u8; 64]), DecodeError> {
        frame::decode(bytes).map(frame::Framed::into_parts)
    }

    /// Decodes and verifies a signed sender-key note against `book`: the sender
    /// must be an active node using its current key version that signed it, and a
    /// writer in the group at the note's epoch (the group's current one). The
    /// signature is checked before the group, so a [`MembershipError::MissingRole`]
    /// refusal is about a note the sender really made.
    pub fn verify(bytes: &[u8], book: &KeyBook) -> Result<Self, SenderKeyError> {
        let framed = frame::decode::<Self>(bytes)?;
        let note = framed.note();
        let sender = note.stream.sender;
        let sender_err = |source| SenderKeyError::Sender { sender, source };
        let sender_note = book.active_node(&sender).map_err(sender_err)?;
        if sender_note.key_version != note.sender_key_version {
            return Err(SenderKeyError::SenderKeyVersion {
                sender,
                found: note.sender_key_version,
                current: sender_note.key_version,
            });
        }
        if !framed.signed_by(&sender_note.public_key) {
            return Err(SenderKeyError::BadSignature { sender });
        }
        book.group(&note.stream.group)
            .ok_or(MembershipError::UnknownGroup {
                group: note.stream.group,
            })
            .and_then(|g| g.check_role(&sender, note.stream.epoch, Roles::WRITE))
            .map_err(sender_err)?;
        Ok(framed.into_note())
    }

    /// Finds our entry, unwraps it and checks it against the signed key ID.
    pub fn unwrap_for(
        &self,
        me: &NodeId,
        my_key: &NodeSecretKey,
        my_key_version: u64,
    ) -> Result<SenderKey, SenderKeyError> {
        let sender = self.stream.sender;
        let entry = self
            .entries
            .binary_search_by(|e| e.node.cmp(me))
            .ok()
            .map(|i| &self.entries[i])
            .ok_or(SenderKeyError::NotAddressed {
                sender,
                group: self.stream.group,
                epoch: self.stream.epoch,
                node: *me,
            })?;
        if entry.key_version != my_key_version {
            return Err(SenderKeyError::RecipientKeyVersion {
                sender,
                found: entry.key_version,
                ours: my_key_version,
            });
        }
        let raw = ecies_unwrap(&entry.wrapped, my_key).ok_or(SenderKeyError::Unwrap { sender })?;
        let key = SenderKey(raw);
        if !bool::from(key.key_id(&self.stream).ct_eq(&self.key_id)) {
            return Err(SenderKeyError::Unwrap { sender });
        }
        Ok(key)
    }
}

impl NoteBody for SenderKeyNote {
    const KIND: NoteKind = NoteKind::SenderKey;

    fn subject(&self) -> [u8; 32] {
        *self.stream.group.as_bytes()
    }

    fn order(&self) -> u64 {
        self.stream.epoch
    }

    fn body_len(&self) -> usize {
        HEADER_LEN + ENTRY_LEN * self.entries.len()
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.stream.group.as_bytes());
        out.extend_from_slice(self.stream.sender.as_bytes());
        put_u64(out, self.stream.epoch);
        put_u64(out, self.sender_key_version);
        out.extend_from_slice(&self.key_id);
        out.extend_from_slice(self.signing_key.as_bytes());
        put_u32(out, self.entries.len() as u32);
        for e in &self.entries {
            out.extend_from_slice(e.node.as_bytes());
            put_u64(out, e.key_version);
            out.extend_from_slice(&e.wrapped);
        }
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let group = GroupId::from_bytes(r.array("sender_key.group")?);
        let sender = NodeId::from_bytes(r.array("sender_key.sender")?);
        let epoch = r.u64("sender_key.epoch")?;
        let sender_key_version = r.u64("sender_key.sender_key_version")?;
        let key_id = r.array("sender_key.key_id")?;
        // a small-order key would let its holder make signatures that verify for many messages; a
        // key with a torsion part would make cofactorless and cofactored checks disagree; a
        // non-canonical encoding (y >= p) would give one key two encodings
        let bytes = r.array("sender_key.signing_key")?;
        let signing_key = VerifyingKey::from_bytes(&bytes)
            .ok()
            .filter(|k| {
                let point = k.to_edwards();
                !k.is_weak() && point.is_torsion_free() && point.compress().to_bytes() == bytes
            })
            .ok_or(DecodeError::malformed("sender_key.signing_key"))?;
        let count = r.u32("sender_key.entry_count")? as usize;
        if count.checked_mul(ENTRY_LEN) != Some(r.remaining()) {
            return Err(DecodeError::malformed("sender_key.entries"));
        }
        let mut entries: Vec<WrappedKey> = Vec::with_capacity(count);
        for _ in 0..count {
            let node = NodeId::from_bytes(r.array("sender_key.entries")?);
            let key_version = r.u64("sender_key.entries")?;
            let wrapped = r.array("sender_key.entries")?;
            if entries.last().is_some_and(|prev| prev.node >= node) {
                return Err(DecodeError::malformed("sender_key.entries order"));
            }
            entries.push(WrappedKey {
                node,
                key_version,
                wrapped,
            });
        }
        Ok(Self {
            stream: StreamId {
                group,
                sender,
                epoch,
            },
            sender_key_version,
            key_id,
            signing_key,
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn our_wrap_opens_with_the_ecies_crate_and_back() {
        // the crate's own encrypt/decrypt read a process-wide option; only this test uses them
        ecies::config::update_config(ecies::config::Config {
            is_ephemeral_key_compressed: true,
            is_hkdf_key_compressed: false,
        });
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let node = NodeSecretKey::generate(&mut rng);
        let key = [42u8; 32];
        let wrapped = ecies_wrap(&node.public_key(), &key, &mut rng).expect("wrap");
        let opened = ecies::decrypt(node.to_bytes().as_ref(), &wrapped)
            .expect("ecies crate decrypts our format");
        assert_eq!(opened, key);
        let theirs = ecies::encrypt(&node.public_key().to_bytes(), &key).expect("ecies encrypt");
        let theirs: [u8; WRAPPED_LEN] = theirs
            .as_slice()
            .try_into()
            .expect("same length as our format");
        assert_eq!(ecies_unwrap(&theirs, &node).as_deref(), Some(&key));
        let other = NodeSecretKey::generate(&mut rng);
        assert!(ecies_unwrap(&wrapped, &other).is_none());
    }

    /// Three batches, wrapped on several threads where there are cores: the same note from the
    /// same seed, entries in node order, and every recipient opens its own entry.
    #[test]
    fn a_note_wrapped_in_parallel_is_the_same_and_opens_for_everyone() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let keys: Vec<NodeSecretKey> = (0..2 * WRAP_BATCH + 5)
            .map(|_| NodeSecretKey::generate(&mut rng))
            .collect();
        let recipients: Vec<Recipient> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Recipient {
                node: NodeId::from_label(&format!("n{i:05}")).expect("id"),
                key_version: 1,
                public_key: k.public_key(),
            })
            .collect();
        let stream = StreamId {
            group: GroupId::from_label("g").expect("id"),
            sender: recipients[0].node,
            epoch: 1,
        };
        let key = SenderKey::from_bytes([7; 32]);
        let wrap = |seed| {
            SenderKeyNote::wrap(
                stream,
                1,
                &key,
                ed25519_dalek::SigningKey::from_bytes(&[5; 32]).verifying_key(),
                &recipients,
                &mut ChaCha20Rng::seed_from_u64(seed),
            )
            .expect("wrap")
        };
        let note = wrap(11);
        assert_eq!(note, wrap(11));
        assert_ne!(note, wrap(12));
        let nodes: Vec<NodeId> = note.entries().iter().map(|e| e.node).collect();
        assert!(nodes.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(nodes.len(), recipients.len());
        for (r, k) in recipients.iter().zip(&keys) {
            let entry = note
                .entries()
                .iter()
                .find(|e| e.node == r.node)
                .expect("entry");
            assert_eq!(ecies_unwrap(&entry.wrapped, k).as_deref(), Some(&[7u8; 32]));
        }
    }

    #[test]
    fn wrapping_is_deterministic_under_a_seeded_rng() {
        let node = NodeSecretKey::from_bytes(&[3u8; 32]).expect("valid");
        let a = ecies_wrap(
            &node.public_key(),
            &[1; 32],
            &mut ChaCha20Rng::seed_from_u64(9),
        )
        .expect("wrap");
        let b = ecies_wrap(
            &node.public_key(),
            &[1; 32],
            &mut ChaCha20Rng::seed_from_u64(9),
        )
        .expect("wrap");
        assert_eq!(a, b);
    }

    #[test]
    fn debug_redacts() {
        let k = SenderKey::from_bytes([0xaa; 32]);
        assert_eq!(format!("{k:?}"), "SenderKey(<redacted>)");
    }
}
