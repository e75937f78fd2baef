//! The state machines an agent drives: [`Sealer`] (send side) and [`Opener`]
//! (receive side). The agent only moves bytes between MQTT and these types.
//!
//! Sequence numbers are u64 and start at 0 for every sender key. A `Sealer`
//! draws a fresh sender key and signing key when created, so a new epoch *and* a
//! process restart both start a new key: a (key, sequence) pair never repeats
//! (the AEAD nonce is the sequence number), and the envelope's stream tag tells
//! receivers which stream (and replay window) it is.

use std::collections::HashMap;

use ed25519_dalek::{SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::chunk::{Assembly, ChunkAssembler, NoteKind, SignedNote};
use crate::envelope::{self, Envelope, Kind, MAX_BATCH, MAX_PLAINTEXT_LEN, SealParams, StreamTag};
use crate::error::{
    IngestError, MembershipError, OpenError, SealError, SenderIssue, SenderKeyError,
};
use crate::ids::{GroupId, NodeId};
use crate::keys::NodeSecretKey;
use crate::notes::{GroupNote, KeyBook, NoteUpdate, Roles};
use crate::replay::{BoundedMap, ReplayVerdict, ReplayWindow};
use crate::sender_key::{Recipient, SenderKey, SenderKeyNote, StreamId};
use crate::topics::{topic_matches, validate_topic_name};
use crate::trust::Trust;

/// Send side for one (group, epoch): holds the node key, a fresh sender key and
/// signing key, and the sequence counter.
pub struct Sealer {
    node_key: NodeSecretKey,
    key_version: u64,
    /// [`KeyBook::group_state`] when the key was drawn: the members it is wrapped for.
    group_state: [u8; 32],
    stream: StreamId,
    topic_filter: String,
    sender_key: SenderKey,
    key_id: [u8; 32],
    tag: StreamTag,
    message_key: Zeroizing<[u8; 32]>,
    signing_key: SigningKey,
    next_seq: u64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("stream", &self.stream)
            .field("key_id", &hex::encode(self.key_id))
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

/// A signed sender-key note ready to publish, and who could not be included.
#[derive(Debug, Clone)]
pub struct SenderKeyNoteBuild {
    /// The signed note; publish `note.chunks()`.
    pub note: SignedNote,
    /// Number of members the key was wrapped for.
    pub recipients: usize,
    /// Members left out (no node note yet, or revoked), with the reason.
    pub skipped: Vec<(NodeId, MembershipError)>,
}

impl Sealer {
    /// A sealer for `me` in `group` at the group's current epoch, with a new
    /// sender key and signing key drawn from `rng`. Fails unless `me` is an active
    /// writer in the group whose on-chain key matches `node_key`.
    pub fn new(
        book: &KeyBook,
        me: NodeId,
        node_key: NodeSecretKey,
        group: GroupId,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, SealError> {
        let node = book.active_node(&me)?;
        if node.public_key != node_key.public_key() {
            return Err(SealError::WrongNodeKey {
                node: me,
                key_version: node.key_version,
            });
        }
        let key_version = node.key_version;
        let note = book
            .group(&group)
            .ok_or(MembershipError::UnknownGroup { group })?;
        let epoch = note.epoch();
        note.check_role(&me, epoch, Roles::WRITE)?;
        let group_state = book
            .group_state(&group)
            .ok_or(MembershipError::UnknownGroup { group })?;
        let stream = StreamId {
            group,
            sender: me,
            epoch,
        };
        let sender_key = SenderKey::generate(rng);
        let key_id = sender_key.key_id(&stream);
        let signing_key = SigningKey::generate(rng);
        Ok(Self {
            key_id,
            tag: StreamTag::derive(&stream, &key_id, &signing_key.verifying_key()),
            message_key: sender_key.message_key(&stream),
            signing_key,
            topic_filter: note.topic_filter().to_owned(),
            node_key,
            key_version,
            group_state,
            stream,
            sender_key,
            next_seq: 0,
        })
    }

    /// The (group, sender, epoch) this sealer sends on.
    pub const fn stream(&self) -> &StreamId {
        &self.stream
    }

    /// The sender key's public ID (its first 8 bytes are in every envelope).
    pub const fn key_id(&self) -> &[u8; 32] {
        &self.key_id
    }

    /// The tag every envelope of this sealer carries.
    pub const fn tag(&self) -> StreamTag {
        self.tag
    }

    /// The public half of the key that signs this sealer's messages.
    pub fn signing_key(&self) -> VerifyingKey {
        self.signing_key.verifying_key()
    }

    /// The sequence number the next envelope will carry.
    pub const fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Whether this sealer is still usable with the book's current notes:
    /// same epoch and group note (a reorg can change members without changing the epoch), still
    /// a member, same node key. Call after group note updates.
    pub fn check_current(&self, book: &KeyBook) -> Result<(), SealError> {
        let group = self.stream.group;
        let note = book
            .group(&group)
            .ok_or(MembershipError::UnknownGroup { group })?;
        if note.epoch() != self.stream.epoch {
            return Err(SealError::EpochChanged {
                group,
                sealer: self.stream.epoch,
                current: note.epoch(),
            });
        }
        if book.group_state(&group) != Some(self.group_state) {
            return Err(SealError::GroupChanged { group });
        }
        note.check_role(&self.stream.sender, self.stream.epoch, Roles::WRITE)?;
        let node = book.active_node(&self.stream.sender)?;
        if node.key_version != self.key_version {
            return Err(SealError::WrongNodeKey {
                node: self.stream.sender,
                key_version: node.key_version,
            });
        }
        Ok(())
    }

    /// Wraps the sender key for every active reader of the group (this node included
    /// when it reads, so it can read its own messages) and signs the note.
    pub fn sender_key_note(
        &self,
        book: &KeyBook,
        rng: &mut impl CryptoRngCore,
    ) -> Result<SenderKeyNoteBuild, SealError> {
        self.check_current(book)?;
        let group = self.stream.group;
        let note = book
            .group(&group)
            .ok_or(MembershipError::UnknownGroup { group })?;
        let mut recipients = Vec::with_capacity(note.members().len());
        let mut skipped = Vec::new();
        for m in note.members().iter().filter(|m| m.roles.reads()) {
            match book.active_node(&m.node) {
                Ok(n) => recipients.push(Recipient {
                    node: n.node,
                    key_version: n.key_version,
                    public_key: n.public_key,
                }),
                Err(e) => skipped.push((m.node, e)),
            }
        }
        let wrapped = SenderKeyNote::wrap(
            self.stream,
            self.key_version,
            &self.sender_key,
            self.signing_key.verifying_key(),
            &recipients,
            rng,
        )
        .map_err(SealError::Wrap)?;
        Ok(SenderKeyNoteBuild {
            note: wrapped.sign(&self.node_key),
            recipients: recipients.len(),
            skipped,
        })
    }

    /// Encrypts and signs `plaintext` for publication on `topic` (which must
    /// match the group's topic filter).
    pub fn seal(&mut self, topic: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut out = self.seal_batch(topic, &[plaintext])?;
        Ok(out.pop().unwrap_or_default())
    }

    /// Encrypts a burst of up to [`MAX_BATCH`] messages for `topic` under one signature: all but
    /// the last are batched envelopes (33 bytes of overhead, no signature), the last signs itself
    /// and the digests of the others. Publish them in order on `topic`; readers deliver the burst
    /// when its end arrives. One message is sealed as [`Sealer::seal`] does.
    pub fn seal_batch<P: AsRef<[u8]>>(
        &mut self,
        topic: &str,
        plaintexts: &[P],
    ) -> Result<Vec<Vec<u8>>, SealError> {
        validate_topic_name(topic)?;
        if !topic_matches(&self.topic_filter, topic) {
            return Err(SealError::TopicOutsideGroup {
                topic: topic.to_owned(),
                group: self.stream.group,
                filter: self.topic_filter.clone(),
            });
        }
        if plaintexts.is_empty() || plaintexts.len() > MAX_BATCH {
            return Err(SealError::BatchSize {
                len: plaintexts.len(),
                max: MAX_BATCH,
            });
        }
        if let Some(p) = plaintexts
            .iter()
            .find(|p| p.as_ref().len() > MAX_PLAINTEXT_LEN)
        {
            return Err(SealError::TooLarge {
                len: p.as_ref().len(),
            });
        }
        let count = plaintexts.len() as u64;
        if u64::MAX - self.next_seq < count {
            return Err(SealError::SequenceExhausted);
        }
        let last = plaintexts.len() - 1;
        let mut out = Vec::with_capacity(plaintexts.len());
        let mut digests = Vec::with_capacity(last);
        for (i, plaintext) in plaintexts.iter().enumerate() {
            let kind = match (i == last, last) {
                (false, _) => Kind::Batched,
                (true, 0) => Kind::Signed,
                // at most MAX_BATCH - 1 = 255 before the end
                (true, n) => Kind::BatchEnd { count: n as u8 },
            };
            let params = SealParams {
                tag: self.tag,
                seq: self.next_seq + i as u64,
                message_key: &self.message_key,
                signer: &self.signing_key,
            };
            let envelope = envelope::seal(&params, kind, topic, plaintext.as_ref(), &digests);
            if kind == Kind::Batched {
                digests.push(Sha256::digest(&envelope).into());
            }
            out.push(envelope);
        }
        self.next_seq += count;
        Ok(out)
    }
}

/// Bounds on an [`Opener`]'s memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenerLimits {
    /// Replay windows kept (one per sender key in use); least recently used dropped.
    pub max_streams: usize,
    /// Unwrapped sender keys kept; least recently used dropped (re-ingest the note to restore).
    pub max_sender_keys: usize,
    /// Incomplete chunked notes kept during reassembly.
    pub max_pending_notes: usize,
    /// Sender-key notes parked until the chain notes they depend on arrive.
    pub max_parked: usize,
    /// Batched messages held until their batch end arrives; oldest dropped.
    pub max_batched: usize,
}

impl Default for OpenerLimits {
    fn default() -> Self {
        Self {
            max_streams: 4096,
            max_sender_keys: 4096,
            max_pending_notes: 8,
            max_parked: 64,
            max_batched: 4 * MAX_BATCH,
        }
    }
}

/// What [`Opener::ingest`] did with a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// A chunk of a larger note; more are needed.
    Partial {
        /// Chunks received.
        received: usize,
        /// Chunks in the note.
        count: usize,
    },
    /// A chain note was stored (or was already held).
    Note(NoteUpdate),
    /// A sender key was unwrapped and cached.
    SenderKey {
        /// Its stream.
        stream: StreamId,
        /// Its key ID.
        key_id: [u8; 32],
        /// The tag its envelopes carry.
        tag: StreamTag,
    },
    /// A valid sender-key note that has no entry for this node (expected when
    /// this node is not a reader of the group); its stream is remembered so that
    /// its messages are refused with the reason.
    SenderKeyNotForUs {
        /// Its stream.
        stream: StreamId,
        /// Its key ID.
        key_id: [u8; 32],
        /// The tag its envelopes carry.
        tag: StreamTag,
    },
    /// A sender-key note that depends on a node or group note not held yet (or
    /// a newer epoch); kept and retried when chain notes arrive.
    SenderKeyParked {
        /// Its stream.
        stream: StreamId,
        /// What is missing.
        reason: MembershipError,
    },
}

/// A successfully opened message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// (group, sender, epoch).
    pub stream: StreamId,
    /// The sender key's ID: sequence numbers count from 0 under each sender key.
    pub key_id: [u8; 32],
    /// Sequence number.
    pub seq: u64,
    /// The decrypted payload.
    pub plaintext: Vec<u8>,
}

