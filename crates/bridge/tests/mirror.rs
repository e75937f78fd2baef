//! The bridge against a real Anvil and real brokers, checked by an independent plain MQTT subscriber
//! that verifies every note with the bridge's public key.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use alloy::signers::k256::ecdsa::SigningKey;
use anchormq_chain::B256;
use anchormq_chain::bindings::IKeyRegistry;
use anchormq_core::{GroupId, NodeId, NodeStatus};
use anchormq_localstack::{
    AnvilRpc, EmbeddedBroker, Mosquitto, POLL, RegistryStack, SETTLE, TcpCutProxy, await_condition,
};
use tokio_util::sync::CancellationToken;

fn node(label: &str) -> NodeId {
    NodeId::from_label(label).expect("label")
}

fn group(label: &str) -> GroupId {
    GroupId::from_label(label).expect("label")
}

fn key() -> SigningKey {
    SigningKey::random(&mut rand_core::OsRng)
}

#[tokio::test]
async fn every_kind_of_change_appears_as_verified_notes_equal_to_the_chain() {
    let setup = RegistryStack::start().await.expect("stack");
    let broker = EmbeddedBroker::start().await.expect("broker");
    let observer = setup.observe(&broker.url());
    let bridge = setup.bridge(&setup.anvil.ws_url(), &broker.url(), "bridge-a");

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
    observer.await_chain(&setup.admin, &ids, &groups).await;

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
    observer.await_chain(&setup.admin, &ids, &groups).await;
    let book = observer.book();
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

#[tokio::test]
async fn restarts_and_crashes_in_a_burst_of_events_lose_nothing() {
    let setup = RegistryStack::start().await.expect("stack");
    let broker = EmbeddedBroker::start().await.expect("broker");
    let observer = setup.observe(&broker.url());
    let config = setup.bridge_config(&setup.anvil.http_url(), &broker.url(), "bridge-burst");

    let mut groups = Vec::new();
    let bridge = setup.start_bridge(config.clone());
    groups.extend(setup.burst(0, 700, 50).await);
    bridge.crash().await;
    groups.extend(setup.burst(700, 300, 50).await);
    let bridge = setup.start_bridge(config.clone());
    groups.extend(setup.burst(1000, 600, 50).await);
    bridge.stop().await;
    let bridge = setup.start_bridge(config.clone());
    groups.extend(setup.burst(1600, 500, 50).await);
    // Crash again while it is catching up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    bridge.crash().await;
    let bridge = setup.start_bridge(config.clone());
    assert_eq!(groups.len(), 2_100);
    observer.await_chain(&setup.admin, &[], &groups).await;
    bridge.stop().await;

    // A restart on a broker that kept all 2,100 notes publishes none of them again: the bridge
    // sees every one come back (the embedded broker gives a new QoS 1 subscription only 100).
    let bridge = setup.start_bridge(config);
    await_condition(
        "the restarted bridge checks the broker",
        SETTLE,
        POLL,
        || async { bridge.metrics.broker_syncs.load(Ordering::Relaxed) >= 1 },
    )
    .await
    .expect("checked");
    assert_eq!(
        bridge.metrics.notes_restored.load(Ordering::Relaxed),
        0,
        "the broker holds every note"
    );
    assert_eq!(
        bridge.metrics.notes_published.load(Ordering::Relaxed),
        0,
        "the stopped bridge's checkpoint held its last round"
    );
    bridge.stop().await;
}

/// A fresh bridge over a chain that already holds 500 groups publishes each note once: the notes
/// of its first batch, published after its marker, are not taken for notes the broker lacks.
#[tokio::test]
async fn a_fresh_bridge_publishes_each_note_once() {
    let setup = RegistryStack::start().await.expect("stack");
    let broker = EmbeddedBroker::start().await.expect("broker");
    let observer = setup.observe(&broker.url());
    let groups = setup.burst(0, 500, 100).await;
    let bridge = setup.bridge(&setup.anvil.http_url(), &broker.url(), "bridge-fresh");
    observer.await_chain(&setup.admin, &[], &groups).await;
    await_condition("the bridge checks the broker", SETTLE, POLL, || async {
        bridge.metrics.broker_syncs.load(Ordering::Relaxed) >= 1
    })
    .await
    .expect("checked");
    assert_eq!(bridge.metrics.notes_restored.load(Ordering::Relaxed), 0);
    assert_eq!(bridge.metrics.notes_published.load(Ordering::Relaxed), 500);
    bridge.stop().await;
}

#[tokio::test]
async fn a_reorg_takes_back_the_notes_of_removed_blocks() {
    let setup = RegistryStack::start().await.expect("stack");
    let broker = EmbeddedBroker::start().await.expect("broker");
    let observer = setup.observe(&broker.url());
    let bridge = setup.bridge(&setup.anvil.http_url(), &broker.url(), "bridge-reorg");

    setup.admin.create_group(group("kept"), "").await.unwrap();
    setup
        .admin
        .create_group(group("doomed"), "doomed/#")
        .await
        .unwrap();
    observer
        .await_chain(&setup.admin, &[], &[group("kept"), group("doomed")])
        .await;

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
    observer
        .await_chain(&setup.admin, &[], &[group("kept"), group("instead")])
        .await;
    let book = observer.book();
    assert!(
        book.group(&GroupId::from_label("doomed").unwrap())
            .is_none(),
        "the reorged group note is gone"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn a_broker_restart_with_or_without_persistence_is_repaired() {
    let setup = RegistryStack::start().await.expect("stack");
    for persistence in [false, true] {
        let mut mosquitto = Mosquitto::builder()
            .persistence(persistence)
            .spawn()
            .await
            .expect("mosquitto");
        let observer = setup.observe(&mosquitto.url());
        let client_id = format!("bridge-restart-{persistence}");
        let _ = std::fs::remove_file(setup.checkpoint(&client_id));
        let bridge = setup.bridge(&setup.anvil.ws_url(), &mosquitto.url(), &client_id);
        let id = group(&format!("before{persistence}"));
        setup.admin.create_group(id, "").await.unwrap();
        // The second round's bridge mirrors the first round's groups too: they are on the same chain.
        let mut groups = if persistence {
            vec![group("beforefalse"), group("afterfalse")]
        } else {
            Vec::new()
        };
        groups.push(id);
        observer.await_chain(&setup.admin, &[], &groups).await;
        let restored_before = bridge.metrics.notes_restored.load(Ordering::Relaxed);

        mosquitto.restart().await.expect("mosquitto restarts");
        // After the reconnection the bridge compares the broker's notes with its own and publishes
        // only what the broker lacks: everything without persistence, nothing with it.
        await_condition(
            "the bridge checks the restarted broker",
            SETTLE,
            POLL,
            || async { bridge.metrics.broker_syncs.load(Ordering::Relaxed) >= 2 },
        )
        .await
        .expect("checked");
        let restored = bridge.metrics.notes_restored.load(Ordering::Relaxed) - restored_before;
        if persistence {
            assert_eq!(
                restored, 0,
                "the broker kept every note: none is published again"
            );
        } else {
            assert!(
                restored >= groups.len() as u64,
                "the broker lost every note: all {} are published again, not {restored}",
                groups.len()
            );
        }
        let after = group(&format!("after{persistence}"));
        setup.admin.create_group(after, "").await.unwrap();
        groups.push(after);
        observer.await_chain(&setup.admin, &[], &groups).await;
        bridge.stop().await;
    }
}

#[tokio::test]
async fn cutting_the_websocket_mid_stream_leaves_no_gap() {
    let setup = RegistryStack::start().await.expect("stack");
    let broker = EmbeddedBroker::start().await.expect("broker");
    let observer = setup.observe(&broker.url());
    let anvil_addr = format!("127.0.0.1:{}", setup.anvil.port())
        .parse()
        .expect("addr");
    let proxy = TcpCutProxy::start(anvil_addr).await.expect("proxy");
    let ws_url = format!("ws://{}", proxy.addr());
    let bridge = setup.bridge(&ws_url, &broker.url(), "bridge-ws");

    let mut groups = setup.burst(0, 200, 20).await;
    proxy.cut_all();
    groups.extend(setup.burst(200, 200, 20).await);
    proxy.cut_all();
    groups.extend(setup.burst(400, 100, 20).await);
    observer.await_chain(&setup.admin, &[], &groups).await;
    bridge.stop().await;
}

#[tokio::test]
async fn two_bridges_on_one_broker_converge_on_the_chain_state() {
    let setup = RegistryStack::start().await.expect("stack");
    let broker = EmbeddedBroker::start().await.expect("broker");
    let observer = setup.observe(&broker.url());
    let first = setup.bridge(&setup.anvil.http_url(), &broker.url(), "bridge-one");
    // (150 + 150 groups: enough for the second to start far behind; 600 took up to 60 s on two
    // loaded cores in CI)
    let mut groups = setup.burst(0, 150, 30).await;
    // The second starts from nothing while the first is up to date: it publishes old notes first.
    let second = setup.bridge(&setup.anvil.ws_url(), &broker.url(), "bridge-two");
    groups.extend(setup.burst(150, 150, 30).await);
    observer.await_chain(&setup.admin, &[], &groups).await;
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn unreachable_rpc_and_wrong_registry_stop_the_bridge_with_one_clear_error() {
    let setup = RegistryStack::start().await.expect("stack");
    let broker = EmbeddedBroker::start().await.expect("broker");
    let port = anchormq_localstack::free_port().unwrap();
    let dead = setup.bridge_config(
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

    let mut wrong = setup.bridge_config(&setup.anvil.http_url(), &broker.url(), "bridge-wrong");
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
        .unwrap_or_else(|| rand_core::RngCore::next_u64(&mut rand_core::OsRng) | 1);
    eprintln!("ANCHORMQ_PROPTEST_SEED={seed}");
    let mut rng = Rng(seed);

    let setup = RegistryStack::start().await.expect("stack");
    let broker = EmbeddedBroker::start().await.expect("broker");
    let observer = setup.observe(&broker.url());
    let bridge = setup.bridge(&setup.anvil.ws_url(), &broker.url(), "bridge-prop");

    let mut accounts = Vec::new();
    for index in 1..5 {
        accounts.push(setup.client(index).await.expect("client"));
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
            let outcome = match rng.below(16) {
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
                // batches, sometimes with a node twice or one that does not exist
                13 => {
                    let batch = [n, *rng.pick(&nodes), *rng.pick(&nodes)];
                    client.add_members(g, &batch).await.map(|_| ())
                }
                14 => {
                    let batch = [n, *rng.pick(&nodes)];
                    client.remove_members(g, &batch).await.map(|_| ())
                }
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
        assert!(!bridge.is_finished(), "the bridge stopped (seed {seed})");
        observer.await_chain(&setup.admin, &nodes, &groups).await;
    }
    eprintln!("{mined} of {sent} transactions mined");
    assert!(mined > 0, "some transactions must get through");
    assert!(mined < sent, "some transactions must be refused");
    assert!(!bridge.is_finished());
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

    let setup = RegistryStack::start().await.expect("stack");
    let broker = EmbeddedBroker::start().await.expect("broker");
    let observer = setup.observe(&broker.url());
    let bridge = setup.bridge(&setup.anvil.http_url(), &broker.url(), "bridge-bad-data");
    setup
        .admin
        .create_group(group("before"), "ok/#")
        .await
        .unwrap();
    observer
        .await_chain(&setup.admin, &[], &[group("before")])
        .await;

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
        let book = observer.book();
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
    assert!(!bridge.is_finished(), "the bridge is still running");
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

/// Publishes `forgeries` retained on `topic` and waits until the broker acknowledged each.
async fn forge(
    forger: &rumqttc::AsyncClient,
    acked: &mut tokio::sync::mpsc::UnboundedReceiver<()>,
    topic: &str,
    forgeries: &[&Vec<u8>],
) {
    for forged in forgeries {
        forger
            .publish(topic, rumqttc::QoS::AtLeastOnce, true, (*forged).clone())
            .await
            .expect("forger publishes");
    }
    for _ in forgeries {
        acked
            .recv()
            .await
            .expect("the broker acknowledges each forgery");
    }
}

/// What a new subscriber gets as the retained message of `topic` (none within 500 ms: `None`).
async fn retained(port: u16, topic: &str) -> Option<Vec<u8>> {
    static CLIENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CLIENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut options = rumqttc::MqttOptions::new(format!("retained-{n}"), "127.0.0.1", port);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 16);
    let read = async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    client
                        .subscribe(topic, rumqttc::QoS::AtLeastOnce)
                        .await
                        .ok()?;
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) if p.topic == topic => {
                    return Some(p.payload.to_vec());
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    };
    tokio::time::timeout(Duration::from_millis(500), read)
        .await
        .ok()
        .flatten()
}

/// Anyone may publish under the note prefix unless the broker's ACLs forbid it. A forged note
/// (garbage, another group's genuine note, a chunk claiming a later block, or a deletion) is put
/// back within 2 s, also while the
/// bridge is starting: after each of several restarts a forgery comes as soon as the bridge's
/// republication reached the broker, while it may still wait for acknowledgements (a restarted
/// bridge once left one in place for 10-31 s; one that decodes as a chunk from a later block it
/// left for good).
#[tokio::test]
async fn forged_notes_are_put_back_at_once_also_right_after_restarts() {
    const BOUND: Duration = Duration::from_secs(2);
    let setup = RegistryStack::start().await.expect("stack");
    let broker = Mosquitto::builder().spawn().await.expect("mosquitto");
    let observer = setup.observe(&broker.url());
    let config = setup.bridge_config(&setup.anvil.http_url(), &broker.url(), "bridge-forged");
    let mut bridge = setup.start_bridge(config.clone());
    for (id, filter) in [("target", "target/#"), ("other", "other/#")] {
        setup.admin.create_group(group(id), filter).await.unwrap();
    }
    observer
        .await_chain(&setup.admin, &[], &[group("target"), group("other")])
        .await;
    let topics = anchormq_core::Topics::new(&setup.registry());
    let topic = topics.group_note(&group("target"), 0);
    let genuine = observer.payload(&topic).expect("the target's note");
    let foreign = observer
        .payload(&topics.group_note(&group("other"), 0))
        .expect("the other group's note");

    let mut options = rumqttc::MqttOptions::new("forger", "127.0.0.1", broker.port());
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (forger, mut eventloop) = rumqttc::AsyncClient::new(options, 512);
    let (acked_tx, mut acked) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = event {
                let _ = acked_tx.send(());
            }
        }
    });
    // a chunk that claims to come from the future: it decodes, but holds no note of the target
    let mut future = anchormq_core::chunk::Chunk::decode(&foreign).expect("chunk");
    future.subject = *group("target").as_bytes();
    future.order = u64::MAX;
    let forgeries = [b"not a note".to_vec(), foreign, future.encode(), Vec::new()];

    // the broker acknowledged each forgery before the clock starts: the retained note was forged
    let await_genuine = |what: String| {
        let (topic, genuine) = (topic.clone(), genuine.clone());
        let port = broker.port();
        async move {
            await_condition(&what, BOUND, Duration::from_millis(10), || async {
                retained(port, &topic).await.as_ref() == Some(&genuine)
            })
            .await
            .expect("put back within the bound");
        }
    };
    for round in 0..8 {
        if round % 2 == 0 {
            bridge.stop().await;
        } else {
            bridge.crash().await;
        }
        // the burst starts once the bridge's republication of the target has reached the broker
        bridge = setup.start_bridge(config.clone());
        await_condition(
            "the restarted bridge has checked the broker's notes",
            Duration::from_secs(30),
            Duration::from_millis(1),
            || async { bridge.metrics.broker_syncs.load(Ordering::Relaxed) >= 1 },
        )
        .await
        .expect("checked");
        // one forgery, of another kind each round
        forge(&forger, &mut acked, &topic, &[&forgeries[round % 4]]).await;
        await_genuine(format!("forgery {} after restart {round}", round % 4)).await;
        // the observer has seen the repair too, so the next round counts from a settled number
        await_condition("the observer sees the repair", SETTLE, POLL, || async {
            observer.payload(&topic).as_ref() == Some(&genuine)
        })
        .await
        .expect("observer");
    }
    bridge.stop().await;
}

/// With `finality = "finalized"` the bridge mirrors only blocks the node tags finalized (Anvil with
/// one slot an epoch tags the head less two), so nothing a reorg near the head can take back is
/// ever published.
#[tokio::test]
async fn finalized_finality_mirrors_only_finalized_blocks() {
    let anvil = anchormq_localstack::Anvil::builder()
        .arg("--slots-in-an-epoch")
        .arg("1")
        .spawn()
        .await
        .expect("anvil");
    let setup = RegistryStack::on(anvil).await.expect("stack");
    let broker = EmbeddedBroker::start().await.expect("broker");
    let observer = setup.observe(&broker.url());
    let settings = anchormq_bridge::BridgeSettings {
        finality: Some(anchormq_chain::Finality::Finalized),
        ..setup.bridge_settings(&setup.anvil.http_url(), &broker.url(), "bridge-finalized")
    };
    let bridge = setup.start_bridge(settings.resolve().expect("settings"));
    setup.admin.create_group(group("late"), "").await.unwrap();
    let created = setup.anvil.block_number().await.expect("block number");
    // the bridge moves up to the finalized block, two below the one holding the group...
    let metrics = bridge.metrics.clone();
    let mirrored = || {
        metrics
            .mirrored_block
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    await_condition(
        "the bridge to mirror up to the finalized block",
        SETTLE,
        POLL,
        || async { mirrored() == created - 2 },
    )
    .await
    .expect("mirrored up to the finalized block");
    assert!(
        observer.book().group(&group("late")).is_none(),
        "not finalized yet"
    );
    // ...and mirrors the group once two more blocks finalize it
    for _ in 0..2 {
        setup
            .anvil
            .rpc()
            .unwrap()
            .call("evm_mine", serde_json::json!([]))
            .await
            .expect("evm_mine");
    }
    observer
        .await_chain(&setup.admin, &[], &[group("late")])
        .await;
    await_condition(
        "the bridge to mirror the finalized group",
        SETTLE,
        POLL,
        || async { mirrored() >= created },
    )
    .await
    .expect("mirrored");
    bridge.stop().await;
}

/// A provider that lies by omission (it hides `MemberRemoved` logs) keeps a removed member in
/// the group for a bridge that trusts it alone; with two honest witnesses and a quorum of two,
/// the bridge mirrors the removal even with the liar as its first endpoint.
#[tokio::test]
async fn a_quorum_of_rpc_endpoints_outvotes_one_that_hides_a_removal() {
    let setup = RegistryStack::start().await.expect("stack");
    let broker = EmbeddedBroker::start().await.expect("broker");
    let observer = setup.observe(&broker.url());
    let upstream = setup.anvil.http_url();
    let start = |_| async {
        anchormq_localstack::RangeLimitedRpc::start(&upstream, 1_000_000)
            .await
            .expect("proxy")
    };
    let (liar, honest_a, honest_b) = (start(0).await, start(1).await, start(2).await);
    let removed = <IKeyRegistry::MemberRemoved as alloy::sol_types::SolEvent>::SIGNATURE_HASH;
    liar.hide_logs(&format!("{removed:#x}"));

    for label in ["1111", "1112"] {
        setup
            .admin
            .register_node(node(label), &key())
            .await
            .unwrap();
    }
    let g = group("hsu0001");
    setup.admin.create_group(g, "hsu/0001/#").await.unwrap();
    for label in ["1111", "1112"] {
        setup.admin.add_member(g, node(label)).await.unwrap();
    }
    setup.admin.remove_member(g, node("1112")).await.unwrap();
    let head = setup.anvil.block_number().await.expect("head");

    // trusting the liar alone: the removal never reaches the notes
    let fooled = setup.bridge(&liar.url(), &broker.url(), "bridge-fooled");
    let fooled_metrics = fooled.metrics.clone();
    await_condition(
        "the fooled bridge to mirror the head",
        SETTLE,
        POLL,
        || async {
            fooled_metrics
                .mirrored_block
                .load(std::sync::atomic::Ordering::Relaxed)
                >= head
        },
    )
    .await
    .expect("mirrored");
    await_condition("the group note", SETTLE, POLL, || async {
        observer.book().group(&g).is_some()
    })
    .await
    .expect("group note");
    assert!(
        observer
            .book()
            .group(&g)
            .and_then(|n| n.member(&node("1112")))
            .is_some(),
        "a lone lying provider keeps 1112 in the group"
    );
    fooled.stop().await;

    // the liar first, outvoted by two honest witnesses
    let settings = anchormq_bridge::BridgeSettings {
        witnesses: Some(vec![honest_a.url(), honest_b.url()]),
        quorum: Some(2),
        ..setup.bridge_settings(&liar.url(), &broker.url(), "bridge-quorum")
    };
    let bridge = setup.start_bridge(settings.resolve().expect("settings"));
    observer
        .await_chain(&setup.admin, &[node("1111"), node("1112")], &[g])
        .await;
    assert!(
        observer
            .book()
            .group(&g)
            .and_then(|n| n.member(&node("1112")))
            .is_none(),
        "the removal is mirrored"
    );
    assert!(
        honest_a.get_logs_served() + honest_b.get_logs_served() > 0,
        "the witnesses were asked"
    );
    bridge.stop().await;
}
