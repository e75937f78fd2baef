//! Error types, one per operation, so callers match only what can happen.
//!
//! Errors never carry secret material. Messages name what was wrong and, where
//! it helps, what the user can do about it.

use crate::envelope::StreamTag;
use crate::ids::{GroupId, NodeId};
use crate::notes::Roles;

/// A node or group ID could not be built from a string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The label was empty; `bytes32("")` is all zeros and names nothing.
    #[error("an ID label must not be empty")]
    Empty,
    /// The label is longer than the 32 bytes of a `bytes32`.
    #[error("an ID label is at most 32 bytes, got {len}")]
    TooLong {
        /// Length of the offered label in bytes.
        len: usize,
    },
    /// The label has a character outside printable ASCII (0x20..=0x7e).
    #[error("an ID label must be printable ASCII; use 0x followed by 64 hex digits for raw bytes")]
    NotPrintable,
    /// A `0x`-prefixed, 66-character string was not valid hex.
    #[error("an ID given as 0x-hex must have exactly 64 hex digits")]
    BadHex,
}

/// Key material could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Bytes are not a valid SEC1 secp256k1 point (wrong length, prefix, not on the curve,
    /// or the identity).
    #[error("not a valid secp256k1 public key (expected a 33-byte compressed point)")]
    InvalidPublicKey,
    /// A secret scalar is zero or not below the group order.
    #[error(
        "not a valid secp256k1 secret key (must be 32 bytes, non-zero and below the group order)"
    )]
    InvalidSecretKey,
    /// A signature is not 64 bytes r||s with 0 < r, s < n.
    #[error("malformed signature")]
    MalformedSignature,
    /// The signature has a high S value; anchormq only accepts low-S signatures (no malleability).
    #[error("signature has a high S value (only low-S signatures are accepted)")]
    HighS,
    /// The signature does not verify under this public key.
    #[error("signature does not verify")]
    BadSignature,
}

/// A node key file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The first line is not `anchormq-node-key-v1`.
    #[error("not an anchormq node key file (first line must be `anchormq-node-key-v1`)")]
    WrongHeader,
    /// The second line is not exactly 64 hex digits. The content is never echoed.
    #[error("the secret line of the node key file must be exactly 64 hex digits")]
    BadSecretLine,
    /// Lines other than the header, the secret and one final newline were found.
    #[error("unexpected content after the secret line in the node key file")]
    TrailingContent,
    /// The hex decodes to a number that is not a valid secret key.
    #[error("the node key file holds an invalid secret: {0}")]
    InvalidKey(KeyError),
}

/// Bytes could not be decoded into a structure. Says which field was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A field was truncated, out of range or not canonical.
    #[error("malformed {field}")]
    Malformed {
        /// The field that failed to decode.
        field: &'static str,
    },
    /// The format version byte is not one this build understands.
    #[error("unsupported format version {version}")]
    UnsupportedVersion {
        /// The version found on the wire.
        version: u8,
    },
    /// The cipher suite byte is not one this build understands.
    #[error("unsupported cipher suite {suite}")]
    UnsupportedSuite {
        /// The suite found on the wire.
        suite: u8,
    },
}

impl DecodeError {
    pub(crate) const fn malformed(field: &'static str) -> Self {
        Self::Malformed { field }
    }
}

/// A chunk could not be accepted or reassembled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// The chunk itself does not decode.
    #[error("chunk: {0}")]
    Decode(#[from] DecodeError),
    /// Another chunk of the same note (same content hash) disagrees on the header.
    #[error("chunk header disagrees with earlier chunks of the same note")]
    Inconsistent,
    /// All chunks arrived but their concatenation does not hash to the announced content hash.
    #[error("reassembled note does not match its content hash")]
    HashMismatch,
    /// The reassembled note's kind, subject or order differs from the chunk header.
    #[error("chunk header does not describe the note it carries")]
    HeaderMismatch,
}

