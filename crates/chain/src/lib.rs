//! The anchormq chain client: typed calls to the KeyRegistry contract and a complete, ordered,
//! reorg-aware stream of its events.
//!
//! The ABI comes from `contracts/src/IKeyRegistry.sol` through `sol!`; nothing is copied by hand.
//! This crate knows nothing of MQTT or of the message format: the bridge turns its events into notes.

pub mod bindings;
mod client;
mod deploy;
mod deployment;
mod error;
mod events;
mod heads;
mod ids;
mod logs;
mod state;
mod stream;

pub use client::{NodeRegistration, RegistryClient, TxOutcome, node_key_digest, prove_possession};
pub use deploy::{creation_code, deploy_registry};
pub use deployment::{Deployment, DeploymentError};
pub use error::{ChainError, RegistryRevert};
pub use events::{LogDecodeError, LogPosition, PositionedEvent, RegistryEvent};
pub use ids::show_id;
pub use logs::{LogReader, RangeConfig};
pub use state::{Changed, GroupRecord, InconsistentEvent, NodeRecord, NodeStatus, RegistryState};
pub use stream::{
    Cursor, EventStream, Finality, StreamConfig, StreamError, StreamItem, StreamPosition,
    StreamStats,
};

pub use alloy::primitives::{Address, B256, Bytes};
pub use alloy::signers::k256::ecdsa::SigningKey;
pub use alloy::signers::local::PrivateKeySigner;
