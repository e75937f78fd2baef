//! The link task: one owner for the rumqttc event loop, the outbox of unacknowledged QoS 1 messages,
//! and the subscriptions to restore.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{
    AsyncClient, ClientError, ConnectReturnCode, ConnectionError, Event, EventLoop, Outgoing,
    Packet, QoS,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::config::BrokerConfig;

/// A message received from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic it was published to.
    pub topic: String,
    /// Payload bytes.
    pub payload: Bytes,
    /// Whether the broker delivered it as a retained message (on subscribe).
    pub retain: bool,
    /// Delivery QoS.
    pub qos: QoS,
}

/// What the link reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// Connected (again); subscriptions are being restored.
    Connected {
        /// Whether the broker resumed the previous session.
        session_present: bool,
    },
    /// The broker acknowledged a subscription.
    Subscribed,
    /// The connection was lost; the link reconnects with backoff.
    Disconnected {
        /// Why, for logs.
        reason: String,
    },
    /// A message arrived.
    Message(Message),
}

/// Errors of [`Link`] calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The link task has stopped (shut down, or its owner dropped the events receiver).
    #[error("the MQTT link to {0} is closed")]
    Closed(String),
    /// The broker options could not be built (for example, an unreadable CA file).
    #[error("cannot configure the MQTT connection: {0}")]
    Config(String),
    /// The message would not fit in one MQTT packet of this client's maximum size: nothing was
    /// sent (a larger packet would make the connection fail and reconnect for ever).
    #[error(
        "a message of {size} bytes on {topic:?} is larger than this client's maximum MQTT packet size of {limit} bytes"
    )]
    TooLarge {
        /// The topic.
        topic: String,
        /// The packet's size: topic, payload and header.
        size: usize,
        /// The client's limit.
        limit: usize,
    },
    /// The first connection failed in a way that trying again cannot fix; the link has stopped.
    #[error("cannot connect to the MQTT broker {broker}: {cause}")]
    Rejected {
        /// The broker, without credentials.
        broker: String,
        /// Why.
        cause: ConnectFailure,
    },
}

/// Why a connection can never succeed as configured. Only a link that has not connected yet stops
/// on these; one that has keeps retrying, since the broker's configuration may be changing under it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// The broker's TLS certificate does not chain to a trusted CA, or does not fit its host name.
    #[error("its TLS certificate is not trusted: {reason}")]
    UntrustedCertificate {
        /// What is wrong with it, and which roots were used.
        reason: String,
    },
    /// The TLS handshake failed for another reason (for example, the port does not speak TLS).
    #[error("the TLS handshake failed: {0}")]
    Tls(String),
    /// The broker answered CONNECT with "bad username or password" or "not authorised".
    #[error("not authorised: {0}")]
    NotAuthorised(&'static str),
}

/// Messages accepted but not yet handed to rumqttc, before publishers are made to wait.
const MAX_HELD: usize = 10_000;

/// Messages one publish command carries at most: a larger batch is split, so the link's bound on
/// held messages still pushes back on the publisher.
const MAX_BATCH: usize = 1_000;

enum Command {
    /// Queues the messages in order; replies with the sequence number of the last QoS 1 one.
    Publish {
        messages: Vec<Outbound>,
        reply: oneshot::Sender<Option<u64>>,
    },
    Subscribe {
        filter: String,
        qos: QoS,
    },
}

/// A message to publish, for [`Link::publish_all`].
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: QoS,
    /// Whether the broker should retain it.
    pub retain: bool,
}

/// A handle to the link task. Cheap to clone; the task stops on shutdown or when every handle and
/// the events receiver are gone.
#[derive(Debug, Clone)]
pub struct Link {
    commands: mpsc::Sender<Command>,
    acked_through: watch::Receiver<u64>,
    phase: watch::Receiver<Phase>,
    broker: String,
    max_packet_size: usize,
}

/// How far the link got with its first connection.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// The first attempt has not finished.
    Connecting,
    /// Connected, or the first attempt failed in a way a retry may fix (the broker is not up yet).
    Settled,
    /// The link stopped before it ever connected, for this reason.
    Rejected(ConnectFailure),
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Publish { messages, .. } => write!(f, "Publish({} messages)", messages.len()),
            Self::Subscribe { filter, .. } => write!(f, "Subscribe({filter})"),
        }
    }
}

