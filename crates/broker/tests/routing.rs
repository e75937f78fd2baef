//! Live messages: wildcard and `$` matching, one copy per client at its highest granted QoS,
//! one order for QoS 0 and 1, QoS 2 in exactly once, and the connection closed on bad input.

mod common;

use std::time::Duration;

use common::{Client, Raw, TestBroker, options, raw_connect};
use rumqttc::{Packet, PubRel, Publish, QoS, Subscribe, SubscribeReasonCode};

/// Each filter's subscriber gets exactly the topics it matches, in publish order; a marker
/// topic every subscriber holds says that nothing else is coming.
#[tokio::test]
async fn wildcards_match_levels_and_leave_dollar_topics_alone() {
    let broker = TestBroker::start().await;
    let (mut publisher, _) = Client::connect(broker.addr, "publisher").await;
    let topics = ["a", "a/b", "a/b/c", "a//c", "b/b", "$SYS/x", "a/$x"];
    let cases: &[(&str, &[&str])] = &[
        ("#", &["a", "a/b", "a/b/c", "a//c", "b/b", "a/$x"]),
        ("a/#", &["a", "a/b", "a/b/c", "a//c", "a/$x"]),
        ("a/+", &["a/b", "a/$x"]),
        ("a/+/c", &["a/b/c", "a//c"]),
        ("+/b", &["a/b", "b/b"]),
        ("+/x", &[]),
        ("$SYS/#", &["$SYS/x"]),
        ("+", &["a"]),
    ];
    let mut subscribers = Vec::new();
    for (i, (filter, _)) in cases.iter().enumerate() {
        let (mut client, _) = Client::connect(broker.addr, &format!("sub-{i}")).await;
        client.subscribe(filter, QoS::AtMostOnce).await;
        // Every subscriber also hears the end marker.
        client.subscribe("end", QoS::AtMostOnce).await;
        subscribers.push(client);
    }
    for topic in topics {
        publisher
            .publish(topic, QoS::AtLeastOnce, false, topic.as_bytes())
            .await;
    }
    publisher.publish("end", QoS::AtLeastOnce, false, b"").await;
    for ((filter, expected), client) in cases.iter().zip(&mut subscribers) {
        let mut got = Vec::new();
        loop {
            let publish = client.next_publish().await;
            if publish.topic == "end" {
                break;
            }
            got.push(publish.topic);
        }
        assert_eq!(got, *expected, "filter {filter}");
    }
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_once_at_the_highest_granted_qos() {
    let broker = TestBroker::start().await;
    let (mut subscriber, _) = Client::connect(broker.addr, "subscriber").await;
    subscriber.subscribe("a/#", QoS::AtMostOnce).await;
    subscriber.subscribe("a/+", QoS::AtLeastOnce).await;
    subscriber.subscribe("a/b", QoS::AtMostOnce).await;
    let (mut publisher, _) = Client::connect(broker.addr, "publisher").await;
    publisher
        .publish("a/b", QoS::AtLeastOnce, false, b"1")
        .await;
    publisher.publish("a/b", QoS::AtMostOnce, false, b"2").await;
    publisher
        .publish("a/b", QoS::AtLeastOnce, false, b"3")
        .await;
    let got: Vec<(Vec<u8>, QoS)> = subscriber
        .publishes(3)
        .await
        .into_iter()
        .map(|p| (p.payload.to_vec(), p.qos))
        .collect();
    assert_eq!(
        got,
        [
            (b"1".to_vec(), QoS::AtLeastOnce),
            (b"2".to_vec(), QoS::AtMostOnce),
            (b"3".to_vec(), QoS::AtLeastOnce)
        ]
    );
    assert!(
        subscriber.nothing_within(Duration::from_millis(200)).await,
        "a copy more"
    );
}

#[tokio::test]
async fn a_mix_of_qos_0_and_1_arrives_in_publish_order() {
    let broker = TestBroker::start().await;
    let (mut subscriber, _) = Client::connect(broker.addr, "subscriber").await;
    subscriber.subscribe("mix/#", QoS::AtLeastOnce).await;
    let (publisher, _) = Client::connect(broker.addr, "publisher").await;
    let n = 3_000;
    for i in 0..n {
        // Runs of each QoS of varying length, across two topics.
        let qos = if (i / 7 + i % 3) % 2 == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        publisher
            .client
            .publish(format!("mix/{}", i % 2), qos, false, i.to_string())
            .await
            .expect("queue publish");
    }
    let got: Vec<String> = subscriber
        .publishes(n)
        .await
        .into_iter()
        .map(|p| String::from_utf8(p.payload.to_vec()).expect("utf-8"))
        .collect();
    let expected: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn a_qos2_publish_is_delivered_exactly_once_even_when_resent() {
    let broker = TestBroker::start().await;
    let (mut subscriber, _) = Client::connect(broker.addr, "subscriber").await;
    subscriber.subscribe("once", QoS::AtLeastOnce).await;

    let (mut raw, connack) = Raw::connect(broker.addr, raw_connect("qos2", true)).await;
    assert_eq!(connack.code, rumqttc::ConnectReturnCode::Success);
    let mut publish = Publish::new("once", QoS::ExactlyOnce, b"payload".to_vec());
    publish.pkid = 7;
    raw.send(Packet::Publish(publish.clone())).await;
    assert!(matches!(raw.recv().await, Some(Packet::PubRec(r)) if r.pkid == 7));
    // The PUBREC was lost, say: the client sends it again with DUP before releasing it.
    publish.dup = true;
    raw.send(Packet::Publish(publish)).await;
    assert!(matches!(raw.recv().await, Some(Packet::PubRec(r)) if r.pkid == 7));
    raw.send(Packet::PubRel(PubRel::new(7))).await;
    assert!(matches!(raw.recv().await, Some(Packet::PubComp(c)) if c.pkid == 7));
    // Once released the id is free again: a new message with it is a new message.
    let mut next = Publish::new("once", QoS::ExactlyOnce, b"second".to_vec());
    next.pkid = 7;
    raw.send(Packet::Publish(next)).await;
    assert!(matches!(raw.recv().await, Some(Packet::PubRec(r)) if r.pkid == 7));

    let first = subscriber.next_publish().await;
    assert_eq!(&first.payload[..], b"payload");
    let second = subscriber.next_publish().await;
    assert_eq!(
        &second.payload[..],
        b"second",
        "the resent first one came twice"
    );
}

#[tokio::test]
async fn invalid_filters_get_the_failure_code_and_the_rest_are_granted() {
    let broker = TestBroker::start().await;
    let (mut raw, _) = Raw::connect(broker.addr, raw_connect("filters", true)).await;
    let mut subscribe = Subscribe::new("a/#/b", QoS::AtLeastOnce);
    for filter in ["ok/+", "a+", "", "#/a", "x/y#", "ok/#"] {
        subscribe.add(filter.to_owned(), QoS::AtLeastOnce);
    }
    subscribe.pkid = 3;
    raw.send(Packet::Subscribe(subscribe)).await;
    let Some(Packet::SubAck(ack)) = raw.recv().await else {
        panic!("expected SUBACK");
    };
    use SubscribeReasonCode::{Failure, Success};
    assert_eq!(ack.pkid, 3);
    assert_eq!(
        ack.return_codes,
        [
            Failure,
            Success(QoS::AtLeastOnce),
            Failure,
            Failure,
            Failure,
            Failure,
            Success(QoS::AtLeastOnce)
        ]
    );
    // The connection stays up.
    raw.send(Packet::PingReq).await;
    assert_eq!(raw.recv().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn a_publish_to_a_wildcard_topic_closes_the_connection() {
    let broker = TestBroker::start().await;
    let (mut subscriber, _) = Client::connect(broker.addr, "subscriber").await;
    subscriber.subscribe("#", QoS::AtMostOnce).await;
    for topic in ["a/+", "a/#", ""] {
        let (mut raw, _) = Raw::connect(broker.addr, raw_connect("bad", true)).await;
        raw.send(Packet::Publish(Publish::new(
            topic,
            QoS::AtMostOnce,
            b"x".to_vec(),
        )))
        .await;
        assert_eq!(raw.until_closed().await, [], "topic {topic:?}");
    }
    assert!(
        subscriber.nothing_within(Duration::from_millis(200)).await,
        "routed"
    );
}

#[tokio::test]
async fn a_packet_over_the_size_limit_closes_the_connection() {
    let broker = TestBroker::with(anchormq_broker::Settings {
        max_packet_size: 1024,
        ..Default::default()
    })
    .await;
    let (mut subscriber, _) = Client::connect(broker.addr, "subscriber").await;
    subscriber.subscribe("big", QoS::AtMostOnce).await;
    let (mut publisher, _) = Client::connect(broker.addr, "publisher").await;
    publisher
        .publish("big", QoS::AtLeastOnce, false, &[1; 1000])
        .await;
    assert_eq!(subscriber.next_publish().await.payload.len(), 1000);

    publisher
        .client
        .publish("big", QoS::AtLeastOnce, false, vec![2; 2000])
        .await
        .expect("queue publish");
    publisher.closed().await;
    assert!(
        subscriber.nothing_within(Duration::from_millis(200)).await,
        "routed"
    );
    // Others are not affected.
    let (mut other, _) = Client::connect_with(options(broker.addr, "other")).await;
    other
        .publish("big", QoS::AtLeastOnce, false, b"small")
        .await;
    assert_eq!(&subscriber.next_publish().await.payload[..], b"small");
}
