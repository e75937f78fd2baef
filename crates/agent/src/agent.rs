//! The agent: one MQTT link, one task that reads it ([`reader`]: notes into the [`Opener`],
//! messages out to subscriptions), and per-group senders that keep their sender key current
//! before sealing ([`sender`]). This module holds what both share: the link, the notes held, the
//! subscribers and the counters.
//!
//! [`Opener`]: anchormq_core::Opener

mod reader;
mod sender;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anchormq_core::topics::validate_topic_filter;
use anchormq_core::{GroupId, KeyBook, NodeId, NodeSecretKey, Opener, StreamId, Topics};
use anchormq_mqtt::{Link, QoS};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::AgentConfig;
use crate::error::AgentError;
use crate::guard::{Guard, GuardMemory};
use crate::hold::HoldQueue;
use crate::received::Received;

use reader::Reader;
use sender::GroupSender;
pub use sender::{BURST, Outcome, PublishOptions, Published, Publisher};

/// A running node agent. Cheap to clone; the agent stops when its shutdown token is cancelled or
/// the last handle (agent, [`Publisher`] or [`Subscription`]) is dropped. Call [`Agent::flush`]
/// first so that queued QoS 1 messages reach the broker.
#[derive(Debug, Clone)]
pub struct Agent {
    inner: Arc<Inner>,
    drop_guard: Arc<DropGuard>,
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentStats {
    /// Messages sealed and handed to the link.
    pub published: u64,
    /// Node, group and membership note chunks received (what following the registry costs this
    /// agent: its own groups and their members, not the whole registry).
    pub chain_notes: u64,
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
    /// Readings the guard did not send because they were within the deadband.
    pub suppressed: u64,
    /// Readings the guard refused (out of range, too large a step, not a number).
    pub refused: u64,
    /// Messages that never arrived, seen from gaps in their sender's sequence numbers.
    pub missing: u64,
    /// Messages handed to an opening lane because messages were queuing up.
    pub laned: u64,
    /// Subscriptions to a group's sender-key notes sent again because messages waited too long
    /// for one.
    pub asked_again: u64,
}

/// A stream of received messages for the filters given to [`Agent::subscribe`].
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<Received>,
    _drop_guard: Arc<DropGuard>,
}

impl Subscription {
    /// The next message, or `None` once the agent has stopped.
    pub async fn recv(&mut self) -> Option<Received> {
        self.rx.recv().await
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
    guard: Guard,
    /// What the guard remembers per topic (previous accepted reading, last sent).
    guard_memory: Mutex<GuardMemory>,
}

#[derive(Debug)]
struct State {
    opener: Opener,
    /// Last epoch seen per group, and when it last went up (for the grace period).
    epochs: HashMap<GroupId, (u64, Option<Instant>)>,
    /// Groups whose sender-key filter is subscribed.
    key_filters: HashSet<GroupId>,
    /// Nodes whose note is subscribed: this node and the members of its trusted groups (every
    /// node once there are more than [`MAX_NODE_FILTERS`]).
    node_filters: HashSet<NodeId>,
    /// Subscribed to every node note.
    all_nodes: bool,
    /// Groups whose note is subscribed: those this node's membership note lists, and any named
    /// to [`Agent::publish`].
    group_filters: HashSet<GroupId>,
    /// Subscribed to every group note: a topic none of this node's groups claims needed the group
    /// that does (to use it, or to say whose topic it is).
    all_groups: bool,
    /// The group notes that subscription brings are still arriving: a refusal for want of
    /// membership waits until they are in.
    discovering: bool,
    /// Groups where a member's node note changed: the next send draws a new sender key.
    rekey: HashSet<GroupId>,
    /// Highest sequence number delivered per sender key, to see what never arrived.
    delivered: HashMap<([u8; 32], StreamId), u64>,
}

impl State {
    /// Whether the notes of every group this node is in are held: its membership note came, and
    /// the group notes it lists. Until then a topic no held group claims may still be its own.
    fn knows_own_groups(&self, me: &NodeId) -> bool {
        let book = self.opener.book();
        book.membership(me)
            .is_some_and(|note| note.groups().iter().all(|g| book.group(g).is_some()))
    }

