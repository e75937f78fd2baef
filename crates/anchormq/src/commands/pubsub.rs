//! `anchormq pub` and `anchormq sub`: the node agent behind a mosquitto_pub/mosquitto_sub-like face.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

use anchormq_agent::{Agent, AgentConfig, PublishOptions, QoS, Received, ReceivedMessage};
use anchormq_core::{GroupId, NodeId};
use clap::Args;
use eyre::{WrapErr, bail, eyre};
use tokio_util::sync::CancellationToken;

use crate::context::{Context, core_registry, load_node_key};

/// Who the agent is: node ID and key file.
#[derive(Debug, Clone, Args)]
pub struct Identity {
    /// This node's ID.
    #[arg(long = "as", value_name = "NODE")]
    pub node: NodeId,
    /// This node's key file.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Seconds to wait for the key notes a command needs.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub wait: u64,
}

fn parse_qos(value: &str) -> Result<QoS, String> {
    match value {
        "0" => Ok(QoS::AtMostOnce),
        "1" => Ok(QoS::AtLeastOnce),
        "2" => Err("QoS 2 is not supported; use 0 or 1".into()),
        other => Err(format!("{other:?} is not a QoS level (0 or 1)")),
    }
}

/// Starts an agent for `identity` on the configured broker and registry.
pub async fn start_agent(
    context: &Context,
    identity: &Identity,
    role: &str,
    qos: QoS,
    shutdown: CancellationToken,
) -> eyre::Result<Agent> {
    let key = load_node_key(&identity.key)?;
    let deployment = context.deployment().await?;
    let broker = context.broker_config(format!(
        "anchormq-{role}-{}-{}",
        identity.node.topic_segment(),
        std::process::id()
    ))?;
    let mut config = AgentConfig::new(
        broker,
        core_registry(&deployment),
        context.bridge_public_key()?,
        identity.node,
        key,
    );
    config.wait_timeout = Duration::from_secs(identity.wait.max(1));
    config.qos = qos;
    config.trust = context.trust();
    Agent::start(config, shutdown)
        .await
        .wrap_err("cannot start the agent")
}

/// `pub`.
#[derive(Debug, Args)]
pub struct PubCommand {
    /// Who sends.
    #[command(flatten)]
    pub identity: Identity,
    /// Group to seal for (default: the one group whose topic filter matches the topic).
    #[arg(long)]
    pub group: Option<GroupId>,
    /// Topic to publish to.
    #[arg(short = 't', long)]
    pub topic: String,
    /// The message.
    #[arg(short = 'm', long, group = "source")]
    pub message: Option<String>,
    /// Send the content of a file as one message.
    #[arg(short = 'f', long, group = "source", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Send each line of standard input as a message.
    #[arg(short = 'l', long, group = "source")]
    pub lines: bool,
    /// QoS level, 0 or 1.
    #[arg(short = 'q', long, default_value = "0", value_parser = parse_qos)]
    pub qos: QoS,
    /// Ask the broker to retain the message.
    #[arg(short = 'r', long)]
    pub retain: bool,
}

impl PubCommand {
    /// Seals and publishes, then waits until the broker has every message.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        if self.message.is_none() && self.file.is_none() && !self.lines {
            bail!("say what to send: -m MESSAGE, -f FILE or -l (lines of standard input)");
        }
        let file_payload = match &self.file {
            Some(path) => Some(
                std::fs::read(path)
                    .wrap_err_with(|| format!("cannot read {} (-f)", path.display()))?,
            ),
            None => None,
        };
        let shutdown = CancellationToken::new();
        let agent = start_agent(context, &self.identity, "pub", self.qos, shutdown.clone()).await?;
        let publisher = agent
            .publisher(
                &self.topic,
                PublishOptions {
                    qos: self.qos,
                    retain: self.retain,
                    group: self.group,
                },
            )
            .await
            .wrap_err_with(|| format!("cannot publish on {:?}", self.topic))?;
        let mut sent = 0u64;
        if let Some(message) = &self.message {
            publisher.send(message.as_bytes()).await?;
            sent += 1;
        } else if let Some(payload) = &file_payload {
            publisher.send(payload).await?;
            sent += 1;
        } else {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<String>>(64);
            std::thread::spawn(move || {
                for line in std::io::stdin().lock().lines() {
                    if tx.blocking_send(line).is_err() {
                        return;
                    }
                }
            });
            while let Some(line) = rx.recv().await {
                let line = line.wrap_err("reading standard input")?;
                publisher.send(line.as_bytes()).await?;
                sent += 1;
            }
        }
        agent.flush().await.wrap_err("waiting for the broker")?;
        // QoS 0 has no acknowledgement: a subscription round trip on the same connection proves
        // the broker has read everything sent before it.
        if self.qos == QoS::AtMostOnce {
            agent
                .subscribe(&[format!("anchormq-barrier/{}", std::process::id())])
                .await
                .wrap_err("waiting for the broker")?;
        }
        tracing::info!(sent, group = %publisher.group(), "published");
        shutdown.cancel();
        Ok(())
    }
}

