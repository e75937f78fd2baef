//! The anchormq node agent, behind `anchormq pub` and `anchormq sub`.
//!
//! An [`Agent`] keeps every key note it sees (node and group notes from the bridge, sender-key
//! notes from the group's members; retained, so a late joiner gets them at subscribe time),
//! follows epoch changes, and moves bytes between MQTT and the core [`anchormq_core::Sealer`] /
//! [`anchormq_core::Opener`]. Before sealing it makes sure its sender key is current: after an
//! epoch change or a member's key rotation it draws a new one, publishes its note and waits for
//! the broker's acknowledgement. Missing notes are waited for (bounded) instead of failing on a
//! race; messages that arrive before the note needed to open them are held briefly and retried.
//! It trusts notes because the bridge key signed them; it never talks to the chain.
//!
//! An optional [`Guard`] checks sensor readings before they are sealed: readings outside their
//! range or jumping too far are refused, readings within a deadband of the last one sent are
//! suppressed (report by exception). It is local policy; receivers do not see it.

mod agent;
mod config;
mod error;
mod guard;
mod hold;
mod received;

pub use agent::{
    Agent, AgentStats, BURST, Outcome, PublishOptions, Published, Publisher, Subscription,
};
pub use anchormq_mqtt::{BrokerConfig, QoS};
pub use config::AgentConfig;
pub use error::AgentError;
pub use guard::{Guard, GuardRule, GuardRuleError, Refusal, Refused, Suppressed};
pub use received::{Missing, Received, ReceivedMessage, Unreadable};
