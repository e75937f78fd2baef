//! `anchormq bench` (hidden): end-to-end throughput and latency of encrypted pub/sub against plain
//! MQTT through the same broker in the same run, on the paper fixture's local stack.

use std::time::{Duration, Instant};

use anchormq_agent::{Agent, AgentConfig, QoS, Received};
use anchormq_mqtt::{Link, LinkEvent};
use clap::Args;
use eyre::{WrapErr, eyre};
use tokio_util::sync::CancellationToken;

use crate::commands::stack::{LocalStack, StackOptions};
use crate::context::Context;

/// `bench`.
#[derive(Debug, Args)]
pub struct BenchCommand {
    /// Messages per throughput run.
    #[arg(long, default_value_t = 5000)]
    pub messages: usize,
    /// Messages per latency run (sent one at a time).
    #[arg(long, default_value_t = 300)]
    pub pings: usize,
    /// Payload size in bytes (at least 8).
    #[arg(long, default_value_t = 256)]
    pub payload: usize,
}

#[derive(Debug)]
struct RunResult {
    received: usize,
    per_second: f64,
    p50_us: f64,
    p99_us: f64,
}

impl BenchCommand {
    /// Runs plain and encrypted at QoS 0 and 1 and prints a Markdown table.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        if self.payload < 8 {
            return Err(eyre!("--payload must be at least 8 bytes"));
        }
        let external = match &context.globals().broker {
            Some(_) => Some(context.broker_config("anchormq-bench")?),
            None => None,
        };
        let stack = LocalStack::start(StackOptions {
            paper: true,
            broker: external,
        })
        .await?;
        stack.bridge_caught_up(Duration::from_secs(30)).await?;
        println!(
            "broker {} ({}), {} B payloads, {} messages per throughput run, {} per latency run",
            stack.broker.display_url(),
            if stack.embedded_broker {
                "embedded rumqttd"
            } else {
                "external"
            },
            self.payload,
            self.messages,
            self.pings
        );
        println!();
        println!("| QoS | mode | msgs/s | received | p50 latency | p99 latency |");
        println!("| --- | --- | ---: | ---: | ---: | ---: |");
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            let q = if qos == QoS::AtMostOnce { 0 } else { 1 };
            let plain = self.run(&stack, qos, false).await?;
            let sealed = self.run(&stack, qos, true).await?;
            for (mode, r) in [
                ("plain MQTT", &plain),
                ("anchormq (sealed + signed)", &sealed),
            ] {
                println!(
                    "| {q} | {mode} | {:.0} | {}/{} | {:.0} us | {:.0} us |",
                    r.per_second, r.received, self.messages, r.p50_us, r.p99_us
                );
            }
            println!(
                "| {q} | ratio anchormq/plain | {:.2} | | {:.2}x | {:.2}x |",
                sealed.per_second / plain.per_second,
                sealed.p50_us / plain.p50_us,
                sealed.p99_us / plain.p99_us
            );
        }
        stack.stop().await
    }

    async fn run(&self, stack: &LocalStack, qos: QoS, sealed: bool) -> eyre::Result<RunResult> {
        let shutdown = CancellationToken::new();
        let _stop = shutdown.clone().drop_guard();
        let topic = format!(
            "hsu/0001/bench-{}-{}",
            if sealed { "sealed" } else { "plain" },
            if qos == QoS::AtMostOnce { 0 } else { 1 }
        );
        let epoch = Instant::now();
        let stamp = |buf: &mut Vec<u8>| {
            let nanos = epoch.elapsed().as_nanos() as u64;
            buf[..8].copy_from_slice(&nanos.to_be_bytes());
        };
        let sent_at = move |payload: &[u8]| -> Option<Duration> {
            let bytes: [u8; 8] = payload.get(..8)?.try_into().ok()?;
            Some(
                epoch
                    .elapsed()
                    .saturating_sub(Duration::from_nanos(u64::from_be_bytes(bytes))),
            )
        };
        // Receive side: a channel of latencies, whatever the mode.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
        let send: Box<
            dyn Fn(
                    Vec<u8>,
                )
                    -> std::pin::Pin<Box<dyn std::future::Future<Output = eyre::Result<()>> + Send>>
                + Send
                + Sync,
        >;
        let flush: Box<
            dyn Fn()
                    -> std::pin::Pin<Box<dyn std::future::Future<Output = eyre::Result<()>> + Send>>
                + Send
                + Sync,
        >;
        if sealed {
            let agent = |id: &str| -> eyre::Result<AgentConfig> {
                let (node, key) = stack.fixture_node(id)?;
                let mut config = AgentConfig::new(
                    stack.broker_for(&format!("bench-{id}-{}", std::process::id())),
                    stack.registry(),
                    stack.bridge_key.public_key(),
                    node,
                    key,
                );
                config.qos = qos;
                config.subscription_buffer = 65_536;
                config.broker.inflight = 1000;
                Ok(config)
            };
            let reader = Agent::start(agent("1112")?, shutdown.child_token()).await?;
            let mut sub = reader.subscribe(&[topic.as_str()]).await?;
            tokio::spawn(async move {
                while let Some(item) = sub.recv().await {
                    if let Received::Message(m) = item {
                        if let Some(latency) = sent_at(&m.payload) {
                            let _ = tx.send(latency);
                        }
                    }
                }
            });
            let writer = Agent::start(agent("1111")?, shutdown.child_token()).await?;
            let publisher = writer.publisher(&topic, qos, false, None).await?;
            send = Box::new(move |payload| {
                let publisher = publisher.clone();
                Box::pin(async move {
                    publisher.send(&payload).await?;
                    Ok(())
                })
            });
            flush = Box::new(move || {
                let writer = writer.clone();
                Box::pin(async move { Ok(writer.flush().await?) })
            });
        } else {
            let mut reader_config =
                stack.broker_for(&format!("bench-plain-sub-{}", std::process::id()));
            reader_config.inflight = 1000;
            let (reader, mut events) = Link::start(&reader_config, shutdown.child_token())?;
            reader.subscribe(topic.clone(), qos).await?;
            loop {
                match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
                    Ok(Some(LinkEvent::Subscribed)) => break,
                    Ok(Some(_)) => {}
                    _ => return Err(eyre!("plain subscriber could not subscribe")),
                }
            }
            tokio::spawn(async move {
                let _keep = reader;
                while let Some(event) = events.recv().await {
                    if let LinkEvent::Message(m) = event {
                        if let Some(latency) = sent_at(&m.payload) {
                            let _ = tx.send(latency);
                        }
                    }
                }
            });
            let mut writer_config =
                stack.broker_for(&format!("bench-plain-pub-{}", std::process::id()));
            writer_config.inflight = 1000;
            let (writer, _writer_events) = Link::start(&writer_config, shutdown.child_token())?;
            // The writer's events must be drained or its link stalls.
            let mut writer_events = _writer_events;
            tokio::spawn(async move { while writer_events.recv().await.is_some() {} });
            let topic_for_send = topic.clone();
            let writer_for_send = writer.clone();
            let last = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let last_for_send = last.clone();
            send = Box::new(move |payload| {
                let writer = writer_for_send.clone();
                let topic = topic_for_send.clone();
                let last = last_for_send.clone();
                Box::pin(async move {
                    if let Some(seq) = writer.publish(topic, payload, qos, false).await? {
                        last.store(seq, std::sync::atomic::Ordering::Release);
                    }
                    Ok(())
                })
            });
            flush = Box::new(move || {
                let writer = writer.clone();
                let last = last.clone();
                Box::pin(async move {
                    let seq = last.load(std::sync::atomic::Ordering::Acquire);
                    if seq > 0 {
                        writer.acked(seq).await?;
                    }
                    Ok(())
                })
            });
        }
        let mut payload = vec![0x5au8; self.payload];
        // Latency: one message at a time, each awaited at the subscriber.
        let mut latencies = Vec::with_capacity(self.pings);
        for _ in 0..self.pings {
            stamp(&mut payload);
            send(payload.clone()).await?;
            match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
                Ok(Some(latency)) => latencies.push(latency),
                _ => {}
            }
        }
        latencies.sort();
        let pick = |q: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
                .map_or(f64::NAN, |d| d.as_secs_f64() * 1e6)
        };
        let (p50_us, p99_us) = (pick(0.5), pick(0.99));
        // Throughput: a flood, timed from the first send to the last receipt.
        let started = Instant::now();
        for _ in 0..self.messages {
            stamp(&mut payload);
            send(payload.clone()).await?;
        }
        flush().await.wrap_err("flushing")?;
        let mut received = 0;
        let mut last_receipt = started;
        while received < self.messages {
            match tokio::time::timeout(Duration::from_secs(3), rx.recv()).await {
                Ok(Some(_)) => {
                    received += 1;
                    last_receipt = Instant::now();
                }
                _ => break,
            }
        }
        let elapsed = last_receipt.duration_since(started).as_secs_f64();
        Ok(RunResult {
            received,
            per_second: if elapsed > 0.0 {
                received as f64 / elapsed
            } else {
                0.0
            },
            p50_us,
            p99_us,
        })
    }
}
