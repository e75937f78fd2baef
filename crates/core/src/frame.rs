//! The signed-note frame shared by node, group, membership and sender-key notes:
//!
//! ```text
//! version (1) = 0x03 || kind (1) || body || signature (64)
//! ```
//!
//! The signature is ECDSA-secp256k1 (low S) over
//! SHA-256(`"anchormq/v1 note\0"` || version || kind || body). Node, group and
//! membership notes are signed by the bridge key, sender-key notes by the sending node.
//!
//! Each note type says what the frame needs to know about it through
//! the crate-internal `NoteBody` trait (its kind, subject, order and body encoding);
//! `sign` and `decode` here are the only code that writes or reads the frame around a body.
//! Which key must have signed is the caller's business: the frame only checks
//! a signature against the key it is given.

use crate::chunk;
use crate::error::DecodeError;
use crate::keys::{NodePublicKey, NodeSecretKey, Signature};
use crate::notes::{GroupNote, MembershipNote, NodeNote};
use crate::sender_key::SenderKeyNote;
use crate::wire::Reader;

/// Version byte of every signed note.
pub const NOTE_VERSION: u8 = 3;
/// Domain separation prefix of note signatures.
const NOTE_DOMAIN: &[u8] = b"anchormq/v1 note\0";
/// `version || kind`.
const HEADER_LEN: usize = 2;

/// The kind of a signed note.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum NoteKind {
    /// Node note (bridge-signed).
    Node = 1,
    /// Group note (bridge-signed).
    Group = 2,
    /// Sender-key note (signed by the sending node).
    SenderKey = 3,
    /// Membership note (bridge-signed): the groups of one node.
    Membership = 4,
}

impl NoteKind {
    pub(crate) const fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Node),
            2 => Some(Self::Group),
            3 => Some(Self::SenderKey),
            4 => Some(Self::Membership),
            _ => None,
        }
    }
}

/// What the frame needs from a note type.
pub(crate) trait NoteBody: Sized {
    /// The kind byte this type is framed with.
    const KIND: NoteKind;
    /// Node ID (node and membership notes) or group ID (group and sender-key notes).
    fn subject(&self) -> [u8; 32];
    /// Block number (chain notes) or epoch (sender-key notes).
    fn order(&self) -> u64;
    /// Length of the encoded body, to size the buffer once.
    fn body_len(&self) -> usize;
    /// Appends the body.
    fn encode_body(&self, out: &mut Vec<u8>);
    /// Reads a body; the frame checks that every byte was consumed.
    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
}

/// The encoded body of `note` alone (the fuzz oracle compares it with the input).
pub(crate) fn body<N: NoteBody>(note: &N) -> Vec<u8> {
    let mut out = Vec::with_capacity(note.body_len());
    note.encode_body(&mut out);
    out
}

/// Frames and signs `note` with `key`.
pub(crate) fn sign<N: NoteBody>(note: &N, key: &NodeSecretKey) -> SignedNote {
    let mut bytes = Vec::with_capacity(HEADER_LEN + note.body_len() + Signature::LEN);
    bytes.push(NOTE_VERSION);
    bytes.push(N::KIND as u8);
    note.encode_body(&mut bytes);
    debug_assert_eq!(
        bytes.len(),
        HEADER_LEN + note.body_len(),
        "body_len is exact"
    );
    let signature = key.sign_parts(NOTE_DOMAIN, &[&bytes]);
    bytes.extend_from_slice(&signature.0);
    SignedNote {
        kind: N::KIND,
        subject: note.subject(),
        order: note.order(),
        bytes,
    }
}

/// A note decoded from its frame; the signature is not checked yet.
pub(crate) struct Framed<'a, N> {
    note: N,
    /// `version || kind || body`: what the signature covers after the domain.
    signed: &'a [u8],
    signature: [u8; 64],
}

