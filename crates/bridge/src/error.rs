//! Errors of the bridge.

use anchormq_chain::{ChainError, InconsistentEvent, StreamError};
use anchormq_mqtt::LinkError;

use crate::checkpoint::CheckpointError;
use crate::config::ConfigError;

/// Why the bridge stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The chain could not be read (unreachable at start, wrong chain, no registry).
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The event stream failed in a way it cannot repair (a reorg deeper than its window).
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The checkpoint could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The events do not fit the mirrored state (wrong registry, or a corrupted checkpoint).
    #[error(transparent)]
    Inconsistent(#[from] InconsistentEvent),
    /// The MQTT link failed.
    #[error(transparent)]
    Mqtt(#[from] LinkError),
    /// Shutdown was asked for while a batch waited for the broker; the batch is retried on restart.
    #[error("stopped before the broker acknowledged the last batch")]
    Stopped,
    /// The MQTT link stopped.
    #[error("the MQTT link stopped")]
    MqttClosed,
    /// The chain holds data the note format cannot carry.
    #[error("cannot mirror chain data: {0}")]
    BadChainData(String),
    /// A note needs more than 65,535 chunks.
    #[error("a note is too large to publish")]
    NoteTooLarge,
    /// An event could not be encoded for the live feed.
    #[error("cannot encode event: {0}")]
    Encode(String),
}