/// A chain note (node or group) was refused by the [`KeyBook`](crate::KeyBook).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// The note bytes do not decode.
    #[error("note: {0}")]
    Decode(#[from] DecodeError),
    /// The signature is missing, malformed, high-S, or made by a key other than the bridge's.
    #[error("note is not signed by the trusted bridge key")]
    BadSignature,
    /// The note is about another chain or another registry contract.
    #[error(
        "note is for chain {found_chain} registry 0x{found_registry}, expected chain {expected_chain} registry 0x{expected_registry}"
    )]
    WrongRegistry {
        /// Chain ID we trust.
        expected_chain: u64,
        /// Registry we trust (hex).
        expected_registry: String,
        /// Chain ID in the note.
        found_chain: u64,
        /// Registry in the note (hex).
        found_registry: String,
    },
    /// The note is older, by `(generation, block, log index)`, than the one already held for the
    /// same node or group.
    #[error(
        "note at generation {offered_generation} block {offered_block} log {offered_log} is older than the held one at generation {held_generation} block {held_block} log {held_log} (rollback refused)"
    )]
    Rollback {
        /// Bridge generation of the held note.
        held_generation: u64,
        /// Block number of the held note.
        held_block: u64,
        /// Log index of the held note.
        held_log: u64,
        /// Bridge generation of the offered note.
        offered_generation: u64,
        /// Block number of the offered note.
        offered_block: u64,
        /// Log index of the offered note.
        offered_log: u64,
    },
    /// Two different notes claim the same generation and chain position: the bridge equivocated.
    #[error(
        "a different note for the same generation and chain position is already held (bridge equivocation)"
    )]
    Conflict,
    /// A sender-key note was given where a chain note was expected.
    #[error("not a chain note (kind {kind})")]
    NotAChainNote {
        /// The note kind byte.
        kind: u8,
    },
}

/// Membership of a node in a group at an epoch could not be established.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    /// No group note is held for this group.
    #[error("no group note for {group} yet (wait for the bridge's retained note)")]
    UnknownGroup {
        /// The group.
        group: GroupId,
    },
    /// The epoch is older than the group's current epoch.
    #[error("epoch {epoch} of {group} is stale (current epoch is {current})")]
    StaleEpoch {
        /// The group.
        group: GroupId,
        /// The epoch asked about.
        epoch: u64,
        /// The group's current epoch.
        current: u64,
    },
    /// The epoch is newer than the group note held; the note will follow.
    #[error("epoch {epoch} of {group} is ahead of the held group note (epoch {current})")]
    EpochAhead {
        /// The group.
        group: GroupId,
        /// The epoch asked about.
        epoch: u64,
        /// The held group note's epoch.
        current: u64,
    },
    /// The node is not in the group's member list at that epoch.
    #[error("node {node} is not a member of {group} (epoch {epoch})")]
    NotMember {
        /// The node.
        node: NodeId,
        /// The group.
        group: GroupId,
        /// The epoch.
        epoch: u64,
    },
    /// The node is a member but lacks a role the action needs.
    #[error("node {node} is a member of {group} without the {needed} role (its roles: {roles})")]
    MissingRole {
        /// The node.
        node: NodeId,
        /// The group.
        group: GroupId,
        /// The role needed.
        needed: Roles,
        /// The roles it has.
        roles: Roles,
    },
    /// No node note is held for this node.
    #[error("no node note for {node} yet")]
    UnknownNode {
        /// The node.
        node: NodeId,
    },
    /// The node's key is revoked on chain.
    #[error("node {node} is revoked")]
    Revoked {
        /// The node.
        node: NodeId,
    },
}

