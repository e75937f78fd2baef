//! Bridge benchmarks against a real Anvil, the embedded broker and Mosquitto:
//! propagation latency from a transaction's receipt to its note reaching a subscriber (WebSocket and
//! HTTP polling), and the backfill rate of a fresh bridge over 20,000 events.
//!
//! Run: `cargo bench -p anchormq-bridge --bench propagation` (prints a Markdown table).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use alloy::providers::Provider;
use anchormq_bridge::BridgeSettings;
use anchormq_chain::B256;
use anchormq_chain::bindings::IKeyRegistry;
use anchormq_core::{GroupId, Topics};
use anchormq_localstack::{EmbeddedBroker, Mosquitto, RegistryStack, RunningBridge};

/// Transactions in a burst, and in the isolated run.
const BURST_EVENTS: usize = 1_000;
const ISOLATED_EVENTS: usize = 100;
/// A burst: the next transaction 5 ms after the last receipt (~130 a second): a load test.
const BURST_GAP: Duration = Duration::from_millis(5);
/// Isolated: 200 ms apart, as a person or a device changes memberships; what one change waits for.
const ISOLATED_GAP: Duration = Duration::from_millis(200);
const BACKFILL_EVENTS: usize = 20_000;

fn group(label: &str) -> B256 {
    B256::from(*GroupId::from_label(label).expect("label").as_bytes())
}

/// The broker the bridge publishes to and the observer reads from.
enum Broker {
    Embedded(EmbeddedBroker),
    Mosquitto(Box<Mosquitto>),
}

impl Broker {
    fn url(&self) -> String {
        match self {
            Self::Embedded(broker) => broker.url(),
            Self::Mosquitto(broker) => broker.url(),
        }
    }
}

/// A fresh registry and a broker for its bridges.
struct Stack {
    chain: RegistryStack,
    broker: Broker,
}

async fn stack(mosquitto: bool) -> Stack {
    let broker = if mosquitto {
        Broker::Mosquitto(Box::new(
            Mosquitto::builder()
                .config_line(std::env::var("PROPAGATION_MOSQUITTO_LINE").unwrap_or_default())
                .spawn()
                .await
                .expect("mosquitto"),
        ))
    } else {
        Broker::Embedded(EmbeddedBroker::start().await.expect("broker"))
    };
    Stack {
        chain: RegistryStack::start().await.expect("stack"),
        broker,
    }
}

fn start_bridge(stack: &Stack, rpc: &str, name: &str, poll_ms: u64) -> RunningBridge {
    let settings = BridgeSettings {
        poll_interval_ms: Some(poll_ms),
        ..stack.chain.bridge_settings(rpc, &stack.broker.url(), name)
    };
    stack
        .chain
        .start_bridge(settings.resolve().expect("settings"))
}

