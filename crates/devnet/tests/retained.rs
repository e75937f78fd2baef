//! Retained notes on the embedded broker: a new wildcard subscriber must receive every retained
//! message under its filters, as agents do with `.../node/#` and `.../group/#`.
//!
//! For each size N: N retained messages (distinct topics, ~300-byte payloads) under a fresh
//! `.../node` prefix, then a new client subscribes to `node/#` and counts what arrives; then N/2
//! more under `.../group` and a new client subscribes to both filters (two SUBSCRIBEs, as the
//! agent's link sends them). A second test has a subscriber in place first and counts N live
//! publishes (the path by which bridges see each other's notes).
//!
//! Sizes default to 2,000; `RETAINED_SIZES=100,500,2000,10000` measures more. The subscription QoS
//! is 0; `RETAINED_QOS=1` measures QoS 1 subscribers, which get every retained message too (the
//! broker has no cap on them; rumqttd, embedded before, gave a new QoS 1 subscription at most
//! 100): the last test pins that down at QoS 1, the QoS agents subscribe with.
//!
//! `cargo test -p anchormq-devnet --test retained -- --nocapture` prints N → received and times.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anchormq_devnet::EmbeddedBroker;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

const DEFAULT_SIZES: &[usize] = &[2_000];
const PAYLOAD_LEN: usize = 300;
/// A subscriber that got nothing for this long after its SUBACK is taken to have stalled: the
/// broker will send no more (retained messages are sent once, on subscribe).
const STALL: Duration = Duration::from_secs(3);
/// Upper bound for one phase of one size.
const PHASE_LIMIT: Duration = Duration::from_secs(120);

fn sizes() -> Vec<usize> {
    match std::env::var("RETAINED_SIZES") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .expect("RETAINED_SIZES: comma-separated counts")
            })
            .collect(),
        _ => DEFAULT_SIZES.to_vec(),
    }
}

fn subscription_qos() -> QoS {
    match std::env::var("RETAINED_QOS").as_deref() {
        Ok("1") => QoS::AtLeastOnce,
        Ok("2") => QoS::ExactlyOnce,
        _ => QoS::AtMostOnce,
    }
}

fn client(addr: SocketAddr, id: &str) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(64 << 10, 64 << 10);
    AsyncClient::new(options, 1024)
}

fn payload(i: usize) -> Vec<u8> {
    let mut payload = format!("note {i:06} ").into_bytes();
    payload.resize(PAYLOAD_LEN, b'x');
    payload
}

fn topic(prefix: &str, i: usize) -> String {
    format!("{prefix}/{i:06}")
}