/// Result of [`Opener::open`]. A duplicate is not an error: drop it quietly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// A new, authentic message.
    Message(Message),
    /// An authentic message already delivered (e.g. QoS 1 redelivery). Drop it.
    Duplicate {
        /// (group, sender, epoch).
        stream: StreamId,
        /// Sequence number.
        seq: u64,
    },
    /// A batched message, decrypted and held until the end of its batch authenticates it.
    Pending {
        /// (group, sender, epoch).
        stream: StreamId,
        /// Sequence number.
        seq: u64,
    },
    /// A batch end and every message of its batch, authentic, in sequence order.
    Batch(Vec<Message>),
}

/// What [`Opener::begin`] made of an envelope.
#[derive(Debug)]
pub enum Begun<'a> {
    /// Opened already (batched envelopes, batch ends and their duplicates).
    Opened(Opened),
    /// A signed envelope that passed every check of the opener's state: verify it, then
    /// [`Opener::commit`] it.
    Unverified(Box<Unverified<'a>>),
}

/// A signed envelope waiting for its signature check and decryption, with the stream's keys.
pub struct Unverified<'a> {
    env: Envelope<'a>,
    stream: StreamId,
    key_id: [u8; 32],
    signing_key: VerifyingKey,
    message_key: Option<Zeroizing<[u8; 32]>>,
    /// The replay window's verdict at [`Opener::begin`], when not fresh.
    seen: Option<Result<Opened, OpenError>>,
}

