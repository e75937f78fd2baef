//! The agent: one MQTT link, one task that reads it (notes into the [`Opener`], messages out to
//! subscriptions), and per-group senders that keep their sender key current before sealing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anchormq_core::topics::{validate_topic_filter, validate_topic_name};
use anchormq_core::{
    GroupId, Ingested, KeyBook, MembershipError, NodeId, NodeSecretKey, NoteUpdate, OpenError,
    Opened, Opener, SealError, Sealer, SenderKeyNoteBuild, Topics, topic_matches,
};
use anchormq_mqtt::{Link, LinkEvent, Message, QoS};
use bytes::Bytes;
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, RngCore, SeedableRng};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::AgentConfig;
use crate::error::AgentError;
use crate::hold::{Fix, Held, HoldQueue, worth_holding};
use crate::received::{Received, ReceivedMessage, Unreadable};

/// A running node agent. Cheap to clone; the agent stops when its shutdown token is cancelled or
/// the last handle (agent, [`Publisher`] or [`Subscription`]) is dropped. Call [`Agent::flush`]
/// first so that queued QoS 1 messages reach the broker.
#[derive(Debug, Clone)]
pub struct Agent {
    inner: Arc<Inner>,
    guard: Arc<DropGuard>,
}

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The group the message was sealed for.
    pub group: GroupId,
    /// The group epoch it was sealed at.
    pub epoch: u64,
    /// Its sequence number under this node's current sender key.
    pub seq: u64,
    /// For QoS 1, the link's number for it: [`Agent::acked`] waits for the broker's PUBACK.
    pub link_seq: Option<u64>,
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentStats {
    /// Messages sealed and handed to the link.
    pub published: u64,
    /// Sender-key notes published (a new sender key each).
    pub sender_key_notes: u64,
    /// Messages opened and delivered.
    pub opened: u64,
    /// Messages delivered as unreadable.
    pub unreadable: u64,
    /// QoS 1 redeliveries dropped.
    pub duplicates: u64,
    /// Messages held at least once waiting for a note.
    pub held: u64,
    /// Note payloads refused (bad signature, wrong registry, rollback, ...).
    pub notes_refused: u64,
    /// Connections to the broker (the first one included).
    pub connects: u64,
}

/// A stream of received messages for the filters given to [`Agent::subscribe`].
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<Received>,
    _guard: Arc<DropGuard>,
}

impl Subscription {
    /// The next message, or `None` once the agent has stopped.
    pub async fn recv(&mut self) -> Option<Received> {
        self.rx.recv().await
    }
}

/// Publishes to one topic in one group without resolving the group again: for line mode and
/// bulk sending.
#[derive(Debug, Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
    sender: Arc<tokio::sync::Mutex<GroupSender>>,
    group: GroupId,
    topic: String,
    qos: QoS,
    retain: bool,
    _guard: Arc<DropGuard>,
}

impl Publisher {
    /// The group messages are sealed for.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The topic messages are published to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Seals and publishes one message.
    pub async fn send(&self, payload: &[u8]) -> Result<Published, AgentError> {
        let mut sender = self.sender.lock().await;
        self.inner
            .send_one(&mut sender, &self.topic, payload, self.qos, self.retain)
            .await
    }

    /// Seals and publishes several messages, holding the group's sender for all of them.
    pub async fn send_many<I>(&self, payloads: I) -> Result<Option<Published>, AgentError>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut sender = self.sender.lock().await;
        let mut last = None;
        for payload in payloads {
            last = Some(
                self.inner
                    .send_one(
                        &mut sender,
                        &self.topic,
                        payload.as_ref(),
                        self.qos,
                        self.retain,
                    )
                    .await?,
            );
        }
        Ok(last)
    }
}

#[derive(Debug)]
struct Inner {
    /// Cancelled to stop the link and the reader.
    token: CancellationToken,
    node: NodeId,
    node_key: NodeSecretKey,
    topics: Topics,
    /// The note prefix with a trailing '/'.
    prefix: String,
    link: Link,
    broker: String,
    wait_timeout: Duration,
    epoch_grace: Duration,
    qos: QoS,
    subscription_buffer: usize,
    state: Mutex<State>,
    /// Bumped whenever a note changed something; waiters watch it.
    notes: watch::Sender<u64>,
    senders: Mutex<HashMap<GroupId, Arc<tokio::sync::Mutex<GroupSender>>>>,
    subscribers: Mutex<Vec<Subscriber>>,
    /// Subscribe requests handed to the link (serialised so the count follows the order).
    subscribe_requests: tokio::sync::Mutex<u64>,
    /// SUBACKs received (including those of resubscriptions after a reconnect).
    subacks: watch::Sender<u64>,
    last_link_seq: AtomicU64,
    stats: Counters,
}

