//! anchormq-core: the wire formats and cryptography of anchormq.
//!
//! anchormq gives an MQTT fleet end-to-end encryption. Node keys and group
//! memberships live on an Ethereum contract (the KeyRegistry); a bridge mirrors
//! them into MQTT as signed, retained *key notes*. This crate is everything
//! that turns those bytes into decisions and back:
//!
//! - [`ids`]: `NodeId` / `GroupId` (Solidity `bytes32("1111")` style labels);
//! - [`keys`]: node secret keys (key file format), public keys, low-S ECDSA;
//! - [`frame`]: the signed-note frame every note travels in, with the one
//!   signer and the one strict decoder for all note kinds;
//! - [`notes`]: node, group and membership notes signed by the bridge, and [`KeyBook`],
//!   the reader that refuses forged, foreign or rolled-back notes;
//! - [`chunk`]: splitting any signed note into MQTT-sized chunks and back;
//! - [`sender_key`]: per-(group, sender, epoch) keys wrapped with ECIES for
//!   every member, signed by the sender;
//! - [`envelope`]: the encrypted, signed message format;
//! - [`session`]: [`Sealer`] and [`Opener`], the state machines an agent drives;
//! - [`topics`]: the MQTT topic layout and topic-filter matching.
//!
//! It is *not* an MQTT client: nothing here does I/O, spawns tasks or reads a
//! clock. Randomness is always passed in by the caller, which is how the
//! checked-in test vectors stay byte-for-byte reproducible.
//! `docs/spec.md` in the repository describes every byte; `examples/full_flow.rs`
//! walks through bridge → reader → sender → member.
//!
//! ```
//! use anchormq_core::{GroupId, NodeId, topic_matches};
//!
//! let group: GroupId = "hsu0001".parse()?;
//! assert_eq!(group.to_string(), "hsu0001");
//! assert_eq!(&group.as_bytes()[..8], b"hsu0001\0");
//! assert!(topic_matches("hsu0001/#", "hsu0001/sensor/temp"));
//! assert!(NodeId::from_label("a label longer than thirty-two bytes").is_err());
//! # Ok::<(), anchormq_core::IdError>(())
//! ```

pub mod chunk;
pub mod envelope;
pub mod error;
pub mod frame;
pub mod fuzz_entry;
pub mod ids;
pub mod keys;
pub mod notes;
pub mod redact;
pub mod replay;
pub mod sender_key;
pub mod session;
pub mod topics;
pub mod trust;
mod wire;

pub use chunk::ChunkAssembler;
/// The Ed25519 implementation stream signing keys use (its types appear in this API).
pub use ed25519_dalek as ed25519;
pub use envelope::{Envelope, StreamTag};
pub use error::{
    ChunkError, DecodeError, GroupNoteError, IdError, IngestError, KeyError, KeyFileError,
    MembershipError, NoteError, OpenError, SealError, SenderIssue, SenderKeyError, TopicError,
};
pub use frame::{NoteKind, SignedNote};
pub use ids::{GroupId, NodeId};
pub use keys::{NodePublicKey, NodeSecretKey, Signature};
pub use notes::{
    Address, ChainPosition, GroupNote, KeyBook, Member, MembershipNote, NodeNote, NodeStatus,
    NoteUpdate, Registry, Roles,
};
pub use redact::redact_url;
pub use replay::{ReplayVerdict, ReplayWindow};
pub use sender_key::{SenderKey, SenderKeyNote, StreamId, WrappedKey};
pub use session::{
    Begun, Ingested, Message, Opened, Opener, OpenerLimits, Sealer, SenderKeyNoteBuild, Unverified,
    Verified,
};
pub use topics::{NoteTopic, Topics, topic_matches};
pub use trust::Trust;
