//! The reading half: the task that reads the link. Notes go into the [`Opener`] (and wake senders
//! and held messages); messages are opened and delivered to the subscriptions whose filters match,
//! or held briefly when a note they need has not arrived yet. When messages queue up, opening
//! moves to lanes: tasks that each take whole streams, so several streams' signatures are
//! checked on several cores while every stream stays in order.
//!
//! [`Opener`]: anchormq_core::Opener

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anchormq_core::{
    Begun, GroupId, IngestError, Ingested, MembershipError, NodeId, NoteError, NoteTopic,
    NoteUpdate, OpenError, Opened, SenderKeyError, topic_matches,
};
use anchormq_mqtt::{LinkEvent, Message, QoS};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::{Inner, MAX_NODE_FILTERS, State, bump, lock};
use crate::hold::{Fix, Held, HoldQueue, awaits_sender_key, refuses_membership, worth_holding};
use crate::received::{Missing, Received, ReceivedMessage, Unreadable};

/// A message handed to a lane, or handed back to be held.
struct Job {
    topic: String,
    payload: Bytes,
    retain: bool,
}

/// A task that opens the messages of the streams that hash to it.
struct Lane {
    jobs: mpsc::Sender<Job>,
    /// Jobs handed over and not yet delivered: while any is, the stream's next messages go
    /// to the lane too, behind it.
    queued: Arc<AtomicUsize>,
}

/// Messages a lane handed over, per lane, before the reader waits for it.
const LANE_DEPTH: usize = 256;

/// How long a message may wait for its sender-key note before the reader subscribes to the
/// group's notes again: some brokers lose a live retained message now and then (Aedes with its
/// Redis persistence, when the next message overtakes it) but keep it stored, and a new
/// SUBSCRIBE makes them send the stored one.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(1);

/// The task that reads the link.
pub(super) struct Reader {
    inner: Arc<Inner>,
    held: HoldQueue,
    connected_once: bool,
    lanes: Vec<Lane>,
    /// Spreads streams over lanes.
    spread: std::collections::hash_map::RandomState,
    /// Messages a lane could not open yet, to hold here. Unbounded so that a lane never waits
    /// on the reader while the reader waits on it (a flood of unopenable messages would
    /// otherwise stall both); the reader takes these before new events, so it stays short.
    returned: mpsc::UnboundedReceiver<Job>,
    /// When to ask the broker again for sender-key notes that held messages wait for.
    ask_again_at: Option<Instant>,
    /// While every group note is being fetched: when the fetch counts as done (no note for
    /// [`SETTLE`]); then the messages held for it are judged.
    settle_at: Option<Instant>,
}

/// How long no note must arrive, after this agent subscribed to every group note, before the
/// group notes count as all in.
const SETTLE: Duration = Duration::from_millis(300);

impl Reader {
    pub(super) fn new(inner: Arc<Inner>, held: HoldQueue, lanes: usize) -> Self {
        let (returns, returned) = mpsc::unbounded_channel();
        let lanes = if lanes > 1 {
            (0..lanes)
                .map(|_| {
                    let (jobs, rx) = mpsc::channel(LANE_DEPTH);
                    let queued = Arc::new(AtomicUsize::new(0));
                    tokio::spawn(run_lane(inner.clone(), rx, queued.clone(), returns.clone()));
                    Lane { jobs, queued }
                })
                .collect()
        } else {
            Vec::new()
        };
        Self {
            inner,
            held,
            connected_once: false,
            lanes,
            spread: std::collections::hash_map::RandomState::new(),
            returned,
            ask_again_at: None,
            settle_at: None,
        }
    }