#[derive(Debug)]
struct State {
    opener: Opener,
    /// Last epoch seen per group, and when it last went up (for the grace period).
    epochs: HashMap<GroupId, (u64, Option<Instant>)>,
    /// Groups whose sender-key filter is subscribed.
    key_filters: HashSet<GroupId>,
    /// Groups where a member's node note changed: the next send draws a new sender key.
    rekey: HashSet<GroupId>,
}

struct GroupSender {
    group: GroupId,
    sealer: Option<Sealer>,
    rng: ChaCha20Rng,
    /// The latest sender-key note's chunks, to put back after a broker lost them.
    note_chunks: Vec<Bytes>,
    /// Link number of the latest note's last chunk while its PUBACK is outstanding.
    unconfirmed: Option<u64>,
    /// Notes version when the sealer was last found current.
    checked_version: u64,
}

impl std::fmt::Debug for GroupSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupSender")
            .field("group", &self.group)
            .field("sealer", &self.sealer)
            .field("unconfirmed", &self.unconfirmed)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Subscriber {
    filters: Vec<String>,
    tx: mpsc::Sender<Received>,
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    sender_key_notes: AtomicU64,
    opened: AtomicU64,
    unreadable: AtomicU64,
    duplicates: AtomicU64,
    held: AtomicU64,
    notes_refused: AtomicU64,
    connects: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What one look at the notes says about a group sender.
enum Step {
    Ready,
    Rekey(Box<(Sealer, SenderKeyNoteBuild)>),
    Wait(AgentError),
    Fail(AgentError),
}

impl Agent {
    /// Connects to the broker and starts following the notes. Returns at once; calls that need
    /// notes wait for them (up to `wait_timeout`).
    pub async fn start(
        config: AgentConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, AgentError> {
        let token = shutdown.child_token();
        let (link, events) = Link::start(&config.broker, token.clone())?;
        let topics = Topics::new(&config.registry);
        let book = KeyBook::new(config.registry, config.bridge_key);
        let mut opener = Opener::new(config.node, config.node_key.clone(), book);
        opener.set_trust(config.trust.clone());
        let inner = Arc::new(Inner {
            token: token.clone(),
            node: config.node,
            node_key: config.node_key,
            prefix: format!("{}/", topics.prefix()),
            broker: config.broker.display_url(),
            wait_timeout: config.wait_timeout,
            epoch_grace: config.epoch_grace,
            qos: config.qos,
            subscription_buffer: config.subscription_buffer.max(1),
            state: Mutex::new(State {
                opener,
                epochs: HashMap::new(),
                key_filters: HashSet::new(),
                rekey: HashSet::new(),
            }),
            notes: watch::Sender::new(0),
            senders: Mutex::new(HashMap::new()),
            subscribers: Mutex::new(Vec::new()),
            subscribe_requests: tokio::sync::Mutex::new(0),
            subacks: watch::Sender::new(0),
            last_link_seq: AtomicU64::new(0),
            stats: Counters::default(),
            link,
            topics,
        });
        inner
            .subscribe_filter(inner.topics.node_notes_filter(), QoS::AtLeastOnce)
            .await?;
        inner
            .subscribe_filter(inner.topics.group_notes_filter(), QoS::AtLeastOnce)
            .await?;
        let reader = Reader {
            inner: inner.clone(),
            held: HoldQueue::new(config.hold_max_messages, config.hold_timeout),
            connected_once: false,
        };
        tokio::spawn(reader.run(events, token.clone()));
        Ok(Self {
            inner,
            guard: Arc::new(token.drop_guard()),
        })
    }

    /// This node.
    pub fn node(&self) -> NodeId {
        self.inner.node
    }

    /// The note topics of the registry.
    pub fn topics(&self) -> &Topics {
        &self.inner.topics
    }

    /// A copy of the notes held now.
    pub fn key_book(&self) -> KeyBook {
        lock(&self.inner.state).opener.book().clone()
    }

    /// Counters since start.
    pub fn stats(&self) -> AgentStats {
        let c = &self.inner.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AgentStats {
            published: get(&c.published),
            sender_key_notes: get(&c.sender_key_notes),
            opened: get(&c.opened),
            unreadable: get(&c.unreadable),
            duplicates: get(&c.duplicates),
            held: get(&c.held),
            notes_refused: get(&c.notes_refused),
            connects: get(&c.connects),
        }
    }

    /// Subscribes to application topics. Every message on them comes out of the returned
    /// subscription, opened or with the reason it is unreadable; anchormq's note topics never do.
    /// Returns once the broker acknowledged every subscription requested so far (bounded by
    /// `wait_timeout`), so messages published after it returns are not missed.
    pub async fn subscribe<S: AsRef<str>>(
        &self,
        filters: &[S],
    ) -> Result<Subscription, AgentError> {
        let filters: Vec<String> = filters.iter().map(|f| f.as_ref().to_owned()).collect();
        for filter in &filters {
            validate_topic_filter(filter).map_err(|source| AgentError::InvalidTopic {
                topic: filter.clone(),
                source,
            })?;
        }
        let (tx, rx) = mpsc::channel(self.inner.subscription_buffer);
        lock(&self.inner.subscribers).push(Subscriber {
            filters: filters.clone(),
            tx,
        });
        let mut last = 0;
        for filter in filters {
            last = self.inner.subscribe_filter(filter, self.inner.qos).await?;
        }
        let mut acks = self.inner.subacks.subscribe();
        let acked = tokio::time::timeout(self.inner.wait_timeout, async {
            acks.wait_for(|count| *count >= last).await.is_ok()
        })
        .await;
        if acked != Ok(true) {
            return Err(AgentError::SubscribeTimeout {
                waited: self.inner.wait_timeout,
                broker: self.inner.broker.clone(),
            });
        }
        Ok(Subscription {
            rx,
            _guard: self.guard.clone(),
        })
    }

    /// Seals `payload` for `group` (or the one group whose topic filter matches `topic`) and
    /// publishes it. Waits for the notes it needs, and draws and publishes a new sender key first
    /// when the group's epoch or a member's key changed.
    pub async fn publish(
        &self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        group: Option<GroupId>,
    ) -> Result<Published, AgentError> {
        let publisher = self.publisher(topic, qos, retain, group).await?;
        publisher.send(payload).await
    }

    /// Seals and publishes many payloads to one topic.
    pub async fn publish_many<I>(
        &self,
        topic: &str,
        payloads: I,
        qos: QoS,
        retain: bool,
        group: Option<GroupId>,
    ) -> Result<Option<Published>, AgentError>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let publisher = self.publisher(topic, qos, retain, group).await?;
        publisher.send_many(payloads).await
    }

    /// A publisher for one topic: resolves the group once (waiting for its note) and makes sure
    /// this node can send in it (sender key published and acknowledged).
    pub async fn publisher(
        &self,
        topic: &str,
        qos: QoS,
        retain: bool,
        group: Option<GroupId>,
    ) -> Result<Publisher, AgentError> {
        validate_topic_name(topic).map_err(|source| AgentError::InvalidTopic {
            topic: topic.to_owned(),
            source,
        })?;
        if topic.starts_with(&self.inner.prefix) {
            return Err(AgentError::ReservedTopic {
                topic: topic.to_owned(),
                prefix: self.inner.prefix.clone(),
            });
        }
        let group = self.inner.resolve_group(topic, group).await?;
        let sender = self.inner.sender_for(group);
        {
            let mut locked = sender.lock().await;
            self.inner.ensure_ready(&mut locked).await?;
        }
        Ok(Publisher {
            inner: self.inner.clone(),
            sender,
            group,
            topic: topic.to_owned(),
            qos,
            retain,
            _guard: self.guard.clone(),
        })
    }

    /// Waits until the broker acknowledged the QoS 1 message with link number `link_seq` and all
    /// before it (bounded by `wait_timeout`).
    pub async fn acked(&self, link_seq: u64) -> Result<(), AgentError> {
        match tokio::time::timeout(self.inner.wait_timeout, self.inner.link.acked(link_seq)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(AgentError::FlushTimeout {
                waited: self.inner.wait_timeout,
                broker: self.inner.broker.clone(),
            }),
        }
    }

    /// Waits until the broker acknowledged every QoS 1 message published so far.
    pub async fn flush(&self) -> Result<(), AgentError> {
        let last = self.inner.last_link_seq.load(Ordering::Acquire);
        if last == 0 {
            return Ok(());
        }
        self.acked(last).await
    }

    /// Waits for the group's note; returns its epoch.
    pub async fn wait_for_group(&self, group: GroupId) -> Result<u64, AgentError> {
        self.inner
            .wait_until(self.inner.wait_timeout, |st| {
                st.opener.book().group(&group).map(|n| n.epoch())
            })
            .await
            .ok_or_else(|| self.inner.no_group_note(group))
    }

    /// Waits until this agent holds `group`'s note at `epoch` or later (for example after an
    /// on-chain membership change, before relying on it).
    pub async fn wait_for_epoch(&self, group: GroupId, epoch: u64) -> Result<u64, AgentError> {
        let found = self
            .inner
            .wait_until(self.inner.wait_timeout, |st| {
                st.opener
                    .book()
                    .group(&group)
                    .map(|n| n.epoch())
                    .filter(|e| *e >= epoch)
            })
            .await;
        found.ok_or_else(|| AgentError::EpochNotReached {
            group,
            wanted: epoch,
            current: lock(&self.inner.state)
                .opener
                .book()
                .group(&group)
                .map_or(0, |n| n.epoch()),
            waited: self.inner.wait_timeout,
        })
    }

    /// Stops the agent (queued messages not yet acknowledged are dropped: [`Agent::flush`] first).
    pub fn shutdown(&self) {
        self.inner.token.cancel();
    }
}

impl Inner {
    fn senders(&self) -> MutexGuard<'_, HashMap<GroupId, Arc<tokio::sync::Mutex<GroupSender>>>> {
        lock(&self.senders)
    }

    fn sender_for(&self, group: GroupId) -> Arc<tokio::sync::Mutex<GroupSender>> {
        self.senders()
            .entry(group)
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(GroupSender {
                    group,
                    sealer: None,
                    rng: {
                        let mut seed = [0u8; 32];
                        OsRng.fill_bytes(&mut seed);
                        ChaCha20Rng::from_seed(seed)
                    },
                    note_chunks: Vec::new(),
                    unconfirmed: None,
                    checked_version: u64::MAX,
                }))
            })
            .clone()
    }

    /// Asks the link to subscribe; returns how many subscriptions were requested so far.
    async fn subscribe_filter(&self, filter: String, qos: QoS) -> Result<u64, AgentError> {
        let mut count = self.subscribe_requests.lock().await;
        self.link.subscribe(filter, qos).await?;
        *count += 1;
        Ok(*count)
    }

    fn no_group_note(&self, group: GroupId) -> AgentError {
        AgentError::NoGroupNote {
            group,
            waited: self.wait_timeout,
            broker: self.broker.clone(),
        }
    }

    /// Calls `check` now and after every note change until it gives a value or `timeout` passes.
    async fn wait_until<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&State) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut changes = self.notes.subscribe();
        loop {
            changes.borrow_and_update();
            if let Some(value) = check(&lock(&self.state)) {
                return Some(value);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// The group to seal for: `group` if given (it must be trusted), else the one trusted group
    /// whose topic filter matches `topic` and that has this node as a member. Groups others made
    /// over the same topics are not candidates, so they can neither capture nor block a topic.
    async fn resolve_group(
        &self,
        topic: &str,
        group: Option<GroupId>,
    ) -> Result<GroupId, AgentError> {
        if let Some(group) = group {
            let admin = self
                .wait_until(self.wait_timeout, |st| {
                    let note = st.opener.book().group(&group)?;
                    Some((!st.opener.trust().accepts(note)).then(|| note.admin()))
                })
                .await
                .ok_or_else(|| self.no_group_note(group))?;
            return match admin {
                None => Ok(group),
                Some(admin) => Err(AgentError::UntrustedGroup { group, admin }),
            };
        }
        let describe = |notes: &[&anchormq_core::GroupNote]| {
            notes
                .iter()
                .map(|n| format!("{} {:?}", n.group(), n.topic_filter()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let found = self
            .wait_until(self.wait_timeout, |st| {
                let trust = st.opener.trust();
                let usable: Vec<_> = st
                    .opener
                    .book()
                    .groups_for_topic(topic)
                    .into_iter()
                    .filter(|n| trust.accepts(n) && n.member(&self.node).is_some())
                    .collect();
                match usable.as_slice() {
                    [] => None,
                    [one] => Some(Ok(one.group())),
                    many => Some(Err(AgentError::AmbiguousTopic {
                        topic: topic.to_owned(),
                        groups: describe(many),
                    })),
                }
            })
            .await;
        if let Some(result) = found {
            return result;
        }
        // Nothing usable: say why, naming the closest candidate.
        let st = lock(&self.state);
        let book = st.opener.book();
        let matching = book.groups_for_topic(topic);
        let trusted: Vec<_> = matching
            .iter()
            .filter(|n| st.opener.trust().accepts(n))
            .collect();
        match (trusted.as_slice(), matching.first()) {
            ([one], _) => Err(AgentError::NotMember {
                node: self.node,
                group: one.group(),
                epoch: one.epoch(),
                waited: self.wait_timeout,
            }),
            ([], Some(untrusted)) => Err(AgentError::UntrustedGroup {
                group: untrusted.group(),
                admin: untrusted.admin(),
            }),
            _ => {
                let all: Vec<_> = book.groups().collect();
                Err(AgentError::NoGroupForTopic {
                    topic: topic.to_owned(),
                    waited: self.wait_timeout,
                    known: if all.is_empty() {
                        "none".to_owned()
                    } else {
                        describe(&all)
                    },
                })
            }
        }
    }

    /// Makes sure `sender` has a sealer that is current for the notes held, with its sender-key
    /// note published and acknowledged. Waits (bounded) for missing notes.
    async fn ensure_ready(&self, sender: &mut GroupSender) -> Result<(), AgentError> {
        let deadline = Instant::now() + self.wait_timeout;
        let mut changes = self.notes.subscribe();
        loop {
            let version = *changes.borrow_and_update();
            if sender.sealer.is_some()
                && sender.checked_version == version
                && sender.unconfirmed.is_none()
            {
                return Ok(());
            }
            let patient = Instant::now() < deadline;
            match self.next_step(sender, patient) {
                Step::Ready => {
                    if let Some(seq) = sender.unconfirmed {
                        match tokio::time::timeout_at(deadline, self.link.acked(seq)).await {
                            Ok(result) => result?,
                            Err(_) => {
                                return Err(AgentError::SenderKeyNotAcknowledged {
                                    group: sender.group,
                                    waited: self.wait_timeout,
                                    broker: self.broker.clone(),
                                });
                            }
                        }
                        sender.unconfirmed = None;
                    }
                    sender.checked_version = version;
                    return Ok(());
                }
                Step::Rekey(rekey) => {
                    let (sealer, build) = *rekey;
                    self.publish_sender_key(sender, sealer, build).await?;
                }
                Step::Fail(error) => return Err(error),
                Step::Wait(error) => {
                    match tokio::time::timeout_at(deadline, changes.changed()).await {
                        Ok(Ok(())) => {}
                        _ => return Err(error),
                    }
                }
            }
        }
    }

    /// Decides, under the state lock, whether the sender can seal now or needs a new key.
    fn next_step(&self, sender: &mut GroupSender, patient: bool) -> Step {
        let group = sender.group;
        let mut st = lock(&self.state);
        let book = st.opener.book();
        let must_rekey = st.rekey.contains(&group);
        if !must_rekey
            && sender
                .sealer
                .as_ref()
                .is_some_and(|sealer| sealer.check_current(book).is_ok())
        {
            return Step::Ready;
        }
        let made = Sealer::new(
            book,
            self.node,
            self.node_key.clone(),
            group,
            &mut sender.rng,
        )
        .and_then(|sealer| {
            let build = sealer.sender_key_note(book, &mut sender.rng)?;
            Ok((sealer, build))
        });
        match made {
            Ok((sealer, build)) => {
                let waiting_for = build
                    .skipped
                    .iter()
                    .find(|(_, e)| matches!(e, MembershipError::UnknownNode { .. }));
                if let (true, Some((node, _))) = (patient, waiting_for) {
                    // A member's node note is still on its way: a key wrapped without it would be
                    // unreadable to that member. Wait for it while time allows.
                    tracing::debug!(target: "anchormq::agent", %group, member = %node, "waiting for a member's node note");
                    return Step::Wait(AgentError::NoNodeNote {
                        node: *node,
                        waited: self.wait_timeout,
                        broker: self.broker.clone(),
                    });
                }
                st.rekey.remove(&group);
                Step::Rekey(Box::new((sealer, build)))
            }
            Err(error) => self.classify(group, error),
        }
    }

    fn classify(&self, group: GroupId, error: SealError) -> Step {
        let waited = self.wait_timeout;
        match error {
            SealError::Membership(MembershipError::UnknownNode { node }) => {
                Step::Wait(AgentError::NoNodeNote {
                    node,
                    waited,
                    broker: self.broker.clone(),
                })
            }
            SealError::Membership(MembershipError::UnknownGroup { group }) => {
                Step::Wait(self.no_group_note(group))
            }
            SealError::Membership(MembershipError::NotMember { node, group, epoch }) => {
                Step::Wait(AgentError::NotMember {
                    node,
                    group,
                    epoch,
                    waited,
                })
            }
            SealError::Membership(MembershipError::Revoked { node }) => {
                Step::Fail(AgentError::Revoked { node })
            }
            SealError::WrongNodeKey { node, key_version } => {
                // the chain may already hold this key and its note be on the way
                Step::Wait(AgentError::WrongNodeKey { node, key_version })
            }
            other => {
                tracing::debug!(target: "anchormq::agent", %group, error = %other, "cannot make a sealer");
                Step::Fail(AgentError::Seal(other))
            }
        }
    }

    async fn publish_sender_key(
        &self,
        sender: &mut GroupSender,
        sealer: Sealer,
        build: SenderKeyNoteBuild,
    ) -> Result<(), AgentError> {
        let group = sender.group;
        let chunks: Vec<Bytes> = build.note.chunks().into_iter().map(Bytes::from).collect();
        let mut last = None;
        for (i, chunk) in chunks.iter().enumerate() {
            let topic = self.topics.sender_key(&group, &self.node, i as u16);
            last = self
                .link
                .publish(topic, chunk.clone(), QoS::AtLeastOnce, true)
                .await?
                .or(last);
        }
        // a note with fewer chunks than the previous one: clear the stale retained chunks
        for i in chunks.len()..sender.note_chunks.len() {
            let topic = self.topics.sender_key(&group, &self.node, i as u16);
            last = self
                .link
                .publish(topic, Bytes::new(), QoS::AtLeastOnce, true)
                .await?
                .or(last);
        }
        if let Some(seq) = last {
            self.last_link_seq.fetch_max(seq, Ordering::AcqRel);
        }
        tracing::debug!(
            target: "anchormq::agent",
            %group,
            epoch = sealer.stream().epoch,
            recipients = build.recipients,
            skipped = build.skipped.len(),
            "new sender key published"
        );
        bump(&self.stats.sender_key_notes);
        sender.sealer = Some(sealer);
        sender.note_chunks = chunks;
        sender.unconfirmed = last;
        sender.checked_version = u64::MAX;
        Ok(())
    }

    async fn send_one(
        &self,
        sender: &mut GroupSender,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
    ) -> Result<Published, AgentError> {
        self.ensure_ready(sender).await?;
        let group = sender.group;
        let GroupSender { sealer, rng, .. } = sender;
        let sealer = sealer.as_mut().ok_or_else(|| self.no_group_note(group))?;
        let stream = *sealer.stream();
        let seq = sealer.next_seq();
        let envelope = sealer.seal(topic, payload, rng).map_err(AgentError::Seal)?;
        let link_seq = self
            .link
            .publish(topic.to_owned(), Bytes::from(envelope), qos, retain)
            .await?;
        if let Some(s) = link_seq {
            self.last_link_seq.fetch_max(s, Ordering::AcqRel);
        }
        bump(&self.stats.published);
        Ok(Published {
            group,
            epoch: stream.epoch,
            seq,
            link_seq,
        })
    }
}

/// The task that reads the link.
struct Reader {
    inner: Arc<Inner>,
    held: HoldQueue,
    connected_once: bool,
}

impl Reader {
    async fn run(mut self, mut events: mpsc::Receiver<LinkEvent>, shutdown: CancellationToken) {
        loop {
            let deadline = self.held.next_deadline();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                event = events.recv() => match event {
                    None => break,
                    Some(LinkEvent::Message(message)) => self.on_message(message).await,
                    Some(LinkEvent::Connected { session_present }) => {
                        bump(&self.inner.stats.connects);
                        if self.connected_once && !session_present {
                            self.republish_sender_keys();
                        }
                        self.connected_once = true;
                    }
                    Some(LinkEvent::Subscribed) => {
                        self.inner.subacks.send_modify(|n| *n += 1);
                    }
                    Some(_) => {}
                },
                () = sleep_until_or_never(deadline) => {
                    for held in self.held.expired(Instant::now()) {
                        self.give_up(held).await;
                    }
                }
            }
        }
        // ends every subscription's stream
        lock(&self.inner.subscribers).clear();
    }

    async fn on_message(&mut self, message: Message) {
        if let Some(rest) = message.topic.strip_prefix(&self.inner.prefix) {
            if ["node/", "group/", "senderkey/"]
                .iter()
                .any(|kind| rest.starts_with(kind))
            {
                self.on_note(&message).await;
            }
            return;
        }
        if !self.has_subscriber(&message.topic) {
            return;
        }
        if let Some(error) = self
            .open_and_deliver(&message.topic, &message.payload, message.retain)
            .await
        {
            bump(&self.inner.stats.held);
            if let Some(evicted) = self.held.hold(
                message.topic,
                message.payload,
                message.retain,
                error,
                Instant::now(),
            ) {
                self.give_up(evicted).await;
            }
        }
    }

    fn has_subscriber(&self, topic: &str) -> bool {
        lock(&self.inner.subscribers)
            .iter()
            .any(|s| s.filters.iter().any(|f| topic_matches(f, topic)))
    }

    /// Opens a message and delivers the outcome, or returns the error when a note that has not
    /// arrived yet may fix it (the caller holds the message).
    async fn open_and_deliver(
        &mut self,
        topic: &str,
        payload: &Bytes,
        retain: bool,
    ) -> Option<OpenError> {
        let result = {
            let mut guard = lock(&self.inner.state);
            let State { opener, epochs, .. } = &mut *guard;
            let now = Instant::now();
            let grace = self.inner.epoch_grace;
            opener.open_with_grace(topic, payload, |group| {
                epochs
                    .get(group)
                    .and_then(|(_, changed)| *changed)
                    .is_some_and(|at| now < at + grace)
            })
        };
        match result {
            Ok(Opened::Message(message)) => {
                bump(&self.inner.stats.opened);
                let item = Received::Message(ReceivedMessage {
                    topic: topic.to_owned(),
                    group: message.stream.group,
                    sender: message.stream.sender,
                    epoch: message.stream.epoch,
                    seq: message.seq,
                    payload: message.plaintext,
                    retain,
                });
                self.deliver(topic, item).await;
                None
            }
            Ok(Opened::Duplicate { .. }) => {
                bump(&self.inner.stats.duplicates);
                None
            }
            Err(error) if worth_holding(&error) => Some(error),
            Err(reason) => {
                self.unreadable(topic.to_owned(), payload.clone(), retain, reason)
                    .await;
                None
            }
        }
    }

    async fn give_up(&self, held: Held) {
        self.unreadable(held.topic, held.payload, held.retain, held.error)
            .await;
    }

    async fn unreadable(&self, topic: String, payload: Bytes, retain: bool, reason: OpenError) {
        bump(&self.inner.stats.unreadable);
        let item = Received::Unreadable(Unreadable {
            topic: topic.clone(),
            retain,
            reason,
            payload,
        });
        self.deliver(&topic, item).await;
    }

    async fn deliver(&self, topic: &str, item: Received) {
        let targets: Vec<mpsc::Sender<Received>> = lock(&self.inner.subscribers)
            .iter()
            .filter(|s| s.filters.iter().any(|f| topic_matches(f, topic)))
            .map(|s| s.tx.clone())
            .collect();
        let mut closed = false;
        for tx in targets {
            closed |= tx.send(item.clone()).await.is_err();
        }
        if closed {
            lock(&self.inner.subscribers).retain(|s| !s.tx.is_closed());
        }
    }

    /// Retries the held messages a note may have unblocked; those still waiting keep their
    /// place and deadline.
    async fn retry_held(&mut self, fixes: &[Fix]) {
        for fix in fixes {
            let ready = self.held.take_fixable(fix, &self.inner.node);
            let mut still = Vec::new();
            for mut held in ready {
                if let Some(error) = self
                    .open_and_deliver(&held.topic, &held.payload, held.retain)
                    .await
                {
                    held.error = error;
                    still.push(held);
                }
            }
            self.held.put_back(still);
        }
    }

    async fn on_note(&mut self, message: &Message) {
        if message.payload.is_empty() {
            // a cleared retained chunk
            return;
        }
        let mut fixes = Vec::new();
        let mut new_filters = Vec::new();
        let mut touched = Vec::new();
        {
            let mut guard = lock(&self.inner.state);
            let st = &mut *guard;
            match st.opener.ingest(&message.payload) {
                Ok(Ingested::Note(NoteUpdate::Group {
                    group,
                    changed: true,
                })) => {
                    fixes.push(Fix::Group(group));
                    if let Some(epoch) = st.opener.book().group(&group).map(|n| n.epoch()) {
                        let now = Instant::now();
                        st.epochs
                            .entry(group)
                            .and_modify(|(seen, changed)| {
                                if epoch > *seen {
                                    *seen = epoch;
                                    *changed = Some(now);
                                }
                            })
                            .or_insert((epoch, None));
                    }
                    let trusted = st
                        .opener
                        .book()
                        .group(&group)
                        .is_some_and(|note| st.opener.trust().accepts(note));
                    if trusted
                        && st.opener.membership(&group).is_ok()
                        && st.key_filters.insert(group)
                    {
                        new_filters.push(self.inner.topics.sender_keys_filter(&group));
                    }
                    touched.push(group);
                }
                Ok(Ingested::Note(NoteUpdate::Node {
                    node,
                    changed: true,
                })) => {
                    fixes.push(Fix::Node(node));
                    let groups: Vec<GroupId> = st
                        .opener
                        .book()
                        .groups()
                        .filter(|g| g.member(&node).is_some())
                        .map(|g| g.group())
                        .collect();
                    for group in groups {
                        if node != self.inner.node {
                            st.rekey.insert(group);
                        }
                        touched.push(group);
                    }
                }
                Ok(Ingested::SenderKey { stream, .. }) => fixes.push(Fix::SenderKey(stream)),
                Ok(_) => {}
                Err(error) => {
                    bump(&self.inner.stats.notes_refused);
                    tracing::warn!(target: "anchormq::agent", topic = %message.topic, %error, "note refused");
                }
            }
        }
        for filter in new_filters {
            if let Err(error) = self.inner.subscribe_filter(filter, QoS::AtLeastOnce).await {
                tracing::debug!(target: "anchormq::agent", %error, "cannot subscribe to sender keys");
            }
        }
        if !fixes.is_empty() {
            self.inner.notes.send_modify(|v| *v = v.wrapping_add(1));
            self.refresh_senders(&touched);
            if !self.held.is_empty() {
                self.retry_held(&fixes).await;
            }
        }
    }

    /// Brings the senders of changed groups up to date in the background, so a new sender key is
    /// out before the next message. Skips a sender that is busy: its next send checks anyway.
    fn refresh_senders(&self, groups: &[GroupId]) {
        for group in groups {
            let Some(sender) = self.inner.senders().get(group).cloned() else {
                continue;
            };
            let Ok(mut locked) = sender.try_lock_owned() else {
                continue;
            };
            let inner = self.inner.clone();
            tokio::spawn(async move {
                if let Err(error) = inner.ensure_ready(&mut locked).await {
                    tracing::debug!(target: "anchormq::agent", group = %locked.group, %error, "sender not refreshed");
                }
            });
        }
    }

    /// After a new session the broker may have lost retained messages: put our sender-key
    /// notes back.
    fn republish_sender_keys(&self) {
        let senders: Vec<_> = self.inner.senders().values().cloned().collect();
        for sender in senders {
            let inner = self.inner.clone();
            tokio::spawn(async move {
                let locked = sender.lock().await;
                for (i, chunk) in locked.note_chunks.iter().enumerate() {
                    let topic = inner
                        .topics
                        .sender_key(&locked.group, &inner.node, i as u16);
                    if let Ok(Some(seq)) = inner
                        .link
                        .publish(topic, chunk.clone(), QoS::AtLeastOnce, true)
                        .await
                    {
                        inner.last_link_seq.fetch_max(seq, Ordering::AcqRel);
                    }
                }
            });
        }
    }
}

async fn sleep_until_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
