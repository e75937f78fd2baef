//! Key notes: the bridge's signed MQTT mirror of the KeyRegistry, and
//! [`KeyBook`], the reader that holds the last good note per node and group.
//!
//! Node, group and membership notes are bodies in the signed-note frame of
//! [`crate::frame`], signed by the bridge key (sender-key notes, signed by the
//! sending node, are in [`crate::sender_key`]).

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::error::{DecodeError, GroupNoteError, MembershipError, NoteError};
use crate::frame::{self, NoteBody, NoteKind, SignedNote};
use crate::ids::{GroupId, NodeId};
use crate::keys::{NodePublicKey, NodeSecretKey};
use crate::topics::{topic_matches, validate_topic_filter};
use crate::wire::{Reader, put_u16, put_u32, put_u64};

/// A 20-byte Ethereum address.
pub type Address = [u8; 20];

/// Which KeyRegistry a note speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Registry {
    /// EIP-155 chain ID.
    pub chain_id: u64,
    /// Address of the KeyRegistry contract.
    pub address: Address,
}

/// Where the event behind a note sits on chain. Readers order notes by
/// `(generation, block_number, log_index)`: a reorg can move the canonical
/// event to an earlier position, and the bridge's generation rises with every
/// reorg it follows (see [`KeyBook`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainPosition {
    /// EIP-155 chain ID.
    pub chain_id: u64,
    /// KeyRegistry address.
    pub registry: Address,
    /// Block number of the event.
    pub block_number: u64,
    /// Block hash of the event's block.
    pub block_hash: [u8; 32],
    /// Hash of the transaction that emitted the event.
    pub tx_hash: [u8; 32],
    /// Log index of the event in its block.
    pub log_index: u64,
}

impl ChainPosition {
    /// Bytes on the wire.
    pub const LEN: usize = 8 + 20 + 8 + 32 + 32 + 8;

    /// The registry this position belongs to.
    pub const fn registry(&self) -> Registry {
        Registry {
            chain_id: self.chain_id,
            address: self.registry,
        }
    }

    /// The ordering key `(block_number, log_index)`.
    pub const fn order(&self) -> (u64, u64) {
        (self.block_number, self.log_index)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.chain_id);
        out.extend_from_slice(&self.registry);
        put_u64(out, self.block_number);
        out.extend_from_slice(&self.block_hash);
        out.extend_from_slice(&self.tx_hash);
        put_u64(out, self.log_index);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            chain_id: r.u64("position.chain_id")?,
            registry: r.array("position.registry")?,
            block_number: r.u64("position.block_number")?,
            block_hash: r.array("position.block_hash")?,
            tx_hash: r.array("position.tx_hash")?,
            log_index: r.u64("position.log_index")?,
        })
    }
}

/// A node's registration status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeStatus {
    /// The key may be used.
    Active,
    /// The node was revoked; its key must not be trusted or wrapped to.
    Revoked,
}

impl NodeStatus {
    const fn to_byte(self) -> u8 {
        match self {
            Self::Active => 1,
            Self::Revoked => 2,
        }
    }

    fn from_byte(b: u8) -> Result<Self, DecodeError> {
        match b {
            1 => Ok(Self::Active),
            2 => Ok(Self::Revoked),
            _ => Err(DecodeError::malformed("node.status")),
        }
    }
}

/// The chain's word on one node: its current public key and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNote {
    /// The bridge's generation: raised each time the bridge follows a reorg, so the notes of the
    /// canonical chain outrank the held ones even when their events sit at earlier blocks.
    pub generation: u64,
    /// The event this note mirrors.
    pub position: ChainPosition,
    /// The node.
    pub node: NodeId,
    /// Key version on chain (bumped at each key rotation).
    pub key_version: u64,
    /// Active or revoked.
    pub status: NodeStatus,
    /// The node's public key at `key_version`.
    pub public_key: NodePublicKey,
}

impl NodeNote {
    /// Body length on the wire.
    pub const BODY_LEN: usize = 8 + ChainPosition::LEN + 32 + 8 + 1 + 33;

    /// Signs the note with the bridge key.
    pub fn sign(&self, bridge_key: &NodeSecretKey) -> SignedNote {
        frame::sign(self, bridge_key)
    }

