//! anchormq across federated brokers: two Mosquitto processes, an edge broker bridged to a central
//! one by Mosquitto's own bridge. The anchormq bridge publishes its notes to the central broker
//! only, so agents on the edge hold notes only if they crossed the Mosquitto bridge.

mod common;

use anchormq_agent::PublishOptions;
use anchormq_core::{OpenError, Topics};
use anchormq_localstack::Mosquitto;
use common::{
    RawClient, Stack, first_copy, group, message, next, node, raw_at, retained, unreadable,
};

/// A central broker and an edge broker that bridges anchormq's note topics and the application
/// topics to it in both directions.
async fn federation() -> (Mosquitto, Mosquitto) {
    let central = Mosquitto::spawn().await.expect("central mosquitto");
    let mut edge = Mosquitto::builder();
    for line in [
        "connection central".to_owned(),
        format!("address 127.0.0.1:{}", central.port()),
        format!("remote_clientid edge-bridge-{}", central.port()),
        // the default: the central broker keeps the bridge's session across link outages
        "cleansession false".to_owned(),
        // announces a bridge, so the central broker keeps retain flags and does not echo back
        "try_private true".to_owned(),
        "bridge_protocol_version mqttv311".to_owned(),
        "notifications false".to_owned(),
        "start_type automatic".to_owned(),
        "restart_timeout 1".to_owned(),
        // QoS 1: the pattern's default QoS is 0
        "topic anchormq/# both 1".to_owned(),
        "topic hsu/# both 1".to_owned(),
    ] {
        edge = edge.config_line(line);
    }
    let edge = edge.spawn().await.expect("edge mosquitto");
    (central, edge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_on_an_edge_broker_and_a_central_broker_read_each_other() {
    let (central, edge) = federation().await;
    let stack = Stack::start_on(central.addr()).await;
    assert_ne!(central.port(), edge.port());
    let hsu1 = group("hsu0001");
    let (n1111, n1112, n1113) = (node("1111"), node("1112"), node("1113"));
    let admin = &stack.admin;
    let chain_epoch = || async { admin.group(hsu1).await.expect("getGroup").epoch };
    let broker_logs = || {
        format!(
            "central log:\n{}\nedge log:\n{}",
            central.log_tail(),
            edge.log_tail()
        )
    };

    // 1. 1111 on the edge, 1112 on the central broker: each reads what the other sends
    let epoch = chain_epoch().await;
    let a1111 = stack.agent_with(stack.config_on(&edge.url(), "1111")).await;
    let a1112 = stack
        .agent_with(stack.config_on(&central.url(), "1112"))
        .await;
    a1111.wait_for_epoch(hsu1, epoch).await.unwrap_or_else(|e| {
        panic!(
            "the group note did not reach the edge: {e}\n{}",
            broker_logs()
        )
    });
    let mut up = a1112.subscribe(&["hsu/0001/up"]).await.expect("subscribe");
    let mut down = a1111
        .subscribe(&["hsu/0001/down"])
        .await
        .expect("subscribe");

    a1111
        .publish("hsu/0001/up", b"from the edge", PublishOptions::default())
        .await
        .expect("publish on the edge");
    let got = message(next(&mut up).await);
    assert_eq!(
        (got.payload.as_slice(), got.sender, got.group, got.epoch),
        (&b"from the edge"[..], n1111, hsu1, epoch)
    );
    a1112
        .publish("hsu/0001/down", b"from central", PublishOptions::default())
        .await
        .expect("publish on central");
    let got = message(next(&mut down).await);
    assert_eq!(
        (got.payload.as_slice(), got.sender, got.group, got.epoch),
        (&b"from central"[..], n1112, hsu1, epoch)
    );

    // the edge stores the group note as retained, byte for byte the bridge's
    let note_topic = Topics::new(&stack.registry).group_note(&hsu1, 0);
    let (_, on_central) = first_copy(central.addr(), &note_topic).await;
    let (edge_retained, on_edge) = first_copy(edge.addr(), &note_topic).await;
    assert!(
        edge_retained,
        "the edge does not hold the group note as retained"
    );
    assert_eq!(on_edge, on_central);

    // 2. a late joiner on the edge: 1113 is added, and everything it needs is published before it
    // starts, so it can only come from the edge's retained store
    admin.add_member(hsu1, n1113).await.expect("addMember");
    let epoch = chain_epoch().await;
    a1112
        .wait_for_epoch(hsu1, epoch)
        .await
        .expect("new epoch on central");
    // the new group note is on the edge
    a1111
        .wait_for_epoch(hsu1, epoch)
        .await
        .expect("new epoch on the edge");
    let mut edge_state =
        RawClient::subscribed(raw_at(edge.addr(), "state"), "hsu/0001/state").await;
    a1112
        .publish("hsu/0001/state", b"valve open", retained())
        .await
        .expect("retained publish on central");
    // a subscriber on the edge got it, so the edge has stored it, and 1112's new sender-key note
    // too (sent before it over the same bridge link)
    assert_eq!(edge_state.next().await.0, "hsu/0001/state");
    let a1113 = stack.agent_with(stack.config_on(&edge.url(), "1113")).await;
    let mut late = a1113
        .subscribe(&["hsu/0001/state", "hsu/0001/down"])
        .await
        .expect("subscribe");
    let got = message(next(&mut late).await);
    assert_eq!(
        (got.payload.as_slice(), got.sender, got.epoch, got.retain),
        (&b"valve open"[..], n1112, epoch, true)
    );
    a1112
        .publish("hsu/0001/down", b"live", PublishOptions::default())
        .await
        .expect("publish on central");
    for sub in [&mut late, &mut down] {
        let got = message(next(sub).await);
        assert_eq!(
            (got.payload.as_slice(), got.sender, got.epoch, got.retain),
            (&b"live"[..], n1112, epoch, false)
        );
    }

    // 3. 1111 is removed: from the next epoch on, what 1112 sends from central is refused to
    // 1111 on the edge and still read by 1113 there, and what 1113 sends from the edge is read by
    // 1112 on central and refused to 1111
    admin
        .remove_member(hsu1, n1111)
        .await
        .expect("removeMember");
    let epoch = chain_epoch().await;
    a1112
        .wait_for_epoch(hsu1, epoch)
        .await
        .expect("new epoch on central");
    let opened = a1111.stats().opened;
    let mut removed_up = a1111.subscribe(&["hsu/0001/up"]).await.expect("subscribe");
    a1112
        .publish("hsu/0001/down", b"after removal", PublishOptions::default())
        .await
        .expect("publish on central");
    let refused = OpenError::NotMember {
        node: n1111,
        group: hsu1,
        epoch,
    };
    assert_eq!(unreadable(next(&mut down).await).reason, refused);
    let got = message(next(&mut late).await);
    assert_eq!(
        (got.payload.as_slice(), got.sender, got.epoch),
        (&b"after removal"[..], n1112, epoch)
    );

    // the sender on the edge must hold the new epoch first, or it still seals for 1111
    a1113
        .wait_for_epoch(hsu1, epoch)
        .await
        .expect("new epoch on the edge");
    a1113
        .publish(
            "hsu/0001/up",
            b"edge after removal",
            PublishOptions::default(),
        )
        .await
        .expect("publish on the edge");
    let got = message(next(&mut up).await);
    assert_eq!(
        (got.payload.as_slice(), got.sender, got.epoch),
        (&b"edge after removal"[..], n1113, epoch)
    );
    assert_eq!(unreadable(next(&mut removed_up).await).reason, refused);
    assert_eq!(a1111.stats().opened, opened);
}
