//! A fresh registry on a fresh Anvil, with everything a bridge test needs around it: the operator's
//! client, a bridge key, a temp dir for checkpoints, bridge settings, the bridge run in-process, and
//! bulk mining of registry events.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anchormq_bridge::{BridgeConfig, BridgeError, BridgeSettings, Metrics};
use anchormq_chain::bindings::IKeyRegistry;
use anchormq_chain::{
    B256, ChainError, Deployment, NodeRegistration, PrivateKeySigner, RegistryClient, SigningKey,
};
use anchormq_core::{GroupId, NodeId, NodeSecretKey, Registry};
use anchormq_devnet::{Anvil, AnvilError};
use serde_json::json;
use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::anvil_rpc::AnvilRpc;
use crate::deploy::{DeployError, deploy_registry};
use crate::observer::Observer;
use crate::rpc::parse_quantity;

/// How often the bridges a [`RegistryStack`] configures poll an HTTP RPC, in milliseconds.
pub const BRIDGE_POLL_MS: u64 = 50;

/// Setting up a [`RegistryStack`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StackError {
    /// Anvil did not start.
    #[error(transparent)]
    Anvil(#[from] AnvilError),
    /// The registry was not deployed.
    #[error(transparent)]
    Deploy(#[from] DeployError),
    /// The operator's client could not connect.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The temp dir could not be made.
    #[error("cannot make a temp dir: {0}")]
    TempDir(#[source] std::io::Error),
}

/// A fresh Anvil with a freshly deployed, open KeyRegistry, a client signing as its deployer (dev
/// account 0), a generated bridge key and a temp dir for bridge checkpoints.
#[derive(Debug)]
pub struct RegistryStack {
    /// The node.
    pub anvil: Anvil,
    /// Where the registry is.
    pub deployment: Deployment,
    /// A client signing as dev account 0, the deployer.
    pub admin: RegistryClient,
    /// The key every bridge of this stack signs notes with.
    pub bridge_key: NodeSecretKey,
    /// Checkpoints and other files of this stack's bridges.
    pub dir: tempfile::TempDir,
}

impl RegistryStack {
    /// Starts Anvil, deploys the registry from dev account 0 and connects to it as that account.
    pub async fn start() -> Result<Self, StackError> {
        Self::on(Anvil::spawn().await?).await
    }

    /// [`Self::start`] on an Anvil started by the caller (for example with other flags).
    pub async fn on(anvil: Anvil) -> Result<Self, StackError> {
        let deployment = deploy_registry(&anvil, anvil.dev_accounts()[0].private_key()).await?;
        let admin =
            RegistryClient::connect(&anvil.http_url(), deployment, Some(signer(&anvil, 0))).await?;
        Ok(Self {
            anvil,
            deployment,
            admin,
            bridge_key: NodeSecretKey::generate(&mut rand_core::OsRng),
            dir: tempfile::tempdir().map_err(StackError::TempDir)?,
        })
    }

    /// The registry in note terms.
    pub fn registry(&self) -> Registry {
        registry_of(&self.deployment)
    }

    /// The signer of Anvil's dev account `index`.
    ///
    /// # Panics
    /// When `index` is not one of Anvil's dev accounts.
    pub fn signer(&self, index: usize) -> PrivateKeySigner {
        signer(&self.anvil, index)
    }

    /// A client of the registry signing as dev account `index`.
    pub async fn client(&self, index: usize) -> Result<RegistryClient, ChainError> {
        RegistryClient::connect(
            &self.anvil.http_url(),
            self.deployment,
            Some(self.signer(index)),
        )
        .await
    }

    /// The checkpoint file of the bridge with MQTT client ID `client_id`.
    pub fn checkpoint(&self, client_id: &str) -> PathBuf {
        self.dir.path().join(format!("{client_id}.checkpoint.json"))
    }

    /// Settings for a bridge of this registry, reading `rpc` and publishing to `broker` as
    /// `client_id`, polling every [`BRIDGE_POLL_MS`]; change fields before resolving them.
    pub fn bridge_settings(&self, rpc: &str, broker: &str, client_id: &str) -> BridgeSettings {
        BridgeSettings {
            poll_interval_ms: Some(BRIDGE_POLL_MS),
            ..bridge_settings(&self.deployment, rpc, broker, client_id, self.dir.path())
        }
    }

    /// [`Self::bridge_settings`], resolved.
    ///
    /// # Panics
    /// Never for the URLs the kit's services give; a wrong URL fails the test.
    pub fn bridge_config(&self, rpc: &str, broker: &str, client_id: &str) -> BridgeConfig {
        self.bridge_settings(rpc, broker, client_id)
            .resolve()
            .expect("valid settings")
    }

    /// Runs a bridge with `config` and this stack's key as a task.
    pub fn start_bridge(&self, config: BridgeConfig) -> RunningBridge {
        RunningBridge::spawn(config, self.bridge_key.clone(), CancellationToken::new())
    }

    /// [`Self::start_bridge`] with [`Self::bridge_config`].
    pub fn bridge(&self, rpc: &str, broker: &str, client_id: &str) -> RunningBridge {
        self.start_bridge(self.bridge_config(rpc, broker, client_id))
    }

    /// An observer of the notes on `broker_url` under this registry's prefix, verified with this
    /// stack's bridge key.
    pub fn observe(&self, broker_url: &str) -> Observer {
        Observer::start(broker_url, self.registry(), self.bridge_key.public_key())
    }

    /// Mines `count` createGroup transactions from the admin, for groups `burst{first}` onwards
    /// with no topic filter: sent without waiting for each, with automining off, a block every
    /// `per_block`. Returns the group IDs.
    ///
    /// # Panics
    /// When a call to Anvil fails: a test helper, it fails the test.
    pub async fn burst(&self, first: usize, count: usize, per_block: usize) -> Vec<GroupId> {
        let registry = IKeyRegistry::new(self.deployment.address, self.admin.provider().clone());
        let rpc = self.anvil.rpc().expect("rpc");
        rpc.call("evm_setAutomine", json!([false]))
            .await
            .expect("automine off");
        let sender = self.admin.sender().expect("sender");
        let pending = rpc
            .call("eth_getTransactionCount", json!([sender, "pending"]))
            .await
            .expect("nonce");
        let nonces = parse_quantity(&pending).expect("nonce is a quantity")..;
        let mut ids = Vec::new();
        for (nonce, i) in nonces.zip(first..first + count) {
            let id = GroupId::from_label(&format!("burst{i}")).expect("label");
            let _pending = registry
                .createGroup(B256::from(*id.as_bytes()), String::new())
                .nonce(nonce)
                .gas(200_000)
                .max_fee_per_gas(20_000_000_000)
                .max_priority_fee_per_gas(1)
                .send()
                .await
                .expect("send");
            ids.push(id);
            if ids.len() % per_block == 0 {
                rpc.call("evm_mine", json!([])).await.expect("mine");
            }
        }
        rpc.call("evm_mine", json!([])).await.expect("mine");
        rpc.call("evm_setAutomine", json!([true]))
            .await
            .expect("automine on");
        ids
    }
}

/// The registry of `deployment` in note terms.
pub fn registry_of(deployment: &Deployment) -> Registry {
    Registry {
        chain_id: deployment.chain_id,
        address: deployment.address.0.0,
    }
}

fn signer(anvil: &Anvil, index: usize) -> PrivateKeySigner {
    anvil.dev_accounts()[index]
        .private_key()
        .parse()
        .expect("dev key")
}

/// Settings for a bridge of `deployment` reading `rpc` and publishing to `broker` as `client_id`,
/// its checkpoint `<client_id>.checkpoint.json` in `dir` (the key is passed to the bridge, so no
/// key file is read).
pub fn bridge_settings(
    deployment: &Deployment,
    rpc: &str,
    broker: &str,
    client_id: &str,
    dir: &Path,
) -> BridgeSettings {
    BridgeSettings {
        rpc: Some(rpc.to_owned()),
        registry: Some(format!("{:#x}", deployment.address)),
        chain_id: Some(deployment.chain_id),
        deploy_block: Some(deployment.deploy_block),
        broker: Some(broker.to_owned()),
        client_id: Some(client_id.to_owned()),
        key_file: Some(dir.join("unused.key")),
        checkpoint: Some(dir.join(format!("{client_id}.checkpoint.json"))),
        ..BridgeSettings::default()
    }
}

/// A bridge running in-process as a task.
#[derive(Debug)]
pub struct RunningBridge {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), BridgeError>>,
    /// The bridge's counters.
    pub metrics: Arc<Metrics>,
}

impl RunningBridge {
    /// Runs `anchormq_bridge::run` with `config` and `key` as a task until `shutdown` (or
    /// [`Self::stop`]). When the bridge stops with an error, the error is printed.
    pub fn spawn(config: BridgeConfig, key: NodeSecretKey, shutdown: CancellationToken) -> Self {
        let metrics = Arc::new(Metrics::default());
        let client_id = config.broker.client_id.clone();
        let run = anchormq_bridge::run(config, key, metrics.clone(), shutdown.clone());
        let task = tokio::spawn(async move {
            let outcome = run.await;
            if let Err(error) = &outcome {
                eprintln!("bridge {client_id} stopped: {error}");
            }
            outcome
        });
        Self {
            shutdown,
            task,
            metrics,
        }
    }

    /// Whether the bridge has stopped.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Graceful stop: the bridge must return Ok.
    ///
    /// # Panics
    /// When the bridge stopped with an error or panicked.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        (&mut self.task)
            .await
            .expect("bridge task")
            .expect("bridge stops cleanly");
    }

    /// A crash at whatever await point the bridge is in: nothing after it runs.
    pub async fn crash(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    /// Waits for the bridge to stop on its own and returns how it ended.
    pub async fn outcome(mut self) -> Result<Result<(), BridgeError>, JoinError> {
        (&mut self.task).await
    }
}

/// Dropping a running bridge asks it to stop, as shutting down the process would.
impl Drop for RunningBridge {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// What onboarding a fleet took: see [`RegistryStack::onboard`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Onboarding {
    /// Nodes registered and added.
    pub nodes: usize,
    /// `registerNodes` transactions and their gas.
    pub register_txs: usize,
    /// Gas of all `registerNodes` transactions.
    pub register_gas: u64,
    /// `addMembers` transactions (one epoch bump each).
    pub add_txs: usize,
    /// Gas of all `addMembers` transactions.
    pub add_gas: u64,
    /// Making the keys and proofs of possession.
    pub prove_time: Duration,
    /// Sending and mining the registrations.
    pub register_time: Duration,
    /// Sending and mining the additions.
    pub add_time: Duration,
}

impl RegistryStack {
    /// Onboards a fleet the way `anchormq node register --csv` and `group add --nodes-file` do:
    /// `count` fresh device keys, each proving possession for the admin account, registered in
    /// `registerNodes` batches of `register_batch` and added to `group` (created here, on
    /// `fleet/#`) in `addMembers` batches of `add_batch`.
    pub async fn onboard(
        &self,
        group: GroupId,
        count: usize,
        register_batch: usize,
        add_batch: usize,
    ) -> Result<Onboarding, ChainError> {
        let owner = self
            .admin
            .sender()
            .ok_or_else(|| ChainError::Signing("the stack's admin client has no account".into()))?;
        let started = Instant::now();
        let mut fleet = Vec::with_capacity(count);
        for i in 0..count {
            let node = NodeId::from_label(&format!("dev{i:06}"))
                .map_err(|e| ChainError::Signing(e.to_string()))?;
            let key = SigningKey::random(&mut rand_core::OsRng);
            fleet.push(NodeRegistration::prove(
                &self.deployment,
                owner,
                node,
                &key,
            )?);
        }
        let prove_time = started.elapsed();
        let mut outcome = Onboarding {
            nodes: count,
            register_txs: 0,
            register_gas: 0,
            add_txs: 0,
            add_gas: 0,
            prove_time,
            register_time: Duration::ZERO,
            add_time: Duration::ZERO,
        };
        let started = Instant::now();
        for batch in fleet.chunks(register_batch.max(1)) {
            let tx = self.admin.register_nodes(batch).await?;
            outcome.register_txs += 1;
            outcome.register_gas += tx.gas_used;
        }
        outcome.register_time = started.elapsed();
        self.admin.create_group(group, "fleet/#").await?;
        let started = Instant::now();
        let ids: Vec<NodeId> = fleet.iter().map(|r| r.node).collect();
        for batch in ids.chunks(add_batch.max(1)) {
            let tx = self.admin.add_members(group, batch).await?;
            outcome.add_txs += 1;
            outcome.add_gas += tx.gas_used;
        }
        outcome.add_time = started.elapsed();
        Ok(outcome)
    }
}
