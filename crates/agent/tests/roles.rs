//! Read and write roles on real parts (Anvil, the bridge, a broker, one agent per node): sensors
//! write telemetry the dashboard reads; the valve reads commands only the controller may write. A
//! sensor that forges a command with its own keys, outside its agent, is refused by the valve.

mod common;

use std::time::Duration;

use anchormq_agent::{AgentError, PublishOptions, Received};
use anchormq_core::{
    ChainPosition, GroupNote, KeyBook, Member, MembershipError, NodeNote, NodeSecretKey,
    NodeStatus, OpenError, Roles, SealError, Sealer, SenderIssue, Topics,
};
use common::{RawClient, Stack, group, next, node};
use rand_core::OsRng;

const SENSOR: &str = "1111";
const DASHBOARD: &str = "1112";
const CONTROLLER: &str = "1113";
const VALVE: &str = "1114";
const READ: u8 = 1;
const WRITE: u8 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensors_write_the_dashboard_reads_and_only_the_controller_commands_the_valve() {
    let stack = Stack::start().await;
    let (telemetry, commands) = (group("telemetry"), group("commands"));
    let admin = &stack.admin;
    admin
        .create_group(telemetry, "plant/telemetry/#")
        .await
        .expect("telemetry");
    admin
        .create_group(commands, "plant/valve/#")
        .await
        .expect("commands");
    for (g, label, roles) in [
        (telemetry, SENSOR, WRITE),
        (telemetry, DASHBOARD, READ),
        (commands, CONTROLLER, WRITE),
        (commands, VALVE, READ),
        // the sensor reads commands too: it holds the controller's sender keys
        (commands, SENSOR, READ),
    ] {
        admin
            .add_members_with_roles(g, &[node(label)], roles)
            .await
            .expect("add with roles");
    }

    let sensor = stack.agent(SENSOR).await;
    let dashboard = stack.agent(DASHBOARD).await;
    let controller = stack.agent(CONTROLLER).await;
    let valve = stack.agent(VALVE).await;
    // every agent holds the groups as the chain has them now (the bridge may still be mirroring)
    let epoch_of = |g| async move { admin.group(g).await.expect("group").epoch };
    let (t_epoch, c_epoch) = (epoch_of(telemetry).await, epoch_of(commands).await);
    for (agent, g, epoch) in [
        (&sensor, telemetry, t_epoch),
        (&dashboard, telemetry, t_epoch),
        (&sensor, commands, c_epoch),
        (&controller, commands, c_epoch),
        (&valve, commands, c_epoch),
    ] {
        agent.wait_for_epoch(g, epoch).await.expect("group note");
    }
    let mut dash_sub = dashboard
        .subscribe(&["plant/telemetry/#"])
        .await
        .expect("subscribe");
    let mut valve_sub = valve
        .subscribe(&["plant/valve/#"])
        .await
        .expect("subscribe");
    let mut sensor_sub = sensor.subscribe(&["plant/#"]).await.expect("subscribe");

    // telemetry: the sensor writes, the dashboard reads; the sensor cannot read it back
    sensor
        .publish("plant/telemetry/temp", b"21.5", PublishOptions::default())
        .await
        .expect("sensor publishes");
    match next(&mut dash_sub).await {
        Received::Message(m) => {
            assert_eq!(
                (m.payload.as_slice(), m.sender),
                (&b"21.5"[..], node(SENSOR))
            );
        }
        Received::Unreadable(u) => panic!("dashboard: {u}"),
    }
    match next(&mut sensor_sub).await {
        Received::Unreadable(u) => assert_eq!(
            u.reason,
            OpenError::NotReader {
                node: node(SENSOR),
                group: telemetry
            }
        ),
        Received::Message(m) => panic!("a write-only sensor read {m:?}"),
    }
    // the dashboard may not write telemetry (an agent that waits briefly for a group note
    // granting the role)
    let impatient = |label: &str| {
        let mut config = stack.config(label, stack.fixture_key(label));
        config.wait_timeout = Duration::from_millis(500);
        stack.agent_with(config)
    };
    let refused = impatient(DASHBOARD)
        .await
        .publish("plant/telemetry/temp", b"99", PublishOptions::default())
        .await
        .expect_err("a reader does not write");
    assert!(
        matches!(
            refused,
            AgentError::Seal(SealError::Membership(MembershipError::MissingRole { .. }))
        ),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("without the write role"),
        "{refused}"
    );

    // commands: the controller writes, the valve (and the reading sensor) read
    controller
        .publish("plant/valve/cmd", b"close", PublishOptions::default())
        .await
        .expect("controller commands");
    for sub in [&mut valve_sub, &mut sensor_sub] {
        match next(sub).await {
            Received::Message(m) => assert_eq!(
                (m.payload.as_slice(), m.sender),
                (&b"close"[..], node(CONTROLLER))
            ),
            Received::Unreadable(u) => panic!("{u}"),
        }
    }
    // a burst of commands goes out under one signature and arrives whole, in order
    let burst: Vec<String> = (0..150).map(|i| format!("step {i}")).collect();
    controller
        .publish_many("plant/valve/cmd", &burst, PublishOptions::default())
        .await
        .expect("burst");
    for want in &burst {
        match next(&mut valve_sub).await {
            Received::Message(m) => assert_eq!(m.payload, want.as_bytes()),
            Received::Unreadable(u) => panic!("{u}"),
        }
    }
    for _ in &burst {
        assert!(matches!(next(&mut sensor_sub).await, Received::Message(_)));
    }

    // the sensor's agent refuses to command the valve
    let refused = impatient(SENSOR)
        .await
        .publish("plant/valve/cmd", b"open", PublishOptions::default())
        .await
        .expect_err("a sensor does not command");
    assert!(
        refused.to_string().contains("without the write role"),
        "{refused}"
    );

    // The sensor forges a command outside its agent: a local book in which it writes (group note
    // signed by a bridge key of its own), a genuine sender-key note signed by its node key and
    // wrapped for the valve, and a genuinely signed envelope. The valve refuses it: the chain's
    // group note says the sensor does not write.
    let epoch = admin.group(commands).await.expect("group").epoch;
    let fake_bridge = NodeSecretKey::generate(&mut OsRng);
    let mut fake = KeyBook::new(stack.registry, fake_bridge.public_key());
    for label in [SENSOR, VALVE] {
        let note = NodeNote {
            generation: 0,
            position: forged_position(&stack),
            node: node(label),
            key_version: 1,
            status: NodeStatus::Active,
            public_key: stack.fixture_key(label).public_key(),
        };
        fake.ingest_note(note.sign(&fake_bridge).as_bytes())
            .expect("own node note");
    }
    let forged_group = GroupNote::new(
        forged_position(&stack),
        commands,
        epoch,
        "plant/valve/#",
        None,
        vec![
            Member::new(node(SENSOR), 1),
            Member {
                roles: Roles::READ,
                ..Member::new(node(VALVE), 1)
            },
        ],
    )
    .expect("group note");
    fake.ingest_note(forged_group.sign(&fake_bridge).as_bytes())
        .expect("own group note");
    let mut forger = Sealer::new(
        &fake,
        node(SENSOR),
        stack.fixture_key(SENSOR),
        commands,
        &mut OsRng,
    )
    .expect("a sealer from the forged view");
    let note = forger
        .sender_key_note(&fake, &mut OsRng)
        .expect("sender-key note")
        .note;
    let raw = RawClient::subscribed(stack.raw_options("forger"), "plant/valve/#").await;
    let topics = Topics::new(&stack.registry);
    for (i, chunk) in note.chunks().into_iter().enumerate() {
        raw.publish(
            &topics.sender_key(&commands, &node(SENSOR), i as u16),
            chunk,
        )
        .await;
    }
    let envelope = forger.seal("plant/valve/cmd", b"open").expect("seal");
    raw.publish("plant/valve/cmd", envelope).await;
    let refused = match next(&mut valve_sub).await {
        Received::Unreadable(u) => u,
        Received::Message(m) => panic!("the valve obeyed a forged command: {m:?}"),
    };
    assert_eq!(
        refused.reason,
        OpenError::UnknownSender {
            sender: node(SENSOR),
            group: commands,
            epoch,
            reason: SenderIssue::NotWriter
        }
    );
    assert_eq!(
        valve.stats().opened,
        1 + 150,
        "only the controller's commands were opened"
    );

    // the admin makes the sensor a writer of commands: from the new epoch on, the valve reads it
    admin
        .set_member_roles(commands, &[node(SENSOR)], READ | WRITE)
        .await
        .expect("grant write");
    sensor
        .publish("plant/valve/cmd", b"calibrate", PublishOptions::default())
        .await
        .expect("now a writer");
    let granted = loop {
        match next(&mut valve_sub).await {
            Received::Message(m) => break m,
            // the forger's sender-key note was still arriving
            Received::Unreadable(u) => {
                assert!(matches!(u.reason, OpenError::UnknownSender { .. }), "{u}")
            }
        }
    };
    assert_eq!(
        (granted.payload.as_slice(), granted.sender, granted.epoch),
        (&b"calibrate"[..], node(SENSOR), epoch + 1)
    );
}

fn forged_position(stack: &Stack) -> ChainPosition {
    ChainPosition {
        chain_id: stack.registry.chain_id,
        registry: stack.registry.address,
        block_number: u64::MAX / 2,
        block_hash: [0; 32],
        tx_hash: [0; 32],
        log_index: 0,
    }
}
