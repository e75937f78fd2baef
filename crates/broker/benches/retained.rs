//! Retained notes at fleet scale: what a new subscription costs when the broker holds N retained
//! topics (one per node, as the bridge publishes them).
//!
//! One client fills N retained topics `fleet/node/<id>/0` (300-byte payloads, QoS 1, every PUBACK
//! awaited); then 100 new clients each subscribe to one node's filter `fleet/node/<id>/#` and
//! are timed from SUBSCRIBE to the arrival of that node's retained message; then one new client
//! subscribes to `fleet/node/#` and is timed until all N have arrived. It prints the figures and
//! asserts nothing about time.
//!
//! `cargo bench -p anchormq-broker --bench retained` (N = 200,000), or `… -- 50000` for another N.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anchormq_broker::{Broker, Settings};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const DEFAULT_TOPICS: usize = 200_000;
const PAYLOAD_LEN: usize = 300;
const SUBSCRIPTIONS: usize = 100;
const LIMIT: Duration = Duration::from_secs(600);

fn client(addr: SocketAddr, id: &str) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(60));
    options.set_max_packet_size(1 << 20, 1 << 20);
    options.set_inflight(1_000);
    AsyncClient::new(options, 1_000)
}

/// Polls until `pick` accepts an incoming packet.
async fn until(events: &mut EventLoop, what: &str, mut pick: impl FnMut(&Packet) -> bool) {
    tokio::time::timeout(LIMIT, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(packet)) if pick(&packet) => return,
                Ok(_) => {}
                Err(error) => panic!("{what}: {error}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: not within {LIMIT:?}"));
}

fn topic(node: usize) -> String {
    format!("fleet/node/{node:06}/0")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.replace('_', "").parse().ok())
        .unwrap_or(DEFAULT_TOPICS);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let broker = Broker::new(Settings::default()).expect("settings");
    let shutdown = CancellationToken::new();
    let served = tokio::spawn({
        let broker = broker.clone();
        let shutdown = shutdown.clone();
        async move { broker.serve(listener, shutdown).await }
    });

    // Fill.
    let started = Instant::now();
    let (publisher, mut events) = client(addr, "filler");
    let filler = tokio::spawn(async move {
        let mut payload = vec![b'x'; PAYLOAD_LEN];
        for node in 0..n {
            payload[..6].copy_from_slice(format!("{node:06}").as_bytes());
            publisher
                .publish(topic(node), QoS::AtLeastOnce, true, payload.clone())
                .await
                .expect("queue publish");
        }
        publisher
    });
    let mut acked = 0;
    until(&mut events, "filling", |packet| {
        acked += usize::from(matches!(packet, Packet::PubAck(_)));
        acked == n
    })
    .await;
    let fill = started.elapsed();
    filler.await.expect("filler").disconnect().await.ok();
    assert_eq!(broker.stats().retained, n);
    println!(
        "filled {n} retained topics ({PAYLOAD_LEN}-byte payloads, QoS 1) in {fill:.2?} ({:.0}/s)",
        n as f64 / fill.as_secs_f64()
    );

    // One node's filter, 100 times, each from a new client.
    let mut times = Vec::with_capacity(SUBSCRIPTIONS);
    for i in 0..SUBSCRIPTIONS {
        let node = (i * 7_919 + 13) % n;
        let (subscriber, mut events) = client(addr, &format!("agent-{i}"));
        until(&mut events, "connect", |p| matches!(p, Packet::ConnAck(_))).await;
        let filter = format!("fleet/node/{node:06}/#");
        let subscribed = Instant::now();
        subscriber
            .subscribe(&filter, QoS::AtLeastOnce)
            .await
            .expect("queue subscribe");
        let expected = topic(node);
        until(
            &mut events,
            "one node's note",
            |packet| matches!(packet, Packet::Publish(p) if p.topic == expected && p.retain),
        )
        .await;
        times.push(subscribed.elapsed());
        subscriber.disconnect().await.ok();
        let _ = tokio::time::timeout(Duration::from_secs(1), events.poll()).await;
    }
    let mean = times.iter().sum::<Duration>() / SUBSCRIPTIONS as u32;
    let max = times.iter().max().copied().unwrap_or_default();
    println!(
        "{SUBSCRIPTIONS} new subscriptions to fleet/node/<id>/#: mean {mean:.2?}, max {max:.2?} \
         (SUBSCRIBE to the node's retained message)"
    );

    // Everything.
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let (subscriber, mut events) = client(addr, &format!("all-{qos:?}"));
        until(&mut events, "connect", |p| matches!(p, Packet::ConnAck(_))).await;
        let subscribed = Instant::now();
        subscriber
            .subscribe("fleet/node/#", qos)
            .await
            .expect("queue subscribe");
        let mut received = 0;
        until(&mut events, "all notes", |packet| {
            received += usize::from(matches!(packet, Packet::Publish(p) if p.retain));
            received == n
        })
        .await;
        let all = subscribed.elapsed();
        println!(
            "a new {qos:?} subscription to fleet/node/# received all {n} in {all:.2?} ({:.0}/s)",
            n as f64 / all.as_secs_f64()
        );
        subscriber.disconnect().await.ok();
    }

    shutdown.cancel();
    served.await.expect("serve");
}
