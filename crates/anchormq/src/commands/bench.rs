//! `anchormq bench` (hidden): end-to-end throughput and latency of encrypted pub/sub against plain
//! MQTT through the same broker in the same run, on the paper fixture's local stack.

use std::time::{Duration, Instant};

use anchormq_agent::{Agent, AgentConfig, BURST, PublishOptions, QoS, Received};
use anchormq_core::{GroupId, NodeId};
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
    /// Run only these modes (for profiling one of them); default all three.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Mode>,
    /// Publishers sending at once to the one reader (1111, then 1113 and 1114, which join
    /// hsu0001 for the run), each its share of the messages.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=3))]
    pub senders: u16,
    /// The reader's opening lanes (default: the agent's, one a core up to 4).
    #[arg(long)]
    pub open_lanes: Option<usize>,
}

/// The fixture's nodes that publish, in order; all but the first join hsu0001 for the run.
const WRITERS: [&str; 3] = ["1111", "1113", "1114"];

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
            ..StackOptions::default()
        })
        .await?;
        let senders = usize::from(self.senders);
        if senders > 1 {
            let group = GroupId::from_label("hsu0001").map_err(|e| eyre!("{e}"))?;
            let joining = WRITERS[1..senders]
                .iter()
                .map(|id| NodeId::from_label(id).map_err(|e| eyre!("{e}")))
                .collect::<eyre::Result<Vec<_>>>()?;
            stack
                .operator_client()
                .await?
                .add_members(group, &joining)
                .await
                .wrap_err("adding the extra senders to hsu0001")?;
        }
        stack.bridge_caught_up(Duration::from_secs(30)).await?;
        println!(
            "broker {} ({}), {} B payloads, {} messages per throughput run from {senders} \
             sender(s), {} per latency run",
            stack.broker.display_url(),
            if stack.embedded_broker {
                "embedded"
            } else {
                "external"
            },
            self.payload,
            self.messages,
            self.pings
        );
        println!();
        println!(
            "Latency: one message at a time, each signed. Throughput: plain publishes one by one; \
             anchormq either signs each message (`send`) or seals bursts of {BURST} under one \
             signature (`send_many`)."
        );
        println!();
        println!("| QoS | mode | msgs/s | received | p50 latency | p99 latency |");
        println!("| --- | --- | ---: | ---: | ---: | ---: |");
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            let q = if qos == QoS::AtMostOnce { 0 } else { 1 };
            let plain = self.run(&stack, qos, Mode::Plain).await?;
            let each = self.run(&stack, qos, Mode::SignedEach).await?;
            let bursts = self.run(&stack, qos, Mode::Bursts).await?;
            let (Some(plain), Some(each), Some(bursts)) = (plain, each, bursts) else {
                continue;
            };
            for (mode, r) in [
                ("plain MQTT", &plain),
                ("anchormq, a signature per message", &each),
                ("anchormq, bursts", &bursts),
            ] {
                println!(
                    "| {q} | {mode} | {:.0} | {}/{} | {:.0} us | {:.0} us |",
                    r.per_second, r.received, self.messages, r.p50_us, r.p99_us
                );
            }
            for (mode, r) in [("per message", &each), ("bursts", &bursts)] {
                println!(
                    "| {q} | ratio anchormq ({mode})/plain | {:.2} | | {:.2}x | {:.2}x |",
                    r.per_second / plain.per_second,
                    r.p50_us / plain.p50_us,
                    r.p99_us / plain.p99_us
                );
            }
        }
        stack.stop().await
    }

    async fn run(
        &self,
        stack: &LocalStack,
        qos: QoS,
        mode: Mode,
    ) -> eyre::Result<Option<RunResult>> {
        if !self.only.is_empty() && !self.only.contains(&mode) {
            return Ok(None);
        }
        let sealed = mode != Mode::Plain;
        let shutdown = CancellationToken::new();
        let _stop = shutdown.clone().drop_guard();
        let topic = format!(
            "hsu/0001/bench-{}-{}",
            match mode {
                Mode::Plain => "plain",
                Mode::SignedEach => "sealed",
                Mode::Bursts => "bursts",
            },
            if qos == QoS::AtMostOnce { 0 } else { 1 }
        );
        let epoch = Instant::now();
        let stamp = move |buf: &mut Vec<u8>| {
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
        let mut senders: Vec<BenchSender> = Vec::new();
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
            let mut reader_config = agent("1112")?;
            if let Some(lanes) = self.open_lanes {
                reader_config.open_lanes = lanes;
            }
            let reader = Agent::start(reader_config, shutdown.child_token()).await?;
            let mut sub = reader.subscribe(&[topic.as_str()]).await?;
            tokio::spawn(async move {
                while let Some(item) = sub.recv().await {
                    if let Received::Message(m) = item
                        && let Some(latency) = sent_at(&m.payload)
                    {
                        let _ = tx.send(latency);
                    }
                }
            });
            for id in &WRITERS[..usize::from(self.senders)] {
                let writer = Agent::start(agent(id)?, shutdown.child_token()).await?;
                let publisher = writer
                    .publisher(
                        &topic,
                        PublishOptions {
                            qos,
                            ..PublishOptions::default()
                        },
                    )
                    .await?;
                senders.push(BenchSender::Sealed {
                    publisher,
                    agent: writer,
                });
            }
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
                    if let LinkEvent::Message(m) = event
                        && let Some(latency) = sent_at(&m.payload)
                    {
                        let _ = tx.send(latency);
                    }
                }
            });
            for n in 0..self.senders {
                let mut writer_config =
                    stack.broker_for(&format!("bench-plain-pub-{n}-{}", std::process::id()));
                writer_config.inflight = 1000;
                let (writer, mut writer_events) =
                    Link::start(&writer_config, shutdown.child_token())?;
                // The writer's events must be drained or its link stalls.
                tokio::spawn(async move { while writer_events.recv().await.is_some() {} });
                senders.push(BenchSender::Plain {
                    link: writer,
                    topic: topic.clone(),
                    qos,
                    last: 0,
                });
            }
        }
        let mut payload = vec![0x5au8; self.payload];
        // Latency: one message at a time, each awaited at the subscriber.
        let mut latencies = Vec::with_capacity(self.pings);
        for _ in 0..self.pings {
            stamp(&mut payload);
            senders[0].send(payload.clone()).await?;
            if let Ok(Some(latency)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await
            {
                latencies.push(latency);
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
        let burst = if mode == Mode::Bursts { BURST } else { 1 };
        let count = senders.len();
        let mut sending = Vec::new();
        for (i, mut sender) in senders.into_iter().enumerate() {
            // each its share, from its own task
            let mut left = self.messages / count + usize::from(i < self.messages % count);
            let mut payload = payload.clone();
            sending.push(tokio::spawn(async move {
                while left > 0 {
                    let n = left.min(burst);
                    let payloads: Vec<Vec<u8>> = (0..n)
                        .map(|_| {
                            stamp(&mut payload);
                            payload.clone()
                        })
                        .collect();
                    sender.send_all(payloads).await?;
                    left -= n;
                }
                sender.flush().await.wrap_err("flushing")?;
                // kept until every sender is done: dropping an agent stops it
                eyre::Ok(sender)
            }));
        }
        let mut done = Vec::new();
        for task in sending {
            done.push(task.await.wrap_err("a sender failed")??);
        }
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
        let result = RunResult {
            received,
            per_second: if elapsed > 0.0 {
                received as f64 / elapsed
            } else {
                0.0
            },
            p50_us,
            p99_us,
        };
        if !self.only.is_empty() {
            println!("| {mode:?} | QoS {qos:?} | {result:?} |");
        }
        Ok(Some(result))
    }
}

/// What one run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Plain MQTT through the same link.
    Plain,
    /// anchormq, one signature per message.
    SignedEach,
    /// anchormq, bursts under one signature.
    Bursts,
}