    /// Decodes a signed node note without checking the signature; returns the
    /// note and the raw signature bytes.
    pub fn decode_signed(bytes: &[u8]) -> Result<(Self, [u8; 64]), DecodeError> {
        frame::decode(bytes).map(frame::Framed::into_parts)
    }
}

impl NoteBody for NodeNote {
    const KIND: NoteKind = NoteKind::Node;

    fn subject(&self) -> [u8; 32] {
        *self.node.as_bytes()
    }

    fn order(&self) -> u64 {
        self.position.block_number
    }

    fn body_len(&self) -> usize {
        Self::BODY_LEN
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        put_u64(out, self.generation);
        self.position.encode(out);
        out.extend_from_slice(self.node.as_bytes());
        put_u64(out, self.key_version);
        out.push(self.status.to_byte());
        out.extend_from_slice(&self.public_key.to_bytes());
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let generation = r.u64("node.generation")?;
        let position = ChainPosition::decode(r)?;
        let node = NodeId::from_bytes(r.array("node.id")?);
        let key_version = r.u64("node.key_version")?;
        let status = NodeStatus::from_byte(r.u8("node.status")?)?;
        let public_key = NodePublicKey::from_compressed(r.bytes(33, "node.public_key")?)
            .map_err(|_| DecodeError::malformed("node.public_key"))?;
        Ok(Self {
            generation,
            position,
            node,
            key_version,
            status,
            public_key,
        })
    }
}

/// What a member may do in its group (the registry's role bits).
///
/// Readers are sent the group's sender keys; writers' messages are accepted by readers. A member
/// added without roles has both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Roles(u8);

impl Roles {
    /// Receives sender keys: can read the group's messages.
    pub const READ: Self = Self(1);
    /// Sends messages readers accept.
    pub const WRITE: Self = Self(2);
    /// Both (what `addMember` gives).
    pub const BOTH: Self = Self(3);

    /// The roles of a registry bit mask; `None` unless it is 1, 2 or 3.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            1..=3 => Some(Self(bits)),
            _ => None,
        }
    }

    /// The bit mask (1 read, 2 write).
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether these roles include every role of `other`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the member receives sender keys.
    pub const fn reads(self) -> bool {
        self.contains(Self::READ)
    }

    /// Whether readers accept the member's messages.
    pub const fn writes(self) -> bool {
        self.contains(Self::WRITE)
    }
}

impl Default for Roles {
    fn default() -> Self {
        Self::BOTH
    }
}

impl std::fmt::Display for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            1 => "read",
            2 => "write",
            _ => "read+write",
        })
    }
}

/// A group member as listed in the group note.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member {
    /// The member node.
    pub node: NodeId,
    /// The key version recorded for it in the registry's member list.
    pub key_version: u64,
    /// What it may do in the group.
    pub roles: Roles,
}

impl Member {
    /// A member with both roles.
    pub const fn new(node: NodeId, key_version: u64) -> Self {
        Self {
            node,
            key_version,
            roles: Roles::BOTH,
        }
    }
}

/// Bytes of one member entry: node, key version, roles.
const MEMBER_LEN: usize = 32 + 8 + 1;

/// The chain's word on one group: topic filter, epoch and members.
///
/// Members are kept sorted by node ID (the wire order), so lookups are
/// `O(log n)` even for 10,000 members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupNote {
    generation: u64,
    position: ChainPosition,
    group: GroupId,
    epoch: u64,
    topic_filter: String,
    admin: Option<Address>,
    members: Vec<Member>,
}

impl GroupNote {
    /// Builds a group note (bridge generation 0, see [`GroupNote::with_generation`]); sorts
    /// `members` and refuses duplicates and bad filters.
    pub fn new(
        position: ChainPosition,
        group: GroupId,
        epoch: u64,
        topic_filter: impl Into<String>,
        admin: Option<Address>,
        mut members: Vec<Member>,
    ) -> Result<Self, GroupNoteError> {
        let topic_filter = topic_filter.into();
        check_group_filter(&topic_filter)?;
        if u32::try_from(members.len()).is_err() {
            return Err(GroupNoteError::TooManyMembers);
        }
        members.sort();
        if let Some(w) = members.windows(2).find(|w| w[0].node == w[1].node) {
            return Err(GroupNoteError::DuplicateMember { node: w[0].node });
        }
        Ok(Self {
            generation: 0,
            position,
            group,
            epoch,
            topic_filter,
            admin,
            members,
        })
    }

