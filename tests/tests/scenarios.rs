//! Multi-component scenarios on a real Anvil, the real bridge and real brokers, in-process.

use std::collections::BTreeSet;
use std::time::Duration;

use anchormq_agent::{Agent, PublishOptions, Received};
use anchormq_chain::RegistryClient;
use anchormq_core::{GroupId, NodeId, NodeSecretKey};
use anchormq_e2e::{LocalStack, StackOptions, WAIT, agent_config, fixture_agent, next_message};
use anchormq_localstack::Mosquitto;
use tokio_util::sync::CancellationToken;

fn group(label: &str) -> GroupId {
    GroupId::from_label(label).expect("group label")
}

/// A node that starts after a retained message was published reads it (and the notes it needs)
/// from the broker's retained store.
#[tokio::test(flavor = "multi_thread")]
async fn late_joiner_reads_retained_context() -> eyre::Result<()> {
    let stack = LocalStack::start(StackOptions {
        paper: true,
        broker: None,
        ..StackOptions::default()
    })
    .await?;
    let shutdown = CancellationToken::new();
    let sender = fixture_agent(&stack, "1111", &shutdown).await?;
    sender
        .publish(
            "hsu/0001/config",
            b"setpoint 21 C",
            PublishOptions {
                retain: true,
                ..PublishOptions::default()
            },
        )
        .await?;
    sender.flush().await?;
    sender.shutdown();

    let late = fixture_agent(&stack, "1112", &shutdown).await?;
    let mut sub = late.subscribe(&["hsu/0001/#"]).await?;
    let message = next_message(&mut sub).await?;
    assert_eq!(message.payload, b"setpoint 21 C");
    assert!(message.retain, "delivered from the retained store");
    assert_eq!(message.sender, NodeId::from_label("1111")?);
    assert_eq!(message.group, group("hsu0001"));

    // A non-member joining late gets the retained message too, but cannot read it.
    let outsider = fixture_agent(&stack, "1113", &shutdown).await?;
    let mut sub = outsider.subscribe(&["hsu/0001/#"]).await?;
    match tokio::time::timeout(WAIT, sub.recv()).await {
        Ok(Some(Received::Unreadable(u))) => {
            assert!(
                u.reason.to_string().contains("not a member of hsu0001"),
                "{u}"
            );
        }
        other => panic!("expected an unreadable retained message, got {other:?}"),
    }
    shutdown.cancel();
    stack.stop().await
}

/// Mosquitto with persistence restarts in the middle of a QoS 1 stream: the subscriber (persistent
/// session) gets every message exactly once, none lost, no duplicate handed to the application.
#[tokio::test(flavor = "multi_thread")]
async fn broker_restart_during_qos1_stream_loses_nothing() -> eyre::Result<()> {
    const TOTAL: usize = 200;
    let mut mosquitto = Mosquitto::builder().persistence(true).spawn().await?;
    let broker = anchormq_mqtt::BrokerConfig::from_url(&mosquitto.url(), "e2e")?;
    let stack = LocalStack::start(StackOptions {
        paper: true,
        broker: Some(broker),
        ..StackOptions::default()
    })
    .await?;
    let shutdown = CancellationToken::new();
    let (node, key) = stack.fixture_node("1112")?;
    let mut config = agent_config(&stack, node, key);
    config.broker.clean_session = false;
    config.broker.client_id = format!("e2e-persistent-1112-{}", std::process::id());
    let reader = Agent::start(config, shutdown.child_token()).await?;
    let mut sub = reader.subscribe(&["hsu/0001/stream"]).await?;
    let writer = fixture_agent(&stack, "1111", &shutdown).await?;
    let publisher = writer
        .publisher("hsu/0001/stream", PublishOptions::default())
        .await?;

    let collector = tokio::spawn(async move {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        while seen.len() < TOTAL {
            match tokio::time::timeout_at(deadline, sub.recv()).await {
                Ok(Some(Received::Message(m))) => {
                    seen.push(String::from_utf8_lossy(&m.payload).into_owned());
                }
                Ok(Some(Received::Unreadable(u))) => panic!("unreadable: {u}"),
                Ok(None) | Err(_) => break,
            }
        }
        // Anything more within a moment would be a duplicate.
        if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(500), sub.recv()).await
        {
            panic!("message beyond the {TOTAL} sent: {extra:?}");
        }
        seen
    });
    for i in 0..TOTAL / 2 {
        publisher.send(format!("m{i:03}").as_bytes()).await?;
    }
    mosquitto.restart().await?;
    for i in TOTAL / 2..TOTAL {
        publisher.send(format!("m{i:03}").as_bytes()).await?;
    }
    writer.flush().await?;
    let seen = collector.await?;
    let expected: Vec<String> = (0..TOTAL).map(|i| format!("m{i:03}")).collect();
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), TOTAL, "every message once: got {}", seen.len());
    assert_eq!(unique.len(), TOTAL, "no duplicates");
    assert_eq!(
        unique.into_iter().cloned().collect::<Vec<_>>(),
        expected,
        "none lost"
    );
    assert!(reader.stats().connects >= 2, "the reader reconnected");
    shutdown.cancel();
    stack.stop().await
}

