//! The chain client against a real Anvil with the registry deployed by the project's own script.

use std::time::Duration;

use alloy::signers::k256::ecdsa::SigningKey;
use anchormq_chain::bindings::IKeyRegistry::IKeyRegistryErrors;
use anchormq_chain::{
    B256, ChainError, Deployment, EventStream, RegistryClient, RegistryEvent, RegistryState,
    StreamConfig, StreamError, StreamItem,
};
use anchormq_core::{GroupId, NodeId};
use anchormq_localstack::{AnvilRpc, RangeLimitedRpc, RegistryStack};

fn node(label: &str) -> NodeId {
    NodeId::from_label(label).expect("valid label")
}

fn group(label: &str) -> GroupId {
    GroupId::from_label(label).expect("valid label")
}

/// The bytes32 the events and the rebuilt state use.
fn word(id: &[u8; 32]) -> B256 {
    B256::from(*id)
}

fn random_key() -> SigningKey {
    SigningKey::random(&mut rand_core::OsRng)
}

/// Reads the whole stream up to the current head.
async fn read_all(
    url: &str,
    deployment: Deployment,
    config: StreamConfig,
) -> (Vec<StreamItem>, EventStream) {
    let mut stream = EventStream::connect(url, deployment, config, None)
        .await
        .expect("stream connects");
    let mut items = Vec::new();
    loop {
        let item = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("stream answers")
            .expect("no error");
        let done =
            matches!(&item, StreamItem::Batch { cursor, head, .. } if cursor.block_number >= *head);
        items.push(item);
        if done {
            return (items, stream);
        }
    }
}

fn events_of(items: &[StreamItem]) -> Vec<anchormq_chain::PositionedEvent> {
    items
        .iter()
        .flat_map(|item| match item {
            StreamItem::Batch { events, .. } => events.clone(),
            StreamItem::Rewind { .. } => Vec::new(),
        })
        .collect()
}

#[tokio::test]
async fn proof_of_possession_digest_matches_the_contract() {
    let chain = RegistryStack::start().await.expect("registry deploys");
    let key = random_key();
    let public_key = key.verifying_key().to_encoded_point(true);
    let owner = chain.admin.sender().expect("sender");
    for version in [1, 2, 7] {
        let local =
            chain
                .admin
                .node_key_digest(node("1111"), owner, public_key.as_bytes(), version);
        let remote = chain
            .admin
            .contract_node_key_digest(node("1111"), owner, public_key.as_bytes(), version)
            .await
            .unwrap();
        assert_eq!(local, remote, "key version {version}");
    }
}