    pub(super) async fn run(
        mut self,
        mut events: mpsc::Receiver<LinkEvent>,
        shutdown: CancellationToken,
    ) {
        loop {
            if self.settle_at.is_none() && lock(&self.inner.state).discovering {
                self.settle_at = Some(Instant::now() + SETTLE);
            }
            let deadline = [self.held.next_deadline(), self.ask_again_at, self.settle_at]
                .into_iter()
                .flatten()
                .min();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                // a lane could not open it yet; a note may have arrived since: once more here
                Some(job) = self.returned.recv() => self.open_here(job).await,
                event = events.recv() => match event {
                    None => break,
                    Some(LinkEvent::Message(message)) => {
                        let queued = !events.is_empty();
                        self.on_message(message, queued).await;
                    }
                    Some(LinkEvent::Connected { session_present }) => {
                        bump(&self.inner.stats.connects);
                        if self.connected_once && !session_present {
                            self.inner.republish_sender_keys();
                        }
                        self.connected_once = true;
                    }
                    Some(LinkEvent::Subscribed) => {
                        self.inner.subacks.send_modify(|n| *n += 1);
                    }
                    Some(_) => {}
                },
                () = sleep_until_or_never(deadline) => {
                    let now = Instant::now();
                    if self.ask_again_at.is_some_and(|at| at <= now) {
                        self.ask_again().await;
                    }
                    if self.settle_at.is_some_and(|at| at <= now) {
                        self.settle_at = None;
                        lock(&self.inner.state).discovering = false;
                        self.retry_held(&[Fix::Groups]).await;
                    }
                    for held in self.held.expired(now) {
                        self.give_up(held).await;
                    }
                }
            }
        }
        // ends every subscription's stream
        lock(&self.inner.subscribers).clear();
    }

    /// `queued`: more events wait behind this one.
    async fn on_message(&mut self, message: Message, queued: bool) {
        match self.inner.topics.parse(&message.topic) {
            Some(
                NoteTopic::Node { .. } | NoteTopic::Group { .. } | NoteTopic::Membership { .. },
            ) => {
                bump(&self.inner.stats.chain_notes);
                self.on_note(&message).await;
                return;
            }
            Some(NoteTopic::SenderKey { .. }) => {
                self.on_note(&message).await;
                return;
            }
            // the event feed, or something else under the prefix: not for the agent
            Some(_) => return,
            None => {}
        }
        if !self.has_subscriber(&message.topic) {
            return;
        }
        let job = Job {
            topic: message.topic,
            payload: message.payload,
            retain: message.retain,
        };
        if let Some(lane) = self.lane_for(&job.payload, queued) {
            bump(&self.inner.stats.laned);
            lane.queued.fetch_add(1, Ordering::AcqRel);
            if let Err(mpsc::error::SendError(job)) = lane.jobs.send(job).await {
                // the lane is gone (shutting down): open it here
                lane.queued.fetch_sub(1, Ordering::AcqRel);
                self.open_here(job).await;
            }
            return;
        }
        self.open_here(job).await;
    }

    /// The lane for a message's stream, when opening should leave this task: messages are
    /// queuing up, or the lane still has some of this stream's.
    fn lane_for(&self, payload: &[u8], queued: bool) -> Option<&Lane> {
        if self.lanes.is_empty() {
            return None;
        }
        // the stream tag: an envelope's bytes 1..9 (anything shorter is refused wherever it goes)
        let mut hasher = self.spread.build_hasher();
        hasher.write(payload.get(1..9).unwrap_or_default());
        let lane = &self.lanes[(hasher.finish() % self.lanes.len() as u64) as usize];
        (queued || lane.queued.load(Ordering::Acquire) > 0).then_some(lane)
    }

    async fn open_here(&mut self, job: Job) {
        if let Some(error) = self
            .inner
            .open_and_deliver(&job.topic, &job.payload, job.retain)
            .await
        {
            self.hold(job, error).await;
        }
    }

    async fn hold(&mut self, job: Job, error: OpenError) {
        bump(&self.inner.stats.held);
        if awaits_sender_key(&error).is_some() && self.ask_again_at.is_none() {
            self.ask_again_at = Some(Instant::now() + ASK_AGAIN_AFTER);
        }
        if let Some(evicted) =
            self.held
                .hold(job.topic, job.payload, job.retain, error, Instant::now())
        {
            self.give_up(evicted).await;
        }
        self.discover_if_needed(false).await;
    }

    /// Follows every group note when a held message's topic is claimed by no group held, once
    /// this node's own groups are all in (or `waited`: its membership note may never come, for
    /// example from a bridge that predates it). The group that claims the topic either lists this
    /// node after all or says whose topic it is ("not a member of ...").
    async fn discover_if_needed(&self, waited: bool) {
        let needed = {
            let st = lock(&self.inner.state);
            let book = st.opener.book();
            !st.all_groups
                && (waited || st.knows_own_groups(&self.inner.node))
                && self.held.awaiting_sender_keys().any(|(topic, group)| {
                    group.is_none() && book.groups_for_topic(topic).is_empty()
                })
        };
        if needed && let Err(error) = self.inner.discover_groups().await {
            tracing::debug!(target: "anchormq::agent", %error, "cannot subscribe to the group notes");
        }
    }

    /// Subscribes again to the sender-key notes of the groups whose held messages still wait
    /// for one, so that the broker sends the stored notes again.
    async fn ask_again(&mut self) {
        self.ask_again_at = None;
        self.discover_if_needed(true).await;
        let filters: BTreeSet<String> = {
            let st = lock(&self.inner.state);
            let book = st.opener.book();
            let me = &self.inner.node;
            let mut groups = BTreeSet::new();
            for (topic, group) in self.held.awaiting_sender_keys() {
                match group {
                    Some(group) => {
                        groups.insert(group);
                    }
                    None => groups.extend(
                        book.groups_for_topic(topic)
                            .into_iter()
                            .filter(|g| g.member(me).is_some_and(|m| m.roles.reads()))
                            .map(|g| g.group()),
                    ),
                }
            }
            groups
                .into_iter()
                .filter(|g| st.key_filters.contains(g))
                .map(|g| self.inner.topics.sender_keys_filter(&g))
                .collect()
        };
        for filter in filters {
            bump(&self.inner.stats.asked_again);
            tracing::debug!(target: "anchormq::agent", %filter, "messages wait for a sender-key note: subscribing again");
            if let Err(error) = self.inner.subscribe_filter(filter, QoS::AtLeastOnce).await {
                tracing::debug!(target: "anchormq::agent", %error, "cannot subscribe to sender keys again");
            }
        }
    }

    fn has_subscriber(&self, topic: &str) -> bool {
        lock(&self.inner.subscribers)
            .iter()
            .any(|s| s.filters.iter().any(|f| topic_matches(f, topic)))
    }

    async fn give_up(&self, held: Held) {
        self.inner
            .unreadable(held.topic, held.payload, held.retain, held.error)
            .await;
    }

    /// Retries the held messages a note may have unblocked; those still waiting keep their
    /// place and deadline.
    async fn retry_held(&mut self, fixes: &[Fix]) {
        for fix in fixes {
            let ready = self.held.take_fixable(fix, &self.inner.node);
            let mut still = Vec::new();
            for mut held in ready {
                if let Some(error) = self
                    .inner
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
        if let Some(at) = &mut self.settle_at {
            *at = Instant::now() + SETTLE;
        }
        if message.payload.is_empty() {
            // a cleared retained chunk
            return;
        }
        let mut fixes = Vec::new();
        let mut new_filters = Vec::new();
        let mut touched = Vec::new();
        let mut memberships_changed = false;
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
                    // writers that do not read are given no keys: their notes are not for them
                    let reads = st
                        .opener
                        .book()
                        .group(&group)
                        .and_then(|note| note.member(&self.inner.node))
                        .is_some_and(|m| m.roles.reads());
                    if trusted
                        && reads
                        && st.opener.membership(&group).is_ok()
                        && st.key_filters.insert(group)
                    {
                        new_filters.push(self.inner.topics.sender_keys_filter(&group));
                    }
                    if trusted {
                        // only the node notes of its groups' members: what it wraps keys for
                        // and whose messages it checks
                        let members: Vec<NodeId> = st
                            .opener
                            .book()
                            .group(&group)
                            .filter(|note| note.member(&self.inner.node).is_some())
                            .map(|note| note.members().iter().map(|m| m.node).collect())
                            .unwrap_or_default();
                        new_filters.extend(self.follow_nodes(st, members));
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
                Ok(Ingested::Note(NoteUpdate::Membership {
                    node,
                    changed: true,
                })) if node == self.inner.node => {
                    memberships_changed = true;
                    let groups: Vec<GroupId> = st
                        .opener
                        .book()
                        .membership(&node)
                        .map(|note| note.groups().to_vec())
                        .unwrap_or_default();
                    for group in groups {
                        if st.follow_group(group) {
                            new_filters.push(self.inner.topics.group_note_filter(&group));
                        }
                    }
                }
                Ok(
                    Ingested::SenderKey { stream, tag, .. }
                    | Ingested::SenderKeyNotForUs { stream, tag, .. },
                ) => fixes.push(Fix::SenderKey { stream, tag }),
                Ok(_) => {}
                Err(error) if superseded(&error) => {
                    // a retained note older than one already held: expected after every change
                    tracing::debug!(target: "anchormq::agent", topic = %message.topic, %error, "older note ignored");
                }
                Err(error) if wrong_own_key(st, &self.inner, &error) => {
                    // the real problem, this node's key not being its on-chain key, is what
                    // `Agent::check_identity` reports
                    bump(&self.inner.stats.notes_refused);
                    tracing::debug!(target: "anchormq::agent", topic = %message.topic, %error, "note refused: this node's key is not its on-chain key");
                }
                Err(error) => {
                    bump(&self.inner.stats.notes_refused);
                    tracing::warn!(target: "anchormq::agent", topic = %message.topic, %error, "note refused");
                }
            }
        }
        for filter in new_filters {
            if let Err(error) = self.inner.subscribe_filter(filter, QoS::AtLeastOnce).await {
                tracing::debug!(target: "anchormq::agent", %error, "cannot subscribe to note topics");
            }
        }
        // a new membership note too: senders waiting to learn this node's groups look again
        if memberships_changed || !fixes.is_empty() {
            self.inner.notes.send_modify(|v| *v = v.wrapping_add(1));
        }
        if !fixes.is_empty() {
            self.inner.refresh_senders(&touched);
            if !self.held.is_empty() {
                self.retry_held(&fixes).await;
            }
        }
        if !self.held.is_empty() {
            self.discover_if_needed(false).await;
        }
    }
}

