//! A real stack for agent tests: Anvil from the paper fixture, the embedded broker (or one
//! the test runs), the bridge in-process, and an admin client for on-chain changes.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anchormq_agent::{
    Agent, AgentConfig, BrokerConfig, PublishOptions, Received, ReceivedMessage, Subscription,
    Unreadable,
};
use anchormq_bridge::BridgeSettings;
use anchormq_chain::{PrivateKeySigner, RegistryClient};
use anchormq_core::{GroupId, NodeId, NodePublicKey, NodeSecretKey, Registry};
use anchormq_localstack::{
    Anvil, EmbeddedBroker, PaperFixture, RunningBridge, bridge_settings, registry_of,
};
use bytes::Bytes;
use rand_core::OsRng;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Upper bound for any single awaited condition (generous: two shared cores).
pub const WAIT: Duration = Duration::from_secs(30);

static CLIENTS: AtomicU32 = AtomicU32::new(0);

/// The broker the stack's bridge publishes its notes to and its agents use by default.
pub enum StackBroker {
    /// The embedded broker started for the stack.
    Embedded(EmbeddedBroker),
    /// A broker the test runs itself (e.g. Mosquitto), without TLS or credentials.
    External(SocketAddr),
}

impl StackBroker {
    pub fn addr(&self) -> SocketAddr {
        match self {
            Self::Embedded(broker) => broker.addr(),
            Self::External(addr) => *addr,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr())
    }
}

pub struct Stack {
    pub anvil: Anvil,
    pub broker: StackBroker,
    pub fixture: PaperFixture,
    pub registry: Registry,
    pub bridge_key: NodePublicKey,
    pub admin: RegistryClient,
    pub shutdown: CancellationToken,
    _bridge: RunningBridge,
    _dir: tempfile::TempDir,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn node(label: &str) -> NodeId {
    NodeId::from_label(label).expect("node id")
}

pub fn group(label: &str) -> GroupId {
    GroupId::from_label(label).expect("group id")
}

fn secret_from_hex(text: &str) -> NodeSecretKey {
    let bytes = hex::decode(text.trim_start_matches("0x")).expect("hex key");
    let bytes: [u8; 32] = bytes.try_into().expect("32-byte key");
    NodeSecretKey::from_bytes(&bytes).expect("valid key")
}

impl Stack {
    pub async fn start() -> Self {
        let broker = EmbeddedBroker::start().await.expect("broker");
        Self::start_with(StackBroker::Embedded(broker)).await
    }

    /// A stack whose bridge and agents use the plain MQTT broker at `addr`, which the caller runs.
    pub async fn start_on(addr: SocketAddr) -> Self {
        Self::start_with(StackBroker::External(addr)).await
    }

    async fn start_with(broker: StackBroker) -> Self {
        let fixture = PaperFixture::embedded().expect("paper fixture");
        let anvil = Anvil::builder()
            .chain_id(fixture.deployment.chain_id)
            .load_state(fixture.state_path().expect("fixture state"))
            .spawn()
            .await
            .expect("anvil");
        let dir = tempfile::tempdir().expect("tempdir");
        let bridge_secret = NodeSecretKey::generate(&mut OsRng);
        let settings = BridgeSettings {
            poll_interval_ms: Some(100),
            publish_events: Some(false),
            ..bridge_settings(
                &fixture.deployment,
                &anvil.ws_url(),
                &broker.url(),
                &format!("bridge-{}", broker.port()),
                dir.path(),
            )
        };
        let config = settings.resolve().expect("bridge config");
        let deployment = config.deployment;
        let shutdown = CancellationToken::new();
        let bridge = RunningBridge::spawn(config, bridge_secret.clone(), shutdown.child_token());
        let owner_key = fixture
            .owner_private_key
            .as_ref()
            .expect("fixture owner key")
            .expose()
            .parse::<PrivateKeySigner>()
            .expect("owner signer");
        let admin = RegistryClient::connect(&anvil.http_url(), deployment, Some(owner_key))
            .await
            .expect("admin client");
        Self {
            registry: registry_of(&deployment),
            bridge_key: bridge_secret.public_key(),
            anvil,
            broker,
            fixture,
            admin,
            shutdown,
            _bridge: bridge,
            _dir: dir,
        }
    }

    pub fn fixture_key(&self, label: &str) -> NodeSecretKey {
        let node = self.fixture.node(label).expect("fixture node");
        secret_from_hex(node.private_key.expose())
    }