/// The publishing side of one run.
enum BenchSender {
    Sealed {
        publisher: anchormq_agent::Publisher,
        agent: Agent,
    },
    Plain {
        link: Link,
        topic: String,
        qos: QoS,
        last: u64,
    },
}

impl BenchSender {
    async fn send(&mut self, payload: Vec<u8>) -> eyre::Result<()> {
        match self {
            Self::Sealed { publisher, .. } => {
                publisher.send(&payload).await?;
            }
            Self::Plain {
                link,
                topic,
                qos,
                last,
            } => {
                if let Some(seq) = link.publish(topic.clone(), payload, *qos, false).await? {
                    *last = seq;
                }
            }
        }
        Ok(())
    }

    /// Sends `payloads` in order: a sealed sender seals them as one burst.
    async fn send_all(&mut self, payloads: Vec<Vec<u8>>) -> eyre::Result<()> {
        match self {
            Self::Sealed { publisher, .. } if payloads.len() > 1 => {
                publisher.send_many(&payloads).await?;
            }
            _ => {
                for payload in payloads {
                    self.send(payload).await?;
                }
            }
        }
        Ok(())
    }

    /// Waits for the broker's acknowledgement of every QoS 1 message sent.
    async fn flush(&self) -> eyre::Result<()> {
        match self {
            Self::Sealed { agent, .. } => agent.flush().await?,
            Self::Plain { link, last, .. } => {
                if *last > 0 {
                    link.acked(*last).await?;
                }
            }
        }
        Ok(())
    }
}