#[tokio::test]
async fn every_operation_round_trips_and_reverts_are_decoded() {
    let chain = RegistryStack::start().await.expect("registry deploys");
    let key = random_key();
    let outcome = chain
        .admin
        .register_node(node("1111"), &key)
        .await
        .expect("registers");
    assert!(
        matches!(&outcome.events[..], [e] if matches!(e.event, RegistryEvent::NodeRegistered { key_version: 1, .. }))
    );
    let stored = chain.admin.node(node("1111")).await.unwrap();
    assert_eq!(
        stored.publicKey.as_ref(),
        key.verifying_key().to_encoded_point(true).as_bytes()
    );
    assert_eq!(stored.keyVersion, 1);

    let again = chain
        .admin
        .register_node(node("1111"), &key)
        .await
        .unwrap_err();
    assert!(
        matches!(
            again.revert(),
            Some(IKeyRegistryErrors::NodeAlreadyRegistered(_))
        ),
        "{again}"
    );
    assert_eq!(
        again.to_string(),
        "the registry rejected the transaction: node 1111 is already registered"
    );

    chain
        .admin
        .create_group(group("hsu0001"), "hsu/0001/#")
        .await
        .unwrap();
    chain
        .admin
        .add_member(group("hsu0001"), node("1111"))
        .await
        .unwrap();
    assert!(
        chain
            .admin
            .is_member(group("hsu0001"), node("1111"))
            .await
            .unwrap()
    );
    assert_eq!(chain.admin.group(group("hsu0001")).await.unwrap().epoch, 1);
    assert_eq!(
        chain.admin.node_groups(node("1111")).await.unwrap(),
        vec![group("hsu0001")]
    );

    // Rotation is one constant-gas transaction that touches no group: the epoch stays.
    let rotated = chain
        .admin
        .rotate_key(node("1111"), &random_key())
        .await
        .expect("rotates");
    assert!(rotated.events.iter().all(|e| matches!(
        e.event,
        RegistryEvent::NodeKeyRotated { key_version: 2, .. }
    )));
    assert_eq!(chain.admin.group(group("hsu0001")).await.unwrap().epoch, 1);

    // Another account is neither admin nor owner.
    let stranger = chain.client(1).await.unwrap();
    let error = stranger
        .remove_member(group("hsu0001"), node("1111"))
        .await
        .unwrap_err();
    assert!(
        matches!(error.revert(), Some(IKeyRegistryErrors::NotGroupAdmin(_))),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("is not the admin of group hsu0001"),
        "{error}"
    );
    let error = stranger.revoke_node(node("1111")).await.unwrap_err();
    assert!(
        matches!(error.revert(), Some(IKeyRegistryErrors::NotNodeOwner(_))),
        "{error}"
    );

    let revoked = chain
        .admin
        .revoke_node(node("1111"))
        .await
        .expect("revokes");
    // Revocation touches no group either: the node stays recorded, revoked, and reads nothing.
    assert!(
        revoked
            .events
            .iter()
            .all(|e| matches!(e.event, RegistryEvent::NodeRevoked { .. }))
    );
    assert_eq!(chain.admin.group(group("hsu0001")).await.unwrap().epoch, 1);

    // A stranger's group cannot take in someone else's node without the owner's consent.
    stranger
        .create_group(group("evil"), "hsu/0001/#")
        .await
        .expect("anyone may create a group");
    chain
        .admin
        .register_node(node("1112"), &random_key())
        .await
        .unwrap();
    let error = stranger
        .add_member(group("evil"), node("1112"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error.revert(),
            Some(IKeyRegistryErrors::AdminNotApproved(_))
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("has not approved admin"),
        "{error}"
    );
    chain
        .admin
        .set_admin_approval(stranger.sender().unwrap(), true)
        .await
        .unwrap();
    stranger
        .add_member(group("evil"), node("1112"))
        .await
        .expect("with consent");
    let error = stranger.create_group(group("bad"), "a+").await.unwrap_err();
    assert!(
        matches!(
            error.revert(),
            Some(IKeyRegistryErrors::InvalidTopicFilter(_))
        ),
        "{error}"
    );
}

#[tokio::test]
async fn the_stream_rebuilds_exactly_the_contract_state() {
    let chain = RegistryStack::start().await.expect("registry deploys");
    let keys: Vec<SigningKey> = (0..4).map(|_| random_key()).collect();
    for (i, key) in keys.iter().enumerate() {
        chain
            .admin
            .register_node(node(&format!("11{}", 11 + i)), key)
            .await
            .unwrap();
    }
    chain
        .admin
        .create_group(group("hsu0001"), "hsu/0001/#")
        .await
        .unwrap();
    chain
        .admin
        .create_group(group("hsu0002"), "")
        .await
        .unwrap();
    for (g, n) in [
        ("hsu0001", "1111"),
        ("hsu0001", "1112"),
        ("hsu0002", "1113"),
        ("hsu0002", "1114"),
        ("hsu0001", "1113"),
    ] {
        chain.admin.add_member(group(g), node(n)).await.unwrap();
    }
    chain
        .admin
        .remove_member(group("hsu0001"), node("1112"))
        .await
        .unwrap();
    chain
        .admin
        .rotate_key(node("1113"), &random_key())
        .await
        .unwrap();
    chain.admin.revoke_node(node("1114")).await.unwrap();

    let (items, _) = read_all(
        &chain.anvil.ws_url(),
        chain.deployment,
        StreamConfig::default(),
    )
    .await;
    let mut state = RegistryState::default();
    for event in events_of(&items) {
        state.apply(&event).expect("events are consistent");
    }
    for (id, record) in &state.nodes {
        let on_chain = chain.admin.node(NodeId::from_bytes(id.0)).await.unwrap();
        assert_eq!(on_chain.publicKey, record.public_key);
        assert_eq!(on_chain.keyVersion, record.key_version);
        assert_eq!(on_chain.owner, record.owner);
    }
    for (id, record) in &state.groups {
        let on_chain = chain.admin.group(GroupId::from_bytes(id.0)).await.unwrap();
        assert_eq!(on_chain.epoch, record.epoch);
        assert_eq!(on_chain.topicFilter, record.topic_filter);
        let mut members = chain
            .admin
            .members(GroupId::from_bytes(id.0))
            .await
            .unwrap();
        members.sort();
        let recorded: Vec<NodeId> = record
            .members
            .iter()
            .map(|m| NodeId::from_bytes(m.0))
            .collect();
        assert_eq!(members, recorded);
    }
    assert_eq!(
        state.groups[&word(group("hsu0001").as_bytes())].epoch,
        4,
        "3 adds and 1 removal; a member's rotation bumps no epoch"
    );
    // the revoked node stays recorded in its group, as on chain
    assert!(
        state.groups[&word(group("hsu0002").as_bytes())]
            .members
            .contains(&word(node("1114").as_bytes()))
    );
}

#[tokio::test]
async fn backfill_completes_when_the_rpc_refuses_large_ranges() {
    let chain = RegistryStack::start().await.expect("registry deploys");
    for i in 0..12 {
        chain
            .admin
            .create_group(group(&format!("g{i}")), "")
            .await
            .unwrap();
    }
    let limited = RangeLimitedRpc::start(&chain.anvil.http_url(), 3)
        .await
        .expect("proxy starts");
    let config = StreamConfig {
        ranges: anchormq_chain::RangeConfig {
            initial: 1_000,
            max: 1_000,
            ..Default::default()
        },
        poll_interval: Duration::from_millis(50),
        ..StreamConfig::default()
    };
    let (items, stream) = read_all(&limited.url(), chain.deployment, config).await;
    let created = events_of(&items)
        .iter()
        .filter(|e| matches!(e.event, RegistryEvent::GroupCreated { .. }))
        .count();
    assert_eq!(created, 12);
    assert!(
        stream.stats().range_refusals > 0,
        "the proxy refused ranges"
    );
    assert!(limited.get_logs_refused() > 0);
}

#[tokio::test]
async fn a_reorg_rewinds_to_the_fork_and_drops_the_removed_events() {
    let chain = RegistryStack::start().await.expect("registry deploys");
    chain.admin.create_group(group("kept"), "").await.unwrap();
    let config = StreamConfig {
        poll_interval: Duration::from_millis(50),
        ..StreamConfig::default()
    };
    let (_, mut stream) = read_all(&chain.anvil.http_url(), chain.deployment, config).await;
    let fork_base = chain.anvil.block_number().await.unwrap();

    chain.admin.create_group(group("doomed"), "").await.unwrap();
    let item = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(&item, StreamItem::Batch { events, .. } if events.len() == 1));

    // Replace the last block with an empty one.
    chain
        .anvil
        .rpc()
        .unwrap()
        .call("anvil_reorg", serde_json::json!([1, []]))
        .await
        .expect("anvil_reorg");
    let item = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .unwrap()
        .unwrap();
    match item {
        StreamItem::Rewind { to } => assert_eq!(to.block_number, fork_base),
        other => panic!("expected a rewind, got {other:?}"),
    }
    let item = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&item, StreamItem::Batch { events, .. } if events.is_empty()),
        "{item:?}"
    );
    assert_eq!(stream.stats().reorgs, 1);
}