    pub fn config(&self, label: &str, key: NodeSecretKey) -> AgentConfig {
        self.config_at(&self.broker.url(), label, key)
    }

    /// `label`'s agent configuration on the broker at `url`, with the fixture's key (a fresh
    /// client ID each time).
    pub fn config_on(&self, url: &str, label: &str) -> AgentConfig {
        self.config_at(url, label, self.fixture_key(label))
    }

    fn config_at(&self, url: &str, label: &str, key: NodeSecretKey) -> AgentConfig {
        let n = CLIENTS.fetch_add(1, Ordering::Relaxed);
        let broker = BrokerConfig::from_url(url, format!("agent-{label}-{n}")).expect("broker url");
        let mut config = AgentConfig::new(broker, self.registry, self.bridge_key, node(label), key);
        config.wait_timeout = WAIT;
        config.hold_timeout = WAIT;
        config
    }

    pub async fn agent(&self, label: &str) -> Agent {
        self.agent_with(self.config(label, self.fixture_key(label)))
            .await
    }

    pub async fn agent_with(&self, config: AgentConfig) -> Agent {
        Agent::start(config, self.shutdown.child_token())
            .await
            .expect("agent")
    }

    pub fn raw_options(&self, name: &str) -> MqttOptions {
        raw_at(self.broker.addr(), name)
    }
}

/// Options for a plain MQTT client of the broker at `addr`, with a client ID of its own.
pub fn raw_at(addr: SocketAddr, name: &str) -> MqttOptions {
    let n = CLIENTS.fetch_add(1, Ordering::Relaxed);
    let mut options = MqttOptions::new(format!("raw-{name}-{n}"), "127.0.0.1", addr.port());
    options.set_max_packet_size(4 << 20, 4 << 20);
    options
}

/// What a new client subscribing to `topic` on the broker at `addr` gets first: the payload and
/// whether the broker flagged it retained (MQTT 3.1.1 sets the flag only for copies from the
/// retained store).
pub async fn first_copy(addr: SocketAddr, topic: &str) -> (bool, Bytes) {
    let (client, mut eventloop) = AsyncClient::new(raw_at(addr, "retained"), 16);
    client
        .subscribe(topic, QoS::AtLeastOnce)
        .await
        .expect("probe subscribe");
    // `client` lives until the end: the event loop stops once its handle is dropped
    tokio::time::timeout(WAIT, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => return (p.retain, p.payload),
                Ok(_) => {}
                Err(e) => panic!("probe on {addr}: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("nothing on {topic} at {addr}"))
}

/// The message in `item`; fails the test on an unreadable one.
pub fn message(item: Received) -> ReceivedMessage {
    match item {
        Received::Message(m) => m,
        Received::Unreadable(u) => panic!("expected a message, got {u}"),
    }
}

/// The unreadable message in `item`; fails the test on a readable one.
pub fn unreadable(item: Received) -> Unreadable {
    match item {
        Received::Unreadable(u) => u,
        Received::Message(m) => panic!("expected an unreadable message, got {m:?}"),
    }
}

/// Publish options with the retain flag.
pub fn retained() -> PublishOptions {
    PublishOptions {
        retain: true,
        ..PublishOptions::default()
    }
}

/// A plain MQTT client (no anchormq) that forwards what it receives.
pub struct RawClient {
    pub client: AsyncClient,
    pub messages: mpsc::UnboundedReceiver<(String, Bytes)>,
}

impl RawClient {
    /// Connects and subscribes to `filter`; returns after the broker's SUBACK.
    pub async fn subscribed(options: MqttOptions, filter: &str) -> Self {
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (tx, messages) = mpsc::unbounded_channel();
        let (acked_tx, acked) = tokio::sync::oneshot::channel();
        let mut acked_tx = Some(acked_tx);
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send((p.topic, p.payload)).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(ack) = acked_tx.take() {
                            let _ = ack.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("raw subscribe");
        tokio::time::timeout(WAIT, acked)
            .await
            .expect("raw SUBACK in time")
            .expect("raw client alive");
        Self { client, messages }
    }

    pub async fn next(&mut self) -> (String, Bytes) {
        tokio::time::timeout(WAIT, self.messages.recv())
            .await
            .expect("raw message in time")
            .expect("raw client alive")
    }

    pub async fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("raw publish");
    }
}

/// The next item of a subscription (fails the test after [`WAIT`]).
pub async fn next(subscription: &mut Subscription) -> Received {
    tokio::time::timeout(WAIT, subscription.recv())
        .await
        .expect("a received item in time")
        .expect("subscription open")
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