impl<N> Framed<'_, N> {
    /// The decoded note.
    pub(crate) const fn note(&self) -> &N {
        &self.note
    }

    /// Whether `key` made the signature (a high-S or malformed one never verifies).
    pub(crate) fn signed_by(&self, key: &NodePublicKey) -> bool {
        key.verify_parts(NOTE_DOMAIN, &[self.signed], &Signature(self.signature))
            .is_ok()
    }

    /// The note and the raw signature bytes.
    pub(crate) fn into_parts(self) -> (N, [u8; 64]) {
        (self.note, self.signature)
    }

    /// The note, once the caller is done with the signature.
    pub(crate) fn into_note(self) -> N {
        self.note
    }
}

/// Decodes a framed note of type `N` strictly (every byte consumed), without
/// checking the signature. A note of another kind is `Malformed("note.kind")`.
pub(crate) fn decode<N: NoteBody>(bytes: &[u8]) -> Result<Framed<'_, N>, DecodeError> {
    let parts = split(bytes)?;
    if parts.kind != N::KIND {
        return Err(DecodeError::malformed("note.kind"));
    }
    let mut r = Reader::new(parts.body);
    let note = N::decode_body(&mut r)?;
    r.finish()?;
    Ok(Framed {
        note,
        signed: parts.signed,
        signature: parts.signature,
    })
}

/// The kind of a framed note (after checking its version).
pub(crate) fn kind(bytes: &[u8]) -> Result<NoteKind, DecodeError> {
    split(bytes).map(|parts| parts.kind)
}

struct Parts<'a> {
    kind: NoteKind,
    body: &'a [u8],
    signed: &'a [u8],
    signature: [u8; 64],
}

fn split(bytes: &[u8]) -> Result<Parts<'_>, DecodeError> {
    if bytes.len() < HEADER_LEN + Signature::LEN {
        return Err(DecodeError::malformed("note"));
    }
    if bytes[0] != NOTE_VERSION {
        return Err(DecodeError::UnsupportedVersion { version: bytes[0] });
    }
    let kind = NoteKind::from_byte(bytes[1]).ok_or(DecodeError::malformed("note.kind"))?;
    let end = bytes.len() - Signature::LEN;
    let mut signature = [0u8; 64];
    signature.copy_from_slice(&bytes[end..]);
    Ok(Parts {
        kind,
        body: &bytes[HEADER_LEN..end],
        signed: &bytes[..end],
        signature,
    })
}

/// A complete signed note with its routing facts (kind, subject, order), which
/// the chunk header and the note topic are keyed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    kind: NoteKind,
    subject: [u8; 32],
    order: u64,
    bytes: Vec<u8>,
}

