//! The anchormq bridge: mirrors the KeyRegistry's events as signed, retained MQTT key notes.
//!
//! One node note per node and one group note per group, each signed with the bridge key and
//! carrying its chain position and the bridge's generation (raised with every reorg it follows;
//! readers order notes by generation, then position, so the notes of the canonical chain replace
//! those of removed blocks), retained at QoS 1 under `anchormq/v1/<chain>/<registry>/…`, plus a
//! non-retained live feed of the events. The checkpoint moves only after the broker acknowledged
//! every note of a batch, so a crash at any point repeats work (notes are deterministic) and loses
//! none. On every broker connection the bridge compares the retained notes the broker sends with its
//! own (until a marker it sends itself comes back) and publishes what the broker lacks, so a broker
//! that lost its retained messages is repaired and one that kept them costs nothing; any other note
//! found on a note topic (older, forged, garbage) is put back at once, unless it is a note of the
//! bridge's own key that another instance, further along the chain, published.
//!
//! It is not a source of truth: readers trust notes because the bridge key signed them, and
//! `anchormq verify` checks them against the chain.

mod checkpoint;
mod config;
mod error;
mod metrics;
mod mirror;
pub mod notes;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use anchormq_chain::{EventStream, StreamPosition};
use anchormq_core::{NodeSecretKey, Registry, Topics};
use anchormq_mqtt::Link;
use tokio_util::sync::CancellationToken;

pub use checkpoint::{Checkpoint, CheckpointError};
pub use config::{BridgeConfig, BridgeSettings, ConfigError};
pub use error::BridgeError;
pub use metrics::{Metrics, serve as serve_metrics};

/// Reads the bridge key file; the error never contains key material.
pub fn load_key(path: &std::path::Path) -> Result<NodeSecretKey, ConfigError> {
    let content = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    NodeSecretKey::from_key_file(&content).map_err(|e| ConfigError::Invalid {
        field: "key_file",
        reason: format!("{}: {e}", path.display()),
    })
}

/// Runs the bridge until `shutdown`: loads the checkpoint, connects to the chain (failing fast when
/// it is unreachable, on another chain, or holds no registry), connects to the broker, and mirrors.
pub async fn run(
    config: BridgeConfig,
    key: NodeSecretKey,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), BridgeError> {
    let deployment = config.deployment;
    let registry_hex = format!("{:#x}", deployment.address);
    let checkpoint = Checkpoint::load(&config.checkpoint, deployment.chain_id, &registry_hex)?
        .unwrap_or_else(|| {
            Checkpoint::new(
                deployment.chain_id,
                registry_hex.clone(),
                StreamPosition {
                    next_block: deployment.deploy_block,
                    recent: Vec::new(),
                },
            )
        });
    let state = checkpoint.state()?;
    let stream = EventStream::connect_with_witnesses(
        &config.rpc_url,
        &config.witness_urls,
        deployment,
        config.stream.clone(),
        Some(checkpoint.stream.clone()),
    )
    .await?;
    tracing::info!(
        target: "anchormq::bridge",
        chain_id = deployment.chain_id,
        registry = %registry_hex,
        from_block = checkpoint.stream.next_block,
        nodes = state.nodes.len(),
        groups = state.groups.len(),
        broker = %config.broker.display_url(),
        "bridge starting"
    );
    // The link outlives the mirror loop's shutdown so that a stop never looks like a lost link.
    let link_shutdown = CancellationToken::new();
    let _stop_link = link_shutdown.clone().drop_guard();
    let (link, link_events) = Link::start(&config.broker, link_shutdown)?;
    let registry = Registry {
        chain_id: deployment.chain_id,
        address: deployment.address.0.0,
    };
    let topics = Topics::new(&registry);
    let mut nonce = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
    let sync_topic = topics.bridge_sync(&hex::encode(nonce));
    let mirror = mirror::Mirror {
        key,
        registry,
        topics,
        link,
        link_events,
        metrics,
        checkpoint,
        checkpoint_path: config.checkpoint.clone(),
        state,
        publish_events: config.publish_events,
        expected: HashMap::new(),
        chunk_counts: HashMap::new(),
        repairs: BTreeSet::new(),
        restores: BTreeSet::new(),
        sync_topic,
        sync: None,
        connections: 0,
        pending: None,
        shutdown: shutdown.clone(),
    };
    mirror.run(stream, shutdown).await
}
