//! Connections and sessions: CONNECT checks, persistent sessions across disconnects, resends
//! with DUP, takeover by client id, wills, keep-alive, limits and shutdown.

mod common;

use std::time::Duration;

use anchormq_broker::Settings;
use common::{Client, Raw, TestBroker, options, raw_connect};
use rumqttc::{ConnectReturnCode, LastWill, Packet, Protocol, Publish, QoS};

fn persistent(addr: std::net::SocketAddr, id: &str) -> rumqttc::MqttOptions {
    let mut options = options(addr, id);
    options.set_clean_session(false);
    options
}

#[tokio::test]
async fn a_persistent_session_keeps_qos1_messages_while_offline() {
    let broker = TestBroker::start().await;
    let (mut subscriber, connack) = Client::connect_with(persistent(broker.addr, "agent")).await;
    assert!(!connack.session_present, "first connection");
    subscriber.subscribe("notes/#", QoS::AtLeastOnce).await;
    subscriber.disconnect().await;
    broker
        .await_stats("session kept", |s| s.connections == 0)
        .await;

    let (mut publisher, _) = Client::connect(broker.addr, "publisher").await;
    for i in 0..50 {
        let qos = if i % 5 == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        publisher
            .publish("notes/n", qos, false, i.to_string().as_bytes())
            .await;
    }

    let (mut subscriber, connack) = Client::connect_with(persistent(broker.addr, "agent")).await;
    assert!(connack.session_present);
    let got: Vec<String> = subscriber
        .publishes(40)
        .await
        .into_iter()
        .map(|p| String::from_utf8(p.payload.to_vec()).expect("utf-8"))
        .collect();
    let expected: Vec<String> = (0..50)
        .filter(|i| i % 5 != 0)
        .map(|i| i.to_string())
        .collect();
    assert_eq!(got, expected, "the QoS 1 messages, in order");
    // The subscription survived too.
    publisher
        .publish("notes/n", QoS::AtMostOnce, false, b"live")
        .await;
    assert_eq!(&subscriber.next_publish().await.payload[..], b"live");
}

#[tokio::test]
async fn a_clean_session_discards_the_old_one() {
    let broker = TestBroker::start().await;
    let (mut subscriber, _) = Client::connect_with(persistent(broker.addr, "agent")).await;
    subscriber.subscribe("notes/#", QoS::AtLeastOnce).await;
    subscriber.disconnect().await;
    broker
        .await_stats("disconnected", |s| s.connections == 0)
        .await;
    let (mut publisher, _) = Client::connect(broker.addr, "publisher").await;
    publisher
        .publish("notes/n", QoS::AtLeastOnce, false, b"queued")
        .await;

    let (mut clean, connack) = Client::connect(broker.addr, "agent").await;
    assert!(!connack.session_present);
    publisher
        .publish("notes/n", QoS::AtLeastOnce, false, b"live")
        .await;
    assert!(
        clean.nothing_within(Duration::from_millis(200)).await,
        "old session delivered"
    );
    clean.disconnect().await;
    // And a clean session leaves nothing behind when it ends.
    broker
        .await_stats("no sessions but the publisher's", |s| s.sessions == 1)
        .await;
    let (_, connack) = Client::connect_with(persistent(broker.addr, "agent")).await;
    assert!(!connack.session_present);
}

