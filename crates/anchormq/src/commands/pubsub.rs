//! `anchormq pub` and `anchormq sub`: the node agent behind a mosquitto_pub/mosquitto_sub-like face.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anchormq_agent::{
    Agent, AgentConfig, AgentError, Guard, GuardRule, Outcome, PublishOptions, QoS, Received,
    ReceivedMessage,
};
use anchormq_core::{GroupId, NodeId};
use clap::Args;
use eyre::{WrapErr, bail, eyre};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::ChecksFailed;
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
    /// MQTT client ID (default `anchormq-<pub|sub>-<node>-<pid>`). Needed for a persistent session.
    #[arg(short = 'i', long = "id", value_name = "CLIENT_ID")]
    pub client_id: Option<String>,
    /// Keep the MQTT session (clean session off, like mosquitto_sub -c): the broker queues QoS 1
    /// messages for this client ID while it or the client is away, and delivers them on reconnect.
    #[arg(short = 'c', long = "disable-clean-session", requires = "client_id")]
    pub persistent: bool,
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
    guard: Guard,
    shutdown: CancellationToken,
) -> eyre::Result<Agent> {
    let key = load_node_key(&identity.key)?;
    let deployment = context.deployment().await?;
    let client_id = identity.client_id.clone().unwrap_or_else(|| {
        format!(
            "anchormq-{role}-{}-{}",
            identity.node.topic_segment(),
            std::process::id()
        )
    });
    let mut broker = context.broker_config(client_id)?;
    broker.clean_session = !identity.persistent;
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
    config.guard = guard;
    Agent::start(config, shutdown)
        .await
        .wrap_err("cannot start the agent")
}

/// A `--guard` file: `[[rule]]` tables, the first whose `topic` filter matches applies.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GuardFile {
    #[serde(default)]
    rule: Vec<toml::Table>,
}

/// One `[[rule]]` of a `--guard` file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GuardFileRule {
    topic: String,
    min: Option<f64>,
    max: Option<f64>,
    max_step: Option<f64>,
    deadband: Option<f64>,
    heartbeat_secs: Option<u64>,
}

/// Reads and checks a `--guard` file; errors name the rule (from 1) and the field.
pub fn load_guard(path: &Path) -> eyre::Result<Guard> {
    let text = std::fs::read_to_string(path)
        .wrap_err_with(|| format!("cannot read guard file {}", path.display()))?;
    let one_line = |e: toml::de::Error| e.to_string().trim().replace('\n', " ");
    let file: GuardFile = toml::from_str(&text)
        .map_err(|e| eyre!("guard file {}: {}", path.display(), one_line(e)))?;
    let mut rules = Vec::with_capacity(file.rule.len());
    for (i, table) in file.rule.into_iter().enumerate() {
        let rule: GuardFileRule = table.try_into().map_err(|e| {
            eyre!(
                "guard file {}: rule {}: {}",
                path.display(),
                i + 1,
                one_line(e)
            )
        })?;
        rules.push(GuardRule {
            min: rule.min,
            max: rule.max,
            max_step: rule.max_step,
            deadband: rule.deadband,
            heartbeat: rule.heartbeat_secs.map(Duration::from_secs),
            ..GuardRule::for_topic(rule.topic)
        });
    }
    Guard::new(rules).map_err(|e| eyre!("guard file {}: {e}", path.display()))
}

/// `pub`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when every message was sent or suppressed by the guard, \
    3 when the guard refused a reading (with -l the other lines are still sent), 1 on any other \
    error."
)]
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
    /// Check each reading before sealing it, with the rules of this TOML file (`[[rule]]` with
    /// `topic` and any of `min`, `max`, `max_step`, `deadband`, `heartbeat_secs`): readings
    /// outside the range or stepping too far are refused, readings within the deadband of the
    /// last one sent are suppressed. Says why for each reading not sent, and with -l prints
    /// "N sent, N suppressed, N refused" at the end.
    #[arg(long, env = "ANCHORMQ_GUARD", value_name = "FILE")]
    pub guard: Option<PathBuf>,
}

