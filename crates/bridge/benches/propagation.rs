//! Bridge benchmarks against a real Anvil and the embedded broker:
//! propagation latency from a transaction's receipt to its note reaching a subscriber (WebSocket and
//! HTTP polling), and the backfill rate of a fresh bridge over 20,000 events.
//!
//! Run: `cargo bench -p anchormq-bridge --bench propagation` (prints a Markdown table).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::providers::Provider;
use anchormq_bridge::{BridgeSettings, Metrics};
use anchormq_chain::bindings::IKeyRegistry;
use anchormq_chain::{B256, Deployment, PrivateKeySigner, RegistryClient};
use anchormq_core::{GroupId, NodeSecretKey, Registry, Topics};
use anchormq_localstack::{Anvil, AnvilRpc, EmbeddedBroker, deploy_registry};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

const LATENCY_EVENTS: usize = 1_000;
const BACKFILL_EVENTS: usize = 20_000;

fn group(label: &str) -> B256 {
    B256::from(*GroupId::from_label(label).expect("label").as_bytes())
}

struct Stack {
    anvil: Anvil,
    deployment: Deployment,
    client: RegistryClient,
    broker: EmbeddedBroker,
    dir: tempfile::TempDir,
}

async fn stack() -> Stack {
    let anvil = Anvil::spawn().await.expect("anvil");
    let deployed = deploy_registry(&anvil, anvil.dev_accounts()[0].private_key())
        .await
        .expect("deploy");
    let deployment = deployed;
    let signer: PrivateKeySigner = anvil.dev_accounts()[0].private_key().parse().expect("key");
    let client = RegistryClient::connect(&anvil.http_url(), deployment, Some(signer))
        .await
        .expect("client");
    let broker = EmbeddedBroker::start().await.expect("broker");
    Stack {
        anvil,
        deployment,
        client,
        broker,
        dir: tempfile::tempdir().expect("dir"),
    }
}

type BridgeTask = tokio::task::JoinHandle<Result<(), anchormq_bridge::BridgeError>>;

fn start_bridge(
    stack: &Stack,
    rpc: &str,
    name: &str,
    poll_ms: u64,
) -> (CancellationToken, Arc<Metrics>, BridgeTask) {
    let config = BridgeSettings {
        rpc: Some(rpc.to_owned()),
        registry: Some(format!("{:#x}", stack.deployment.address)),
        chain_id: Some(stack.deployment.chain_id),
        deploy_block: Some(stack.deployment.deploy_block),
        broker: Some(stack.broker.url()),
        client_id: Some(name.to_owned()),
        key_file: Some(stack.dir.path().join("unused")),
        checkpoint: Some(stack.dir.path().join(format!("{name}.json"))),
        poll_interval_ms: Some(poll_ms),
        ..BridgeSettings::default()
    }
    .resolve()
    .expect("settings");
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(Metrics::default());
    let key = NodeSecretKey::generate(&mut rand_core::OsRng);
    let task = tokio::spawn(anchormq_bridge::run(
        config,
        key,
        metrics.clone(),
        shutdown.clone(),
    ));
    (shutdown, metrics, task)
}

/// Records when the first chunk of each group note arrives.
fn observe(stack: &Stack) -> Arc<Mutex<HashMap<String, Instant>>> {
    let registry = Registry {
        chain_id: stack.deployment.chain_id,
        address: stack.deployment.address.0.0,
    };
    let filter = format!("{}/group/+/0", Topics::new(&registry).prefix());
    let mut options = MqttOptions::new("bench-observer", "127.0.0.1", stack.broker.port());
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let arrivals = Arc::new(Mutex::new(HashMap::new()));
    let seen = arrivals.clone();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    client
                        .try_subscribe(filter.clone(), QoS::AtLeastOnce)
                        .expect("subscribe");
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    seen.lock()
                        .expect("lock")
                        .entry(p.topic)
                        .or_insert_with(Instant::now);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    arrivals
}