    /// The same note under bridge generation `generation`.
    #[must_use]
    pub const fn with_generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    /// The bridge's generation (see [`NodeNote::generation`]).
    pub const fn generation(&self) -> u64 {
        self.generation
    }
    /// The event this note mirrors.
    pub const fn position(&self) -> &ChainPosition {
        &self.position
    }
    /// The group.
    pub const fn group(&self) -> GroupId {
        self.group
    }
    /// The current epoch (bumped on every membership change).
    pub const fn epoch(&self) -> u64 {
        self.epoch
    }
    /// MQTT topic filter the group's messages are published under (`""`: none yet).
    pub fn topic_filter(&self) -> &str {
        &self.topic_filter
    }
    /// The group admin's address, if the registry names one.
    pub const fn admin(&self) -> Option<Address> {
        self.admin
    }
    /// Members, sorted by node ID.
    pub fn members(&self) -> &[Member] {
        &self.members
    }
    /// The member entry of `node`, if it is a member.
    pub fn member(&self, node: &NodeId) -> Option<&Member> {
        self.members
            .binary_search_by(|m| m.node.cmp(node))
            .ok()
            .map(|i| &self.members[i])
    }

    /// Whether `node` may read and send in this group at `epoch`, judged from this note alone.
    pub fn check_member(&self, node: &NodeId, epoch: u64) -> Result<&Member, MembershipError> {
        if epoch < self.epoch {
            return Err(MembershipError::StaleEpoch {
                group: self.group,
                epoch,
                current: self.epoch,
            });
        }
        if epoch > self.epoch {
            return Err(MembershipError::EpochAhead {
                group: self.group,
                epoch,
                current: self.epoch,
            });
        }
        self.member(node).ok_or(MembershipError::NotMember {
            node: *node,
            group: self.group,
            epoch,
        })
    }

    /// Like [`GroupNote::check_member`], and the member must hold `needed`.
    pub fn check_role(
        &self,
        node: &NodeId,
        epoch: u64,
        needed: Roles,
    ) -> Result<&Member, MembershipError> {
        let member = self.check_member(node, epoch)?;
        if !member.roles.contains(needed) {
            return Err(MembershipError::MissingRole {
                node: *node,
                group: self.group,
                needed,
                roles: member.roles,
            });
        }
        Ok(member)
    }

    /// Signs the note with the bridge key.
    pub fn sign(&self, bridge_key: &NodeSecretKey) -> SignedNote {
        frame::sign(self, bridge_key)
    }

    /// Decodes a signed group note without checking the signature.
    pub fn decode_signed(bytes: &[u8]) -> Result<(Self, [u8; 64]), DecodeError> {
        frame::decode(bytes).map(frame::Framed::into_parts)
    }
}

impl NoteBody for GroupNote {
    const KIND: NoteKind = NoteKind::Group;

    fn subject(&self) -> [u8; 32] {
        *self.group.as_bytes()
    }

    fn order(&self) -> u64 {
        self.position.block_number
    }