impl std::fmt::Debug for Unverified<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unverified")
            .field("stream", &self.stream)
            .field("seq", &self.env.seq)
            .finish_non_exhaustive()
    }
}

impl Unverified<'_> {
    /// Checks the signature, that the sender key is held, the replay verdict and decrypts,
    /// in that order. Reads no opener state.
    pub fn verify(self, topic: &str) -> Result<Verified, OpenError> {
        let Self {
            env,
            stream,
            key_id,
            signing_key,
            message_key,
            seen,
        } = self;
        let (sender, group) = (stream.sender, stream.group);
        if !env.verify(topic, &signing_key, &[]) {
            return Err(OpenError::BadSignature { sender, group });
        }
        let message_key = message_key.ok_or(OpenError::MissingSenderKey {
            sender,
            group,
            epoch: stream.epoch,
        })?;
        let duplicate = match seen {
            None => false,
            Some(Ok(_)) => true,
            Some(Err(error)) => return Err(error),
        };
        let plaintext = if duplicate {
            Vec::new()
        } else {
            env.decrypt(topic, &message_key)
                .ok_or(OpenError::DecryptFailed { sender, group })?
        };
        Ok(Verified {
            message: Message {
                stream,
                key_id,
                seq: env.seq,
                plaintext,
            },
            duplicate,
        })
    }
}

/// A signed envelope whose signature checked out, decrypted, for [`Opener::commit`].
#[derive(Debug)]
pub struct Verified {
    message: Message,
    /// The replay window had it already: committed as a duplicate, not decrypted.
    duplicate: bool,
}

/// A batched message waiting for its batch end.
struct PendingMessage {
    stream: StreamId,
    key_id: [u8; 32],
    topic: String,
    digest: [u8; 32],
    plaintext: Vec<u8>,
}

type StreamKey = (StreamId, [u8; 32]);

/// What a verified sender-key note told this node about one stream.
struct StreamEntry {
    stream: StreamId,
    key_id: [u8; 32],
    signing_key: VerifyingKey,
    /// `None` when the note has no entry for this node.
    message_key: Option<Zeroizing<[u8; 32]>>,
}

/// Receive side: holds the node key, the [`KeyBook`], the streams its sender-key
/// notes announced (with their unwrapped keys) and replay windows.
pub struct Opener {
    me: NodeId,
    node_key: NodeSecretKey,
    book: KeyBook,
    assembler: ChunkAssembler,
    streams: BoundedMap<StreamTag, StreamEntry>,
    windows: BoundedMap<StreamKey, ReplayWindow>,
    batched: BoundedMap<(StreamTag, u64), PendingMessage>,
    parked: Vec<(Waiting, Vec<u8>)>,
    /// Each group's note from before its latest epoch change, for [`Opener::open_with_grace`].
    previous: HashMap<GroupId, GroupNote>,
    limits: OpenerLimits,
    trust: Trust,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("me", &self.me)
            .field("streams_announced", &self.streams.len())
            .field("streams", &self.windows.len())
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// An opener for node `me` with default limits.
    pub fn new(me: NodeId, node_key: NodeSecretKey, book: KeyBook) -> Self {
        Self::with_limits(me, node_key, book, OpenerLimits::default())
    }

    /// An opener with explicit memory limits.
    pub fn with_limits(
        me: NodeId,
        node_key: NodeSecretKey,
        book: KeyBook,
        limits: OpenerLimits,
    ) -> Self {
        Self {
            me,
            node_key,
            book,
            assembler: ChunkAssembler::new(limits.max_pending_notes),
            streams: BoundedMap::new(limits.max_sender_keys),
            windows: BoundedMap::new(limits.max_streams),
            batched: BoundedMap::new(limits.max_batched),
            parked: Vec::new(),
            previous: HashMap::new(),
            limits,
            trust: Trust::default(),
        }
    }