#[tokio::test]
async fn wrong_chain_missing_registry_and_dead_rpc_fail_fast_with_clear_errors() {
    let chain = RegistryStack::start().await.expect("registry deploys");
    let url = chain.anvil.http_url();
    let wrong_chain = Deployment {
        chain_id: 1,
        ..chain.deployment
    };
    let error = RegistryClient::connect(&url, wrong_chain, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ChainError::WrongChain {
                expected: 1,
                actual: 31337
            }
        ),
        "{error}"
    );

    let nowhere = Deployment {
        address: "0x000000000000000000000000000000000000dEaD"
            .parse()
            .unwrap(),
        ..chain.deployment
    };
    let error = EventStream::connect(&url, nowhere, StreamConfig::default(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StreamError::Chain(ChainError::NoRegistry { .. })),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("no contract at 0x000000000000000000000000000000000000dEaD"),
        "{error}"
    );

    let port = anchormq_localstack::free_port().unwrap();
    let error =
        RegistryClient::connect(&format!("http://127.0.0.1:{port}"), chain.deployment, None)
            .await
            .unwrap_err();
    assert!(matches!(error, ChainError::Unreachable { .. }), "{error}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("cannot reach the RPC at http://127.0.0.1:{port}")),
        "{error}"
    );
}

/// The fleet onboarding of the `onboard` benchmark at a scale CI can run: 300 devices, registered
/// 100 per `registerNodes` and added 150 per `addMembers`: five transactions, two epoch bumps.
#[tokio::test]
async fn a_fleet_is_onboarded_in_batched_transactions() {
    let stack = RegistryStack::start().await.expect("stack");
    let fleet = group("fleet");
    let done = stack.onboard(fleet, 300, 100, 150).await.expect("onboard");
    assert_eq!((done.register_txs, done.add_txs), (3, 2));
    let stored = stack.admin.group(fleet).await.expect("group");
    assert_eq!(stored.memberCount, 300);
    assert_eq!(stored.epoch, 2, "one epoch bump per batch");
    let members = stack.admin.members(fleet).await.expect("members");
    assert_eq!(members.len(), 300);
    // a batch costs about what its nodes would alone, without a transaction each
    assert!(done.register_gas < 300 * 85_000, "{done:?}");
    assert!(done.add_gas < 300 * 77_000, "{done:?}");
}