/// `sub`.
#[derive(Debug, Args)]
pub struct SubCommand {
    /// Who reads.
    #[command(flatten)]
    pub identity: Identity,
    /// Topic filter (repeatable).
    #[arg(short = 't', long = "topic", required = true, value_name = "FILTER")]
    pub filters: Vec<String>,
    /// Exit after this many readable messages.
    #[arg(short = 'C', long, value_name = "COUNT")]
    pub count: Option<u64>,
    /// Print the topic before each payload.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// One JSON object per message: topic, group, sender, epoch, seq, payload.
    #[arg(long)]
    pub json: bool,
    /// QoS of the subscription, 0 or 1.
    #[arg(short = 'q', long, default_value = "1", value_parser = parse_qos)]
    pub qos: QoS,
    /// Give up after this many seconds (exit code 1 when COUNT was not reached).
    #[arg(short = 'W', long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
}

impl SubCommand {
    /// Prints readable messages; reports unreadable ones on stderr and carries on.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        let shutdown = CancellationToken::new();
        crate::commands::bridge::spawn_signal_handler(shutdown.clone());
        let agent = start_agent(context, &self.identity, "sub", self.qos, shutdown.clone()).await?;
        let mut subscription = agent
            .subscribe(&self.filters)
            .await
            .wrap_err("cannot subscribe")?;
        eprintln!(
            "subscribed to {} as node {}",
            self.filters.join(", "),
            self.identity.node
        );
        let deadline = self
            .timeout
            .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
        let mut readable = 0u64;
        let mut stdout = std::io::stdout();
        loop {
            if self.count.is_some_and(|c| readable >= c) {
                break;
            }
            let next = async {
                match deadline {
                    Some(at) => tokio::time::timeout_at(at, subscription.recv()).await.ok(),
                    None => Some(subscription.recv().await),
                }
            };
            let item = tokio::select! {
                item = next => item,
                () = shutdown.cancelled() => break,
            };
            match item {
                None => {
                    return Err(eyre!(
                        "timed out after {} s with {readable} readable message(s){}",
                        self.timeout.unwrap_or_default(),
                        self.count
                            .map_or_else(String::new, |c| format!(" of {c} wanted"))
                    ));
                }
                Some(None) => {
                    if shutdown.is_cancelled() {
                        break;
                    }
                    return Err(eyre!("the agent stopped"));
                }
                Some(Some(Received::Message(message))) => {
                    readable += 1;
                    let line = self.format(&message);
                    stdout
                        .write_all(&line)
                        .wrap_err("writing to standard output")?;
                    stdout.flush().wrap_err("writing to standard output")?;
                }
                Some(Some(Received::Unreadable(unreadable))) => {
                    eprintln!(
                        "cannot read message on {}: {}",
                        unreadable.topic, unreadable.reason
                    );
                }
            }
        }
        shutdown.cancel();
        Ok(())
    }

    fn format(&self, message: &ReceivedMessage) -> Vec<u8> {
        if self.json {
            let mut value = serde_json::json!({
                "topic": message.topic,
                "group": message.group.to_string(),
                "sender": message.sender.to_string(),
                "epoch": message.epoch,
                "seq": message.seq,
                "retained": message.retain,
            });
            match std::str::from_utf8(&message.payload) {
                Ok(text) => value["payload"] = text.into(),
                Err(_) => value["payload_hex"] = hex::encode(&message.payload).into(),
            }
            let mut line = value.to_string().into_bytes();
            line.push(b'\n');
            line
        } else {
            let mut line = Vec::new();
            if self.verbose {
                line.extend_from_slice(message.topic.as_bytes());
                line.push(b' ');
            }
            line.extend_from_slice(&message.payload);
            line.push(b'\n');
            line
        }
    }
}
