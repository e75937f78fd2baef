//! The paper's scenario on real parts: Anvil with the registry, the bridge, an embedded broker, and
//! agents for nodes 1111-1114. Membership changes are real transactions.

mod common;

use std::time::Duration;

use anchormq_agent::{AgentError, PublishOptions, Received, ReceivedMessage, Subscription};
use anchormq_chain::NodeRegistration;
use anchormq_core::{DecodeError, NodeId, OpenError, Topics};
use common::{RawClient, Stack, contains, group, message, next, node, unreadable};

/// The next decrypted message, skipping unreadable ones that `skip` accepts.
async fn next_message(
    subscription: &mut Subscription,
    skip: impl Fn(&OpenError) -> bool,
) -> ReceivedMessage {
    loop {
        match next(subscription).await {
            Received::Message(m) => return m,
            Received::Unreadable(u) if skip(&u.reason) => {}
            Received::Unreadable(u) => panic!("unexpected: {u}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paper_scenario_membership_changes_replay_and_grace() {
    let stack = Stack::start().await;
    let hsu1 = group("hsu0001");
    let (n1111, n1112, n1113) = (node("1111"), node("1112"), node("1113"));

    let a1111 = stack.agent("1111").await;
    let a1112 = stack.agent("1112").await;
    let a1113 = {
        // a long grace, to show an in-flight message of the previous epoch is still read
        let mut config = stack.config("1113", stack.fixture_key("1113"));
        config.epoch_grace = Duration::from_secs(3600);
        stack.agent_with(config).await
    };
    let strict1113 = {
        let mut config = stack.config("1113", stack.fixture_key("1113"));
        config.epoch_grace = Duration::ZERO;
        stack.agent_with(config).await
    };
    let mut sub12 = a1112.subscribe(&["hsu/0001/#"]).await.expect("subscribe");
    let mut sub13 = a1113
        .subscribe(&["hsu/0001/temp"])
        .await
        .expect("subscribe");
    let mut raw = RawClient::subscribed(stack.raw_options("eavesdropper"), "hsu/0001/#").await;

    // 1. 1111 -> hsu0001: 1112 reads it, 1113 is told it is not a member, the broker sees ciphertext
    let plaintext = b"temperature 21.5 C";
    let sent = a1111
        .publish("hsu/0001/temp", plaintext, PublishOptions::default())
        .await
        .expect("publish")
        .published()
        .expect("sent (no guard)");
    assert_eq!((sent.group, sent.epoch, sent.seq), (hsu1, 2, 0));
    let got = message(next(&mut sub12).await);
    assert_eq!(got.payload, plaintext);
    assert_eq!(
        (got.group, got.sender, got.epoch, got.seq, got.retain),
        (hsu1, n1111, 2, 0, false)
    );
    assert_eq!(got.topic, "hsu/0001/temp");
    let refused = unreadable(next(&mut sub13).await);
    assert_eq!(
        refused.reason,
        OpenError::NotMember {
            node: n1113,
            group: hsu1,
            epoch: 2
        }
    );
    assert_eq!(
        refused.reason.to_string(),
        "node 1113 is not a member of hsu0001 (epoch 2)"
    );
    let (topic, envelope) = raw.next().await;
    assert_eq!(topic, "hsu/0001/temp");
    assert_ne!(&envelope[..], plaintext);
    assert!(
        !contains(&envelope, plaintext),
        "plaintext visible on the broker"
    );

    // 4. replay and tampering: the duplicate is dropped silently, the forgeries are reported
    raw.publish("hsu/0001/temp", envelope.to_vec()).await;
    let mut tampered = envelope.to_vec();
    // the first ciphertext byte (after the 17-byte header): the stream's signature covers it
    tampered[17] ^= 0x01;
    raw.publish("hsu/0001/temp", tampered).await;
    raw.publish("hsu/0001/temp", envelope[..10].to_vec()).await;
    let forged = unreadable(next(&mut sub12).await);
    assert_eq!(
        forged.reason,
        OpenError::BadSignature {
            sender: n1111,
            group: hsu1
        },
        "the replayed copy must not be delivered again"
    );
    let truncated = unreadable(next(&mut sub12).await);
    assert!(
        matches!(
            truncated.reason,
            OpenError::Decode(DecodeError::Malformed { .. })
        ),
        "{truncated}"
    );
    assert!(a1112.stats().duplicates >= 1);
    // the raw client sees its own three publishes too
    for _ in 0..3 {
        raw.next().await;
    }

    // 2. the admin adds 1113: once 1111 has the new group note, its next message reaches 1113
    let added = stack
        .admin
        .add_member(hsu1, n1113)
        .await
        .expect("addMember");
    assert_eq!(added.events.len(), 1);
    assert_eq!(a1111.wait_for_epoch(hsu1, 3).await.expect("epoch 3"), 3);
    let sent = a1111
        .publish("hsu/0001/temp", b"after add", PublishOptions::default())
        .await
        .expect("publish")
        .published()
        .expect("sent (no guard)");
    assert_eq!(sent.epoch, 3);
    // earlier messages (the replays) were refused to 1113 as a non-member
    let got = next_message(&mut sub13, |e| {
        matches!(e, OpenError::NotMember { .. } | OpenError::Decode(_))
    })
    .await;
    assert_eq!((got.payload.as_slice(), got.epoch), (&b"after add"[..], 3));
    let got = message(next(&mut sub12).await);
    assert_eq!((got.payload.as_slice(), got.epoch), (&b"after add"[..], 3));

    // a message sealed at epoch 3 that is still in flight when the epoch changes
    let in_flight = a1111
        .publish("hsu/0001/late", b"in flight", PublishOptions::default())
        .await
        .expect("publish")
        .published()
        .expect("sent (no guard)");
    assert_eq!(in_flight.epoch, 3);
    let got = message(next(&mut sub12).await);
    assert_eq!((got.payload.as_slice(), got.epoch), (&b"in flight"[..], 3));
    let (topic, _) = raw.next().await;
    assert_eq!(topic, "hsu/0001/temp");
    let (topic, late_envelope) = raw.next().await;
    assert_eq!(topic, "hsu/0001/late");
    strict1113.wait_for_epoch(hsu1, 3).await.expect("epoch 3");

    // 3. removal of 1112: the next message after 1111 saw epoch 4 is unreadable to 1112
    stack
        .admin
        .remove_member(hsu1, n1112)
        .await
        .expect("removeMember");
    assert_eq!(a1111.wait_for_epoch(hsu1, 4).await.expect("epoch 4"), 4);
    let sent = a1111
        .publish("hsu/0001/temp", b"after removal", PublishOptions::default())
        .await
        .expect("publish")
        .published()
        .expect("sent (no guard)");
    assert_eq!(sent.epoch, 4);
    let refused = unreadable(next(&mut sub12).await);
    assert_eq!(
        refused.reason,
        OpenError::NotMember {
            node: n1112,
            group: hsu1,
            epoch: 4
        }
    );
    let got = message(next(&mut sub13).await);
    assert_eq!(
        (got.payload.as_slice(), got.epoch),
        (&b"after removal"[..], 4)
    );
    // a removed member cannot publish either (after waiting, briefly here, for a note adding it)
    let quick1112 = {
        let mut config = stack.config("1112", stack.fixture_key("1112"));
        config.wait_timeout = Duration::from_secs(3);
        stack.agent_with(config).await
    };
    quick1112.wait_for_epoch(hsu1, 4).await.expect("epoch 4");
    let error = quick1112
        .publish("hsu/0001/temp", b"still here?", PublishOptions::default())
        .await;
    assert!(
        matches!(error, Err(AgentError::NotMember { node, epoch: 4, .. }) if node == n1112),
        "{error:?}"
    );

    // grace: the epoch-3 message delivered after the change is read by the agent with a grace
    // period and refused as stale by the one without
    a1113.wait_for_epoch(hsu1, 4).await.expect("epoch 4");
    strict1113.wait_for_epoch(hsu1, 4).await.expect("epoch 4");
    let mut late13 = a1113
        .subscribe(&["hsu/0001/late"])
        .await
        .expect("subscribe");
    let mut strict = strict1113
        .subscribe(&["hsu/0001/late"])
        .await
        .expect("subscribe");
    raw.publish("hsu/0001/late", late_envelope.to_vec()).await;
    let got = message(next(&mut late13).await);
    assert_eq!((got.payload.as_slice(), got.epoch), (&b"in flight"[..], 3));
    assert_eq!(
        unreadable(next(&mut strict).await).reason,
        OpenError::StaleEpoch {
            group: hsu1,
            epoch: 3,
            current: 4
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_reads_with_retained_notes_and_rotation_rekeys() {
    let stack = Stack::start().await;
    let hsu1 = group("hsu0001");
    let n1112 = node("1112");
    let a1111 = stack.agent("1111").await;

    // 5. everything is published before 1112 connects; retained notes give it the keys
    let sent = a1111
        .publish(
            "hsu/0001/state",
            b"retained hello",
            PublishOptions {
                retain: true,
                ..PublishOptions::default()
            },
        )
        .await
        .expect("publish")
        .published()
        .expect("sent (no guard)");
    a1111.flush().await.expect("flush");
    assert_eq!(sent.epoch, 2);
    let old1112 = {
        let mut config = stack.config("1112", stack.fixture_key("1112"));
        config.hold_timeout = Duration::from_secs(2);
        stack.agent_with(config).await
    };
    let mut sub = old1112.subscribe(&["hsu/0001/#"]).await.expect("subscribe");
    let got = message(next(&mut sub).await);
    assert_eq!(got.payload, b"retained hello");
    assert!(got.retain);
    a1111
        .publish("hsu/0001/temp", b"live", PublishOptions::default())
        .await
        .expect("publish");
    let got = message(next(&mut sub).await);
    assert_eq!((got.payload.as_slice(), got.retain), (&b"live"[..], false));

    // 6. 1112's owner rotates its key: 1111 publishes a new sender key, 1112 reads with the new key
    let before = a1111.stats().sender_key_notes;
    let new_key = anchormq_core::NodeSecretKey::generate(&mut rand_core::OsRng);
    let signing = k256::ecdsa::SigningKey::from_slice(new_key.to_bytes().as_slice()).expect("key");
    let rotated = stack
        .admin
        .rotate_key(n1112, &signing)
        .await
        .expect("rotateKey");
    assert!(!rotated.events.is_empty());
    // No epoch bump: the group note now lists 1112 at key version 2, and 1111 re-keys for that.
    anchormq_localstack::await_condition(
        "the group note lists 1112's new key version",
        common::WAIT,
        Duration::from_millis(20),
        || async {
            a1111
                .key_book()
                .group(&hsu1)
                .and_then(|g| g.member(&n1112).map(|m| m.key_version))
                == Some(2)
        },
    )
    .await
    .expect("group note updated");
    assert_eq!(a1111.wait_for_group(hsu1).await.expect("group"), 2);
    anchormq_localstack::await_condition(
        "1111 republishes its sender-key note after the rotation",
        common::WAIT,
        Duration::from_millis(20),
        || async { a1111.stats().sender_key_notes > before },
    )
    .await
    .expect("sender key republished");
    let book = a1111.key_book();
    let note = book.node(&n1112).expect("1112 note");
    assert_eq!(
        (note.key_version, note.public_key),
        (2, new_key.public_key())
    );

    let new1112 = stack
        .agent_with(stack.config("1112", new_key.clone()))
        .await;
    let mut new_sub = new1112
        .subscribe(&["hsu/0001/temp"])
        .await
        .expect("subscribe");
    a1111
        .publish(
            "hsu/0001/temp",
            b"after rotation",
            PublishOptions::default(),
        )
        .await
        .expect("publish");
    let got = message(next(&mut new_sub).await);
    assert_eq!(
        (got.payload.as_slice(), got.epoch),
        (&b"after rotation"[..], 2)
    );
    // the old key no longer opens anything new: the sender key was wrapped for the new one
    let refused = unreadable(next(&mut sub).await);
    assert_eq!(
        refused.reason,
        OpenError::MissingSenderKey {
            sender: node("1111"),
            group: hsu1,
            epoch: 2
        }
    );
}

/// An agent follows the notes of its own groups and their members only: with 150 more nodes and
/// 150 more groups in the registry, 1111 (in hsu0001 with 1112) holds two node notes and one group
/// note, and still talks to 1112. (Following every group note, an agent on the embedded broker
/// was sent only the first 100 of them: its own could be missing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_holds_only_the_notes_of_its_groups_and_their_members() {
    let stack = Stack::start().await;
    let owner = stack.admin.sender().expect("admin account");
    let fleet: Vec<NodeRegistration> = (0..150)
        .map(|i| {
            let key = k256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
            NodeRegistration::prove(
                stack.admin.deployment(),
                owner,
                node(&format!("fleet{i:03}")),
                &key,
            )
            .expect("proof")
        })
        .collect();
    stack
        .admin
        .register_nodes(&fleet)
        .await
        .expect("registerNodes");
    for i in 0..150 {
        stack
            .admin
            .create_group(group(&format!("extra{i:03}")), &format!("extra/{i}/#"))
            .await
            .expect("createGroup");
    }
    // the bridge has published the last ones
    let topics = Topics::new(&stack.registry);
    for last in [
        topics.node_note_filter(&node("fleet149")),
        topics.group_note_filter(&group("extra149")),
    ] {
        RawClient::subscribed(stack.raw_options("fleet"), &last)
            .await
            .next()
            .await;
    }

    let a1111 = stack.agent("1111").await;
    let a1112 = stack.agent("1112").await;
    let mut sub = a1112.subscribe(&["hsu/0001/#"]).await.expect("subscribe");
    a1111
        .publish("hsu/0001/temp", b"21.5", PublishOptions::default())
        .await
        .expect("publish");
    assert_eq!(message(next(&mut sub).await).payload, b"21.5");
    let mut held: Vec<NodeId> = a1111.key_book().nodes().map(|n| n.node).collect();
    held.sort();
    let mut members = vec![node("1111"), node("1112")];
    members.sort();
    assert_eq!(
        held, members,
        "1111 holds the notes of hsu0001's members only"
    );
    let groups: Vec<_> = a1111.key_book().groups().map(|g| g.group()).collect();
    assert_eq!(
        groups,
        [group("hsu0001")],
        "1111 holds its own group's note only"
    );
}
