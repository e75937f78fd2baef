//! Shared helpers for the end-to-end tests in this folder: agents on a running local stack.

use std::time::Duration;

pub use anchormq::commands::stack::{LocalStack, StackOptions};
use anchormq_agent::{Agent, AgentConfig, Received, ReceivedMessage, Subscription};
use anchormq_core::{NodeId, NodeSecretKey};
use tokio_util::sync::CancellationToken;

/// How long a test waits for any one expected thing.
pub const WAIT: Duration = Duration::from_secs(60);

/// Agent settings for `node` on `stack`'s broker and registry.
pub fn agent_config(stack: &LocalStack, node: NodeId, key: NodeSecretKey) -> AgentConfig {
    let mut config = AgentConfig::new(
        stack.broker_for(&format!("e2e-{node}-{}", std::process::id())),
        stack.registry(),
        stack.bridge_key.public_key(),
        node,
        key,
    );
    config.wait_timeout = WAIT;
    config
}

/// Starts the agent of a paper-fixture node.
pub async fn fixture_agent(
    stack: &LocalStack,
    id: &str,
    shutdown: &CancellationToken,
) -> eyre::Result<Agent> {
    let (node, key) = stack.fixture_node(id)?;
    Ok(Agent::start(agent_config(stack, node, key), shutdown.child_token()).await?)
}

/// The next readable message, failing on an unreadable one or after [`WAIT`].
pub async fn next_message(sub: &mut Subscription) -> eyre::Result<ReceivedMessage> {
    match tokio::time::timeout(WAIT, sub.recv()).await {
        Ok(Some(Received::Message(message))) => Ok(message),
        Ok(Some(Received::Unreadable(u))) => Err(eyre::eyre!("unreadable: {u}")),
        Ok(None) => Err(eyre::eyre!("the agent stopped")),
        Err(_) => Err(eyre::eyre!("no message within {WAIT:?}")),
    }
}