    fn body_len(&self) -> usize {
        let admin = if self.admin.is_some() { 20 } else { 0 };
        // generation, position, ID, epoch, filter length, filter, admin flag, admin, member count, members
        8 + ChainPosition::LEN
            + 32
            + 8
            + 2
            + self.topic_filter.len()
            + 1
            + admin
            + 4
            + MEMBER_LEN * self.members.len()
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        put_u64(out, self.generation);
        self.position.encode(out);
        out.extend_from_slice(self.group.as_bytes());
        put_u64(out, self.epoch);
        // validated at construction: at most 65535 bytes
        put_u16(out, self.topic_filter.len() as u16);
        out.extend_from_slice(self.topic_filter.as_bytes());
        match self.admin {
            Some(a) => {
                out.push(1);
                out.extend_from_slice(&a);
            }
            None => out.push(0),
        }
        put_u32(out, self.members.len() as u32);
        for m in &self.members {
            out.extend_from_slice(m.node.as_bytes());
            put_u64(out, m.key_version);
            out.push(m.roles.bits());
        }
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let generation = r.u64("group.generation")?;
        let position = ChainPosition::decode(r)?;
        let group = GroupId::from_bytes(r.array("group.id")?);
        let epoch = r.u64("group.epoch")?;
        let filter_len = r.u16("group.topic_filter")? as usize;
        let filter_bytes = r.bytes(filter_len, "group.topic_filter")?;
        let topic_filter = std::str::from_utf8(filter_bytes)
            .ok()
            .filter(|f| check_group_filter(f).is_ok())
            .ok_or(DecodeError::malformed("group.topic_filter"))?
            .to_owned();
        let admin = match r.u8("group.admin")? {
            0 => None,
            1 => Some(r.array("group.admin")?),
            _ => return Err(DecodeError::malformed("group.admin")),
        };
        let count = r.u32("group.member_count")? as usize;
        if count
            .checked_mul(MEMBER_LEN)
            .is_none_or(|n| n > r.remaining())
        {
            return Err(DecodeError::malformed("group.members"));
        }
        let mut members = Vec::with_capacity(count);
        for _ in 0..count {
            let node = NodeId::from_bytes(r.array("group.members")?);
            let key_version = r.u64("group.members")?;
            let roles = Roles::from_bits(r.u8("group.members")?)
                .ok_or(DecodeError::malformed("group.members roles"))?;
            if members
                .last()
                .is_some_and(|prev: &Member| prev.node >= node)
            {
                return Err(DecodeError::malformed("group.members order"));
            }
            members.push(Member {
                node,
                key_version,
                roles,
            });
        }
        Ok(Self {
            generation,
            position,
            group,
            epoch,
            topic_filter,
            admin,
            members,
        })
    }
}

/// The groups one node is a member of, as the bridge mirrors them from the registry.
///
/// Only a subscription hint: it tells an agent which group notes to follow, so that it need
/// not receive every group's note. It grants nothing; membership is decided by the group note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipNote {
    /// The bridge's generation (see [`NodeNote::generation`]).
    pub generation: u64,
    /// The last event that changed the node's groups (or its registration when none did).
    pub position: ChainPosition,
    /// The node.
    pub node: NodeId,
    /// Strictly ascending: the wire order, so each list has one encoding.
    groups: Vec<GroupId>,
}

impl MembershipNote {
    /// Body length on the wire without the group IDs.
    const BASE_LEN: usize = 8 + ChainPosition::LEN + 32 + 4;

    /// Builds a membership note (bridge generation 0); sorts `groups` and drops duplicates.
    pub fn new(position: ChainPosition, node: NodeId, mut groups: Vec<GroupId>) -> Self {
        groups.sort();
        groups.dedup();
        Self {
            generation: 0,
            position,
            node,
            groups,
        }
    }

    /// The same note under bridge generation `generation`.
    #[must_use]
    pub const fn with_generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    /// The node's groups, sorted by group ID.
    pub fn groups(&self) -> &[GroupId] {
        &self.groups
    }

    /// Signs the note with the bridge key.
    pub fn sign(&self, bridge_key: &NodeSecretKey) -> SignedNote {
        frame::sign(self, bridge_key)
    }

    /// Decodes a signed membership note without checking the signature.
    pub fn decode_signed(bytes: &[u8]) -> Result<(Self, [u8; 64]), DecodeError> {
        frame::decode(bytes).map(frame::Framed::into_parts)
    }
}

impl NoteBody for MembershipNote {
    const KIND: NoteKind = NoteKind::Membership;

    fn subject(&self) -> [u8; 32] {
        *self.node.as_bytes()
    }

    fn order(&self) -> u64 {
        self.position.block_number
    }

    fn body_len(&self) -> usize {
        Self::BASE_LEN + 32 * self.groups.len()
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        put_u64(out, self.generation);
        self.position.encode(out);
        out.extend_from_slice(self.node.as_bytes());
        // a 16 MiB note holds far fewer than 2^32 groups
        put_u32(out, self.groups.len() as u32);
        for g in &self.groups {
            out.extend_from_slice(g.as_bytes());
        }
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let generation = r.u64("membership.generation")?;
        let position = ChainPosition::decode(r)?;
        let node = NodeId::from_bytes(r.array("membership.id")?);
        let count = r.u32("membership.group_count")? as usize;
        // checked before allocating: a forged count must not reserve gigabytes
        if count.checked_mul(32).is_none_or(|n| n > r.remaining()) {
            return Err(DecodeError::malformed("membership.groups"));
        }
        let mut groups: Vec<GroupId> = Vec::with_capacity(count);
        for _ in 0..count {
            let group = GroupId::from_bytes(r.array("membership.groups")?);
            if groups.last().is_some_and(|prev| *prev >= group) {
                return Err(DecodeError::malformed("membership.groups order"));
            }
            groups.push(group);
        }
        Ok(Self {
            generation,
            position,
            node,
            groups,
        })
    }
}