impl SignedNote {
    /// Decodes complete note bytes (strictly, whatever their kind) to learn
    /// their routing facts. The signature is not checked.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, DecodeError> {
        fn routing<N: NoteBody>(bytes: &[u8]) -> Result<([u8; 32], u64), DecodeError> {
            let framed = decode::<N>(bytes)?;
            Ok((framed.note.subject(), framed.note.order()))
        }
        let kind = kind(&bytes)?;
        let (subject, order) = match kind {
            NoteKind::Node => routing::<NodeNote>(&bytes)?,
            NoteKind::Group => routing::<GroupNote>(&bytes)?,
            NoteKind::SenderKey => routing::<SenderKeyNote>(&bytes)?,
            NoteKind::Membership => routing::<MembershipNote>(&bytes)?,
        };
        Ok(Self {
            kind,
            subject,
            order,
            bytes,
        })
    }

    /// The note kind.
    pub const fn kind(&self) -> NoteKind {
        self.kind
    }
    /// Node ID (node and membership notes) or group ID (group and sender-key notes).
    pub const fn subject(&self) -> &[u8; 32] {
        &self.subject
    }
    /// Block number (chain notes) or epoch (sender-key notes).
    pub const fn order(&self) -> u64 {
        self.order
    }
    /// The complete signed note.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// Takes the bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The MQTT payloads, in index order. Publish chunk `i` on the note's topic
    /// with chunk index `i` (see [`crate::topics`]).
    pub fn chunks(&self) -> Vec<Vec<u8>> {
        chunk::split(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{GroupId, NodeId};
    use crate::notes::{ChainPosition, Member, NodeStatus};
    use crate::sender_key::StreamId;

    fn position() -> ChainPosition {
        ChainPosition {
            chain_id: 31337,
            registry: [7; 20],
            block_number: 12,
            block_hash: [1; 32],
            tx_hash: [2; 32],
            log_index: 3,
        }
    }

    fn key(seed: u8) -> NodeSecretKey {
        NodeSecretKey::from_bytes(&[seed; 32]).expect("valid key")
    }

    /// Signs, checks the frame around the body, reads it back, checks the signer.
    fn round_trip<N: NoteBody + PartialEq + std::fmt::Debug>(note: &N) {
        let signed = sign(note, &key(1));
        let bytes = signed.as_bytes();
        assert_eq!(bytes[..HEADER_LEN], [NOTE_VERSION, N::KIND as u8]);
        assert_eq!(bytes[HEADER_LEN..bytes.len() - Signature::LEN], body(note));
        assert_eq!(
            (signed.kind(), *signed.subject(), signed.order()),
            (N::KIND, note.subject(), note.order())
        );
        let framed = decode::<N>(bytes).expect("decodes");
        assert_eq!(framed.note(), note);
        assert!(framed.signed_by(&key(1).public_key()));
        assert!(!framed.signed_by(&key(2).public_key()));
        assert_eq!(
            SignedNote::from_bytes(bytes.to_vec()).expect("routing"),
            signed
        );
        // one byte more in the body: refused, by the body's own length check or the frame's
        let mut longer = bytes.to_vec();
        longer.insert(bytes.len() - Signature::LEN, 0);
        assert!(matches!(
            decode::<N>(&longer),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn every_note_type_round_trips_through_the_one_frame() {
        let node = NodeId::from_label("1111").expect("id");
        let group = GroupId::from_label("hsu0001").expect("id");
        round_trip(&NodeNote {
            generation: 7,
            position: position(),
            node,
            key_version: 4,
            status: NodeStatus::Active,
            public_key: key(3).public_key(),
        });
        for admin in [None, Some([9; 20])] {
            round_trip(
                &GroupNote::new(
                    position(),
                    group,
                    5,
                    "hsu0001/#",
                    admin,
                    vec![Member::new(node, 4)],
                )
                .expect("valid"),
            );
        }
        // an empty list too: the bridge publishes one for a node in no group
        for groups in [
            vec![],
            vec![group, GroupId::from_label("hsu0002").expect("id")],
        ] {
            round_trip(&MembershipNote::new(position(), node, groups).with_generation(2));
        }
        let stream = StreamId {
            group,
            sender: node,
            epoch: 5,
        };
        let sender_key = crate::sender_key::SenderKey::from_bytes([4; 32]);
        let recipient = crate::sender_key::Recipient {
            node,
            key_version: 4,
            public_key: key(3).public_key(),
        };
        let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(5);
        round_trip(
            &SenderKeyNote::wrap(
                stream,
                4,
                &sender_key,
                ed25519_dalek::SigningKey::from_bytes(&[6; 32]).verifying_key(),
                &[recipient],
                &mut rng,
            )
            .expect("wrap"),
        );
    }

    #[test]
    fn the_frame_refuses_before_reading_a_body() {
        let group = GroupNote::new(
            position(),
            GroupId::from_label("g").expect("id"),
            1,
            "",
            None,
            vec![],
        )
        .expect("valid");
        let signed = sign(&group, &key(1));
        assert_eq!(
            decode::<NodeNote>(signed.as_bytes()).err(),
            Some(DecodeError::malformed("note.kind"))
        );
        // v1 notes carry no bridge generation, v2 no roles or stream signing keys: refused by
        // version, not misread
        for version in [1, 2, 4] {
            let mut other = signed.as_bytes().to_vec();
            other[0] = version;
            assert_eq!(
                kind(&other).err(),
                Some(DecodeError::UnsupportedVersion { version })
            );
        }
        let mut kind9 = signed.as_bytes().to_vec();
        kind9[1] = 9;
        assert_eq!(
            kind(&kind9).err(),
            Some(DecodeError::malformed("note.kind"))
        );
        assert_eq!(
            kind(&signed.as_bytes()[..HEADER_LEN + Signature::LEN - 1]).err(),
            Some(DecodeError::malformed("note"))
        );
    }
}