/// What became of the messages of one `pub`.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    suppressed: u64,
    refused: u64,
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
        let guard = match &self.guard {
            Some(path) => {
                let guard = load_guard(path)?;
                if guard.rule_for(&self.topic).is_none() {
                    eprintln!(
                        "warning: no rule in {} matches {}: its messages are sent unchecked",
                        path.display(),
                        self.topic
                    );
                }
                guard
            }
            None => Guard::default(),
        };
        let shutdown = CancellationToken::new();
        let agent = start_agent(
            context,
            &self.identity,
            "pub",
            self.qos,
            guard,
            shutdown.clone(),
        )
        .await?;
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
        let mut tally = Tally::default();
        let single = match &self.message {
            Some(message) => Some(message.as_bytes()),
            None => file_payload.as_deref(),
        };
        if let Some(payload) = single {
            match publisher.send(payload).await {
                Ok(Outcome::Sent(_)) => tally.sent += 1,
                Ok(Outcome::Suppressed(suppressed)) => {
                    eprintln!("reading {} {suppressed}", shown(payload));
                    tally.suppressed += 1;
                }
                Err(AgentError::Refused(refused)) => {
                    return Err(ChecksFailed(refused.to_string()).into());
                }
                Err(error) => return Err(error.into()),
            }
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
                match publisher.send(line.as_bytes()).await {
                    Ok(Outcome::Sent(_)) => tally.sent += 1,
                    Ok(Outcome::Suppressed(suppressed)) => {
                        eprintln!("reading {} {suppressed}", shown(line.as_bytes()));
                        tally.suppressed += 1;
                    }
                    Err(AgentError::Refused(refused)) => {
                        eprintln!("{refused}");
                        tally.refused += 1;
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            if self.guard.is_some() {
                eprintln!(
                    "{} sent, {} suppressed, {} refused",
                    tally.sent, tally.suppressed, tally.refused
                );
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
        tracing::info!(sent = tally.sent, group = %publisher.group(), "published");
        shutdown.cancel();
        if tally.refused > 0 {
            return Err(ChecksFailed(format!(
                "{} of {} reading(s) refused by the guard",
                tally.refused,
                tally.sent + tally.suppressed + tally.refused
            ))
            .into());
        }
        Ok(())
    }
}

/// A reading as the user wrote it (it parsed as a number, so it is short text).
fn shown(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).trim().to_owned()
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
    /// Stop after this many seconds: exit code 0, or 1 when -C COUNT was given and not reached.
    #[arg(short = 'W', long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
}

impl SubCommand {
    /// Prints readable messages; reports unreadable ones on stderr and carries on.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        let shutdown = super::shutdown_on_signal();
        let agent = start_agent(
            context,
            &self.identity,
            "sub",
            self.qos,
            Guard::default(),
            shutdown.clone(),
        )
        .await?;
        let mut subscription = agent
            .subscribe(&self.filters)
            .await
            .wrap_err("cannot subscribe")?;
        agent.check_identity().await?;
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
                // -W without -C is how long to listen: reaching it is the normal end
                None if self.count.is_none() => break,
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
                    if let Some(missing) = message.missing {
                        eprintln!(
                            "{} message(s) from {} in {} missing: seq {}-{}",
                            missing.count(),
                            message.sender,
                            message.group,
                            missing.from,
                            missing.to
                        );
                    }
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
        let stats = agent.stats();
        tracing::info!(
            chain_notes = stats.chain_notes,
            opened = stats.opened,
            unreadable = stats.unreadable,
            "sub done"
        );
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
            if let Some(missing) = message.missing {
                value["missing"] = serde_json::json!({
                    "from": missing.from,
                    "to": missing.to,
                    "count": missing.count(),
                });
            }
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