/// The registry allows a group without a topic filter (`""`): it claims no
/// topic, so nothing can be sealed or opened for it until the filter is set.
fn check_group_filter(filter: &str) -> Result<(), crate::error::TopicError> {
    if filter.is_empty() {
        Ok(())
    } else {
        validate_topic_filter(filter)
    }
}

/// What [`KeyBook::ingest_note`] did with a note.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteUpdate {
    /// A node note was stored (`changed == false`: the same note was already held).
    Node {
        /// The node.
        node: NodeId,
        /// Whether the held note changed.
        changed: bool,
    },
    /// A group note was stored (`changed == false`: the same note was already held).
    Group {
        /// The group.
        group: GroupId,
        /// Whether the held note changed.
        changed: bool,
    },
    /// A membership note was stored (`changed == false`: the same note was already held).
    Membership {
        /// The node whose groups it lists.
        node: NodeId,
        /// Whether the held note changed.
        changed: bool,
    },
}

#[derive(Debug, Clone)]
struct Held<T> {
    note: T,
    /// `(generation, block number, log index)`: notes are ordered by it.
    order: (u64, u64, u64),
    /// SHA-256 of the whole signed note: tells a redelivery from an equivocation.
    digest: [u8; 32],
    /// SHA-256 of the body after the generation: what the chain says.
    state: [u8; 32],
}

impl<T> Held<T> {
    fn new(note: T, generation: u64, position: &ChainPosition, bytes: &[u8]) -> Self {
        // version, kind and generation before the state; the signature after it (lengths checked by decoding)
        let state = &bytes[2 + 8..bytes.len() - crate::keys::Signature::LEN];
        Self {
            note,
            order: (generation, position.block_number, position.log_index),
            digest: Sha256::digest(bytes).into(),
            state: Sha256::digest(state).into(),
        }
    }
}

/// The reader's view of the registry, built only from bridge-signed notes.
///
/// Refuses notes that are unsigned or signed by another key, that name another
/// chain or registry, or that are older than the note already held (by
/// `(generation, block_number, log_index)`: after a reorg the canonical note can
/// sit at an earlier block, under a higher generation), and keeps the last good
/// one. Pure: feed it payloads, ask it questions.
#[derive(Debug, Clone)]
pub struct KeyBook {
    registry: Registry,
    bridge: NodePublicKey,
    nodes: HashMap<NodeId, Held<NodeNote>>,
    groups: HashMap<GroupId, Held<GroupNote>>,
    memberships: HashMap<NodeId, Held<MembershipNote>>,
}

impl KeyBook {
    /// An empty book trusting `bridge` for notes about `registry`.
    pub fn new(registry: Registry, bridge: NodePublicKey) -> Self {
        Self {
            registry,
            bridge,
            nodes: HashMap::new(),
            groups: HashMap::new(),
            memberships: HashMap::new(),
        }
    }

    /// The registry this book follows.
    pub const fn registry(&self) -> Registry {
        self.registry
    }

    /// The trusted bridge key.
    pub const fn bridge_key(&self) -> &NodePublicKey {
        &self.bridge
    }