/// A sender-key note could not be built or accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SenderKeyError {
    /// The note bytes do not decode.
    #[error("sender-key note: {0}")]
    Decode(#[from] DecodeError),
    /// The sender is unknown, revoked, or not a member of the group at the note's epoch.
    #[error("sender-key note from {sender}: {source}")]
    Sender {
        /// The sender named in the note.
        sender: NodeId,
        /// Why the sender is not acceptable.
        source: MembershipError,
    },
    /// The note names a sender key version other than the sender's current one on chain.
    #[error(
        "sender-key note from {sender} is signed with key version {found}, current is {current}"
    )]
    SenderKeyVersion {
        /// The sender.
        sender: NodeId,
        /// Version in the note.
        found: u64,
        /// Current version from the node note.
        current: u64,
    },
    /// The sender's signature over the note does not verify (or is high-S).
    #[error("sender-key note from {sender} has a bad signature")]
    BadSignature {
        /// The sender.
        sender: NodeId,
    },
    /// The note has no entry for this node.
    #[error(
        "sender-key note from {sender} for {group} (epoch {epoch}) has no entry for node {node}"
    )]
    NotAddressed {
        /// The sender.
        sender: NodeId,
        /// The group.
        group: GroupId,
        /// The epoch.
        epoch: u64,
        /// The local node.
        node: NodeId,
    },
    /// The entry for this node was wrapped to another key version than our current one.
    #[error(
        "sender-key note from {sender} wraps for key version {found} of this node, ours is {ours}"
    )]
    RecipientKeyVersion {
        /// The sender.
        sender: NodeId,
        /// Version in the entry.
        found: u64,
        /// Our current version.
        ours: u64,
    },
    /// The wrapped key did not decrypt with our key, or does not match the signed key ID.
    #[error("sender key from {sender} could not be unwrapped with this node's key")]
    Unwrap {
        /// The sender.
        sender: NodeId,
    },
}

/// A payload from a note topic could not be ingested by an [`Opener`](crate::Opener).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The chunk layer refused the payload.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// A chain note was refused.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// A sender-key note was refused.
    #[error(transparent)]
    SenderKey(#[from] SenderKeyError),
}

/// Sealing (or preparing to seal) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The local node cannot send to the group at this epoch.
    #[error(transparent)]
    Membership(#[from] MembershipError),
    /// The topic is not covered by the group's topic filter.
    #[error("topic {topic:?} is outside {group}'s topic filter {filter:?}")]
    TopicOutsideGroup {
        /// The topic.
        topic: String,
        /// The group.
        group: GroupId,
        /// The group's filter.
        filter: String,
    },
    /// The topic is not a valid MQTT topic name for publishing.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The group note moved to a new epoch; build a new `Sealer`.
    #[error(
        "the sealer is for epoch {sealer} of {group}, the group is at epoch {current}; create a new sealer"
    )]
    EpochChanged {
        /// The group.
        group: GroupId,
        /// The sealer's epoch.
        sealer: u64,
        /// The group's current epoch.
        current: u64,
    },
    /// A batch must hold 1 to `max` messages.
    #[error("a batch holds 1 to {max} messages, not {len}")]
    BatchSize {
        /// Messages given.
        len: usize,
        /// The most a batch holds.
        max: usize,
    },
    /// The group note changed at the same epoch (a reorg took a membership change back and
    /// another took its place): the key may be wrapped for the wrong members; build a new `Sealer`.
    #[error("the chain's word on {group} changed since the sealer was made; create a new sealer")]
    GroupChanged {
        /// The group.
        group: GroupId,
    },
    /// The node key given does not match the node's public key on chain.
    #[error(
        "the node key does not match the public key registered for node {node} (key version {key_version})"
    )]
    WrongNodeKey {
        /// The node.
        node: NodeId,
        /// Key version on chain.
        key_version: u64,
    },
    /// The sender key could not be wrapped for a member whose key is invalid for ECIES.
    #[error("could not wrap the sender key: {0}")]
    Wrap(KeyError),
    /// 2^64 messages were sealed with one sender key; create a new sealer.
    #[error("sequence numbers exhausted for this sender key; create a new sealer")]
    SequenceExhausted,
    /// The plaintext is larger than an envelope can carry.
    #[error("plaintext of {len} bytes exceeds the envelope limit")]
    TooLarge {
        /// Plaintext length.
        len: usize,
    },
}