/// A lane: opens what the reader hands it, in order, and delivers it.
async fn run_lane(
    inner: Arc<Inner>,
    mut jobs: mpsc::Receiver<Job>,
    queued: Arc<AtomicUsize>,
    returns: mpsc::UnboundedSender<Job>,
) {
    while let Some(job) = jobs.recv().await {
        if inner
            .open_and_deliver(&job.topic, &job.payload, job.retain)
            .await
            .is_some()
        {
            // for the reader to hold (dropped when it has stopped)
            let _ = returns.send(job);
        }
        queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Opening and delivering, shared by the reader and its lanes.
impl Inner {
    /// Opens a message and delivers the outcome, or returns the error when a note that has not
    /// arrived yet may fix it (the caller holds the message).
    async fn open_and_deliver(
        &self,
        topic: &str,
        payload: &Bytes,
        retain: bool,
    ) -> Option<OpenError> {
        match self.open(topic, payload) {
            Ok(Opened::Message(message)) => {
                self.deliver_opened(topic, message, retain).await;
                None
            }
            Ok(Opened::Batch(messages)) => {
                for message in messages {
                    self.deliver_opened(topic, message, retain).await;
                }
                None
            }
            // delivered with the rest of its batch when the batch end arrives
            Ok(Opened::Pending { .. }) => None,
            Ok(Opened::Duplicate { .. }) => {
                bump(&self.stats.duplicates);
                None
            }
            Err(error) if worth_holding(&error) => Some(error),
            // the group notes still arriving may name the group that lists this node, or all
            // the groups that claim the topic: judge once they are in
            Err(error) if refuses_membership(&error) && lock(&self.state).discovering => {
                Some(error)
            }
            Err(reason) => {
                self.unreadable(topic.to_owned(), payload.clone(), retain, reason)
                    .await;
                None
            }
        }
    }

    /// Opens with the state locked only around the opener's bookkeeping: signature checks and
    /// decryption run unlocked, so lanes verify side by side.
    fn open(&self, topic: &str, payload: &[u8]) -> Result<Opened, OpenError> {
        let begun = {
            let mut guard = lock(&self.state);
            let State { opener, epochs, .. } = &mut *guard;
            let now = Instant::now();
            let grace = self.epoch_grace;
            opener.begin(topic, payload, |group| {
                epochs
                    .get(group)
                    .and_then(|(_, changed)| *changed)
                    .is_some_and(|at| now < at + grace)
            })?
        };
        match begun {
            Begun::Opened(opened) => Ok(opened),
            Begun::Unverified(unverified) => {
                let verified = unverified.verify(topic)?;
                lock(&self.state).opener.commit(verified)
            }
        }
    }

    async fn deliver_opened(&self, topic: &str, message: anchormq_core::Message, retain: bool) {
        bump(&self.stats.opened);
        let missing = if retain {
            // a retained message is a snapshot, not part of the live sequence
            None
        } else {
            self.missing_before(&message)
        };
        let item = Received::Message(ReceivedMessage {
            topic: topic.to_owned(),
            group: message.stream.group,
            sender: message.stream.sender,
            epoch: message.stream.epoch,
            seq: message.seq,
            payload: message.plaintext,
            retain,
            missing,
        });
        self.deliver(topic, item).await;
    }

    /// Records `message` as delivered and returns the sequence numbers of its sender key that
    /// were skipped since the last one delivered (none for the first seen of a key).
    fn missing_before(&self, message: &anchormq_core::Message) -> Option<Missing> {
        const TRACKED: usize = 4096;
        let mut st = lock(&self.state);
        let key = (message.key_id, message.stream);
        if st.delivered.len() >= TRACKED && !st.delivered.contains_key(&key) {
            // bounded memory: forget old sender keys (a gap across the reset goes unseen)
            st.delivered.clear();
        }
        let last = st.delivered.get(&key).copied();
        if last.is_none_or(|last| message.seq > last) {
            st.delivered.insert(key, message.seq);
        }
        let missing = last
            .filter(|last| message.seq > last + 1)
            .map(|last| Missing {
                from: last + 1,
                to: message.seq - 1,
            })?;
        self.stats
            .missing
            .fetch_add(missing.count(), std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(target: "anchormq::agent", group = %message.stream.group, sender = %message.stream.sender, from = missing.from, to = missing.to, "messages missing");
        Some(missing)
    }

    async fn unreadable(&self, topic: String, payload: Bytes, retain: bool, reason: OpenError) {
        bump(&self.stats.unreadable);
        let item = Received::Unreadable(Unreadable {
            topic: topic.clone(),
            retain,
            reason,
            payload,
        });
        self.deliver(&topic, item).await;
    }

    async fn deliver(&self, topic: &str, item: Received) {
        let targets: Vec<mpsc::Sender<Received>> = lock(&self.subscribers)
            .iter()
            .filter(|s| s.filters.iter().any(|f| topic_matches(f, topic)))
            .map(|s| s.tx.clone())
            .collect();
        let mut closed = false;
        for tx in targets {
            closed |= tx.send(item.clone()).await.is_err();
        }
        if closed {
            lock(&self.subscribers).retain(|s| !s.tx.is_closed());
        }
    }
}

impl Reader {
    /// The node-note filters to subscribe to for `members`, recording them as followed.
    fn follow_nodes(&self, st: &mut State, members: Vec<NodeId>) -> Vec<String> {
        if st.all_nodes {
            return Vec::new();
        }
        let new: Vec<NodeId> = members
            .into_iter()
            .filter(|node| st.node_filters.insert(*node))
            .collect();
        if st.node_filters.len() > MAX_NODE_FILTERS {
            st.all_nodes = true;
            return vec![self.inner.topics.node_notes_filter()];
        }
        new.iter()
            .map(|node| self.inner.topics.node_note_filter(node))
            .collect()
    }
}

async fn sleep_until_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A sender key that did not unwrap because this node's key is not the one its node note holds.
fn wrong_own_key(st: &State, inner: &Inner, error: &IngestError) -> bool {
    matches!(error, IngestError::SenderKey(SenderKeyError::Unwrap { .. }))
        && st
            .opener
            .book()
            .node(&inner.node)
            .is_some_and(|note| note.public_key != inner.node_key.public_key())
}

/// Refusals that only say a note was overtaken by a newer one: a retained sender-key note of an
/// earlier epoch, or a chain note older than the one held. Normal operation; anything else (bad
/// signature, foreign registry, malformed bytes) is worth a warning.
fn superseded(error: &IngestError) -> bool {
    matches!(
        error,
        IngestError::SenderKey(SenderKeyError::Sender {
            source: MembershipError::StaleEpoch { .. },
            ..
        }) | IngestError::Note(NoteError::Rollback { .. })
    )
}
