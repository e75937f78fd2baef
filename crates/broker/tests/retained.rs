//! Retained messages: every match reaches a new subscription whatever its QoS, an empty payload
//! deletes, a repeated SUBSCRIBE sends them again, and only retained deliveries carry RETAIN.

mod common;

use std::collections::HashSet;

use common::{Client, TestBroker};
use rumqttc::{QoS, SubscribeReasonCode};

/// Publishes `n` retained QoS 1 messages `prefix/<i>` (payload `<i>`) and waits for each PUBACK.
async fn retain_many(broker: &TestBroker, prefix: &str, n: usize) {
    let (mut publisher, _) = Client::connect(broker.addr, "retainer").await;
    for i in 0..n {
        publisher
            .client
            .publish(
                format!("{prefix}/{i}"),
                QoS::AtLeastOnce,
                true,
                i.to_string(),
            )
            .await
            .expect("queue publish");
    }
    for _ in 0..n {
        publisher
            .next_incoming(|p| matches!(p, rumqttc::Packet::PubAck(_)).then_some(()))
            .await;
    }
    publisher.disconnect().await;
}

/// Receives `n` publishes and checks they are `n` distinct retained topics under `prefix`.
async fn expect_all_retained(client: &mut Client, prefix: &str, n: usize, qos: QoS) {
    let mut topics = HashSet::new();
    for publish in client.publishes(n).await {
        assert!(publish.retain, "{} without RETAIN", publish.topic);
        assert_eq!(publish.qos, qos, "{}", publish.topic);
        let i = publish
            .topic
            .strip_prefix(&format!("{prefix}/"))
            .expect("under the prefix");
        assert_eq!(&publish.payload[..], i.as_bytes());
        topics.insert(publish.topic);
    }
    assert_eq!(topics.len(), n, "distinct topics");
}

#[tokio::test]
async fn a_new_qos1_subscription_receives_every_retained_message_beyond_100() {
    let broker = TestBroker::start().await;
    retain_many(&broker, "fleet/node", 5_000).await;
    assert_eq!(broker.stats().retained, 5_000);

    let (mut subscriber, _) = Client::connect(broker.addr, "late-qos1").await;
    let ack = subscriber.subscribe("fleet/node/#", QoS::AtLeastOnce).await;
    assert_eq!(
        ack.return_codes,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    expect_all_retained(&mut subscriber, "fleet/node", 5_000, QoS::AtLeastOnce).await;

    // And at QoS 0.
    let (mut subscriber, _) = Client::connect(broker.addr, "late-qos0").await;
    subscriber.subscribe("fleet/+/+", QoS::AtMostOnce).await;
    expect_all_retained(&mut subscriber, "fleet/node", 5_000, QoS::AtMostOnce).await;
}

#[tokio::test]
async fn an_empty_retained_payload_deletes_and_a_newer_one_replaces() {
    let broker = TestBroker::start().await;
    let (mut publisher, _) = Client::connect(broker.addr, "publisher").await;
    publisher
        .publish("keys/a", QoS::AtLeastOnce, true, b"old")
        .await;
    publisher
        .publish("keys/a", QoS::AtLeastOnce, true, b"new")
        .await;
    publisher
        .publish("keys/b", QoS::AtLeastOnce, true, b"b")
        .await;
    publisher
        .publish("keys/b", QoS::AtLeastOnce, true, b"")
        .await;
    assert_eq!(broker.stats().retained, 1);

    let (mut subscriber, _) = Client::connect(broker.addr, "subscriber").await;
    subscriber.subscribe("keys/#", QoS::AtLeastOnce).await;
    let got = subscriber.next_publish().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("keys/a", &b"new"[..])
    );
    // Nothing for keys/b: the next message is a live one published after the SUBACK.
    publisher
        .publish("keys/c", QoS::AtLeastOnce, false, b"live")
        .await;
    let got = subscriber.next_publish().await;
    assert_eq!(got.topic, "keys/c");
    assert!(!got.retain, "a live message goes out with RETAIN 0");
}

#[tokio::test]
async fn retained_messages_go_out_at_the_lower_of_stored_and_granted_qos() {
    let broker = TestBroker::start().await;
    let (mut publisher, _) = Client::connect(broker.addr, "publisher").await;
    publisher
        .publish("q/zero", QoS::AtMostOnce, true, b"0")
        .await;
    publisher
        .publish("q/two", QoS::ExactlyOnce, true, b"2")
        .await;
    broker
        .await_stats("two retained", |s| s.retained == 2)
        .await;

    let (mut subscriber, _) = Client::connect(broker.addr, "subscriber").await;
    let ack = subscriber.subscribe("q/+", QoS::ExactlyOnce).await;
    assert_eq!(
        ack.return_codes,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)],
        "QoS 2 granted as 1"
    );
    let mut got: Vec<(String, QoS)> = subscriber
        .publishes(2)
        .await
        .into_iter()
        .map(|p| (p.topic, p.qos))
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            ("q/two".to_owned(), QoS::AtLeastOnce),
            ("q/zero".to_owned(), QoS::AtMostOnce)
        ]
    );
}

#[tokio::test]
async fn subscribing_again_to_the_same_filter_sends_the_retained_messages_again() {
    let broker = TestBroker::start().await;
    retain_many(&broker, "again", 300).await;
    let (mut subscriber, _) = Client::connect(broker.addr, "subscriber").await;
    subscriber.subscribe("again/#", QoS::AtLeastOnce).await;
    expect_all_retained(&mut subscriber, "again", 300, QoS::AtLeastOnce).await;
    subscriber.subscribe("again/#", QoS::AtMostOnce).await;
    expect_all_retained(&mut subscriber, "again", 300, QoS::AtMostOnce).await;
}