async fn latency(
    stack: &Stack,
    rpc: &str,
    label: &str,
    poll_ms: u64,
    (count, gap): (usize, Duration),
) -> [(Duration, Duration, Duration); 2] {
    // Records when the first chunk of each group note arrives.
    let observer = stack.chain.observe(&stack.broker.url());
    let bridge = start_bridge(stack, rpc, &format!("bench-{label}"), poll_ms);
    let admin = &stack.chain.admin;
    let registry = IKeyRegistry::new(stack.chain.deployment.address, admin.provider().clone());
    let topics = Topics::new(&stack.chain.registry());
    let mut receipts = Vec::with_capacity(count);
    for i in 0..count {
        let id = format!("{label}{i}");
        let sent = Instant::now();
        let pending = registry
            .createGroup(group(&id), String::new())
            .send()
            .await
            .expect("send");
        let hash = *pending.tx_hash();
        // The receipt is polled tightly so that the clock starts when the chain has the event.
        loop {
            if admin
                .provider()
                .get_transaction_receipt(hash)
                .await
                .expect("receipt")
                .is_some()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        receipts.push((
            topics.group_note(&GroupId::from_label(&id).expect("id"), 0),
            Instant::now(),
            sent,
        ));
        tokio::time::sleep(gap).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut from_receipt, mut from_send) = loop {
        let seen = observer.arrivals();
        if receipts.iter().all(|(topic, ..)| seen.contains_key(topic)) {
            break receipts
                .iter()
                .map(|(topic, receipt, sent)| {
                    (
                        seen[topic].saturating_duration_since(*receipt),
                        seen[topic].saturating_duration_since(*sent),
                    )
                })
                .unzip::<_, _, Vec<_>, Vec<_>>();
        }
        assert!(Instant::now() < deadline, "notes did not all arrive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    drop(bridge);
    [quantiles(&mut from_receipt), quantiles(&mut from_send)]
}

/// p50, p99 and max.
fn quantiles(samples: &mut [Duration]) -> (Duration, Duration, Duration) {
    samples.sort();
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (pick(0.5), pick(0.99), *samples.last().expect("samples"))
}

async fn backfill(stack: &Stack) -> (usize, Duration) {
    eprintln!("backfill: sending {BACKFILL_EVENTS} transactions");
    stack.chain.burst(0, BACKFILL_EVENTS, 400).await;
    let started = Instant::now();
    eprintln!("backfill: {BACKFILL_EVENTS} events on chain, starting a fresh bridge");
    let bridge = start_bridge(stack, &stack.chain.anvil.http_url(), "bench-backfill", 500);
    while bridge.metrics.events_processed.load(Ordering::Relaxed) < BACKFILL_EVENTS as u64 {
        if bridge.is_finished() {
            panic!("the bridge stopped: {:?}", bridge.outcome().await);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    drop(bridge);
    (BACKFILL_EVENTS, elapsed)
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    // PROPAGATION_BACKFILL_ONLY=1 skips the latency runs.
    let latency_runs = std::env::var_os("PROPAGATION_BACKFILL_ONLY").is_none();
    // PROPAGATION_ONLY=word runs only the latency rows whose description contains it
    // (e.g. "Mosquitto", "1000", "WebSocket"), and no backfill.
    let only = std::env::var("PROPAGATION_ONLY").ok();
    // From the receipt: when a client polling for it (every 1 ms) first sees it, which can be after
    // the note arrived (counted as 0). From sending: just before `eth_sendTransaction`, as an outside
    // observer measures, including mining.
    println!(
        "| measurement | broker | transactions | p50 | p99 | max | from sending: p50 | p99 | max |"
    );
    println!("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for mosquitto in [false, true].into_iter().filter(|_| latency_runs) {
        let name = if mosquitto { "Mosquitto" } else { "embedded" };
        for (load, shape) in [
            (
                format!("{ISOLATED_EVENTS}, 200 ms apart"),
                (ISOLATED_EVENTS, ISOLATED_GAP),
            ),
            (
                format!("{BURST_EVENTS}, 5 ms apart"),
                (BURST_EVENTS, BURST_GAP),
            ),
        ] {
            for (transport, http, poll_ms) in [
                ("WebSocket newHeads", false, 500),
                ("HTTP polling every 100 ms", true, 100),
            ] {
                let row = format!("{transport}, {name}, {load}");
                if only
                    .as_ref()
                    .is_some_and(|only| !row.contains(only.as_str()))
                {
                    continue;
                }
                let stack = stack(mosquitto).await;
                let url = if http {
                    stack.chain.anvil.http_url()
                } else {
                    stack.chain.anvil.ws_url()
                };
                eprintln!("latency: {transport}, {name}, {load}");
                let label = if http { "http" } else { "ws" };
                let [(p50, p99, max), (s50, s99, smax)] =
                    latency(&stack, &url, label, poll_ms, shape).await;
                println!(
                    "| propagation, {transport} | {name} | {load} | {p50:.1?} | {p99:.1?} | {max:.1?} | {s50:.1?} | {s99:.1?} | {smax:.1?} |"
                );
            }
        }
    }
    if only.is_some() {
        return;
    }
    let fill_stack = stack(false).await;
    let (events, took) = backfill(&fill_stack).await;
    println!();
    println!(
        "backfill: {events} events in {:.2?} = {:.0} events/s (fresh bridge, HTTP, events feed on)",
        took,
        events as f64 / took.as_secs_f64()
    );
}
