//! The local stack behind `up`, `demo` and `bench`: Anvil, the registry, a broker and the bridge,
//! all on free loopback ports, stopped when dropped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use alloy::providers::Provider;
use anchormq_bridge::{BridgeSettings, Metrics};
use anchormq_chain::{Deployment, PrivateKeySigner, RegistryClient};
use anchormq_core::{NodeId, NodeSecretKey, Registry, Topics};
use anchormq_devnet::{Anvil, DEV_ACCOUNTS, EmbeddedBroker, PaperFixture};
use anchormq_mqtt::BrokerConfig;
use eyre::{WrapErr, bail, eyre};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::commands::node::write_new_key_file;
use crate::context::core_registry;

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// Load the paper fixture (nodes 1111..1114, groups hsu0001, hsu0002) instead of deploying.
    pub paper: bool,
    /// Deploy a closed registry operated by dev account 0, which is also its first registrar.
    pub closed: bool,
    /// Use this broker instead of starting an embedded one.
    pub broker: Option<BrokerConfig>,
}

/// A running local stack.
#[derive(Debug)]
pub struct LocalStack {
    /// The chain.
    pub anvil: Anvil,
    /// The registry.
    pub deployment: Deployment,
    /// How to reach the broker (client ID to be replaced per client).
    pub broker: BrokerConfig,
    /// Whether the broker is the embedded one (`anchormq-broker`).
    pub embedded_broker: bool,
    /// The bridge's signing key (generated for this run).
    pub bridge_key: NodeSecretKey,
    /// The paper fixture, when loaded.
    pub fixture: Option<PaperFixture>,
    /// Cancelled to stop the bridge.
    pub shutdown: CancellationToken,
    /// Bridge metrics.
    pub metrics: Arc<Metrics>,
    bridge: Option<JoinHandle<Result<(), anchormq_bridge::BridgeError>>>,
    _broker: Option<EmbeddedBroker>,
    dir: tempfile::TempDir,
}

impl LocalStack {
    /// Starts Anvil (paper fixture or fresh deploy), the broker and the bridge.
    pub async fn start(options: StackOptions) -> eyre::Result<Self> {
        // keys live here: a dir left by an `up` that was killed is removed by the next one
        let (dir, _) = anchormq_devnet::process::work_dir("anchormq-stack-")
            .wrap_err("cannot create a temporary directory")?;
        let (anvil, deployment, fixture) = if options.paper {
            let fixture = PaperFixture::embedded().wrap_err("cannot prepare the paper fixture")?;
            let state = fixture
                .state_path()
                .ok_or_else(|| eyre!("the paper fixture names no state file"))?;
            let anvil = Anvil::builder()
                .chain_id(fixture.deployment.chain_id)
                .load_state(state)
                .spawn()
                .await
                .wrap_err("cannot start Anvil")?;
            (anvil, fixture.deployment, Some(fixture))
        } else {
            let anvil = Anvil::spawn().await.wrap_err("cannot start Anvil")?;
            let signer: PrivateKeySigner = DEV_ACCOUNTS[0]
                .private_key()
                .parse()
                .wrap_err("dev account key")?;
            let operator = signer.address();
            let deployment = anchormq_chain::deploy_registry(
                &anvil.http_url(),
                signer.clone(),
                options.closed.then_some(operator),
            )
            .await
            .wrap_err("cannot deploy the registry")?;
            if options.closed {
                RegistryClient::connect(&anvil.http_url(), deployment, Some(signer))
                    .await?
                    .set_registrar(operator, true)
                    .await
                    .wrap_err("cannot make dev account 0 a registrar")?;
            }
            (anvil, deployment, None)
        };
        let (broker, embedded) = match options.broker {
            Some(config) => (config, None),
            None => {
                let embedded = EmbeddedBroker::start()
                    .await
                    .wrap_err("cannot start the embedded broker")?;
                let config = BrokerConfig::from_url(&embedded.url(), "anchormq-stack")
                    .wrap_err("embedded broker URL")?;
                (config, Some(embedded))
            }
        };
        let bridge_key = NodeSecretKey::generate(&mut rand_core::OsRng);
        let key_file = dir.path().join("bridge.key");
        write_new_key_file(&key_file, &bridge_key)?;
        let mut stack = Self {
            anvil,
            deployment,
            embedded_broker: embedded.is_some(),
            broker,
            bridge_key,
            fixture,
            shutdown: CancellationToken::new(),
            metrics: Arc::new(Metrics::default()),
            bridge: None,
            _broker: embedded,
            dir,
        };
        if options.paper {
            stack.clear_retained_notes().await?;
        }
        stack.start_bridge(key_file)?;
        Ok(stack)
    }