/// A public RPC over its rate limit answers 429 for a while: a writer waits it out and its
/// transaction goes through once; a reader (the bridge's) is not retried.
#[tokio::test]
async fn a_writer_waits_out_a_rate_limit() {
    let chain = RegistryStack::start().await.expect("registry deploys");
    let limited = RangeLimitedRpc::start(&chain.anvil.http_url(), 1_000)
        .await
        .expect("proxy starts");
    let writer = RegistryClient::connect(&limited.url(), chain.deployment, Some(chain.signer(0)))
        .await
        .expect("writer");
    limited.rate_limit_next(3);
    let outcome = writer
        .create_group(group("limited"), "")
        .await
        .expect("sent after the rate limit");
    assert_eq!(limited.rate_limited(), 3);
    assert_eq!(outcome.events.len(), 1, "one GroupCreated: sent once");
    // an EIP-1559 (type 2) transaction with fees from the node's fee history
    let tx = chain
        .anvil
        .rpc()
        .expect("rpc")
        .call(
            "eth_getTransactionByHash",
            serde_json::json!([outcome.tx_hash]),
        )
        .await
        .expect("transaction");
    assert_eq!(tx["type"], "0x2", "{tx}");
    assert!(tx["maxFeePerGas"].is_string() && tx["maxPriorityFeePerGas"].is_string());
    assert!(chain.admin.group(group("limited")).await.is_ok());

    let reader = RegistryClient::connect(&limited.url(), chain.deployment, None)
        .await
        .expect("reader");
    limited.rate_limit_next(1);
    let error = reader.group(group("limited")).await.expect_err("429");
    assert!(error.to_string().contains("429"), "{error}");
}

#[tokio::test]
async fn over_websocket_new_heads_wake_the_stream_without_its_poll() {
    let chain = RegistryStack::start().await.expect("registry deploys");
    // a poll this slow would fail the test: only a pushed head can wake the stream in time
    let config = StreamConfig {
        poll_interval: Duration::from_secs(300),
        ..StreamConfig::default()
    };
    let (_, mut stream) = read_all(&chain.anvil.ws_url(), chain.deployment, config).await;
    // the stream waits for a head before each transaction is sent
    let (items_tx, mut items) = tokio::sync::mpsc::channel(1);
    let reader = tokio::spawn(async move {
        while let Ok(item) = stream.next().await {
            if items_tx.send(item).await.is_err() {
                break;
            }
        }
    });
    for i in 0..20 {
        let id = group(&format!("heads{i}"));
        chain.admin.create_group(id, "").await.expect("createGroup");
        let item = tokio::time::timeout(Duration::from_secs(30), items.recv())
            .await
            .expect("a head woke the stream")
            .expect("the stream goes on");
        let StreamItem::Batch { events, .. } = item else {
            panic!("no reorg here: {item:?}");
        };
        assert!(
            matches!(events.as_slice(), [event] if matches!(&event.event, RegistryEvent::GroupCreated { group, .. } if group.0 == *id.as_bytes())),
            "group {i}: {events:?}"
        );
    }
    reader.abort();
}