    /// Verifies and stores one complete signed node, group or membership note. `changed` says whether what
    /// the chain says changed: the same state under a higher generation is stored but reported
    /// unchanged.
    pub fn ingest_note(&mut self, bytes: &[u8]) -> Result<NoteUpdate, NoteError> {
        match frame::kind(bytes)? {
            NoteKind::Node => {
                let note: NodeNote = self.verified(bytes)?;
                self.check_registry(&note.position)?;
                let node = note.node;
                let (generation, position) = (note.generation, note.position);
                let held = Held::new(note, generation, &position, bytes);
                let changed = store(&mut self.nodes, node, held)?;
                Ok(NoteUpdate::Node { node, changed })
            }
            NoteKind::Group => {
                let note: GroupNote = self.verified(bytes)?;
                self.check_registry(&note.position)?;
                let group = note.group;
                let (generation, position) = (note.generation, note.position);
                let held = Held::new(note, generation, &position, bytes);
                let changed = store(&mut self.groups, group, held)?;
                Ok(NoteUpdate::Group { group, changed })
            }
            NoteKind::Membership => {
                let note: MembershipNote = self.verified(bytes)?;
                self.check_registry(&note.position)?;
                let node = note.node;
                let (generation, position) = (note.generation, note.position);
                let held = Held::new(note, generation, &position, bytes);
                let changed = store(&mut self.memberships, node, held)?;
                Ok(NoteUpdate::Membership { node, changed })
            }
            kind @ NoteKind::SenderKey => Err(NoteError::NotAChainNote { kind: kind as u8 }),
        }
    }

    /// Decodes a chain note and checks that the trusted bridge signed it.
    fn verified<N: NoteBody>(&self, bytes: &[u8]) -> Result<N, NoteError> {
        let framed = frame::decode::<N>(bytes)?;
        if !framed.signed_by(&self.bridge) {
            return Err(NoteError::BadSignature);
        }
        Ok(framed.into_note())
    }

    fn check_registry(&self, position: &ChainPosition) -> Result<(), NoteError> {
        if position.registry() != self.registry {
            return Err(NoteError::WrongRegistry {
                expected_chain: self.registry.chain_id,
                expected_registry: hex::encode(self.registry.address),
                found_chain: position.chain_id,
                found_registry: hex::encode(position.registry),
            });
        }
        Ok(())
    }

    /// The held note of `node`.
    pub fn node(&self, node: &NodeId) -> Option<&NodeNote> {
        self.nodes.get(node).map(|h| &h.note)
    }

    /// The held note of `group`.
    pub fn group(&self, group: &GroupId) -> Option<&GroupNote> {
        self.groups.get(group).map(|h| &h.note)
    }

    /// The held membership note of `node`: which group notes to follow, not proof of membership
    /// (ask [`KeyBook::check_member`] for that).
    pub fn membership(&self, node: &NodeId) -> Option<&MembershipNote> {
        self.memberships.get(node).map(|h| &h.note)
    }

    /// A digest of what the held note of `group` says (its body after the bridge generation): it
    /// changes whenever the chain's word on the group changes, also when a reorg keeps the epoch.
    pub fn group_state(&self, group: &GroupId) -> Option<[u8; 32]> {
        self.groups.get(group).map(|h| h.state)
    }

    /// All held group notes (no particular order).
    pub fn groups(&self) -> impl Iterator<Item = &GroupNote> {
        self.groups.values().map(|h| &h.note)
    }

    /// All held node notes (no particular order).
    pub fn nodes(&self) -> impl Iterator<Item = &NodeNote> {
        self.nodes.values().map(|h| &h.note)
    }

    /// Groups whose topic filter matches `topic`, sorted by group ID.
    pub fn groups_for_topic(&self, topic: &str) -> Vec<&GroupNote> {
        let mut out: Vec<&GroupNote> = self
            .groups()
            .filter(|g| topic_matches(g.topic_filter(), topic))
            .collect();
        out.sort_by_key(|g| g.group);
        out
    }

    /// The node's note if it is active.
    pub fn active_node(&self, node: &NodeId) -> Result<&NodeNote, MembershipError> {
        let note = self
            .node(node)
            .ok_or(MembershipError::UnknownNode { node: *node })?;
        if note.status != NodeStatus::Active {
            return Err(MembershipError::Revoked { node: *node });
        }
        Ok(note)
    }

    /// Whether `node` is a member of `group` at `epoch` (which must be the
    /// group's current epoch), according to the held group note.
    pub fn check_member(
        &self,
        group: &GroupId,
        node: &NodeId,
        epoch: u64,
    ) -> Result<&Member, MembershipError> {
        self.group(group)
            .ok_or(MembershipError::UnknownGroup { group: *group })?
            .check_member(node, epoch)
    }
}