/// A message envelope could not be opened.
///
/// A duplicate (QoS 1 redelivery) is *not* an error: see
/// [`Opened::Duplicate`](crate::Opened::Duplicate).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The envelope does not decode (names the field).
    #[error("envelope: {0}")]
    Decode(#[from] DecodeError),
    /// No group note for the envelope's group.
    #[error("no group note for {group} yet (wait for the bridge's retained note)")]
    UnknownGroup {
        /// The group.
        group: GroupId,
    },
    /// The group is not one this node accepts (see [`crate::Trust`]).
    #[error(
        "group {group} (admin {}) is not trusted by this node: allow it with --trust-group {group} or --trust-admin {}",
        show_admin(.admin), show_admin(.admin)
    )]
    UntrustedGroup {
        /// The group.
        group: GroupId,
        /// Its admin, as the group note names it.
        admin: Option<[u8; 20]>,
    },
    /// The message arrived on a topic outside the group's topic filter (moved by someone).
    #[error("topic {topic:?} is outside {group}'s topic filter; message refused")]
    TopicOutsideGroup {
        /// The topic the message arrived on.
        topic: String,
        /// The group in the envelope.
        group: GroupId,
    },
    /// The message's epoch is older than the group's current epoch.
    #[error("message for {group} is from stale epoch {epoch} (current {current})")]
    StaleEpoch {
        /// The group.
        group: GroupId,
        /// The epoch in the message.
        epoch: u64,
        /// The group's current epoch.
        current: u64,
    },
    /// The message's epoch is newer than the held group note.
    #[error(
        "message for {group} is from epoch {epoch}, ahead of the held group note (epoch {current})"
    )]
    EpochAhead {
        /// The group.
        group: GroupId,
        /// The epoch in the message.
        epoch: u64,
        /// The held epoch.
        current: u64,
    },
    /// This node is not a member of the group at the message's epoch.
    #[error("node {node} is not a member of {group} (epoch {epoch})")]
    NotMember {
        /// The local node.
        node: NodeId,
        /// The group.
        group: GroupId,
        /// The epoch.
        epoch: u64,
    },
    /// No sender-key note names the envelope's stream, and this node is a member of none of the
    /// groups whose topic filter covers the topic (those it trusts listed first).
    #[error("node {node} is not a member of any group covering topic {topic:?} ({})", show_groups(.groups))]
    NotMemberOfAny {
        /// The local node.
        node: NodeId,
        /// The topic.
        topic: String,
        /// The groups whose filter covers it.
        groups: Vec<GroupId>,
    },
    /// This node is a member of the group without the read role: senders do not give it keys.
    #[error(
        "node {node} is a member of {group} without the read role; it cannot read its messages"
    )]
    NotReader {
        /// The local node.
        node: NodeId,
        /// The group.
        group: GroupId,
    },
    /// No sender-key note announced the envelope's stream (yet).
    #[error("no sender-key note for stream {tag} (message on {topic:?}) yet; waiting for it")]
    UnknownStream {
        /// The envelope's stream tag.
        tag: StreamTag,
        /// The topic it arrived on.
        topic: String,
    },
    /// The sender has no node note, is revoked, or is not a member of the group at that epoch.
    #[error("unknown sender {sender} for {group} (epoch {epoch}): {reason}")]
    UnknownSender {
        /// The claimed sender.
        sender: NodeId,
        /// The group.
        group: GroupId,
        /// The epoch.
        epoch: u64,
        /// Why the sender is not accepted.
        reason: SenderIssue,
    },
    /// The sender's signature does not verify (forged sender, moved topic, or tampering).
    #[error("bad signature on message claiming sender {sender} in {group}")]
    BadSignature {
        /// The claimed sender.
        sender: NodeId,
        /// The group.
        group: GroupId,
    },
    /// No sender key is cached for this sender and key ID; its sender-key note has not arrived.
    #[error(
        "no sender key from {sender} for {group} (epoch {epoch}) yet; waiting for its sender-key note"
    )]
    MissingSenderKey {
        /// The sender.
        sender: NodeId,
        /// The group.
        group: GroupId,
        /// The epoch.
        epoch: u64,
    },
    /// Signed by the sender but the ciphertext does not decrypt under the announced key.
    #[error("message from {sender} in {group} does not decrypt under its announced sender key")]
    DecryptFailed {
        /// The sender.
        sender: NodeId,
        /// The group.
        group: GroupId,
    },
    /// A batch end whose batched envelopes did not all arrive (lost, or sent on another topic):
    /// the batch cannot be authenticated and none of it is delivered.
    #[error(
        "batch of {sender} in {group} ending at message {seq}: {missing} of its {count} earlier messages did not arrive; none delivered"
    )]
    IncompleteBatch {
        /// The sender.
        sender: NodeId,
        /// The group.
        group: GroupId,
        /// The batch end's sequence number.
        seq: u64,
        /// Batched envelopes the end covers.
        count: u8,
        /// How many of them were not held.
        missing: u8,
    },
    /// Two different envelopes that both decrypt claim the same place in a stream: a member holding
    /// the sender key forged one; the first one stays.
    #[error("two different messages {seq} from {sender} in {group}; the later one is dropped")]
    Conflict {
        /// The claimed sender.
        sender: NodeId,
        /// The group.
        group: GroupId,
        /// The sequence number.
        seq: u64,
    },
    /// The sequence number is older than the replay window: a replay or a very late message.
    #[error(
        "message {seq} from {sender} in {group} (epoch {epoch}) is older than the replay window; dropped"
    )]
    Replay {
        /// The sender.
        sender: NodeId,
        /// The group.
        group: GroupId,
        /// The epoch.
        epoch: u64,
        /// The sequence number.
        seq: u64,
    },
}