impl Link {
    /// Starts the link task. Connection failures are retried with backoff and reported as
    /// [`LinkEvent::Disconnected`]; the task ends when `shutdown` is cancelled, or before the
    /// first connection when that failure cannot be fixed by retrying ([`ConnectFailure`]).
    ///
    /// Calls made before the first connection attempt has finished wait for it (at most the
    /// connect timeout), so that such a failure is the answer to the first call, not a timeout
    /// further on.
    pub fn start(
        config: &BrokerConfig,
        shutdown: CancellationToken,
    ) -> Result<(Self, mpsc::Receiver<LinkEvent>), LinkError> {
        let options = config
            .options()
            .map_err(|e| LinkError::Config(e.to_string()))?;
        let (client, mut eventloop) = AsyncClient::new(options, 256);
        // Small packets go out at once, so this client never holds a PUBLISH behind an earlier
        // unacknowledged segment (Nagle's algorithm). The 40 ms stalls measured on Mosquitto were
        // the broker's own Nagle (docs/benchmarks.md); this alone changed nothing measurable there.
        let mut network = eventloop.network_options();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        let (commands, commands_rx) = mpsc::channel(1024);
        let (events_tx, events) = mpsc::channel(4096);
        let (acked_tx, acked_through) = watch::channel(0);
        let (phase_tx, phase) = watch::channel(Phase::Connecting);
        let task = LinkTask {
            client,
            eventloop,
            commands: commands_rx,
            events: events_tx,
            acked: acked_tx,
            subscriptions: BTreeMap::new(),
            outbox: BTreeMap::new(),
            unassigned: VecDeque::new(),
            inflight: HashMap::new(),
            held: VecDeque::new(),
            next_seq: 1,
            connected: false,
            restoring: 0,
            resumed: false,
            connected_once: false,
            commands_open: true,
            phase: phase_tx,
            broker: config.display_url(),
            ca_file: config.ca_file.clone(),
            has_credentials: config.credentials.is_some(),
        };
        tokio::spawn(task.run(shutdown));
        Ok((
            Self {
                commands,
                acked_through,
                phase,
                broker: config.display_url(),
                max_packet_size: config.max_packet_size,
            },
            events,
        ))
    }

    /// Why calls fail once the task is gone.
    fn closed(&self) -> LinkError {
        match &*self.phase.borrow() {
            Phase::Rejected(cause) => LinkError::Rejected {
                broker: self.broker.clone(),
                cause: cause.clone(),
            },
            _ => LinkError::Closed(self.broker.clone()),
        }
    }

    /// Waits until the first connection attempt has finished; fails if it showed that no attempt
    /// can succeed.
    async fn settled(&self) -> Result<(), LinkError> {
        let mut phase = self.phase.clone();
        // Fails when the task has ended still `Connecting` (shut down) or ended `Rejected`.
        let settled = phase
            .wait_for(|phase| *phase != Phase::Connecting)
            .await
            .map(|phase| *phase == Phase::Settled);
        match settled {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => Err(self.closed()),
        }
    }