    /// Refuses envelopes of groups `trust` does not accept ([`OpenError::UntrustedGroup`]).
    pub fn set_trust(&mut self, trust: Trust) {
        self.trust = trust;
    }

    /// The groups this opener accepts.
    pub const fn trust(&self) -> &Trust {
        &self.trust
    }

    /// The local node.
    pub const fn node(&self) -> NodeId {
        self.me
    }

    /// The key book (read-only; feed it through [`Opener::ingest`]).
    pub const fn book(&self) -> &KeyBook {
        &self.book
    }

    /// Whether this node is a member of `group` at the group's current epoch.
    pub fn membership(&self, group: &GroupId) -> Result<u64, MembershipError> {
        let note = self
            .book
            .group(group)
            .ok_or(MembershipError::UnknownGroup { group: *group })?;
        note.check_member(&self.me, note.epoch())?;
        Ok(note.epoch())
    }

    /// Feeds one payload from any note topic (node, group, membership or sender-key chunk).
    pub fn ingest(&mut self, payload: &[u8]) -> Result<Ingested, IngestError> {
        match self.assembler.push(payload)? {
            Assembly::Partial { received, count } => Ok(Ingested::Partial { received, count }),
            Assembly::Complete(note) => self.ingest_signed_note(note.as_bytes()),
        }
    }

    /// Feeds one complete signed note (no chunk layer).
    pub fn ingest_signed_note(&mut self, bytes: &[u8]) -> Result<Ingested, IngestError> {
        let kind = bytes.get(1).copied().and_then(NoteKind::from_byte);
        if kind == Some(NoteKind::SenderKey) {
            return self.ingest_sender_key(bytes);
        }
        let before = match kind {
            Some(NoteKind::Group) => GroupNote::decode_signed(bytes)
                .ok()
                .and_then(|(note, _)| self.book.group(&note.group()).cloned()),
            _ => None,
        };
        let update = self.book.ingest_note(bytes)?;
        if let (Some(old), NoteUpdate::Group { group, .. }) = (before, update) {
            let epoch = self
                .book
                .group(&group)
                .map_or(old.epoch(), GroupNote::epoch);
            if epoch > old.epoch() {
                self.previous.insert(group, old);
            } else if epoch < old.epoch() {
                // A reorg took epochs back: what was sealed for them was never canonical, and
                // their numbers will be used again for other members.
                self.previous.remove(&group);
                let orphaned = |stream: &StreamId| stream.group == group && stream.epoch > epoch;
                self.streams.retain(|_, e| !orphaned(&e.stream));
                self.windows.retain(|(stream, _), _| !orphaned(stream));
                self.batched.retain(|_, p| !orphaned(&p.stream));
            }
        }
        match update {
            NoteUpdate::Node {
                node,
                changed: true,
            } => self.retry_parked(Waiting::Node(node)),
            NoteUpdate::Group {
                group,
                changed: true,
            } => self.retry_parked(Waiting::Group(group)),
            _ => {}
        }
        Ok(Ingested::Note(update))
    }