/// 100 nodes registered in one group each publish once; three members read all 100 messages.
/// On Mosquitto, an external broker as fleets run (the embedded broker's own tests hold it to every
/// retained message: crates/broker/tests/retained.rs).
#[tokio::test(flavor = "multi_thread")]
async fn hundred_nodes_in_one_group() -> eyre::Result<()> {
    const NODES: usize = 100;
    let mosquitto = Mosquitto::spawn().await?;
    let stack = LocalStack::start(StackOptions {
        paper: true,
        broker: Some(anchormq_mqtt::BrokerConfig::from_url(
            &mosquitto.url(),
            "e2e",
        )?),
        ..StackOptions::default()
    })
    .await?;
    // Over WebSocket receipts arrive with the block instead of by polling.
    let client = RegistryClient::connect(
        &stack.anvil.ws_url(),
        stack.deployment,
        Some(stack.operator()?),
    )
    .await?;
    let big = group("big");
    client.create_group(big, "big/#").await?;
    let mut nodes = Vec::new();
    for i in 0..NODES {
        let id = NodeId::from_label(&format!("n{i:03}"))?;
        let key = NodeSecretKey::generate(&mut rand_core::OsRng);
        let signing = anchormq::context::signing_key(&key)?;
        client.register_node(id, &signing).await?;
        client.add_member(big, id).await?;
        nodes.push((id, key));
    }
    stack.bridge_caught_up(Duration::from_secs(60)).await?;

    let shutdown = CancellationToken::new();
    let mut agents = Vec::new();
    for (id, key) in &nodes {
        agents.push(
            Agent::start(
                agent_config(&stack, *id, key.clone()),
                shutdown.child_token(),
            )
            .await?,
        );
    }
    let mut readers = Vec::new();
    for agent in &agents[..3] {
        readers.push(agent.subscribe(&["big/#"]).await?);
    }
    let sends = agents.iter().map(|agent| {
        let agent = agent.clone();
        async move {
            let topic = format!("big/{}", agent.node());
            agent
                .publish(
                    &topic,
                    format!("hello from {}", agent.node()).as_bytes(),
                    PublishOptions::default(),
                )
                .await?;
            agent.flush().await?;
            Ok::<_, eyre::Report>(())
        }
    });
    for result in futures::future::join_all(sends).await {
        result?;
    }
    let expected: BTreeSet<String> = nodes
        .iter()
        .map(|(id, _)| format!("hello from {id}"))
        .collect();
    for (reader, sub) in agents[..3].iter().zip(readers.iter_mut()) {
        let mut got = BTreeSet::new();
        while got.len() < NODES {
            let message = next_message(sub).await?;
            assert_eq!(message.group, big);
            assert_eq!(
                message.payload,
                format!("hello from {}", message.sender).into_bytes(),
                "sender authenticated"
            );
            got.insert(String::from_utf8_lossy(&message.payload).into_owned());
        }
        assert_eq!(got, expected, "reader {} got every message", reader.node());
    }
    shutdown.cancel();
    stack.stop().await
}