fn show_groups(groups: &[GroupId]) -> String {
    let names: Vec<String> = groups.iter().map(ToString::to_string).collect();
    names.join(", ")
}

/// Why a message's sender is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SenderIssue {
    /// No node note is held for the sender.
    #[error("no node note for the sender")]
    NoNodeNote,
    /// The sender's key is revoked on chain.
    #[error("the sender is revoked")]
    Revoked,
    /// The sender is not in the group's member list at that epoch.
    #[error("the sender is not a member")]
    NotMember,
    /// The sender is a member without the write role.
    #[error("the sender has no write role in the group")]
    NotWriter,
}

impl SenderIssue {
    pub(crate) fn from_membership(e: &MembershipError) -> Self {
        match e {
            MembershipError::UnknownNode { .. } => Self::NoNodeNote,
            MembershipError::Revoked { .. } => Self::Revoked,
            MembershipError::MissingRole { .. } => Self::NotWriter,
            _ => Self::NotMember,
        }
    }
}

/// A topic or topic filter is not valid MQTT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// Empty topic, or longer than 65535 bytes.
    #[error("MQTT topics must be 1 to 65535 bytes")]
    Length,
    /// Contains a NUL character.
    #[error("MQTT topics must not contain NUL")]
    Nul,
    /// A topic name (for publishing) contains `+` or `#`.
    #[error("a topic name must not contain wildcards")]
    WildcardInName,
    /// `+` or `#` not alone in its level, or `#` not last.
    #[error("misplaced wildcard in topic filter")]
    BadWildcard,
}

/// A group note could not be built from the given fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupNoteError {
    /// The topic filter is not a valid MQTT topic filter.
    #[error("group topic filter: {0}")]
    TopicFilter(#[from] TopicError),
    /// A node appears twice in the member list.
    #[error("node {node} is listed twice")]
    DuplicateMember {
        /// The repeated node.
        node: NodeId,
    },
    /// More members than the format's u32 count can hold.
    #[error("too many members")]
    TooManyMembers,
}

fn show_admin(admin: &Option<[u8; 20]>) -> String {
    admin.map_or_else(|| "unknown".to_owned(), |a| format!("0x{}", hex::encode(a)))
}