    fn start_bridge(&mut self, key_file: PathBuf) -> eyre::Result<()> {
        let settings = BridgeSettings {
            rpc: Some(self.anvil.ws_url()),
            registry: Some(self.deployment.address.to_string()),
            chain_id: Some(self.deployment.chain_id),
            deploy_block: Some(self.deployment.deploy_block),
            broker: Some(self.broker.display_url()),
            key_file: Some(key_file),
            checkpoint: Some(self.dir.path().join("bridge.checkpoint.json")),
            poll_interval_ms: Some(100),
            client_id: Some(format!("anchormq-bridge-{}", std::process::id())),
            ..BridgeSettings::default()
        };
        let mut config = settings.resolve().wrap_err("bridge settings")?;
        config.broker.credentials = self.broker.credentials.clone();
        config.broker.ca_file = self.broker.ca_file.clone();
        let key = self.bridge_key.clone();
        self.bridge = Some(tokio::spawn(anchormq_bridge::run(
            config,
            key,
            self.metrics.clone(),
            self.shutdown.child_token(),
        )));
        Ok(())
    }

    /// The fixture's registry address is the same every run: notes a previous run left retained on
    /// an external broker (signed by another bridge key) are cleared so they cannot confuse agents.
    async fn clear_retained_notes(&self) -> eyre::Result<()> {
        if self.embedded_broker {
            return Ok(());
        }
        let topics = Topics::new(&self.registry());
        let config = self.broker_for(&format!("anchormq-clear-{}", std::process::id()));
        let retained = crate::commands::verify::collect_retained(
            &config,
            &[format!("{}/#", topics.prefix())],
            Duration::from_millis(300),
            Duration::from_secs(10),
        )
        .await
        .wrap_err("reading retained notes on the broker")?;
        if retained.is_empty() {
            return Ok(());
        }
        let shutdown = CancellationToken::new();
        let _stop = shutdown.clone().drop_guard();
        let (link, _events) = anchormq_mqtt::Link::start(&config, shutdown.clone())?;
        for topic in retained.keys() {
            link.publish_confirmed(topic.clone(), Vec::new(), true)
                .await
                .wrap_err("clearing retained notes")?;
        }
        Ok(())
    }

    /// The registry as `anchormq-core` names it.
    pub fn registry(&self) -> Registry {
        core_registry(&self.deployment)
    }

    /// The broker settings with another client ID.
    pub fn broker_for(&self, client_id: &str) -> BrokerConfig {
        BrokerConfig {
            client_id: client_id.to_owned(),
            ..self.broker.clone()
        }
    }

    /// The anvil dev account 0: deployer, and owner/admin of everything in the paper fixture.
    pub fn operator(&self) -> eyre::Result<PrivateKeySigner> {
        DEV_ACCOUNTS[0]
            .private_key()
            .parse()
            .map_err(|_| eyre!("anvil dev key 0 does not parse"))
    }

    /// A registry client sending from the operator account.
    pub async fn operator_client(&self) -> eyre::Result<RegistryClient> {
        RegistryClient::connect(
            &self.anvil.http_url(),
            self.deployment,
            Some(self.operator()?),
        )
        .await
        .wrap_err("cannot use the registry")
    }

    /// A fixture node's ID and test key.
    pub fn fixture_node(&self, id: &str) -> eyre::Result<(NodeId, NodeSecretKey)> {
        let fixture = self
            .fixture
            .as_ref()
            .ok_or_else(|| eyre!("no fixture loaded"))?;
        let node = fixture
            .node(id)
            .ok_or_else(|| eyre!("the fixture has no node {id}"))?;
        let text = node.private_key.expose();
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.strip_prefix("0x").unwrap_or(text), &mut bytes)
            .map_err(|_| eyre!("fixture key of node {id} is not 32 bytes of hex"))?;
        let key = NodeSecretKey::from_bytes(&bytes)
            .map_err(|e| eyre!("fixture key of node {id}: {e}"))?;
        let node_id = NodeId::from_label(id).map_err(|e| eyre!("node ID {id}: {e}"))?;
        Ok((node_id, key))
    }

    /// The stack's temporary directory (removed on drop).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Waits until the bridge has mirrored the chain up to its current head.
    pub async fn bridge_caught_up(&self, timeout: Duration) -> eyre::Result<()> {
        let client = self.operator_client().await?;
        let head = client
            .provider()
            .get_block_number()
            .await
            .wrap_err("reading the chain head")?;
        let deadline = tokio::time::Instant::now() + timeout;
        while self
            .metrics
            .mirrored_block
            .load(std::sync::atomic::Ordering::Relaxed)
            < head
        {
            if tokio::time::Instant::now() >= deadline || self.bridge_finished() {
                bail!("the bridge did not mirror the chain up to block {head} within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Stops the bridge and reports how it ended.
    pub async fn stop(mut self) -> eyre::Result<()> {
        self.shutdown.cancel();
        if let Some(task) = self.bridge.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(error).wrap_err("the bridge failed"),
                Err(error) => return Err(eyre!("the bridge task panicked: {error}")),
            }
        }
        Ok(())
    }

    /// Whether the bridge task has ended (it only ends on error or shutdown).
    pub fn bridge_finished(&self) -> bool {
        self.bridge.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
