//! The bridge against a real Anvil and real brokers, checked by an independent plain MQTT subscriber
//! that verifies every note with the bridge's public key.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::signers::k256::ecdsa::SigningKey;
use anchormq_bridge::{BridgeConfig, BridgeSettings, Metrics};
use anchormq_chain::bindings::IKeyRegistry;
use anchormq_chain::{B256, Deployment, PrivateKeySigner, RegistryClient};
use anchormq_core::chunk::{Assembly, ChunkAssembler};
use anchormq_core::{GroupId, KeyBook, NodeId, NodeSecretKey, NodeStatus, Registry, Topics};
use anchormq_localstack::{
    Anvil, AnvilRpc, EmbeddedBroker, Mosquitto, TcpCutProxy, await_condition, deploy_registry,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const SETTLE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

fn node(label: &str) -> NodeId {
    NodeId::from_label(label).expect("label")
}

fn group(label: &str) -> GroupId {
    GroupId::from_label(label).expect("label")
}

struct Setup {
    anvil: Anvil,
    deployment: Deployment,
    admin: RegistryClient,
    bridge_key: NodeSecretKey,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Self {
        let anvil = Anvil::spawn().await.expect("anvil");
        let deployed = deploy_registry(&anvil, anvil.dev_accounts()[0].private_key())
            .await
            .expect("deploy");
        let deployment = deployed;
        let operator: PrivateKeySigner =
            anvil.dev_accounts()[0].private_key().parse().expect("key");
        let admin = RegistryClient::connect(&anvil.http_url(), deployment, Some(operator))
            .await
            .expect("client");
        let bridge_key = NodeSecretKey::generate(&mut rand_core::OsRng);
        Self {
            anvil,
            deployment,
            admin,
            bridge_key,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn registry(&self) -> Registry {
        Registry {
            chain_id: self.deployment.chain_id,
            address: self.deployment.address.0.0,
        }
    }

    fn config(&self, rpc: &str, broker: &str, client_id: &str) -> BridgeConfig {
        BridgeSettings {
            rpc: Some(rpc.to_owned()),
            registry: Some(format!("{:#x}", self.deployment.address)),
            chain_id: Some(self.deployment.chain_id),
            deploy_block: Some(self.deployment.deploy_block),
            broker: Some(broker.to_owned()),
            client_id: Some(client_id.to_owned()),
            key_file: Some(self.dir.path().join("unused.key")),
            checkpoint: Some(self.dir.path().join(format!("{client_id}.checkpoint.json"))),
            poll_interval_ms: Some(50),
            ..BridgeSettings::default()
        }
        .resolve()
        .expect("valid settings")
    }

    fn start_bridge(&self, config: BridgeConfig) -> RunningBridge {
        let shutdown = CancellationToken::new();
        let metrics = Arc::new(Metrics::default());
        let task = tokio::spawn(anchormq_bridge::run(
            config,
            self.bridge_key.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
        RunningBridge {
            shutdown,
            task,
            metrics,
        }
    }
}

struct RunningBridge {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), anchormq_bridge::BridgeError>>,
    metrics: Arc<Metrics>,
}

impl RunningBridge {
    /// Graceful stop: the bridge returns Ok.
    async fn stop(self) {
        self.shutdown.cancel();
        self.task
            .await
            .expect("bridge task")
            .expect("bridge stops cleanly");
    }

    /// A crash at whatever await point the bridge is in: nothing after it runs.
    async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// An independent observer: a plain rumqttc client that keeps the latest payload of every retained
/// note topic, and starts over when its connection (and so the broker's retained set) is new.
struct Observer {
    topics: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    _task: JoinHandle<()>,
}

impl Observer {
    fn start(broker_url: &str, prefix: &str) -> Self {
        let address = broker_url.trim_start_matches("mqtt://");
        let (host, port) = address.rsplit_once(':').expect("host:port");
        let mut options = MqttOptions::new(
            format!("observer-{}", rand_suffix()),
            host,
            port.parse().expect("port"),
        );
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let topics = Arc::new(Mutex::new(BTreeMap::new()));
        let seen = topics.clone();
        let filters = [format!("{prefix}/node/#"), format!("{prefix}/group/#")];
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        seen.lock().expect("lock").clear();
                        for filter in &filters {
                            client
                                .try_subscribe(filter.clone(), QoS::AtLeastOnce)
                                .expect("subscribe");
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let mut seen = seen.lock().expect("lock");
                        if publish.payload.is_empty() {
                            seen.remove(&publish.topic);
                        } else {
                            seen.insert(publish.topic, publish.payload.to_vec());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Self {
            topics,
            _task: task,
        }
    }

    /// Reassembles and verifies every note it holds; a note that fails verification fails the test.
    fn book(&self, registry: Registry, bridge: &NodeSecretKey) -> KeyBook {
        let mut book = KeyBook::new(registry, bridge.public_key());
        let mut assembler = ChunkAssembler::new(100_000);
        let topics = self.topics.lock().expect("lock").clone();
        for (topic, payload) in topics {
            match assembler.push(&payload) {
                Ok(Assembly::Complete(note)) => {
                    book.ingest_note(note.as_bytes())
                        .unwrap_or_else(|e| panic!("note on {topic} rejected: {e}"));
                }
                Ok(Assembly::Partial { .. }) => {}
                Err(e) => panic!("chunk on {topic} rejected: {e}"),
            }
        }
        book
    }
}

fn rand_suffix() -> u64 {
    use rand_core::RngCore;
    rand_core::OsRng.next_u64()
}

/// A group in note terms: epoch, topic filter, members with their key versions.
type GroupView = (u64, String, Vec<(NodeId, u64)>);

/// What the chain says, read with eth_call, in note terms.
#[derive(Debug, PartialEq, Eq)]
struct Expected {
    nodes: BTreeMap<NodeId, (Vec<u8>, u64, NodeStatus)>,
    groups: BTreeMap<GroupId, GroupView>,
}

async fn chain_truth(client: &RegistryClient, nodes: &[NodeId], groups: &[GroupId]) -> Expected {
    let mut expected = Expected {
        nodes: BTreeMap::new(),
        groups: BTreeMap::new(),
    };
    let mut versions = HashMap::new();
    for id in nodes {
        // IDs that were never registered (the property test draws from a pool) have no note.
        let Ok(n) = client.node(*id).await else {
            continue;
        };
        let status = if n.status == IKeyRegistry::NodeStatus::Revoked {
            NodeStatus::Revoked
        } else {
            NodeStatus::Active
        };
        versions.insert(*id, u64::from(n.keyVersion));
        expected
            .nodes
            .insert(*id, (n.publicKey.to_vec(), u64::from(n.keyVersion), status));
    }
    for id in groups {
        let Ok(g) = client.group(*id).await else {
            continue;
        };
        let mut members: Vec<(NodeId, u64)> = client
            .members(*id)
            .await
            .expect("members")
            .into_iter()
            .map(|m| (m, versions[&m]))
            .collect();
        members.sort();
        expected
            .groups
            .insert(*id, (g.epoch, g.topicFilter, members));
    }
    expected
}

fn mirrored(book: &KeyBook) -> Expected {
    let nodes = book
        .nodes()
        .map(|n| {
            (
                n.node,
                (n.public_key.to_bytes().to_vec(), n.key_version, n.status),
            )
        })
        .collect();
    let groups = book
        .groups()
        .map(|g| {
            let members = g
                .members()
                .iter()
                .map(|m| (m.node, m.key_version))
                .collect();
            (g.group(), (g.epoch(), g.topic_filter().to_owned(), members))
        })
        .collect();
    Expected { nodes, groups }
}

async fn await_mirror(setup: &Setup, observer: &Observer, nodes: &[NodeId], groups: &[GroupId]) {
    let truth = chain_truth(&setup.admin, nodes, groups).await;
    let result = await_condition(
        "the retained notes to equal the chain state",
        SETTLE,
        POLL,
        || {
            let equal = mirrored(&observer.book(setup.registry(), &setup.bridge_key)) == truth;
            async move { equal }
        },
    )
    .await;
    if let Err(error) = result {
        let got = mirrored(&observer.book(setup.registry(), &setup.bridge_key));
        panic!(
            "{error}\nchain has {} nodes / {} groups, broker has {} / {}",
            truth.nodes.len(),
            truth.groups.len(),
            got.nodes.len(),
            got.groups.len()
        );
    }
}

fn key() -> SigningKey {
    SigningKey::random(&mut rand_core::OsRng)
}

#[tokio::test]
async fn every_kind_of_change_appears_as_verified_notes_equal_to_the_chain() {
    let setup = Setup::new().await;
    let broker = EmbeddedBroker::start().await.expect("broker");
    let prefix = Topics::new(&setup.registry()).prefix().to_owned();
    let observer = Observer::start(&broker.url(), &prefix);
    let bridge = setup.start_bridge(setup.config(&setup.anvil.ws_url(), &broker.url(), "bridge-a"));

    let ids: Vec<_> = ["1111", "1112", "1113", "1114"]
        .iter()
        .map(|l| node(l))
        .collect();
    for id in &ids {
        setup.admin.register_node(*id, &key()).await.unwrap();
    }
    setup
        .admin
        .create_group(group("hsu0001"), "hsu/0001/#")
        .await
        .unwrap();
    setup
        .admin
        .create_group(group("hsu0002"), "hsu/0002/#")
        .await
        .unwrap();
    for (g, n) in [
        ("hsu0001", "1111"),
        ("hsu0001", "1112"),
        ("hsu0002", "1113"),
        ("hsu0002", "1114"),
    ] {
        setup.admin.add_member(group(g), node(n)).await.unwrap();
    }
    let groups = [group("hsu0001"), group("hsu0002")];
    await_mirror(&setup, &observer, &ids, &groups).await;

    setup
        .admin
        .add_member(group("hsu0001"), node("1113"))
        .await
        .unwrap();
    setup
        .admin
        .remove_member(group("hsu0001"), node("1112"))
        .await
        .unwrap();
    setup.admin.rotate_key(node("1113"), &key()).await.unwrap();
    setup.admin.revoke_node(node("1114")).await.unwrap();
    await_mirror(&setup, &observer, &ids, &groups).await;
    let book = observer.book(setup.registry(), &setup.bridge_key);
    // add 1113 and remove 1112 bump the epoch after the first two adds; a rotation does not (the
    // group note carries 1113's new key version instead).
    let hsu0001 = book
        .group(&GroupId::from_label("hsu0001").unwrap())
        .unwrap();
    assert_eq!(hsu0001.epoch(), 4);
    assert_eq!(
        hsu0001
            .member(&NodeId::from_label("1113").unwrap())
            .unwrap()
            .key_version,
        2
    );
    assert_eq!(
        book.node(&NodeId::from_label("1114").unwrap())
            .unwrap()
            .status,
        NodeStatus::Revoked
    );
    assert!(
        bridge
            .metrics
            .notes_published
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    bridge.stop().await;
}

/// Sends `count` createGroup transactions without waiting for each, mining every `per_block`.
async fn burst(setup: &Setup, first: usize, count: usize, per_block: usize) -> Vec<GroupId> {
    let provider = setup.admin.provider().clone();
    let registry = IKeyRegistry::new(setup.deployment.address, provider.clone());
    let rpc = setup.anvil.rpc().expect("rpc");
    rpc.call("evm_setAutomine", serde_json::json!([false]))
        .await
        .expect("automine off");
    let sender = setup.admin.sender().expect("sender");
    let mut nonce = alloy::providers::Provider::get_transaction_count(&provider, sender)
        .pending()
        .await
        .expect("nonce");
    let mut ids = Vec::new();
    for i in first..first + count {
        let id = group(&format!("burst{i}"));
        let _pending = registry
            .createGroup(B256::from(*id.as_bytes()), String::new())
            .nonce(nonce)
            .gas(200_000)
            .max_fee_per_gas(20_000_000_000)
            .max_priority_fee_per_gas(1)
            .send()
            .await
            .expect("send");
        nonce += 1;
        ids.push(id);
        if ids.len() % per_block == 0 {
            rpc.call("evm_mine", serde_json::json!([]))
                .await
                .expect("mine");
        }
    }
    rpc.call("evm_mine", serde_json::json!([]))
        .await
        .expect("mine");
    rpc.call("evm_setAutomine", serde_json::json!([true]))
        .await
        .expect("automine on");
    ids
}

#[tokio::test]
async fn restarts_and_crashes_in_a_burst_of_events_lose_nothing() {
    let setup = Setup::new().await;
    let broker = EmbeddedBroker::start().await.expect("broker");
    let prefix = Topics::new(&setup.registry()).prefix().to_owned();
    let observer = Observer::start(&broker.url(), &prefix);
    let config = setup.config(&setup.anvil.http_url(), &broker.url(), "bridge-burst");

    let mut groups = Vec::new();
    let bridge = setup.start_bridge(config.clone());
    groups.extend(burst(&setup, 0, 700, 50).await);
    bridge.crash().await;
    groups.extend(burst(&setup, 700, 300, 50).await);
    let bridge = setup.start_bridge(config.clone());
    groups.extend(burst(&setup, 1000, 600, 50).await);
    bridge.stop().await;
    let bridge = setup.start_bridge(config.clone());
    groups.extend(burst(&setup, 1600, 500, 50).await);
    // Crash again while it is catching up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    bridge.crash().await;
    let bridge = setup.start_bridge(config);
    assert_eq!(groups.len(), 2_100);
    await_mirror(&setup, &observer, &[], &groups).await;
    bridge.stop().await;
}

#[tokio::test]
async fn a_reorg_takes_back_the_notes_of_removed_blocks() {
    let setup = Setup::new().await;
    let broker = EmbeddedBroker::start().await.expect("broker");
    let prefix = Topics::new(&setup.registry()).prefix().to_owned();
    let observer = Observer::start(&broker.url(), &prefix);
    let bridge =
        setup.start_bridge(setup.config(&setup.anvil.http_url(), &broker.url(), "bridge-reorg"));

    setup.admin.create_group(group("kept"), "").await.unwrap();
    setup
        .admin
        .create_group(group("doomed"), "doomed/#")
        .await
        .unwrap();
    await_mirror(&setup, &observer, &[], &[group("kept"), group("doomed")]).await;

    setup
        .anvil
        .rpc()
        .unwrap()
        .call("anvil_reorg", serde_json::json!([1, []]))
        .await
        .expect("anvil_reorg");
    setup
        .admin
        .create_group(group("instead"), "")
        .await
        .unwrap();
    await_mirror(&setup, &observer, &[], &[group("kept"), group("instead")]).await;
    let book = observer.book(setup.registry(), &setup.bridge_key);
    assert!(
        book.group(&GroupId::from_label("doomed").unwrap())
            .is_none(),
        "the reorged group note is gone"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn a_broker_restart_with_or_without_persistence_is_repaired() {
    let setup = Setup::new().await;
    for persistence in [false, true] {
        let mut mosquitto = Mosquitto::builder()
            .persistence(persistence)
            .spawn()
            .await
            .expect("mosquitto");
        let prefix = Topics::new(&setup.registry()).prefix().to_owned();
        let observer = Observer::start(&mosquitto.url(), &prefix);
        let client_id = format!("bridge-restart-{persistence}");
        let _ = std::fs::remove_file(
            setup
                .dir
                .path()
                .join(format!("{client_id}.checkpoint.json")),
        );
        let bridge =
            setup.start_bridge(setup.config(&setup.anvil.ws_url(), &mosquitto.url(), &client_id));
        let id = group(&format!("before{persistence}"));
        setup.admin.create_group(id, "").await.unwrap();
        // The second round's bridge mirrors the first round's groups too: they are on the same chain.
        let mut groups = if persistence {
            vec![group("beforefalse"), group("afterfalse")]
        } else {
            Vec::new()
        };
        groups.push(id);
        await_mirror(&setup, &observer, &[], &groups).await;

        mosquitto.restart().await.expect("mosquitto restarts");
        let after = group(&format!("after{persistence}"));
        setup.admin.create_group(after, "").await.unwrap();
        groups.push(after);
        await_mirror(&setup, &observer, &[], &groups).await;
        bridge.stop().await;
    }
}

#[tokio::test]
async fn cutting_the_websocket_mid_stream_leaves_no_gap() {
    let setup = Setup::new().await;
    let broker = EmbeddedBroker::start().await.expect("broker");
    let prefix = Topics::new(&setup.registry()).prefix().to_owned();
    let observer = Observer::start(&broker.url(), &prefix);
    let anvil_addr = format!("127.0.0.1:{}", setup.anvil.port())
        .parse()
        .expect("addr");
    let proxy = TcpCutProxy::start(anvil_addr).await.expect("proxy");
    let ws_url = format!("ws://{}", proxy.addr());
    let bridge = setup.start_bridge(setup.config(&ws_url, &broker.url(), "bridge-ws"));

    let mut groups = burst(&setup, 0, 200, 20).await;
    proxy.cut_all();
    groups.extend(burst(&setup, 200, 200, 20).await);
    proxy.cut_all();
    groups.extend(burst(&setup, 400, 100, 20).await);
    await_mirror(&setup, &observer, &[], &groups).await;
    bridge.stop().await;
}

#[tokio::test]
async fn two_bridges_on_one_broker_converge_on_the_chain_state() {
    let setup = Setup::new().await;
    let broker = EmbeddedBroker::start().await.expect("broker");
    let prefix = Topics::new(&setup.registry()).prefix().to_owned();
    let observer = Observer::start(&broker.url(), &prefix);
    let first =
        setup.start_bridge(setup.config(&setup.anvil.http_url(), &broker.url(), "bridge-one"));
    let mut groups = burst(&setup, 0, 300, 30).await;
    // The second starts from nothing while the first is up to date: it publishes old notes first.
    let second =
        setup.start_bridge(setup.config(&setup.anvil.ws_url(), &broker.url(), "bridge-two"));
    groups.extend(burst(&setup, 300, 300, 30).await);
    await_mirror(&setup, &observer, &[], &groups).await;
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn unreachable_rpc_and_wrong_registry_stop_the_bridge_with_one_clear_error() {
    let setup = Setup::new().await;
    let broker = EmbeddedBroker::start().await.expect("broker");
    let port = anchormq_localstack::free_port().unwrap();
    let dead = setup.config(
        &format!("http://127.0.0.1:{port}"),
        &broker.url(),
        "bridge-dead",
    );
    let error = anchormq_bridge::run(
        dead,
        setup.bridge_key.clone(),
        Arc::default(),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with(&format!("cannot reach the RPC at http://127.0.0.1:{port}")),
        "{error}"
    );

    let mut wrong = setup.config(&setup.anvil.http_url(), &broker.url(), "bridge-wrong");
    wrong.deployment.address = "0x000000000000000000000000000000000000bEEF"
        .parse()
        .unwrap();
    let error = anchormq_bridge::run(
        wrong,
        setup.bridge_key.clone(),
        Arc::default(),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("no contract at 0x000000000000000000000000000000000000bEEF"),
        "{error}"
    );
}

/// A small deterministic generator, so a failing sequence can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Topic filters a stranger would try, valid and not; the registry must refuse the invalid ones and
/// the bridge must carry on whatever gets mined.
const FILTERS: &[&str] = &[
    "",
    "#",
    "+",
    "a/+/b",
    "hsu/0001/#",
    "a+",
    "+a",
    "a/#/b",
    "#/",
    "x\0y",
    "caf\u{e9}",
    "\u{7f}",
    "sp ace/#",
    "a//b",
];

/// Random sequences of valid and invalid transactions from four accounts through every function of
/// the registry, with adversarial arguments (other people's nodes and groups, invalid filters, bad
/// keys and proofs, invalid UTF-8): the bridge keeps running, and after each batch its retained
/// notes equal what `eth_call` says. Replay a failure with ANCHORMQ_PROPTEST_SEED.
#[tokio::test]
async fn hostile_transactions_from_many_accounts_never_stop_or_corrupt_the_mirror() {
    use alloy::network::TransactionBuilder;
    use alloy::providers::Provider;
    use alloy::sol_types::SolCall;

    let seed = std::env::var("ANCHORMQ_PROPTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand_suffix() | 1);
    eprintln!("ANCHORMQ_PROPTEST_SEED={seed}");
    let mut rng = Rng(seed);

    let setup = Setup::new().await;
    let broker = EmbeddedBroker::start().await.expect("broker");
    let prefix = Topics::new(&setup.registry()).prefix().to_owned();
    let observer = Observer::start(&broker.url(), &prefix);
    let bridge =
        setup.start_bridge(setup.config(&setup.anvil.ws_url(), &broker.url(), "bridge-prop"));

    let mut accounts = Vec::new();
    for account in &setup.anvil.dev_accounts()[1..5] {
        let signer: PrivateKeySigner = account.private_key().parse().expect("key");
        accounts.push(
            RegistryClient::connect(&setup.anvil.http_url(), setup.deployment, Some(signer))
                .await
                .expect("client"),
        );
    }
    let addresses: Vec<_> = accounts
        .iter()
        .map(|a| a.sender().expect("sender"))
        .chain([alloy::primitives::Address::ZERO])
        .collect();
    let nodes: Vec<_> = (0..8).map(|i| node(&format!("n{i}"))).collect();
    let groups: Vec<_> = (0..6).map(|i| group(&format!("g{i}"))).collect();

    // Each account starts with two nodes and a group of its own, so that later random calls meet
    // real state to attack (other people's nodes and groups) as well as IDs that do not exist.
    for (i, client) in accounts.iter().enumerate() {
        client
            .register_node(nodes[2 * i], &key())
            .await
            .expect("register");
        client
            .register_node(nodes[2 * i + 1], &key())
            .await
            .expect("register");
        client
            .create_group(groups[i], FILTERS[i + 1])
            .await
            .expect("create");
    }
    let (mut sent, mut mined) = (0, 0);
    for _batch in 0..8 {
        for _ in 0..15 {
            let client = rng.pick(&accounts);
            let n = *rng.pick(&nodes);
            let g = *rng.pick(&groups);
            let who = *rng.pick(&addresses);
            let outcome = match rng.below(14) {
                0 | 1 => client.register_node(n, &key()).await.map(|_| ()),
                2 => client.rotate_key(n, &key()).await.map(|_| ()),
                3 => client.revoke_node(n).await.map(|_| ()),
                4 => client.offer_node(n, who).await.map(|_| ()),
                5 => client.accept_node(n).await.map(|_| ()),
                6 => client
                    .set_admin_approval(who, rng.below(3) > 0)
                    .await
                    .map(|_| ()),
                7 | 8 => client
                    .create_group(g, rng.pick::<&str>(FILTERS))
                    .await
                    .map(|_| ()),
                9 => client.offer_group_admin(g, who).await.map(|_| ()),
                10 => client.accept_group_admin(g).await.map(|_| ()),
                11 => client.add_member(g, n).await.map(|_| ()),
                12 => client.remove_member(g, n).await.map(|_| ()),
                _ => {
                    // Raw calldata no typed client would send: a filter of invalid UTF-8, or a key
                    // that is not a curve point with a garbage proof.
                    let input = if rng.below(2) == 0 {
                        let mut data = IKeyRegistry::createGroupCall {
                            groupId: B256::from(*g.as_bytes()),
                            topicFilter: "ab/#".into(),
                        }
                        .abi_encode();
                        let at = data
                            .windows(4)
                            .rposition(|w| w == b"ab/#")
                            .expect("filter bytes");
                        data[at] = 0xff;
                        data
                    } else {
                        IKeyRegistry::registerNodeCall {
                            nodeId: B256::from(*n.as_bytes()),
                            publicKey: vec![2; 33].into(),
                            signature: vec![7; 65].into(),
                        }
                        .abi_encode()
                    };
                    let request = alloy::rpc::types::TransactionRequest::default()
                        .with_to(setup.deployment.address)
                        .with_input(input);
                    match client.provider().send_transaction(request).await {
                        Ok(pending) => match pending.get_receipt().await {
                            Ok(receipt) if receipt.status() => Ok(()),
                            Ok(_) => Err(anchormq_chain::ChainError::Signing("reverted".into())),
                            Err(e) => Err(anchormq_chain::ChainError::Signing(e.to_string())),
                        },
                        Err(e) => Err(anchormq_chain::ChainError::Signing(e.to_string())),
                    }
                }
            };
            sent += 1;
            mined += usize::from(outcome.is_ok());
        }
        assert!(
            !bridge.task.is_finished(),
            "the bridge stopped (seed {seed})"
        );
        await_mirror(&setup, &observer, &nodes, &groups).await;
    }
    eprintln!("{mined} of {sent} transactions mined");
    assert!(mined > 0, "some transactions must get through");
    assert!(mined < sent, "some transactions must be refused");
    assert!(!bridge.task.is_finished());
    bridge.stop().await;
}

/// Runtime code that emits one LOG3 of its calldata: topics at bytes 0..96, data after them.
/// Stands in for a registry without the contract's checks, so the bridge's own defences are what
/// is tested.
const LOG3_EMITTER: &[u8] = &[
    0x60, 0x40, 0x35, // t2
    0x60, 0x20, 0x35, // t1
    0x60, 0x00, 0x35, // t0
    0x60, 0x60, 0x36, 0x03, // size = calldatasize - 96
    0x80, 0x60, 0x60, 0x60, 0x00, 0x37, // calldatacopy(0, 96, size)
    0x60, 0x00, 0xa3, // log3(0, size, t0, t1, t2)
    0x00,
];

/// Whatever a registry's logs say, the bridge keeps mirroring: a group whose filter is not a valid
/// MQTT filter (or not even UTF-8) is published as claiming no topic, logged and counted, and the
/// next legitimate change still arrives.
#[tokio::test]
async fn chain_data_no_note_can_carry_is_skipped_and_the_bridge_goes_on() {
    use alloy::network::TransactionBuilder;
    use alloy::primitives::Bytes;
    use alloy::providers::Provider;
    use alloy::sol_types::SolEvent;

    let setup = Setup::new().await;
    let broker = EmbeddedBroker::start().await.expect("broker");
    let prefix = Topics::new(&setup.registry()).prefix().to_owned();
    let observer = Observer::start(&broker.url(), &prefix);
    let bridge =
        setup.start_bridge(setup.config(&setup.anvil.http_url(), &broker.url(), "bridge-bad-data"));
    setup
        .admin
        .create_group(group("before"), "ok/#")
        .await
        .unwrap();
    await_mirror(&setup, &observer, &[], &[group("before")]).await;

    let provider = setup.admin.provider().clone();
    let registry = setup.deployment.address;
    let code = provider.get_code_at(registry).await.expect("code");
    let rpc = setup.anvil.rpc().expect("rpc");
    let set_code = |code: Vec<u8>| {
        let rpc = &rpc;
        async move {
            rpc.call(
                "anvil_setCode",
                serde_json::json!([format!("{registry:#x}"), format!("0x{}", hex(&code))]),
            )
            .await
            .expect("anvil_setCode");
        }
    };
    set_code(LOG3_EMITTER.to_vec()).await;
    let admin = setup.admin.sender().expect("sender");
    let bad: [(&str, &[u8]); 3] = [
        ("evila", b"a+"),
        ("evilb", b"x\0y/#"),
        ("evilc", b"\xff\xfe/#"),
    ];
    for (label, filter) in bad {
        let mut input = IKeyRegistry::GroupCreated::SIGNATURE_HASH.to_vec();
        input.extend_from_slice(group(label).as_bytes());
        input.extend_from_slice(B256::left_padding_from(admin.as_slice()).as_slice());
        // abi.encode(string): offset, length, bytes padded to 32
        let mut data = vec![0u8; 64];
        data[31] = 0x20;
        data[63] = filter.len() as u8;
        data.extend_from_slice(filter);
        data.resize(64 + filter.len().div_ceil(32) * 32, 0);
        input.extend_from_slice(&data);
        let request = alloy::rpc::types::TransactionRequest::default()
            .with_to(registry)
            .with_input(Bytes::from(input));
        let receipt = provider
            .send_transaction(request)
            .await
            .expect("send")
            .get_receipt()
            .await
            .expect("receipt");
        assert!(receipt.status(), "the emitter logs");
    }
    set_code(code.to_vec()).await;
    setup
        .admin
        .create_group(group("after"), "after/#")
        .await
        .unwrap();

    let ready = await_condition("the notes after the bad data", SETTLE, POLL, || {
        let book = observer.book(setup.registry(), &setup.bridge_key);
        let filter = |label: &str| {
            book.group(&GroupId::from_label(label).expect("id"))
                .map(|g| g.topic_filter().to_owned())
        };
        let done = filter("after").as_deref() == Some("after/#")
            && ["evila", "evilb", "evilc"]
                .iter()
                .all(|l| filter(l).as_deref() == Some(""));
        async move { done }
    })
    .await;
    ready.expect("bad groups mirrored as claiming no topic, later ones mirrored");
    assert!(!bridge.task.is_finished(), "the bridge is still running");
    assert!(
        bridge
            .metrics
            .chain_data_refused
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
    );
    assert!(
        bridge
            .metrics
            .render()
            .contains("anchormq_bridge_chain_data_refused_total")
    );
    bridge.stop().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