/// Publishes `n` retained QoS 1 messages under `prefix` and waits for every PUBACK (the broker
/// acknowledges a publish once it has stored and routed it). Returns the time taken.
async fn publish_retained(addr: SocketAddr, id: &str, prefix: &str, n: usize) -> Duration {
    let (client, mut events) = client(addr, id);
    let started = Instant::now();
    let prefix = prefix.to_owned();
    let publisher = tokio::spawn(async move {
        for i in 0..n {
            client
                .publish(topic(&prefix, i), QoS::AtLeastOnce, true, payload(i))
                .await
                .expect("queue publish");
        }
        client
    });
    let mut acked = 0;
    tokio::time::timeout(PHASE_LIMIT, async {
        while acked < n {
            if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.expect("publisher") {
                acked += 1;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{id}: only {acked} of {n} publishes acked in {PHASE_LIMIT:?}"));
    let elapsed = started.elapsed();
    let client = publisher.await.expect("publisher task");
    client.disconnect().await.ok();
    elapsed
}

/// What a subscriber saw.
struct Received {
    /// Distinct topics under the filter that arrived.
    topics: usize,
    /// How many of them carried the RETAIN flag.
    retained: usize,
    /// From SUBSCRIBE sent to the last message (or to the SUBACK if nothing came).
    elapsed: Duration,
    /// True when nothing more came for [`STALL`] before all `n` arrived.
    stalled: bool,
}

/// A subscriber with its SUBACK in hand.
struct Subscriber {
    client: AsyncClient,
    events: EventLoop,
    subscribed_at: Instant,
    seen: HashSet<String>,
    retained: usize,
}

impl Subscriber {
    /// Connects, subscribes to each filter (one SUBSCRIBE each, as the agent's and the bridge's
    /// link do) and waits for every SUBACK, keeping any publish that comes before them.
    async fn subscribe(addr: SocketAddr, id: &str, filters: &[String], qos: QoS) -> Self {
        let (client, mut events) = client(addr, id);
        let subscribed_at = Instant::now();
        for filter in filters {
            client
                .subscribe(filter, qos)
                .await
                .expect("queue subscribe");
        }
        let mut early = Vec::new();
        let mut acks = 0;
        tokio::time::timeout(PHASE_LIMIT, async {
            while acks < filters.len() {
                match events.poll().await.expect("subscriber") {
                    Event::Incoming(Packet::SubAck(ack)) => {
                        assert!(
                            ack.return_codes
                                .iter()
                                .all(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure)),
                            "{id}: subscription refused: {ack:?}"
                        );
                        acks += 1;
                    }
                    Event::Incoming(Packet::Publish(p)) => early.push(p),
                    _ => {}
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{id}: {acks} SUBACKs in {PHASE_LIMIT:?}"));
        let mut subscriber = Self {
            client,
            events,
            subscribed_at,
            seen: HashSet::new(),
            retained: 0,
        };
        for p in &early {
            subscriber.note(p);
        }
        subscriber
    }

    fn note(&mut self, publish: &rumqttc::Publish) {
        let topic = publish.topic.clone();
        if self.seen.insert(topic) && publish.retain {
            self.retained += 1;
        }
    }

    /// Polls until `n` distinct topics arrived or the broker stalls.
    async fn collect(mut self, n: usize) -> Received {
        let mut last = self.subscribed_at.elapsed();
        let deadline = Instant::now() + PHASE_LIMIT;
        let mut stalled = false;
        while self.seen.len() < n && Instant::now() < deadline {
            match tokio::time::timeout(STALL, self.events.poll()).await {
                Err(_) => {
                    stalled = true;
                    break;
                }
                Ok(event) => {
                    if let Event::Incoming(Packet::Publish(p)) = event.expect("subscriber") {
                        self.note(&p);
                        last = self.subscribed_at.elapsed();
                    }
                }
            }
        }
        self.client.disconnect().await.ok();
        Received {
            topics: self.seen.len(),
            retained: self.retained,
            elapsed: last,
            stalled,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_wildcard_subscriber_receives_every_retained_message() {
    let broker = EmbeddedBroker::start().await.expect("embedded broker");
    let addr = broker.addr();
    let qos = subscription_qos();
    let mut short = Vec::new();
    for n in sizes() {
        // One filter over N notes, then `node/#` and `group/#` over N/2 notes each (what an
        // agent subscribes to), each time under a fresh prefix.
        let prefix = format!("anchormq/v1/31337/retained-{n}");
        let node = format!("{prefix}/node");
        let group = format!("{prefix}/group");
        let mut published = publish_retained(addr, &format!("pub-retained-{n}"), &node, n).await;
        let cases = [
            ("node/#", vec![format!("{node}/#")], n),
            (
                "node/# + group/#",
                vec![format!("{group}/#"), format!("{node}/#")],
                n + n / 2,
            ),
        ];
        for (case, (label, filters, expected)) in cases.into_iter().enumerate() {
            if filters.len() > 1 {
                // The node notes are already there: add N/2 group notes.
                published +=
                    publish_retained(addr, &format!("pub-retained-group-{n}"), &group, n / 2).await;
            }
            let subscriber =
                Subscriber::subscribe(addr, &format!("sub-retained-{n}-{case}"), &filters, qos)
                    .await;
            let got = subscriber.collect(expected).await;
            println!(
                "retained  N={expected:>6} {label:<16} published+acked in {published:>9.3?}  \
                 new {qos:?} subscriber got {:>6} ({} with RETAIN) in {:>9.3?}{}",
                got.topics,
                got.retained,
                got.elapsed,
                if got.stalled { "  [stalled]" } else { "" },
            );
            if got.topics != expected {
                short.push(format!("N={expected} {label}: {} received", got.topics));
            }
        }
    }
    assert!(
        short.is_empty(),
        "a new wildcard subscriber missed retained messages: {}",
        short.join("; ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribed_wildcard_subscriber_receives_every_live_publish() {
    let broker = EmbeddedBroker::start().await.expect("embedded broker");
    let addr = broker.addr();
    // what agents and bridges subscribe to notes with
    let qos = QoS::AtLeastOnce;
    let mut short = Vec::new();
    for n in sizes() {
        let prefix = format!("anchormq/v1/31337/live-{n}/group");
        let filters = [format!("{prefix}/#")];
        let subscriber = Subscriber::subscribe(addr, &format!("sub-live-{n}"), &filters, qos).await;
        let collector = tokio::spawn(subscriber.collect(n));
        let published = publish_retained(addr, &format!("pub-live-{n}"), &prefix, n).await;
        let got = collector.await.expect("collector task");
        println!(
            "live      N={n:>6}  published+acked in {:>8.3?}  subscribed {qos:?} subscriber got \
             {:>6} in {:>8.3?}{}",
            published,
            got.topics,
            got.elapsed,
            if got.stalled { "  [stalled]" } else { "" },
        );
        if got.topics != n {
            short.push(format!("N={n}: {} received", got.topics));
        }
    }
    assert!(
        short.is_empty(),
        "a subscribed wildcard subscriber missed live messages: {}",
        short.join("; ")
    );
}

/// What agents meet (they subscribe to notes at QoS 1): a new QoS 1 subscription gets all 300
/// retained messages, each with RETAIN, where rumqttd 0.20 stopped at its outgoing window of 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_qos1_subscription_gets_every_retained_message() {
    let broker = EmbeddedBroker::start().await.expect("embedded broker");
    let addr = broker.addr();
    let prefix = "anchormq/v1/31337/qos1-all/node";
    publish_retained(addr, "pub-qos1-all", prefix, 300).await;
    let filters = [format!("{prefix}/#")];
    let got = Subscriber::subscribe(addr, "sub-qos1-all", &filters, QoS::AtLeastOnce)
        .await
        .collect(300)
        .await;
    assert!(
        !got.stalled,
        "the subscriber stopped receiving at {}",
        got.topics
    );
    assert_eq!(got.topics, 300, "every retained message");
    assert_eq!(got.retained, 300, "each with RETAIN");
}

/// `stop` closes the clients' connections and frees the port; the other handles see it.
#[tokio::test]
async fn stop_closes_connections_and_the_port() {
    let broker = EmbeddedBroker::start().await.expect("embedded broker");
    let handle = broker.clone();
    let (_client, mut events) = client(broker.addr(), "until-stop");
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) = events.poll().await.expect("connect") {
            break;
        }
    }
    broker.stop().await;
    let ended = tokio::time::timeout(PHASE_LIMIT, async {
        loop {
            if events.poll().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the client's connection outlived stop");
    assert!(
        tokio::net::TcpStream::connect(handle.addr()).await.is_err(),
        "still listening"
    );
    handle.stop().await;
}
