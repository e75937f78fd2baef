//! What a subscription yields.

use anchormq_core::{GroupId, NodeId, OpenError};
use bytes::Bytes;

/// One item of a subscription: a decrypted message, or a message that could not be read and why.
/// QoS 1 redeliveries of a message already delivered are dropped and never appear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// An authentic message, decrypted.
    Message(ReceivedMessage),
    /// A message this node cannot (or may not) read.
    Unreadable(Unreadable),
}

/// A decrypted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// MQTT topic.
    pub topic: String,
    /// Group it was sealed for.
    pub group: GroupId,
    /// Sending node (signature checked).
    pub sender: NodeId,
    /// Group epoch it was sealed at.
    pub epoch: u64,
    /// Sender's sequence number under its current sender key.
    pub seq: u64,
    /// The plaintext.
    pub payload: Vec<u8>,
    /// Delivered by the broker as a retained message.
    pub retain: bool,
    /// Messages of the same sender key that should have come before this one and did not (lost by
    /// the broker or the network): this message's sequence number jumped past them. `None` when
    /// nothing is missing, for the first message seen of a sender key, and for retained messages.
    pub missing: Option<Missing>,
}

/// A run of sequence numbers that never arrived, `from..=to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missing {
    /// First missing sequence number.
    pub from: u64,
    /// Last missing sequence number.
    pub to: u64,
}

impl Missing {
    /// How many messages are missing.
    pub fn count(&self) -> u64 {
        self.to - self.from + 1
    }
}

/// A message that could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// MQTT topic.
    pub topic: String,
    /// Delivered by the broker as a retained message.
    pub retain: bool,
    /// Why it could not be opened (for example "node 1113 is not a member of hsu0001 (epoch 2)").
    pub reason: OpenError,
    /// The raw payload, for diagnostics.
    pub payload: Bytes,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unreadable message on {:?}: {}", self.topic, self.reason)
    }
}
