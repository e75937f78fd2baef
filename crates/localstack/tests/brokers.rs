//! Real MQTT brokers: retained messages on the embedded broker and on Mosquitto, with and
//! without persistence across restarts, and password authentication.

use std::time::Duration;

use anchormq_localstack::{EmbeddedBroker, Mosquitto};
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, Publish, QoS};

const WAIT: Duration = Duration::from_secs(10);

/// Connects and waits for the CONNACK.
async fn connect(
    port: u16,
    id: &str,
    credentials: Option<(&str, &str)>,
) -> Result<(AsyncClient, EventLoop), ConnectionError> {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(8 << 20, 8 << 20);
    if let Some((user, password)) = credentials {
        options.set_credentials(user, password);
    }
    let (client, mut events) = AsyncClient::new(options, 16);
    loop {
        match tokio::time::timeout(WAIT, events.poll())
            .await
            .expect("broker answers")
        {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok((client, events)),
            Ok(_) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Drives the event loop until a PUBLISH arrives.
async fn next_publish(events: &mut EventLoop) -> Publish {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::Publish(publish)) =
                events.poll().await.expect("connection up")
            {
                return publish;
            }
        }
    })
    .await
    .expect("a publish within the time limit")
}

/// Drives the event loop until the broker acknowledges the subscription.
async fn subscribe(client: &AsyncClient, events: &mut EventLoop, filter: &str) {
    client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("queue subscribe");
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.expect("connection up")
            {
                return;
            }
        }
    })
    .await
    .expect("suback");
}

/// Publishes a retained message and drives the loop until the broker acknowledges it.
async fn publish_retained(port: u16, topic: &str, payload: &[u8]) {
    let (client, mut events) = connect(port, "retainer", None).await.expect("connect");
    client
        .publish(topic, QoS::AtLeastOnce, true, payload.to_vec())
        .await
        .expect("queue publish");
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.expect("connection up")
            {
                return;
            }
        }
    })
    .await
    .expect("puback");
    client.disconnect().await.expect("queue disconnect");
    let _ = tokio::time::timeout(WAIT, events.poll()).await;
}

/// The first message a fresh subscriber to `topic` gets: the retained one if the broker holds
/// it, else the marker this function publishes right after the SUBACK (a broker sends
/// retained messages before anything published later).
async fn first_message_for_new_subscriber(port: u16, topic: &str) -> Publish {
    let (client, mut events) = connect(port, "late-subscriber", None)
        .await
        .expect("connect");
    subscribe(&client, &mut events, topic).await;
    client
        .publish(topic, QoS::AtLeastOnce, false, b"marker".to_vec())
        .await
        .expect("queue marker");
    next_publish(&mut events).await
}

#[tokio::test]
async fn embedded_broker_delivers_retained_messages_to_late_subscribers() {
    let broker = EmbeddedBroker::start()
        .await
        .expect("embedded broker starts");
    assert_eq!(broker.url(), format!("mqtt://127.0.0.1:{}", broker.port()));
    publish_retained(broker.port(), "anchormq/keys/1111", b"key note 1111").await;

    let got = first_message_for_new_subscriber(broker.port(), "anchormq/keys/1111").await;
    assert_eq!(&got.payload[..], b"key note 1111");
    assert_eq!(got.topic, "anchormq/keys/1111");

    // Key notes are read with wildcard filters.
    let (client, mut events) = connect(broker.port(), "wildcard", None)
        .await
        .expect("connect");
    subscribe(&client, &mut events, "anchormq/keys/+").await;
    let got = next_publish(&mut events).await;
    assert_eq!(&got.payload[..], b"key note 1111");
}

#[tokio::test]
async fn embedded_broker_carries_a_one_mebibyte_payload() {
    let broker = EmbeddedBroker::start()
        .await
        .expect("embedded broker starts");
    let payload = vec![0xA5u8; 1 << 20];
    publish_retained(broker.port(), "bench/big", &payload).await;
    let got = first_message_for_new_subscriber(broker.port(), "bench/big").await;
    assert_eq!(got.payload.len(), payload.len());
}

#[tokio::test]
async fn mosquitto_without_persistence_forgets_retained_messages_on_restart() {
    let mut broker = Mosquitto::spawn().await.expect("mosquitto starts");
    publish_retained(broker.port(), "anchormq/keys/1112", b"note").await;
    let got = first_message_for_new_subscriber(broker.port(), "anchormq/keys/1112").await;
    assert_eq!(&got.payload[..], b"note", "retained before restart");

    let port = broker.port();
    broker.restart().await.expect("restart");
    assert_eq!(broker.port(), port);
    let got = first_message_for_new_subscriber(broker.port(), "anchormq/keys/1112").await;
    assert_eq!(&got.payload[..], b"marker", "retained message must be gone");
}

#[tokio::test]
async fn mosquitto_with_persistence_keeps_retained_messages_across_restart() {
    let mut broker = Mosquitto::builder()
        .persistence(true)
        .spawn()
        .await
        .expect("mosquitto starts");
    publish_retained(broker.port(), "anchormq/keys/1113", b"persisted note").await;
    broker.restart().await.expect("restart");
    assert!(
        broker.persistence_file().exists(),
        "database saved on SIGTERM"
    );
    let got = first_message_for_new_subscriber(broker.port(), "anchormq/keys/1113").await;
    assert_eq!(&got.payload[..], b"persisted note");
    assert!(got.retain, "delivered as retained");

    // A crash loses what was not autosaved; clearing the database starts empty.
    broker.stop().await.expect("stop");
    broker.clear_persistence().expect("clear");
    broker.start().await.expect("start");
    let got = first_message_for_new_subscriber(broker.port(), "anchormq/keys/1113").await;
    assert_eq!(&got.payload[..], b"marker");
}

#[tokio::test]
async fn mosquitto_with_credentials_refuses_anonymous_clients() {
    let broker = Mosquitto::builder()
        .credentials("bridge", "s3cret-pass")
        .spawn()
        .await
        .expect("mosquitto starts");
    assert!(
        !format!("{broker:?}").contains("s3cret-pass"),
        "password in Debug"
    );
    let anonymous = connect(broker.port(), "anon", None).await;
    assert!(
        matches!(anonymous, Err(ConnectionError::ConnectionRefused(_))),
        "anonymous client accepted"
    );
    let wrong = connect(broker.port(), "wrong", Some(("bridge", "nope"))).await;
    assert!(
        matches!(wrong, Err(ConnectionError::ConnectionRefused(_))),
        "wrong password accepted"
    );
    connect(broker.port(), "right", Some(("bridge", "s3cret-pass")))
        .await
        .expect("right password accepted");
}

#[tokio::test]
async fn killed_mosquitto_stops_answering_and_starts_again_on_its_port() {
    let mut broker = Mosquitto::spawn().await.expect("mosquitto starts");
    broker.kill().await.expect("kill");
    assert!(!broker.is_running());
    assert!(
        tokio::net::TcpStream::connect(broker.addr()).await.is_err(),
        "port still open"
    );
    broker.start().await.expect("start again");
    connect(broker.port(), "after-kill", None)
        .await
        .expect("connect after restart");
}