    /// Retries only the parked notes that were waiting for this note, so a
    /// burst of chain notes at start-up costs one comparison per parked note.
    fn retry_parked(&mut self, arrived: Waiting) {
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|(w, _)| *w == arrived);
        self.parked = waiting;
        for (_, note) in ready {
            // a note that still cannot be placed is parked again
            let _ = self.ingest_sender_key(&note);
        }
    }

    fn park(&mut self, waiting: Waiting, bytes: &[u8]) {
        if self.parked.len() >= self.limits.max_parked {
            self.parked.remove(0);
        }
        self.parked.push((waiting, bytes.to_vec()));
    }

    fn ingest_sender_key(&mut self, bytes: &[u8]) -> Result<Ingested, IngestError> {
        let note = match SenderKeyNote::verify(bytes, &self.book) {
            Ok(n) => n,
            Err(
                e @ SenderKeyError::Sender {
                    source: MembershipError::MissingRole { .. },
                    ..
                },
            ) => {
                // signed by a member that may not write: its messages get that reason
                if let Ok((note, _)) = SenderKeyNote::decode_signed(bytes) {
                    self.remember(&note, None);
                }
                return Err(e.into());
            }
            Err(SenderKeyError::Sender { source, .. }) if Waiting::for_error(&source).is_some() => {
                let (note, _) =
                    SenderKeyNote::decode_signed(bytes).map_err(SenderKeyError::from)?;
                if let Some(w) = Waiting::for_error(&source) {
                    self.park(w, bytes);
                }
                return Ok(Ingested::SenderKeyParked {
                    stream: *note.stream(),
                    reason: source,
                });
            }
            Err(e) => return Err(e.into()),
        };
        let stream = *note.stream();
        let key_id = *note.key_id();
        let tag = note.tag();
        let not_for_us = |opener: &mut Self| {
            opener.remember(&note, None);
            Ok(Ingested::SenderKeyNotForUs {
                stream,
                key_id,
                tag,
            })
        };
        let my_version = match self.book.active_node(&self.me) {
            Ok(n) => n.key_version,
            Err(reason @ MembershipError::UnknownNode { .. }) => {
                self.park(Waiting::Node(self.me), bytes);
                return Ok(Ingested::SenderKeyParked { stream, reason });
            }
            Err(_) => return not_for_us(self),
        };
        match note.unwrap_for(&self.me, &self.node_key, my_version) {
            Ok(key) => {
                self.remember(&note, Some(key.message_key(&stream)));
                Ok(Ingested::SenderKey {
                    stream,
                    key_id,
                    tag,
                })
            }
            Err(SenderKeyError::NotAddressed { .. }) => not_for_us(self),
            Err(e) => {
                // the note is genuine, only not openable with the key in use here
                self.remember(&note, None);
                Err(e.into())
            }
        }
    }

    /// Records a verified note's stream; an unwrapped key is never replaced by its absence.
    fn remember(&mut self, note: &SenderKeyNote, message_key: Option<Zeroizing<[u8; 32]>>) {
        let tag = note.tag();
        if message_key.is_none()
            && let Some(held) = self.streams.get_mut(&tag)
            && held.key_id == *note.key_id()
            && held.message_key.is_some()
        {
            return;
        }
        self.streams.insert(
            tag,
            StreamEntry {
                stream: *note.stream(),
                key_id: *note.key_id(),
                signing_key: *note.signing_key(),
                message_key,
            },
        );
    }

    /// Opens an envelope that arrived on `topic`.
    ///
    /// Order: decode; stream announced (else: not a member of any group whose filter
    /// covers the topic, or wait for the sender-key note); group known and topic
    /// inside its filter; epoch current; this node a reader; sender an active
    /// writer; stream signature; sender key held; replay window; decryption;
    /// window updated.
    pub fn open(&mut self, topic: &str, bytes: &[u8]) -> Result<Opened, OpenError> {
        self.open_with_grace(topic, bytes, |_| false)
    }

    /// Like [`Opener::open`], but an envelope of the epoch just before the
    /// group's current one is still accepted when `in_grace(group)` says so,
    /// judged against that earlier group note (the caller owns the clock and
    /// decides how long messages in flight across an epoch change stay valid).
    pub fn open_with_grace(
        &mut self,
        topic: &str,
        bytes: &[u8],
        in_grace: impl FnOnce(&GroupId) -> bool,
    ) -> Result<Opened, OpenError> {
        match self.begin(topic, bytes, in_grace)? {
            Begun::Opened(opened) => Ok(opened),
            Begun::Unverified(unverified) => {
                let verified = unverified.verify(topic)?;
                self.commit(verified)
            }
        }
    }

    /// The first half of [`Opener::open_with_grace`]: every check that reads the opener's state.
    /// A signed envelope comes back [`Begun::Unverified`]: its signature check and decryption
    /// (the costly part) need no opener, so envelopes of several streams can be verified at
    /// once while the opener serves others; [`Opener::commit`] then records it. Batched
    /// envelopes and batch ends are opened here.
    pub fn begin<'a>(
        &mut self,
        topic: &str,
        bytes: &'a [u8],
        in_grace: impl FnOnce(&GroupId) -> bool,
    ) -> Result<Begun<'a>, OpenError> {
        let env = Envelope::decode(bytes)?;
        let Some(entry) = self.streams.get_mut(&env.tag) else {
            return Err(self.unannounced(topic, env.tag));
        };
        let (stream, key_id, signing_key) = (entry.stream, entry.key_id, entry.signing_key);
        let message_key = entry.message_key.clone();
        let group = stream.group;
        let mut note = self
            .book
            .group(&group)
            .ok_or(OpenError::UnknownGroup { group })?;
        if !self.trust.accepts(note) {
            return Err(OpenError::UntrustedGroup {
                group,
                admin: note.admin(),
            });
        }
        if !topic_matches(note.topic_filter(), topic) {
            return Err(OpenError::TopicOutsideGroup {
                topic: topic.to_owned(),
                group,
            });
        }
        let current = note.epoch();
        if stream.epoch < current {
            match self.previous.get(&group) {
                Some(old) if old.epoch() == stream.epoch && in_grace(&group) => note = old,
                _ => {
                    return Err(OpenError::StaleEpoch {
                        group,
                        epoch: stream.epoch,
                        current,
                    });
                }
            }
        }
        if stream.epoch > note.epoch() {
            return Err(OpenError::EpochAhead {
                group,
                epoch: stream.epoch,
                current,
            });
        }
        match note.member(&self.me) {
            None => {
                return Err(OpenError::NotMember {
                    node: self.me,
                    group,
                    epoch: stream.epoch,
                });
            }
            Some(m) if !m.roles.reads() => {
                return Err(OpenError::NotReader {
                    node: self.me,
                    group,
                });
            }
            Some(_) => {}
        }
        let sender = stream.sender;
        let unknown = |e: MembershipError| OpenError::UnknownSender {
            sender,
            group,
            epoch: stream.epoch,
            reason: SenderIssue::from_membership(&e),
        };
        self.book.active_node(&sender).map_err(unknown)?;
        note.check_role(&sender, stream.epoch, Roles::WRITE)
            .map_err(unknown)?;
        let missing_key = OpenError::MissingSenderKey {
            sender,
            group,
            epoch: stream.epoch,
        };
        let stream_key = (stream, key_id);
        // what the replay window says, if the sequence number is not fresh
        let seen = match self
            .windows
            .get_mut(&stream_key)
            .map_or(ReplayVerdict::Fresh, |w| w.check(env.seq))
        {
            ReplayVerdict::Fresh => None,
            ReplayVerdict::Duplicate => Some(Ok(Opened::Duplicate {
                stream,
                seq: env.seq,
            })),
            ReplayVerdict::TooOld => Some(Err(OpenError::Replay {
                sender,
                group,
                epoch: stream.epoch,
                seq: env.seq,
            })),
        };
        let decrypt_failed = OpenError::DecryptFailed { sender, group };
        match env.kind {
            Kind::Signed => Ok(Begun::Unverified(Box::new(Unverified {
                env,
                stream,
                key_id,
                signing_key,
                message_key,
                seen,
            }))),
            Kind::Batched => {
                let message_key = message_key.ok_or(missing_key)?;
                if let Some(seen) = seen {
                    return seen.map(Begun::Opened);
                }
                let digest = env.digest();
                let held = self
                    .batched
                    .get_mut(&(env.tag, env.seq))
                    .map(|held| held.digest);
                if held == Some(digest) {
                    return Ok(Begun::Opened(Opened::Duplicate {
                        stream,
                        seq: env.seq,
                    }));
                }
                let plaintext = env.decrypt(topic, &message_key).ok_or(decrypt_failed)?;
                // only a holder of the sender key can make a second one that decrypts
                if held.is_some() {
                    return Err(OpenError::Conflict {
                        sender,
                        group,
                        seq: env.seq,
                    });
                }
                self.batched.insert(
                    (env.tag, env.seq),
                    PendingMessage {
                        stream,
                        key_id,
                        topic: topic.to_owned(),
                        digest,
                        plaintext,
                    },
                );
                Ok(Begun::Opened(Opened::Pending {
                    stream,
                    seq: env.seq,
                }))
            }
            Kind::BatchEnd { count } => {
                if let Some(seen) = seen {
                    return seen.map(Begun::Opened);
                }
                let first = env.seq.checked_sub(u64::from(count));
                let mut digests = Vec::with_capacity(usize::from(count));
                let mut missing = 0u8;
                for seq in first.unwrap_or(0)..env.seq {
                    match self.batched.get_mut(&(env.tag, seq)) {
                        Some(held) if held.topic == topic && first.is_some() => {
                            digests.push(held.digest);
                        }
                        _ => missing = missing.saturating_add(1),
                    }
                }
                if first.is_none() || missing > 0 {
                    return Err(OpenError::IncompleteBatch {
                        sender,
                        group,
                        seq: env.seq,
                        count,
                        missing: if first.is_none() { count } else { missing },
                    });
                }
                if !env.verify(topic, &signing_key, &digests) {
                    return Err(OpenError::BadSignature { sender, group });
                }
                let message_key = message_key.ok_or(missing_key)?;
                let plaintext = env.decrypt(topic, &message_key).ok_or(decrypt_failed)?;
                let mut messages = Vec::with_capacity(usize::from(count) + 1);
                for seq in first.unwrap_or(0)..env.seq {
                    if let Some(held) = self.batched.remove(&(env.tag, seq)) {
                        self.record(stream_key, seq);
                        messages.push(Message {
                            stream: held.stream,
                            key_id: held.key_id,
                            seq,
                            plaintext: held.plaintext,
                        });
                    }
                }
                self.record(stream_key, env.seq);
                messages.push(Message {
                    stream,
                    key_id,
                    seq: env.seq,
                    plaintext,
                });
                Ok(Begun::Opened(Opened::Batch(messages)))
            }
        }
    }

    /// The last half of [`Opener::open_with_grace`]: records a verified envelope in its
    /// stream's replay window (checked again: another copy may have been committed since
    /// [`Opener::begin`]).
    pub fn commit(&mut self, verified: Verified) -> Result<Opened, OpenError> {
        let Verified { message, duplicate } = verified;
        let stream_key = (message.stream, message.key_id);
        let verdict = if duplicate {
            ReplayVerdict::Duplicate
        } else {
            self.windows
                .get_mut(&stream_key)
                .map_or(ReplayVerdict::Fresh, |w| w.check(message.seq))
        };
        match verdict {
            ReplayVerdict::Fresh => {
                self.record(stream_key, message.seq);
                Ok(Opened::Message(message))
            }
            ReplayVerdict::Duplicate => Ok(Opened::Duplicate {
                stream: message.stream,
                seq: message.seq,
            }),
            ReplayVerdict::TooOld => Err(OpenError::Replay {
                sender: message.stream.sender,
                group: message.stream.group,
                epoch: message.stream.epoch,
                seq: message.seq,
            }),
        }
    }

    /// Marks `seq` of a stream delivered.
    fn record(&mut self, stream_key: StreamKey, seq: u64) {
        match self.windows.get_mut(&stream_key) {
            Some(w) => w.record(seq),
            None => {
                let mut w = ReplayWindow::new();
                w.record(seq);
                self.windows.insert(stream_key, w);
            }
        }
    }

    /// Why an envelope of a stream no sender-key note announced cannot be opened: this node
    /// is a member of no group whose filter covers the topic, or the note has not arrived.
    fn unannounced(&self, topic: &str, tag: StreamTag) -> OpenError {
        let covering = self.book.groups_for_topic(topic);
        let roles = |g: &GroupNote| g.member(&self.me).map(|m| m.roles);
        let reading: Vec<&GroupNote> = covering
            .iter()
            .copied()
            .filter(|g| roles(g).is_some_and(Roles::reads))
            .collect();
        if covering.is_empty() || reading.iter().any(|g| self.trust.accepts(g)) {
            return OpenError::UnknownStream {
                tag,
                topic: topic.to_owned(),
            };
        }
        if let Some(g) = reading.first() {
            return OpenError::UntrustedGroup {
                group: g.group(),
                admin: g.admin(),
            };
        }
        // a member without the read role is given no sender keys: no note will come
        if let Some(g) = covering.iter().find(|g| roles(g).is_some()) {
            return OpenError::NotReader {
                node: self.me,
                group: g.group(),
            };
        }
        // the groups this node accepts come first: the others are someone else's business
        let (mut groups, others): (Vec<&GroupNote>, Vec<&GroupNote>) =
            covering.into_iter().partition(|g| self.trust.accepts(g));
        groups.extend(others);
        match groups.as_slice() {
            [only] => OpenError::NotMember {
                node: self.me,
                group: only.group(),
                epoch: only.epoch(),
            },
            _ => OpenError::NotMemberOfAny {
                node: self.me,
                topic: topic.to_owned(),
                groups: groups.iter().map(|g| g.group()).collect(),
            },
        }
    }
}

