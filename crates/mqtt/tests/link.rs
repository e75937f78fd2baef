//! The link against a real Mosquitto that restarts. The publisher uses clean sessions (the broker
//! forgets its unacknowledged messages, so the link must send them again); the subscriber keeps a
//! persistent session so that the broker queues what arrives while it is reconnecting.

use std::time::Duration;

use anchormq_localstack::Mosquitto;
use anchormq_mqtt::{BrokerConfig, Link, LinkEvent, QoS};
use tokio::sync::mpsc::Receiver;
use tokio_util::sync::CancellationToken;

async fn next_event(events: &mut Receiver<LinkEvent>) -> LinkEvent {
    tokio::time::timeout(Duration::from_secs(20), events.recv())
        .await
        .expect("an event within 20 s")
        .expect("link open")
}

#[tokio::test]
async fn qos1_messages_published_while_the_broker_is_down_arrive_after_it_returns() {
    let mut mosquitto = Mosquitto::builder()
        .persistence(true)
        .spawn()
        .await
        .expect("mosquitto");
    let shutdown = CancellationToken::new();
    let (publisher, _publisher_events) = Link::start(
        &BrokerConfig::from_url(&mosquitto.url(), "pub").unwrap(),
        shutdown.clone(),
    )
    .unwrap();
    let mut subscriber_config = BrokerConfig::from_url(&mosquitto.url(), "sub").unwrap();
    subscriber_config.clean_session = false;
    let (subscriber, mut subscriber_events) =
        Link::start(&subscriber_config, shutdown.clone()).unwrap();
    subscriber.subscribe("t/#", QoS::AtLeastOnce).await.unwrap();
    while next_event(&mut subscriber_events).await != LinkEvent::Subscribed {}

    mosquitto.stop().await.expect("stop");
    let mut seqs = Vec::new();
    for i in 0..20u8 {
        seqs.push(
            publisher
                .publish(format!("t/{i}"), vec![i], QoS::AtLeastOnce, false)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    // Nothing is acknowledged while the broker is down.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), publisher.acked(seqs[0]))
            .await
            .is_err()
    );

    mosquitto.start().await.expect("start");
    tokio::time::timeout(
        Duration::from_secs(20),
        publisher.acked(*seqs.last().unwrap()),
    )
    .await
    .expect("all acknowledged after the broker returns")
    .unwrap();
    let mut received = Vec::new();
    while received.len() < 20 {
        if let LinkEvent::Message(message) = next_event(&mut subscriber_events).await {
            received.push(message.payload[0]);
        }
    }
    received.sort();
    received.dedup();
    assert_eq!(
        received,
        (0..20).collect::<Vec<u8>>(),
        "every message arrived, after the subscriber resubscribed"
    );
    shutdown.cancel();
}

/// Two clients with one client ID: the broker accepts each and drops the other, for ever. Each
/// link backs off (a connection the broker only accepted, then dropped, does not reset the backoff), so
/// in 3 s there are a handful of reconnects, not one every 50 ms.
#[tokio::test]
async fn connections_dropped_at_once_back_off() {
    let mosquitto = Mosquitto::builder().spawn().await.expect("mosquitto");
    let shutdown = CancellationToken::new();
    let config = BrokerConfig::from_url(&mosquitto.url(), "twin").unwrap();
    let (_first, mut first_events) = Link::start(&config, shutdown.clone()).unwrap();
    let (_second, mut second_events) = Link::start(&config, shutdown.clone()).unwrap();
    let mut drops = 0;
    let window = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let event = tokio::select! {
            () = tokio::time::sleep_until(window) => break,
            event = first_events.recv() => event,
            event = second_events.recv() => event,
        };
        if let Some(LinkEvent::Disconnected { .. }) = event {
            drops += 1;
        }
    }
    shutdown.cancel();
    // 50 ms + 100 + 200 + 400 + 800 + 1600 > 3 s: at most 6 drops a link, 12 in all; without the
    // backoff, about 60 a link
    assert!(drops >= 2, "the twins drop each other ({drops})");
    assert!(drops <= 12, "{drops} drops in 3 s");
}