fn store<K: std::hash::Hash + Eq, T>(
    map: &mut HashMap<K, Held<T>>,
    key: K,
    new: Held<T>,
) -> Result<bool, NoteError> {
    let changed = match map.get(&key) {
        Some(held) if new.order < held.order => {
            return Err(NoteError::Rollback {
                held_generation: held.order.0,
                held_block: held.order.1,
                held_log: held.order.2,
                offered_generation: new.order.0,
                offered_block: new.order.1,
                offered_log: new.order.2,
            });
        }
        Some(held) if new.order == held.order => {
            return if held.digest == new.digest {
                Ok(false)
            } else {
                Err(NoteError::Conflict)
            };
        }
        Some(held) => held.state != new.state,
        None => true,
    };
    map.insert(key, new);
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TopicError;

    fn pos() -> ChainPosition {
        ChainPosition {
            chain_id: 1,
            registry: [0; 20],
            block_number: 1,
            block_hash: [0; 32],
            tx_hash: [0; 32],
            log_index: 0,
        }
    }

    fn key(seed: u8) -> NodeSecretKey {
        NodeSecretKey::from_bytes(&[seed; 32]).expect("valid key")
    }

    fn gid(label: &str) -> GroupId {
        GroupId::from_label(label).expect("id")
    }

    fn at(block: u64, log: u64) -> ChainPosition {
        ChainPosition {
            block_number: block,
            log_index: log,
            ..pos()
        }
    }

    #[test]
    fn membership_note_round_trip() {
        let n = NodeId::from_label("1113").expect("id");
        let note = MembershipNote::new(
            at(21, 4),
            n,
            vec![gid("hsu0002"), gid("hsu0001"), gid("hsu0002")],
        )
        .with_generation(3);
        assert_eq!(note.groups(), &[gid("hsu0001"), gid("hsu0002")]);
        let signed = note.sign(&key(1));
        assert_eq!(signed.as_bytes().len(), 2 + 152 + 2 * 32 + 64);
        assert_eq!(
            (signed.kind(), signed.subject(), signed.order()),
            (NoteKind::Membership, n.as_bytes(), 21)
        );
        let (back, signature) = MembershipNote::decode_signed(signed.as_bytes()).expect("decodes");
        assert_eq!(back, note);
        assert_eq!(
            signature[..],
            signed.as_bytes()[signed.as_bytes().len() - 64..]
        );
        let empty = MembershipNote::new(pos(), n, vec![]);
        let (back, _) =
            MembershipNote::decode_signed(empty.sign(&key(1)).as_bytes()).expect("decodes");
        assert!(back.groups().is_empty());
    }

    #[test]
    fn membership_note_decoding_is_strict() {
        let n = NodeId::from_label("1111").expect("id");
        // built around `new`, which would sort: the encoder writes what it is given
        let raw = |groups: Vec<GroupId>| {
            MembershipNote {
                generation: 0,
                position: pos(),
                node: n,
                groups,
            }
            .sign(&key(1))
            .into_bytes()
        };
        for groups in [
            vec![gid("b"), gid("a")],
            vec![gid("a"), gid("a")],
            vec![gid("a"), gid("c"), gid("b")],
        ] {
            assert_eq!(
                MembershipNote::decode_signed(&raw(groups)).err(),
                Some(DecodeError::malformed("membership.groups order"))
            );
        }
        // the count sits after generation, position and node ID, behind the 2-byte header
        let count_at = 2 + 8 + ChainPosition::LEN + 32;
        let good = raw(vec![gid("a"), gid("b")]);
        for count in [3, u32::MAX] {
            let mut lying = good.clone();
            lying[count_at..count_at + 4].copy_from_slice(&count.to_be_bytes());
            assert_eq!(
                MembershipNote::decode_signed(&lying).err(),
                Some(DecodeError::malformed("membership.groups"))
            );
        }
        let mut short = good.clone();
        short[count_at..count_at + 4].copy_from_slice(&1u32.to_be_bytes());
        assert_eq!(
            MembershipNote::decode_signed(&short).err(),
            Some(DecodeError::malformed("trailing bytes"))
        );
        // the frame takes the last 64 bytes as the signature before reading the body
        let mut cut = good[..count_at + 2].to_vec();
        cut.extend_from_slice(&[0; 64]);
        assert_eq!(
            MembershipNote::decode_signed(&cut).err(),
            Some(DecodeError::malformed("membership.group_count"))
        );
    }

    #[test]
    fn keybook_holds_membership_notes_like_node_notes() {
        let bridge = key(1);
        let registry = pos().registry();
        let mut book = KeyBook::new(registry, bridge.public_key());
        let n = NodeId::from_label("1111").expect("id");
        let note = |block, log, groups: &[&str]| {
            MembershipNote::new(at(block, log), n, groups.iter().map(|g| gid(g)).collect())
        };
        let good = note(50, 2, &["hsu0001"]).sign(&bridge);
        let update = |changed| Ok(NoteUpdate::Membership { node: n, changed });
        assert_eq!(book.ingest_note(good.as_bytes()), update(true));
        // a retained redelivery
        assert_eq!(book.ingest_note(good.as_bytes()), update(false));

        // another signer, another registry, an older note, a twin at the same position
        assert_eq!(
            book.ingest_note(note(51, 0, &[]).sign(&key(2)).as_bytes()),
            Err(NoteError::BadSignature)
        );
        let mut foreign = note(51, 0, &[]);
        foreign.position.registry = [9; 20];
        assert!(matches!(
            book.ingest_note(foreign.sign(&bridge).as_bytes()),
            Err(NoteError::WrongRegistry { .. })
        ));
        assert_eq!(
            book.ingest_note(note(50, 1, &[]).sign(&bridge).as_bytes()),
            Err(NoteError::Rollback {
                held_generation: 0,
                held_block: 50,
                held_log: 2,
                offered_generation: 0,
                offered_block: 50,
                offered_log: 1
            })
        );
        assert_eq!(
            book.ingest_note(
                note(50, 2, &["hsu0001", "hsu0002"])
                    .sign(&bridge)
                    .as_bytes()
            ),
            Err(NoteError::Conflict)
        );
        assert_eq!(
            book.membership(&n).map(MembershipNote::groups),
            Some(&[gid("hsu0001")][..])
        );

        // the same state under a higher generation is held but no change; a new list is one
        let regenerated = note(50, 2, &["hsu0001"]).with_generation(1);
        assert_eq!(
            book.ingest_note(regenerated.sign(&bridge).as_bytes()),
            update(false)
        );
        assert_eq!(book.membership(&n).map(|m| m.generation), Some(1));
        let rejoined = note(49, 0, &["hsu0001", "hsu0002"]).with_generation(2);
        assert_eq!(
            book.ingest_note(rejoined.sign(&bridge).as_bytes()),
            update(true)
        );
        assert_eq!(book.membership(&n), Some(&rejoined));
        // kept apart from the node's node note and from other nodes
        assert!(book.node(&n).is_none());
        assert!(
            book.membership(&NodeId::from_label("1112").expect("id"))
                .is_none()
        );
    }

    #[test]
    fn group_note_construction_rules() {
        let g = GroupId::from_label("g").expect("id");
        let a = Member::new(NodeId::from_label("a").expect("id"), 1);
        let b = Member::new(NodeId::from_label("b").expect("id"), 1);
        let note = GroupNote::new(pos(), g, 1, "g/#", None, vec![b, a]).expect("valid");
        assert_eq!(note.members(), &[a, b]);
        assert_eq!(
            GroupNote::new(
                pos(),
                g,
                1,
                "g/#",
                None,
                vec![
                    a,
                    Member {
                        key_version: 2,
                        ..a
                    }
                ]
            ),
            Err(GroupNoteError::DuplicateMember { node: a.node })
        );
        assert_eq!(
            GroupNote::new(pos(), g, 1, "g/#/x", None, vec![]),
            Err(GroupNoteError::TopicFilter(TopicError::BadWildcard))
        );
        assert!(matches!(
            note.check_member(&a.node, 0),
            Err(MembershipError::StaleEpoch { current: 1, .. })
        ));
        assert!(matches!(
            note.check_member(&a.node, 2),
            Err(MembershipError::EpochAhead { .. })
        ));
        let c = NodeId::from_label("c").expect("id");
        assert_eq!(
            note.check_member(&c, 1),
            Err(MembershipError::NotMember {
                node: c,
                group: g,
                epoch: 1
            })
        );
    }
}