    /// Queues a message. For QoS 1 returns its sequence number, to wait on with [`Link::acked`];
    /// the link keeps it until the broker acknowledges it, across reconnects.
    pub async fn publish(
        &self,
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Result<Option<u64>, LinkError> {
        self.publish_all(vec![Outbound {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain,
        }])
        .await
    }

    /// Queues messages in order, as [`Link::publish`] does one: one hand-over to the link task for
    /// many messages. Returns the sequence number of the last QoS 1 message, if any. A message too
    /// large for the broker fails the call before any of them is queued.
    pub async fn publish_all(&self, messages: Vec<Outbound>) -> Result<Option<u64>, LinkError> {
        for message in &messages {
            // fixed header (5) + topic length (2) + packet id (2): a bound, not the exact encoding
            let size = 9 + message.topic.len() + message.payload.len();
            if size > self.max_packet_size {
                return Err(LinkError::TooLarge {
                    topic: message.topic.clone(),
                    size,
                    limit: self.max_packet_size,
                });
            }
        }
        self.settled().await?;
        let mut last = None;
        let mut messages = messages.into_iter().peekable();
        while messages.peek().is_some() {
            let batch: Vec<Outbound> = messages.by_ref().take(MAX_BATCH).collect();
            let (reply, seq) = oneshot::channel();
            self.commands
                .send(Command::Publish {
                    messages: batch,
                    reply,
                })
                .await
                .map_err(|_| self.closed())?;
            last = seq.await.map_err(|_| self.closed())?.or(last);
        }
        Ok(last)
    }

    /// Waits until the broker has acknowledged every QoS 1 message up to and including `seq`.
    pub async fn acked(&self, seq: u64) -> Result<(), LinkError> {
        let mut acked = self.acked_through.clone();
        acked
            .wait_for(|through| *through >= seq)
            .await
            .map_err(|_| self.closed())?;
        Ok(())
    }

    /// Publishes at QoS 1 and waits for the broker's acknowledgement.
    pub async fn publish_confirmed(
        &self,
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
        retain: bool,
    ) -> Result<(), LinkError> {
        if let Some(seq) = self
            .publish(topic, payload, QoS::AtLeastOnce, retain)
            .await?
        {
            self.acked(seq).await?;
        }
        Ok(())
    }

    /// Subscribes now and after every reconnect.
    pub async fn subscribe(&self, filter: impl Into<String>, qos: QoS) -> Result<(), LinkError> {
        self.settled().await?;
        self.commands
            .send(Command::Subscribe {
                filter: filter.into(),
                qos,
            })
            .await
            .map_err(|_| self.closed())
    }
}

struct LinkTask {
    client: AsyncClient,
    eventloop: EventLoop,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<LinkEvent>,
    acked: watch::Sender<u64>,
    subscriptions: BTreeMap<String, QoS>,
    /// QoS 1 messages not yet acknowledged, by sequence number.
    outbox: BTreeMap<u64, Outbound>,
    /// Sequence numbers handed to rumqttc that have no packet id yet, in hand-over order
    /// (rumqttc assigns ids in the order it takes requests).
    unassigned: VecDeque<u64>,
    /// Packet id to sequence number, for messages on the wire.
    inflight: HashMap<u16, u64>,
    /// Messages accepted while rumqttc's request queue was full or the link was down.
    held: VecDeque<(u64, Outbound)>,
    next_seq: u64,
    connected: bool,
    /// Subscriptions sent again after a reconnect and not yet acknowledged.
    restoring: usize,
    /// Whether the broker resumed the session at the last reconnect.
    resumed: bool,
    /// Whether any connection succeeded: only before the first does a hopeless failure stop the link.
    connected_once: bool,
    commands_open: bool,
    phase: watch::Sender<Phase>,
    broker: String,
    /// For error messages: whose certificates were trusted, and whether credentials were sent.
    ca_file: Option<PathBuf>,
    has_credentials: bool,
}

/// First wait before reconnecting, and the longest.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl LinkTask {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        // While the broker is away the link waits before the next attempt, still taking commands:
        // a failed connect is immediately ready, so polling it in a loop would starve them.
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            if !self.commands_open && self.outbox.is_empty() {
                // Every handle is gone and everything was delivered.
                let _ = self.client.try_disconnect();
                return;
            }
            // Accept messages while disconnected too (they wait in `held`), up to a bound that pushes back
            // on publishers instead of growing without limit.
            let take_commands = self.commands_open && self.held.len() < MAX_HELD;
            let waiting = retry_at.is_some();
            let retry =
                tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now));
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    let _ = self.client.try_disconnect();
                    return;
                }
                () = retry, if waiting => retry_at = None,
                polled = self.eventloop.poll(), if !waiting => match polled {
                    Ok(event) => {
                        // Only a connection the broker did some work on resets the backoff: one it
                        // accepts and then drops (a twin client ID, an ACL) keeps it growing, so the
                        // client never hammers the broker. A ConnAck alone, or our own sends, prove
                        // nothing; a SubAck, PubAck, message or PingResp does.
                        if let Event::Incoming(packet) = &event
                            && !matches!(packet, Packet::ConnAck(_))
                        {
                            backoff = BACKOFF_MIN;
                        }
                        if !self.on_event(event).await {
                            return;
                        }
                    }
                    Err(error) => {
                        if !self.on_disconnect(&error).await {
                            return;
                        }
                        retry_at = Some(tokio::time::Instant::now() + backoff);
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                },
                command = self.commands.recv(), if take_commands => match command {
                    Some(command) => self.on_command(command),
                    None => self.commands_open = false,
                },
            }
            self.hand_held();
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Publish { messages, reply } => {
                let mut last = None;
                for message in messages {
                    if message.qos == QoS::AtMostOnce {
                        let _ = self.client.try_publish(
                            message.topic,
                            message.qos,
                            message.retain,
                            message.payload,
                        );
                    } else {
                        let seq = self.next_seq;
                        self.next_seq += 1;
                        self.outbox.insert(seq, message.clone());
                        self.held.push_back((seq, message));
                        last = Some(seq);
                    }
                }
                let _ = reply.send(last);
            }
            Command::Subscribe { filter, qos } => {
                self.subscriptions.insert(filter.clone(), qos);
                if self.connected {
                    let _ = self.client.try_subscribe(filter, qos);
                }
            }
        }
    }

    /// Hands held messages to rumqttc while it has room and the link is up.
    fn hand_held(&mut self) {
        while self.connected {
            let Some((seq, message)) = self.held.front().cloned() else {
                return;
            };
            match self.client.try_publish(
                message.topic,
                message.qos,
                message.retain,
                message.payload,
            ) {
                Ok(()) => {
                    self.held.pop_front();
                    self.unassigned.push_back(seq);
                }
                Err(ClientError::TryRequest(_)) | Err(ClientError::Request(_)) => return,
            }
        }
    }

    async fn on_event(&mut self, event: Event) -> bool {
        match event {
            Event::Incoming(Packet::ConnAck(connack)) => {
                // Events of the dead connection may still be queued in rumqttc; an old
                // `Outgoing::Publish` would otherwise take the packet id of a message handed again below.
                self.eventloop
                    .state
                    .events
                    .retain(|e| !matches!(e, Event::Outgoing(_)));
                self.connected = true;
                let reconnect = std::mem::replace(&mut self.connected_once, true);
                self.phase.send_replace(Phase::Settled);
                if !connack.session_present {
                    // A new session: rumqttc dropped everything unacknowledged. Hand it all again, in order.
                    self.unassigned.clear();
                    self.inflight.clear();
                    self.held = self
                        .outbox
                        .iter()
                        .map(|(seq, m)| (*seq, m.clone()))
                        .collect();
                }
                for (filter, qos) in &self.subscriptions {
                    let _ = self.client.try_subscribe(filter.clone(), *qos);
                }
                if reconnect {
                    self.resumed = connack.session_present;
                    self.restoring = self.subscriptions.len();
                }
                tracing::debug!(target: "anchormq::mqtt", broker = %self.broker, session_present = connack.session_present, "connected");
                self.emit(LinkEvent::Connected {
                    session_present: connack.session_present,
                })
                .await
            }
            Event::Outgoing(Outgoing::Publish(pkid)) if pkid != 0 => {
                // A retransmission reuses its packet id; a first transmission takes the next sequence.
                if let std::collections::hash_map::Entry::Vacant(slot) = self.inflight.entry(pkid)
                    && let Some(seq) = self.unassigned.pop_front()
                {
                    slot.insert(seq);
                }
                true
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(seq) = self.inflight.remove(&ack.pkid) {
                    self.outbox.remove(&seq);
                    let through = self
                        .outbox
                        .keys()
                        .next()
                        .map_or(self.next_seq - 1, |first| first - 1);
                    self.acked.send_replace(through);
                }
                true
            }
            Event::Incoming(Packet::SubAck(_)) => {
                if self.restoring > 0 {
                    self.restoring -= 1;
                    if self.restoring == 0 {
                        self.restored();
                    }
                }
                self.emit(LinkEvent::Subscribed).await
            }
            Event::Incoming(Packet::Publish(publish)) => {
                let message = Message {
                    topic: publish.topic,
                    payload: publish.payload,
                    retain: publish.retain,
                    qos: publish.qos,
                };
                self.emit(LinkEvent::Message(message)).await
            }
            _ => true,
        }
    }

    /// Says that a reconnected subscriber receives again, and whether messages published while
    /// it was away were kept for it: without a session they are gone, and a loss at the end of
    /// a stream has no later message to reveal it.
    fn restored(&self) {
        let count = self.subscriptions.len();
        if self.resumed {
            tracing::info!(target: "anchormq::mqtt", broker = %self.broker, "reconnected: the broker kept the session, {count} subscription(s) restored");
        } else {
            tracing::warn!(target: "anchormq::mqtt", broker = %self.broker, "reconnected: {count} subscription(s) restored, but the broker kept no session for this client; messages published while it was disconnected were not kept for it");
        }
    }

    async fn on_disconnect(&mut self, error: &ConnectionError) -> bool {
        if !self.connected_once
            && let Some(cause) = self.hopeless(error)
        {
            // Retrying would print the same failure forever: stop, and let every call say why.
            tracing::debug!(target: "anchormq::mqtt", broker = %self.broker, %error, "connect failed, not retrying");
            self.phase.send_replace(Phase::Rejected(cause));
            return false;
        }
        self.phase.send_if_modified(|phase| {
            let first = *phase == Phase::Connecting;
            if first {
                *phase = Phase::Settled;
            }
            first
        });
        let was_connected = std::mem::replace(&mut self.connected, false);
        if was_connected {
            tracing::warn!(target: "anchormq::mqtt", broker = %self.broker, %error, "connection lost, reconnecting");
        } else {
            tracing::debug!(target: "anchormq::mqtt", broker = %self.broker, %error, "connect failed, retrying");
        }
        // rumqttc moved unsent requests into its own pending list; if the next session is new it
        // drops them and `on_event` hands the outbox again.
        self.emit(LinkEvent::Disconnected {
            reason: error.to_string(),
        })
        .await
    }

    /// A failure that no retry can fix: the broker's certificate or the credentials. Everything
    /// else (refused TCP, resets, timeouts, a broker that is busy) may pass.
    fn hopeless(&self, error: &ConnectionError) -> Option<ConnectFailure> {
        match error {
            ConnectionError::ConnectionRefused(
                ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
            ) => Some(ConnectFailure::NotAuthorised(if self.has_credentials {
                "the broker refused the username and password"
            } else {
                "the broker requires a username and password"
            })),
            ConnectionError::Tls(error) => {
                let tls = match error {
                    rumqttc::TlsError::TLS(tls) => tls,
                    // tokio-rustls reports handshake failures as I/O errors wrapping rustls's.
                    rumqttc::TlsError::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>()?,
                    other => return Some(ConnectFailure::Tls(other.to_string())),
                };
                Some(match tls {
                    rustls::Error::InvalidCertificate(certificate) => {
                        ConnectFailure::UntrustedCertificate {
                            reason: format!(
                                "{} (trusted: {})",
                                certificate_problem(certificate),
                                self.ca_file.as_ref().map_or_else(
                                    || "the system's CA certificates".to_owned(),
                                    |path| format!("the CA in {}", path.display())
                                )
                            ),
                        }
                    }
                    other => ConnectFailure::Tls(other.to_string()),
                })
            }
            _ => None,
        }
    }

    /// Sends an event to the owner; false when the owner is gone (the task then stops).
    fn emit(&self, event: LinkEvent) -> impl std::future::Future<Output = bool> + Send + 'static {
        // The task is Send but not Sync (rumqttc's stream is not): hold no borrow across the await.
        let events = self.events.clone();
        async move { events.send(event).await.is_ok() }
    }
}

/// A certificate error in words a user can act on.
fn certificate_problem(error: &rustls::CertificateError) -> String {
    use rustls::CertificateError as E;
    match error {
        E::UnknownIssuer => "it is not signed by a trusted CA".to_owned(),
        E::NotValidForName | E::NotValidForNameContext { .. } => {
            "it is not issued for this host name or address".to_owned()
        }
        E::Expired | E::ExpiredContext { .. } => "it has expired".to_owned(),
        E::NotValidYet | E::NotValidYetContext { .. } => "it is not valid yet".to_owned(),
        E::Revoked => "it is revoked".to_owned(),
        E::BadSignature => "its signature is invalid".to_owned(),
        other => other.to_string(),
    }
}
