//! Agent errors: each names what was missing or wrong and what to check.

use std::time::Duration;

use anchormq_core::{GroupId, NodeId, SealError, TopicError};
use anchormq_mqtt::LinkError;

use crate::guard::Refused;

/// Why an agent call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The MQTT link is closed (agent shut down) or could not be configured.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The group note did not arrive in time.
    #[error(
        "no group note for {group} after {waited:?}: is the bridge running, does group {group} exist on chain, and is {broker} the broker the bridge publishes to?"
    )]
    NoGroupNote {
        /// The group.
        group: GroupId,
        /// How long the agent waited.
        waited: Duration,
        /// The broker (without credentials).
        broker: String,
    },
    /// This node's own node note did not arrive in time.
    #[error(
        "no node note for {node} after {waited:?}: is node {node} registered on chain, the bridge running, and {broker} the broker it publishes to?"
    )]
    NoNodeNote {
        /// This node.
        node: NodeId,
        /// How long the agent waited.
        waited: Duration,
        /// The broker (without credentials).
        broker: String,
    },
    /// No known group's topic filter matches the topic.
    #[error(
        "no group's topic filter matches topic {topic:?} (waited {waited:?} for group notes; known groups: {known}): publish under a group's filter or name the group"
    )]
    NoGroupForTopic {
        /// The topic.
        topic: String,
        /// How long the agent waited.
        waited: Duration,
        /// The groups known, as `id "filter"`, comma separated (or "none").
        known: String,
    },
    /// Not one key note arrived: the broker is unreachable, or no bridge publishes notes for this
    /// registry there (wrong chain ID or registry address, bridge not running).
    #[error(
        "no key notes from {broker} under {prefix} within {waited:?}: {}",
        no_notes_hint(*.connected)
    )]
    NoNotes {
        /// The broker, without credentials.
        broker: String,
        /// The registry's note prefix (`anchormq/v1/<chainId>/<registry>`).
        prefix: String,
        /// How long the agent waited.
        waited: Duration,
        /// Whether the broker was ever connected.
        connected: bool,
    },
    /// Several groups' filters match the topic.
    #[error("topic {topic:?} matches the filters of several groups ({groups}): name the group")]
    AmbiguousTopic {
        /// The topic.
        topic: String,
        /// The matching groups, as `id "filter"`, comma separated.
        groups: String,
    },
    /// This node is not a member of the group (still not, after waiting).
    #[error(
        "node {node} is not a member of {group} (epoch {epoch}, waited {waited:?} for a group note adding it): ask the group's admin to add it"
    )]
    NotMember {
        /// This node.
        node: NodeId,
        /// The group.
        group: GroupId,
        /// The group's epoch as last seen.
        epoch: u64,
        /// How long the agent waited.
        waited: Duration,
    },
    /// The group is not one this agent's configuration accepts.
    #[error(
        "group {group} (admin {}) is not trusted by this agent: allow it with --trust-group {group} or --trust-admin {}",
        show_admin(.admin), show_admin(.admin)
    )]
    UntrustedGroup {
        /// The group.
        group: GroupId,
        /// Its admin, as the group note names it.
        admin: Option<[u8; 20]>,
    },
    /// This node is revoked on chain and can no longer send.
    #[error("node {node} is revoked on chain: it can no longer send")]
    Revoked {
        /// This node.
        node: NodeId,
    },
    /// The configured node key is not the node's current on-chain key.
    #[error(
        "the key given for node {node} is not its on-chain key (version {key_version}): use the node's current key file"
    )]
    WrongNodeKey {
        /// This node.
        node: NodeId,
        /// The on-chain key version.
        key_version: u64,
    },
    /// The group has not reached the epoch waited for.
    #[error("{group} is still at epoch {current} after {waited:?}, waited for epoch {wanted}")]
    EpochNotReached {
        /// The group.
        group: GroupId,
        /// The epoch waited for.
        wanted: u64,
        /// The epoch held (0 when no group note arrived).
        current: u64,
        /// How long the agent waited.
        waited: Duration,
    },
    /// The broker did not acknowledge this node's sender-key note in time (it stays queued).
    #[error(
        "the broker {broker} did not acknowledge the sender-key note for {group} within {waited:?}; messages are not sent before it is"
    )]
    SenderKeyNotAcknowledged {
        /// The group.
        group: GroupId,
        /// How long the agent waited.
        waited: Duration,
        /// The broker (without credentials).
        broker: String,
    },
    /// Waiting for the broker to acknowledge published messages timed out.
    #[error("the broker {broker} did not acknowledge every message within {waited:?}")]
    FlushTimeout {
        /// How long the agent waited.
        waited: Duration,
        /// The broker (without credentials).
        broker: String,
    },
    /// The broker did not acknowledge a subscription in time.
    #[error("the broker {broker} did not acknowledge the subscription within {waited:?}")]
    SubscribeTimeout {
        /// How long the agent waited.
        waited: Duration,
        /// The broker (without credentials).
        broker: String,
    },
    /// The topic or filter is not valid MQTT.
    #[error("invalid MQTT topic {topic:?}: {source}")]
    InvalidTopic {
        /// The topic or filter.
        topic: String,
        /// What is wrong with it.
        source: TopicError,
    },
    /// The topic is one of anchormq's own note topics.
    #[error(
        "topic {topic:?} is under anchormq's note prefix {prefix:?}; application messages cannot use it"
    )]
    ReservedTopic {
        /// The topic.
        topic: String,
        /// The reserved prefix.
        prefix: String,
    },
    /// Sealing failed (topic outside the group's filter, message too large, ...).
    #[error("cannot seal the message: {0}")]
    Seal(SealError),
    /// The agent's guard refused the reading (out of range, too large a step, not a number); it
    /// was not sent.
    #[error(transparent)]
    Refused(Refused),
}

fn show_admin(admin: &Option<[u8; 20]>) -> String {
    admin.map_or_else(|| "unknown".to_owned(), |a| format!("0x{}", hex::encode(a)))
}

fn no_notes_hint(connected: bool) -> &'static str {
    if connected {
        "is a bridge running for this registry on this broker (check --chain-id and --registry)?"
    } else {
        "the broker could not be reached"
    }
}