async fn latency(
    stack: &Stack,
    rpc: &str,
    label: &str,
    poll_ms: u64,
) -> (Duration, Duration, Duration) {
    let arrivals = observe(stack);
    let (shutdown, _, _task) = start_bridge(stack, rpc, &format!("bench-{label}"), poll_ms);
    let registry = IKeyRegistry::new(stack.deployment.address, stack.client.provider().clone());
    let registry_id = Registry {
        chain_id: stack.deployment.chain_id,
        address: stack.deployment.address.0.0,
    };
    let topics = Topics::new(&registry_id);
    let mut receipts = Vec::with_capacity(LATENCY_EVENTS);
    for i in 0..LATENCY_EVENTS {
        let id = format!("{label}{i}");
        let pending = registry
            .createGroup(group(&id), String::new())
            .send()
            .await
            .expect("send");
        let hash = *pending.tx_hash();
        // The receipt is polled tightly so that the clock starts when the chain has the event.
        loop {
            if stack
                .client
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
        ));
        // Spread the events out so each one is a separate propagation, not a batch.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut samples = loop {
        let seen = arrivals.lock().expect("lock").clone();
        if receipts.iter().all(|(topic, _)| seen.contains_key(topic)) {
            break receipts
                .iter()
                .map(|(topic, at)| seen[topic].saturating_duration_since(*at))
                .collect::<Vec<_>>();
        }
        assert!(Instant::now() < deadline, "notes did not all arrive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    shutdown.cancel();
    samples.sort();
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (pick(0.5), pick(0.99), *samples.last().expect("samples"))
}

async fn backfill(stack: &Stack) -> (usize, Duration) {
    let provider = stack.client.provider().clone();
    let registry = IKeyRegistry::new(stack.deployment.address, provider.clone());
    let rpc = stack.anvil.rpc().expect("rpc");
    rpc.call("evm_setAutomine", serde_json::json!([false]))
        .await
        .expect("automine off");
    let sender = stack.client.sender().expect("sender");
    let mut nonce = provider
        .get_transaction_count(sender)
        .pending()
        .await
        .expect("nonce");
    for i in 0..BACKFILL_EVENTS {
        let _pending = registry
            .createGroup(group(&format!("fill{i}")), String::new())
            .nonce(nonce)
            .gas(200_000)
            .max_fee_per_gas(20_000_000_000)
            .max_priority_fee_per_gas(1)
            .send()
            .await
            .expect("send");
        nonce += 1;
        if (i + 1) % 5_000 == 0 {
            eprintln!("backfill: {} transactions sent", i + 1);
        }
        if (i + 1) % 400 == 0 {
            rpc.call("evm_mine", serde_json::json!([]))
                .await
                .expect("mine");
        }
    }
    rpc.call("evm_mine", serde_json::json!([]))
        .await
        .expect("mine");
    rpc.call("evm_setAutomine", serde_json::json!([true]))
        .await
        .expect("automine on");
    let started = Instant::now();
    eprintln!("backfill: {BACKFILL_EVENTS} events on chain, starting a fresh bridge");
    let (shutdown, metrics, task) =
        start_bridge(stack, &stack.anvil.http_url(), "bench-backfill", 500);
    while metrics.events_processed.load(Ordering::Relaxed) < BACKFILL_EVENTS as u64 {
        if task.is_finished() {
            panic!("the bridge stopped: {:?}", task.await);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    (BACKFILL_EVENTS, elapsed)
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let ws_stack = stack().await;
    eprintln!("latency over WebSocket");
    let ws = latency(&ws_stack, &ws_stack.anvil.ws_url(), "ws", 500).await;
    let http_stack = stack().await;
    eprintln!("latency over HTTP polling");
    let http = latency(&http_stack, &http_stack.anvil.http_url(), "http", 100).await;
    let fill_stack = stack().await;
    let (events, took) = backfill(&fill_stack).await;
    println!("| measurement | p50 | p99 | max |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| propagation, WebSocket newHeads ({LATENCY_EVENTS} events) | {:.1?} | {:.1?} | {:.1?} |",
        ws.0, ws.1, ws.2
    );
    println!(
        "| propagation, HTTP polling every 100 ms ({LATENCY_EVENTS} events) | {:.1?} | {:.1?} | {:.1?} |",
        http.0, http.1, http.2
    );
    println!();
    println!(
        "backfill: {events} events in {:.2?} = {:.0} events/s (fresh bridge, HTTP, events feed on)",
        took,
        events as f64 / took.as_secs_f64()
    );
}
