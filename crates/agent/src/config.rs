//! What an agent needs to know: the broker, the registry, whom to trust, who it is, how long to wait.

use std::time::Duration;

use anchormq_core::{NodeId, NodePublicKey, NodeSecretKey, Registry, Trust};
use anchormq_mqtt::{BrokerConfig, QoS};

use crate::guard::Guard;

/// Agent settings. [`AgentConfig::new`] fills in the defaults.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The broker the bridge publishes its notes to.
    pub broker: BrokerConfig,
    /// The KeyRegistry whose notes to accept (chain ID + address).
    pub registry: Registry,
    /// The bridge's public key: notes signed by any other key are refused.
    pub bridge_key: NodePublicKey,
    /// This node's ID.
    pub node: NodeId,
    /// This node's secret key (must match its on-chain key; `Debug` redacts it).
    pub node_key: NodeSecretKey,
    /// The groups this agent seals for and opens: by default every group it is a member of
    /// (joining needs the owner's consent on chain); naming groups or admins narrows it.
    pub trust: Trust,
    /// How long to wait for notes that are needed (group note, own node note, membership, the
    /// broker's acknowledgement of a sender-key note) before failing with an error naming them.
    pub wait_timeout: Duration,
    /// How long after seeing a group's epoch change messages of the previous epoch are still
    /// accepted (they may have been in flight). Zero refuses them at once.
    pub epoch_grace: Duration,
    /// QoS of message subscriptions (notes are always subscribed at QoS 1).
    pub qos: QoS,
    /// Received messages that cannot be opened yet (sender-key note, group note or sender's node
    /// note not arrived) are held and retried when notes arrive, at most this many…
    pub hold_max_messages: usize,
    /// …and at most this long, after which they are reported as unreadable.
    pub hold_timeout: Duration,
    /// Capacity of each subscription's channel; a full channel slows reading from the broker.
    pub subscription_buffer: usize,
    /// Checks on the readings this agent publishes, before they are sealed (default: none).
    pub guard: Guard,
    /// Tasks that open messages when they queue up, each taking whole streams so that a
    /// stream stays in order (default: the cores, at most 4). A lone message is opened where
    /// it is read, without a hand-over; 1 opens everything there.
    pub open_lanes: usize,
}

impl AgentConfig {
    /// Settings with defaults: wait 10 s for notes, 2 s epoch grace, QoS 1, hold up to 1024
    /// messages for up to 5 s, no guard, an opening lane per core (at most 4).
    pub fn new(
        broker: BrokerConfig,
        registry: Registry,
        bridge_key: NodePublicKey,
        node: NodeId,
        node_key: NodeSecretKey,
    ) -> Self {
        Self {
            broker,
            registry,
            bridge_key,
            node,
            node_key,
            trust: Trust::default(),
            wait_timeout: Duration::from_secs(10),
            epoch_grace: Duration::from_secs(2),
            qos: QoS::AtLeastOnce,
            hold_max_messages: 1024,
            hold_timeout: Duration::from_secs(5),
            subscription_buffer: 1024,
            guard: Guard::default(),
            open_lanes: std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
        }
    }
}