/// The chain note a parked sender-key note waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    Node(NodeId),
    Group(GroupId),
}

impl Waiting {
    /// Errors that resolve once a chain note arrives, and which one.
    fn for_error(e: &MembershipError) -> Option<Self> {
        match e {
            MembershipError::UnknownNode { node } => Some(Self::Node(*node)),
            MembershipError::UnknownGroup { group } | MembershipError::EpochAhead { group, .. } => {
                Some(Self::Group(*group))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notes::{ChainPosition, GroupNote, Member, NodeNote, NodeStatus, Registry};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    /// Member `a` of group `g` (filter `g/#`) as a sealer, and member `b` as an opener holding
    /// `a`'s sender key.
    fn sealer_and_opener(seed: u64) -> (Sealer, Opener) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let registry = Registry {
            chain_id: 1,
            address: [1; 20],
        };
        let pos = |block| ChainPosition {
            chain_id: 1,
            registry: [1; 20],
            block_number: block,
            block_hash: [0; 32],
            tx_hash: [0; 32],
            log_index: 0,
        };
        let bridge = NodeSecretKey::generate(&mut rng);
        let ids = ["a", "b"].map(|l| NodeId::from_label(l).expect("id"));
        let keys = [0; 2].map(|_| NodeSecretKey::generate(&mut rng));
        let mut book = KeyBook::new(registry, bridge.public_key());
        for (i, (n, k)) in ids.iter().zip(&keys).enumerate() {
            let note = NodeNote {
                generation: 0,
                position: pos(i as u64),
                node: *n,
                key_version: 1,
                status: NodeStatus::Active,
                public_key: k.public_key(),
            };
            book.ingest_note(note.sign(&bridge).as_bytes())
                .expect("node note");
        }
        let g = GroupId::from_label("g").expect("id");
        let members = ids.iter().map(|n| Member::new(*n, 1)).collect();
        let gn = GroupNote::new(pos(5), g, 1, "g/#", None, members).expect("group");
        book.ingest_note(gn.sign(&bridge).as_bytes())
            .expect("group note");
        let sealer = Sealer::new(&book, ids[0], keys[0].clone(), g, &mut rng).expect("sealer");
        let skn = sealer.sender_key_note(&book, &mut rng).expect("note");
        let [_, kb] = keys;
        let mut opener = Opener::new(ids[1], kb, book);
        opener
            .ingest_signed_note(skn.note.as_bytes())
            .expect("sender key");
        (sealer, opener)
    }

    /// A sender that signs a ciphertext made under some other key: the
    /// signature is fine, decryption is not, and the error says so.
    #[test]
    fn signed_but_undecryptable_is_decrypt_failed_and_does_not_burn_the_sequence() {
        let (mut sealer, mut opener) = sealer_and_opener(5);
        let (a, g) = (sealer.stream().sender, sealer.stream().group);

        let wrong_key = Zeroizing::new([7u8; 32]);
        let params = SealParams {
            tag: sealer.tag(),
            seq: 0,
            message_key: &wrong_key,
            signer: &sealer.signing_key,
        };
        let bad = envelope::seal(&params, Kind::Signed, "g/x", b"junk", &[]);
        assert_eq!(
            opener.open("g/x", &bad),
            Err(OpenError::DecryptFailed {
                sender: a,
                group: g
            })
        );
        let good = sealer.seal("g/x", b"fine").expect("seal");
        assert!(
            matches!(opener.open("g/x", &good), Ok(Opened::Message(m)) if m.seq == 0 && m.plaintext == b"fine")
        );

        // A local policy that names other groups refuses this one before any crypto is done,
        // and the refusal says how to allow it.
        let next = sealer.seal("g/x", b"refused").expect("seal");
        opener.set_trust(Trust::new([GroupId::from_label("other").expect("id")], []));
        let refused = opener.open("g/x", &next).expect_err("untrusted");
        assert_eq!(
            refused,
            OpenError::UntrustedGroup {
                group: g,
                admin: None
            }
        );
        assert!(refused.to_string().contains("--trust-group g"), "{refused}");
        opener.set_trust(Trust::new([g], []));
        assert!(
            matches!(opener.open("g/x", &next), Ok(Opened::Message(m)) if m.plaintext == b"refused")
        );
    }

    /// A member holding the sender key can encrypt under it but not sign as the sender: a batched
    /// message it forges in place of a genuine one is a conflict, and its batch end is refused.
    #[test]
    fn a_forged_batched_message_is_a_conflict_and_fails_its_batch() {
        let (mut sealer, mut opener) = sealer_and_opener(11);
        let (a, g) = (sealer.stream().sender, sealer.stream().group);
        // what a reader could make with the message key it holds
        let forged = envelope::seal(
            &SealParams {
                tag: sealer.tag(),
                seq: 0,
                message_key: &sealer.message_key,
                signer: &SigningKey::from_bytes(&[9; 32]),
            },
            Kind::Batched,
            "g/x",
            b"forged",
            &[],
        );
        let batch = sealer.seal_batch("g/x", &[b"one", b"two"]).expect("batch");
        assert!(matches!(
            opener.open("g/x", &forged),
            Ok(Opened::Pending { seq: 0, .. })
        ));
        assert_eq!(
            opener.open("g/x", &batch[0]),
            Err(OpenError::Conflict {
                sender: a,
                group: g,
                seq: 0
            })
        );
        assert_eq!(
            opener.open("g/x", &batch[1]),
            Err(OpenError::BadSignature {
                sender: a,
                group: g
            })
        );
    }

    /// Verification runs outside the opener (here on two threads at once), and a copy begun
    /// before the first was committed is still a duplicate at commit.
    #[test]
    fn verified_apart_committed_once() {
        let (mut sealer, mut opener) = sealer_and_opener(12);
        let first = sealer.seal("g/x", b"one").expect("seal");
        let second = sealer.seal("g/x", b"two").expect("seal");
        let begun = [&first, &second, &first].map(|bytes| {
            match opener.begin("g/x", bytes, |_| false).expect("begin") {
                Begun::Unverified(unverified) => unverified,
                Begun::Opened(opened) => panic!("a signed envelope is verified apart: {opened:?}"),
            }
        });
        let verified: Vec<Verified> = std::thread::scope(|scope| {
            let handles: Vec<_> = begun
                .into_iter()
                .map(|u| scope.spawn(move || u.verify("g/x").expect("verify")))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let opened: Vec<Opened> = verified
            .into_iter()
            .map(|v| opener.commit(v).expect("commit"))
            .collect();
        assert!(matches!(&opened[0], Opened::Message(m) if m.plaintext == b"one"));
        assert!(matches!(&opened[1], Opened::Message(m) if m.plaintext == b"two"));
        assert_eq!(
            opened[2],
            Opened::Duplicate {
                stream: *sealer.stream(),
                seq: 0
            }
        );
        // a copy begun after the commit is known at verify: not decrypted again
        let Ok(Begun::Unverified(again)) = opener.begin("g/x", &second, |_| false) else {
            panic!("a signed envelope is verified apart");
        };
        let again = again.verify("g/x").expect("verify");
        assert!(again.duplicate && again.message.plaintext.is_empty());
        assert!(matches!(
            opener.commit(again),
            Ok(Opened::Duplicate { seq: 1, .. })
        ));
    }

    /// Messages sealed just before an epoch change stay readable while the
    /// caller says the grace period runs, and only for the epoch right before.
    #[test]
    fn previous_epoch_is_accepted_only_in_grace() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let registry = Registry {
            chain_id: 1,
            address: [1; 20],
        };
        let pos = |block| ChainPosition {
            chain_id: 1,
            registry: [1; 20],
            block_number: block,
            block_hash: [0; 32],
            tx_hash: [0; 32],
            log_index: 0,
        };
        let bridge = NodeSecretKey::generate(&mut rng);
        let ids = ["a", "b", "c"].map(|l| NodeId::from_label(l).expect("id"));
        let keys = [0; 3].map(|_| NodeSecretKey::generate(&mut rng));
        let mut book = KeyBook::new(registry, bridge.public_key());
        for (i, (n, k)) in ids.iter().zip(&keys).enumerate() {
            let note = NodeNote {
                generation: 0,
                position: pos(i as u64),
                node: *n,
                key_version: 1,
                status: NodeStatus::Active,
                public_key: k.public_key(),
            };
            book.ingest_note(note.sign(&bridge).as_bytes())
                .expect("node note");
        }
        let g = GroupId::from_label("g").expect("id");
        let group_note = |block, epoch, members: &[NodeId]| {
            let members = members.iter().map(|n| Member::new(*n, 1)).collect();
            GroupNote::new(pos(block), g, epoch, "g/#", None, members)
                .expect("group")
                .sign(&bridge)
        };
        book.ingest_note(group_note(10, 1, &ids[..2]).as_bytes())
            .expect("group note");
        let mut opener = Opener::new(ids[1], keys[1].clone(), book.clone());
        let mut old_sealer =
            Sealer::new(&book, ids[0], keys[0].clone(), g, &mut rng).expect("sealer");
        let skn = old_sealer.sender_key_note(&book, &mut rng).expect("note");
        opener
            .ingest_signed_note(skn.note.as_bytes())
            .expect("sender key");
        let first = old_sealer.seal("g/x", b"one").expect("seal");
        let second = old_sealer.seal("g/x", b"two").expect("seal");
        assert!(matches!(opener.open("g/x", &first), Ok(Opened::Message(_))));

        // c joins: epoch 2; the envelopes of epoch 1 are stale unless in grace
        opener
            .ingest_signed_note(group_note(11, 2, &ids).as_bytes())
            .expect("epoch 2");
        let stale = Err(OpenError::StaleEpoch {
            group: g,
            epoch: 1,
            current: 2,
        });
        assert_eq!(opener.open("g/x", &second), stale);
        assert_eq!(opener.open_with_grace("g/x", &second, |_| false), stale);
        assert!(
            matches!(opener.open_with_grace("g/x", &second, |group| *group == g), Ok(Opened::Message(m)) if m.plaintext == b"two")
        );
        // the replay window is shared with the normal path
        assert_eq!(
            opener.open_with_grace("g/x", &first, |_| true),
            Ok(Opened::Duplicate {
                stream: *old_sealer.stream(),
                seq: 0
            })
        );

        // two epochs back is never accepted
        opener
            .ingest_signed_note(group_note(12, 3, &ids).as_bytes())
            .expect("epoch 3");
        let third = old_sealer.seal("g/x", b"three").expect("seal");
        assert_eq!(
            opener.open_with_grace("g/x", &third, |_| true),
            Err(OpenError::StaleEpoch {
                group: g,
                epoch: 1,
                current: 3
            })
        );
    }
}