    /// Records `group`'s note as followed; true when its filter is still to be subscribed (not
    /// followed yet, and not covered by the subscription to every group note).
    fn follow_group(&mut self, group: GroupId) -> bool {
        !self.all_groups && self.group_filters.insert(group)
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
    chain_notes: AtomicU64,
    sender_key_notes: AtomicU64,
    opened: AtomicU64,
    unreadable: AtomicU64,
    duplicates: AtomicU64,
    held: AtomicU64,
    notes_refused: AtomicU64,
    connects: AtomicU64,
    suppressed: AtomicU64,
    refused: AtomicU64,
    missing: AtomicU64,
    laned: AtomicU64,
    asked_again: AtomicU64,
}

/// Members whose node notes an agent subscribes to one by one; past this many it subscribes to
/// every node note instead (one filter, and the broker's retained limits permitting).
const MAX_NODE_FILTERS: usize = 1024;

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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
                node_filters: HashSet::from([config.node]),
                all_nodes: false,
                group_filters: HashSet::new(),
                all_groups: false,
                discovering: false,
                rekey: HashSet::new(),
                delivered: HashMap::new(),
            }),
            notes: watch::Sender::new(0),
            senders: Mutex::new(HashMap::new()),
            subscribers: Mutex::new(Vec::new()),
            subscribe_requests: tokio::sync::Mutex::new(0),
            subacks: watch::Sender::new(0),
            last_link_seq: AtomicU64::new(0),
            stats: Counters::default(),
            guard: config.guard,
            guard_memory: Mutex::new(GuardMemory::default()),
            link,
            topics,
        });
        inner
            .subscribe_filter(inner.topics.node_note_filter(&inner.node), QoS::AtLeastOnce)
            .await?;
        // the groups to follow come from this node's membership note
        inner
            .subscribe_filter(
                inner.topics.membership_note_filter(&inner.node),
                QoS::AtLeastOnce,
            )
            .await?;
        let reader = Reader::new(
            inner.clone(),
            HoldQueue::new(config.hold_max_messages, config.hold_timeout),
            config.open_lanes,
        );
        tokio::spawn(reader.run(events, token.clone()));
        Ok(Self {
            inner,
            drop_guard: Arc::new(token.drop_guard()),
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
            chain_notes: get(&c.chain_notes),
            sender_key_notes: get(&c.sender_key_notes),
            opened: get(&c.opened),
            unreadable: get(&c.unreadable),
            duplicates: get(&c.duplicates),
            held: get(&c.held),
            notes_refused: get(&c.notes_refused),
            connects: get(&c.connects),
            suppressed: get(&c.suppressed),
            laned: get(&c.laned),
            asked_again: get(&c.asked_again),
            refused: get(&c.refused),
            missing: get(&c.missing),
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
            _drop_guard: self.drop_guard.clone(),
        })
    }

    /// Puts `payload` through the agent's guard (see [`AgentConfig::guard`]), then seals it for
    /// `options.group` (or the one group whose topic filter matches `topic`) and publishes it,
    /// unless the guard suppressed it. Waits for the notes it needs, and draws and publishes a new
    /// sender key first when the group's epoch or a member's key changed.
    pub async fn publish(
        &self,
        topic: &str,
        payload: &[u8],
        options: PublishOptions,
    ) -> Result<Outcome, AgentError> {
        let publisher = self.publisher(topic, options).await?;
        publisher.send(payload).await
    }

    /// Seals and publishes many payloads to one topic, as [`Publisher::send_many`] does.
    pub async fn publish_many<I>(
        &self,
        topic: &str,
        payloads: I,
        options: PublishOptions,
    ) -> Result<Option<Published>, AgentError>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let publisher = self.publisher(topic, options).await?;
        publisher.send_many(payloads).await
    }

    /// A publisher for one topic: resolves the group once (waiting for its note) and makes sure
    /// this node can send in it (sender key published and acknowledged).
    pub async fn publisher(
        &self,
        topic: &str,
        options: PublishOptions,
    ) -> Result<Publisher, AgentError> {
        Publisher::start(self.inner.clone(), self.drop_guard.clone(), topic, options).await
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

    /// Waits (bounded) for this node's own note and checks that the configured key is the node's
    /// key on chain, so a wrong key file is named at start-up rather than as missing sender keys
    /// later.
    pub async fn check_identity(&self) -> Result<(), AgentError> {
        let me = self.inner.node;
        let mine = self.inner.node_key.public_key();
        let note = self
            .inner
            .wait_until(self.inner.wait_timeout, |st| {
                st.opener
                    .book()
                    .node(&me)
                    .map(|n| (n.public_key, n.key_version))
            })
            .await;
        match note {
            Some((key, _)) if key == mine => Ok(()),
            Some((_, key_version)) => Err(AgentError::WrongNodeKey {
                node: me,
                key_version,
            }),
            None => Err(AgentError::NoNodeNote {
                node: me,
                waited: self.inner.wait_timeout,
                broker: self.inner.broker.clone(),
            }),
        }
    }

    /// Waits for the group's note (following it, if this node is not in the group); returns its
    /// epoch.
    pub async fn wait_for_group(&self, group: GroupId) -> Result<u64, AgentError> {
        self.inner.follow_group(group).await?;
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
        self.inner.follow_group(group).await?;
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

    /// Subscribes to the note of `group`, unless it is followed already.
    async fn follow_group(&self, group: GroupId) -> Result<(), AgentError> {
        let new = lock(&self.state).follow_group(group);
        if new {
            self.subscribe_filter(self.topics.group_note_filter(&group), QoS::AtLeastOnce)
                .await?;
        }
        Ok(())
    }

    /// Subscribes to every group note, once: for a topic that none of this node's groups claims.
    /// Its cost grows with the registry, so only a node that uses such a topic pays it.
    async fn discover_groups(&self) -> Result<(), AgentError> {
        let new = {
            let mut st = lock(&self.state);
            let new = !std::mem::replace(&mut st.all_groups, true);
            st.discovering |= new;
            new
        };
        if new {
            tracing::debug!(target: "anchormq::agent", "a topic outside this node's groups: following every group note");
            self.subscribe_filter(self.topics.group_notes_filter(), QoS::AtLeastOnce)
                .await?;
        }
        Ok(())
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
}