#[tokio::test]
async fn unacknowledged_messages_are_resent_first_with_dup_after_reconnect() {
    let broker = TestBroker::with(Settings {
        max_inflight: 3,
        ..Default::default()
    })
    .await;
    let mut lazy = persistent(broker.addr, "lazy");
    lazy.set_manual_acks(true);
    let (mut subscriber, _) = Client::connect_with(lazy.clone()).await;
    subscriber.subscribe("work", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Client::connect(broker.addr, "publisher").await;
    for i in 0..6 {
        // 4 at QoS 0 waits behind the window and is not kept for an absent client.
        let qos = if i == 4 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        publisher
            .publish("work", qos, false, i.to_string().as_bytes())
            .await;
    }
    // The window holds three; none acknowledged.
    let first: Vec<(Vec<u8>, bool)> = subscriber
        .publishes(3)
        .await
        .into_iter()
        .map(|p| (p.payload.to_vec(), p.dup))
        .collect();
    assert_eq!(
        first,
        [
            (b"0".to_vec(), false),
            (b"1".to_vec(), false),
            (b"2".to_vec(), false)
        ]
    );
    assert!(
        subscriber.nothing_within(Duration::from_millis(200)).await,
        "window ignored"
    );
    subscriber.kill().await;

    let mut acking = persistent(broker.addr, "lazy");
    acking.set_manual_acks(false);
    let (mut subscriber, connack) = Client::connect_with(acking).await;
    assert!(connack.session_present);
    let again: Vec<(Vec<u8>, bool)> = subscriber
        .publishes(5)
        .await
        .into_iter()
        .map(|p| (p.payload.to_vec(), p.dup))
        .collect();
    assert_eq!(
        again,
        [
            (b"0".to_vec(), true),
            (b"1".to_vec(), true),
            (b"2".to_vec(), true),
            (b"3".to_vec(), false),
            (b"5".to_vec(), false)
        ]
    );
}

#[tokio::test]
async fn a_second_connection_with_the_same_client_id_takes_over() {
    let broker = TestBroker::start().await;
    let (mut old, _) = Client::connect_with(persistent(broker.addr, "twin")).await;
    old.subscribe("t", QoS::AtLeastOnce).await;
    let (mut new, connack) = Client::connect_with(persistent(broker.addr, "twin")).await;
    assert!(
        connack.session_present,
        "the session moves to the new connection"
    );
    old.closed().await;
    let (mut publisher, _) = Client::connect(broker.addr, "publisher").await;
    publisher
        .publish("t", QoS::AtLeastOnce, false, b"to the new one")
        .await;
    assert_eq!(&new.next_publish().await.payload[..], b"to the new one");
    broker
        .await_stats("the old connection gone", |s| {
            s.connections == 2 && s.sessions == 2
        })
        .await;
}

fn with_will(addr: std::net::SocketAddr, id: &str) -> rumqttc::MqttOptions {
    let mut options = options(addr, id);
    options.set_last_will(LastWill::new(
        "wills/gone",
        format!("{id} gone"),
        QoS::AtLeastOnce,
        false,
    ));
    options
}

#[tokio::test]
async fn the_will_is_published_on_an_abnormal_close_and_not_after_disconnect() {
    let broker = TestBroker::start().await;
    let (mut watcher, _) = Client::connect(broker.addr, "watcher").await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;

    let (polite, _) = Client::connect_with(with_will(broker.addr, "polite")).await;
    polite.disconnect().await;
    broker.await_stats("polite gone", |s| s.sessions == 1).await;
    let (crashed, _) = Client::connect_with(with_will(broker.addr, "crashed")).await;
    crashed.kill().await;

    let will = watcher.next_publish().await;
    assert_eq!(will.topic, "wills/gone");
    assert_eq!(
        &will.payload[..],
        b"crashed gone",
        "the polite client's will came first"
    );
    assert!(watcher.nothing_within(Duration::from_millis(200)).await);
}

#[tokio::test]
async fn a_client_silent_past_one_and_a_half_keep_alives_is_closed_and_its_will_sent() {
    let broker = TestBroker::start().await;
    let (mut watcher, _) = Client::connect(broker.addr, "watcher").await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;
    let mut connect = raw_connect("silent", true);
    connect.keep_alive = 1;
    connect.last_will = Some(LastWill::new(
        "wills/silent",
        "gone",
        QoS::AtMostOnce,
        false,
    ));
    let (mut raw, _) = Raw::connect(broker.addr, connect).await;
    let started = tokio::time::Instant::now();
    assert_eq!(raw.until_closed().await, []);
    let silent_for = started.elapsed();
    assert!(
        (Duration::from_millis(1400)..Duration::from_secs(5)).contains(&silent_for),
        "closed after {silent_for:?}"
    );
    assert_eq!(watcher.next_publish().await.topic, "wills/silent");
}

/// The broker's whole answer was one CONNACK with `code`.
fn only_connack(answer: &[Packet], code: ConnectReturnCode) -> bool {
    matches!(answer, [Packet::ConnAck(a)] if a.code == code)
}

#[tokio::test]
async fn connect_checks_the_protocol_level_and_the_client_id() {
    let broker = TestBroker::start().await;
    // MQTT 5 and MQTT 3.1 ("MQIsdp", level 3): CONNACK 1, then closed.
    let mut v5 = raw_connect("v5", true);
    v5.protocol = Protocol::V5;
    let mut raw = Raw::open(broker.addr).await;
    raw.send(Packet::Connect(v5)).await;
    let answer = raw.until_closed().await;
    assert!(
        only_connack(&answer, ConnectReturnCode::RefusedProtocolVersion),
        "{answer:?}"
    );
    let mqtt31: &[u8] = &[
        0x10, 14, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 30, 0, 0,
    ];
    let mut raw = Raw::open(broker.addr).await;
    raw.send_bytes(mqtt31).await;
    let answer = raw.until_closed().await;
    assert!(
        only_connack(&answer, ConnectReturnCode::RefusedProtocolVersion),
        "{answer:?}"
    );

    // An empty client id: refused for a persistent session, given one for a clean session.
    let mut raw = Raw::open(broker.addr).await;
    raw.send(Packet::Connect(raw_connect("", false))).await;
    let answer = raw.until_closed().await;
    assert!(
        only_connack(&answer, ConnectReturnCode::BadClientId),
        "{answer:?}"
    );
    let (mut first, connack) = Raw::connect(broker.addr, raw_connect("", true)).await;
    assert_eq!(connack.code, ConnectReturnCode::Success);
    let (mut second, connack) = Raw::connect(broker.addr, raw_connect("", true)).await;
    assert_eq!(connack.code, ConnectReturnCode::Success);
    // Two sessions, not a takeover: both still answer.
    for raw in [&mut first, &mut second] {
        raw.send(Packet::PingReq).await;
        assert_eq!(raw.recv().await, Some(Packet::PingResp));
    }
    assert_eq!(broker.stats().sessions, 2);

    // Anything but CONNECT first closes the connection.
    let mut raw = Raw::open(broker.addr).await;
    raw.send(Packet::Publish(Publish::new(
        "t",
        QoS::AtMostOnce,
        b"x".to_vec(),
    )))
    .await;
    assert_eq!(raw.until_closed().await, []);
}

#[tokio::test]
async fn a_full_queue_drops_new_messages_and_counts_them() {
    let broker = TestBroker::with(Settings {
        max_inflight: 1,
        max_queued_messages: 10,
        ..Default::default()
    })
    .await;
    let mut stuck = options(broker.addr, "stuck");
    stuck.set_manual_acks(true);
    let (mut subscriber, _) = Client::connect_with(stuck).await;
    subscriber.subscribe("flood", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Client::connect(broker.addr, "publisher").await;
    publisher
        .publish("flood", QoS::AtLeastOnce, false, b"0")
        .await;
    // In flight and never acknowledged: the window is full from here on.
    let first = subscriber.next_publish().await;
    assert_eq!(&first.payload[..], b"0");
    for i in 1..50 {
        publisher
            .publish("flood", QoS::AtLeastOnce, false, i.to_string().as_bytes())
            .await;
    }
    // Ten queued, 39 dropped (counted before each PUBACK).
    assert_eq!(broker.stats().dropped, 39);
    subscriber.client.ack(&first).await.expect("queue ack");
    let next: Vec<Vec<u8>> = {
        let mut next = Vec::new();
        for _ in 0..10 {
            let publish = subscriber.next_publish().await;
            subscriber.client.ack(&publish).await.expect("queue ack");
            next.push(publish.payload.to_vec());
        }
        next
    };
    let expected: Vec<Vec<u8>> = (1..=10).map(|i: i32| i.to_string().into_bytes()).collect();
    assert_eq!(next, expected, "the queued ten, then nothing");
    assert!(subscriber.nothing_within(Duration::from_millis(200)).await);
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed() {
    let broker = TestBroker::with(Settings {
        max_connections: 2,
        ..Default::default()
    })
    .await;
    let (_a, _) = Client::connect(broker.addr, "a").await;
    let (_b, _) = Client::connect(broker.addr, "b").await;
    let mut third = Raw::open(broker.addr).await;
    assert_eq!(third.until_closed().await, []);
}

#[tokio::test]
async fn shutdown_closes_every_connection_and_serve_returns() {
    let broker = TestBroker::start().await;
    let addr = broker.addr;
    let (mut a, _) = Client::connect(addr, "a").await;
    let (mut b, _) = Client::connect_with(persistent(addr, "b")).await;
    let mut pending = Raw::open(addr).await; // never sends CONNECT
    broker
        .await_stats("three connections", |s| s.connections == 3)
        .await;
    broker.stop().await;
    a.closed().await;
    b.closed().await;
    assert_eq!(pending.until_closed().await, []);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting"
    );
}

#[test]
fn settings_out_of_range_are_refused_by_name() {
    let cases = [
        (
            Settings {
                max_inflight: 0,
                ..Default::default()
            },
            "max_inflight",
        ),
        (
            Settings {
                max_inflight: u16::MAX,
                ..Default::default()
            },
            "max_inflight",
        ),
        (
            Settings {
                max_queued_messages: 0,
                ..Default::default()
            },
            "max_queued_messages",
        ),
        (
            Settings {
                max_packet_size: 0,
                ..Default::default()
            },
            "max_packet_size",
        ),
        (
            Settings {
                connect_timeout: Duration::ZERO,
                ..Default::default()
            },
            "connect_timeout",
        ),
    ];
    for (settings, field) in cases {
        let error = anchormq_broker::Broker::new(settings).expect_err(field);
        assert!(error.to_string().contains(field), "{error}");
    }
}
