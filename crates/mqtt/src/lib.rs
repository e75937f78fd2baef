//! A reliable MQTT link for anchormq's bridge and agent.
//!
//! rumqttc drops every unacknowledged QoS 1 publish when the broker starts a new session, and a
//! clean session forgets subscriptions. A [`Link`] owns the event loop in one task and fixes both:
//! it keeps each QoS 1 message until the broker acknowledges it and hands it again after a new
//! session, resubscribes on every connection, and lets callers wait for a message's acknowledgement
//! (the bridge moves its checkpoint only then). It knows nothing of anchormq's formats.

mod config;
mod link;

pub use config::{BrokerConfig, BrokerUrlError, Credentials};
pub use link::{ConnectFailure, Link, LinkError, LinkEvent, Message, Outbound};
pub use rumqttc::QoS;
