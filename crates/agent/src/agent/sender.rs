//! The sending half: per-group senders that resolve a topic's group, keep their sender key current
//! (a new key after an epoch change or a member's key rotation, its note published and
//! acknowledged before any message sealed under it) and seal.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anchormq_core::topics::validate_topic_name;
use anchormq_core::{GroupId, MembershipError, SealError, Sealer, SenderKeyNoteBuild};
use anchormq_mqtt::QoS;
use bytes::Bytes;
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, RngCore, SeedableRng};
use tokio::time::Instant;
use tokio_util::sync::DropGuard;

use super::{Inner, State, bump, lock};
use crate::error::AgentError;
use crate::guard::{Check, Suppressed};

/// How long a sender waits for its membership note and its groups' notes before it looks at
/// every group for the topic (when they came sooner, it looks at once).
const DISCOVER_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// How to publish: QoS, retain flag and the group to seal for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishOptions {
    /// QoS of the messages (default 1: the broker acknowledges each, [`Agent::flush`] waits for
    /// that).
    ///
    /// [`Agent::flush`]: super::Agent::flush
    pub qos: QoS,
    /// Ask the broker to retain the messages (default no).
    pub retain: bool,
    /// The group to seal for (default `None`: the one trusted group whose topic filter matches
    /// the topic and that lists this node).
    pub group: Option<GroupId>,
}

impl Default for PublishOptions {
    fn default() -> Self {
        Self {
            qos: QoS::AtLeastOnce,
            retain: false,
            group: None,
        }
    }
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
    /// For QoS 1, the link's number for it: [`Agent::acked`](super::Agent::acked) waits for the
    /// broker's PUBACK.
    pub link_seq: Option<u64>,
}

/// What became of one message: sealed and published, or held back by the agent's guard because
/// the reading is within the deadband of the last one sent. (A refused reading is an error,
/// [`AgentError::Refused`].)
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Sealed and handed to the link.
    Sent(Published),
    /// Not sent: within the deadband of the last reading sent on the topic.
    Suppressed(Suppressed),
}

impl Outcome {
    /// What the publish did, or `None` when the reading was suppressed.
    pub fn published(&self) -> Option<Published> {
        match self {
            Self::Sent(published) => Some(*published),
            Self::Suppressed(_) => None,
        }
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
    _drop_guard: Arc<DropGuard>,
}

impl Publisher {
    /// Resolves the group once (waiting for its note) and makes sure this node can send in it
    /// (sender key published and acknowledged).
    pub(super) async fn start(
        inner: Arc<Inner>,
        drop_guard: Arc<DropGuard>,
        topic: &str,
        options: PublishOptions,
    ) -> Result<Self, AgentError> {
        validate_topic_name(topic).map_err(|source| AgentError::InvalidTopic {
            topic: topic.to_owned(),
            source,
        })?;
        if topic.starts_with(&inner.prefix) {
            return Err(AgentError::ReservedTopic {
                topic: topic.to_owned(),
                prefix: inner.prefix.clone(),
            });
        }
        let group = inner.resolve_group(topic, options.group).await?;
        let sender = inner.sender_for(group);
        {
            let mut locked = sender.lock().await;
            inner.ensure_ready(&mut locked).await?;
        }
        Ok(Self {
            inner,
            sender,
            group,
            topic: topic.to_owned(),
            qos: options.qos,
            retain: options.retain,
            _drop_guard: drop_guard,
        })
    }

    /// The group messages are sealed for.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The topic messages are published to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Puts one message through the agent's guard, then seals and publishes it unless the guard
    /// suppressed it. A reading the guard refuses is [`AgentError::Refused`].
    pub async fn send(&self, payload: &[u8]) -> Result<Outcome, AgentError> {
        let mut sender = self.sender.lock().await;
        self.inner
            .send_guarded(&mut sender, &self.topic, payload, self.qos, self.retain)
            .await
    }

    /// Sends several messages as [`Publisher::send`] does, holding the group's sender for all of
    /// them, in bursts of up to [`BURST`] messages under one signature (readers deliver a burst
    /// when its last message arrives; retained messages are signed one by one). Returns the last
    /// one published (`None` if the guard suppressed every one); stops at the first error,
    /// including a reading the guard refuses (the readings before it are sent first).
    pub async fn send_many<I>(&self, payloads: I) -> Result<Option<Published>, AgentError>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut sender = self.sender.lock().await;
        let mut last = None;
        // a broker retains only the last message of a topic: retained ones are signed alone
        let size = if self.retain { 1 } else { BURST };
        let mut burst: Vec<I::Item> = Vec::with_capacity(size);
        for payload in payloads {
            let now = std::time::Instant::now();
            match self.inner.guard_verdict(&self.topic, payload.as_ref(), now) {
                Ok(Verdict::Send(value)) => {
                    if let Some(value) = value {
                        // later readings of this burst are judged against this one, as if sent
                        lock(&self.inner.guard_memory).sent(&self.topic, value, now);
                    }
                    burst.push(payload);
                }
                Ok(Verdict::Suppressed(_)) => {}
                Err(error) => {
                    self.send_burst(&mut sender, &burst).await?;
                    return Err(error);
                }
            }
            if burst.len() == size {
                last = self.send_burst(&mut sender, &burst).await?.or(last);
                burst.clear();
            }
        }
        Ok(self.send_burst(&mut sender, &burst).await?.or(last))
    }

    async fn send_burst<P: AsRef<[u8]>>(
        &self,
        sender: &mut GroupSender,
        burst: &[P],
    ) -> Result<Option<Published>, AgentError> {
        if burst.is_empty() {
            return Ok(None);
        }
        self.inner
            .send_sealed(sender, &self.topic, burst, self.qos, self.retain)
            .await
            .map(Some)
    }
}

/// Messages [`Publisher::send_many`] seals under one signature.
pub const BURST: usize = 64;

/// What the guard says of one reading.
enum Verdict {
    /// Send it; record `value` (a guarded reading) once sent.
    Send(Option<f64>),
    /// Within the deadband: not sent.
    Suppressed(Suppressed),
}

pub(super) struct GroupSender {
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

/// What one look at the notes says about a group sender.
enum Step {
    Ready,
    Rekey(Box<(Sealer, SenderKeyNoteBuild)>),
    Wait(AgentError),
    Fail(AgentError),
}

impl Inner {
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

    /// The group to seal for: `group` if given (it must be trusted), else the one trusted group
    /// whose topic filter matches `topic` and that has this node as a member. Groups others made
    /// over the same topics are not candidates, so they can neither capture nor block a topic.
    async fn resolve_group(
        &self,
        topic: &str,
        group: Option<GroupId>,
    ) -> Result<GroupId, AgentError> {
        if let Some(group) = group {
            self.follow_group(group).await?;
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
        let usable = |st: &State| {
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
        };
        let deadline = Instant::now() + self.wait_timeout;
        // first among this node's own groups (its membership note names them), which are all
        // it follows unless it has needed others
        let own = self
            .wait_until(self.wait_timeout.min(DISCOVER_AFTER), |st| {
                match usable(st) {
                    Some(result) => Some(Some(result)),
                    None if st.knows_own_groups(&self.node) => Some(None),
                    None => None,
                }
            })
            .await;
        if let Some(Some(result)) = own {
            return result;
        }
        // then among every group: one that lists this node before its membership note does, or
        // the one to name in the error
        self.discover_groups().await?;
        let found = self
            .wait_until(deadline.saturating_duration_since(Instant::now()), usable)
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
            _ if book.groups().next().is_none() && book.nodes().next().is_none() => {
                // not a single note: the cause is the broker or the registry, not the topic
                Err(AgentError::NoNotes {
                    broker: self.broker.clone(),
                    prefix: self.topics.prefix().to_owned(),
                    waited: self.wait_timeout,
                    connected: self
                        .stats
                        .connects
                        .load(std::sync::atomic::Ordering::Relaxed)
                        > 0,
                })
            }
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
            // the admin may just have granted the role: its group note would be on the way
            error @ SealError::Membership(MembershipError::MissingRole { .. }) => {
                Step::Wait(AgentError::Seal(error))
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

    /// Puts `payload` through the guard, then seals and publishes it if the guard lets it pass.
    async fn send_guarded(
        &self,
        sender: &mut GroupSender,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
    ) -> Result<Outcome, AgentError> {
        let now = std::time::Instant::now();
        match self.guard_verdict(topic, payload, now)? {
            Verdict::Send(value) => {
                let published = self
                    .send_sealed(sender, topic, &[payload], qos, retain)
                    .await?;
                if let Some(value) = value {
                    lock(&self.guard_memory).sent(topic, value, now);
                }
                Ok(Outcome::Sent(published))
            }
            Verdict::Suppressed(suppressed) => Ok(Outcome::Suppressed(suppressed)),
        }
    }

    /// The guard's word on one reading, counted and logged.
    fn guard_verdict(
        &self,
        topic: &str,
        payload: &[u8],
        now: std::time::Instant,
    ) -> Result<Verdict, AgentError> {
        match self
            .guard
            .check(&mut lock(&self.guard_memory), topic, payload, now)
        {
            Check::Unguarded => Ok(Verdict::Send(None)),
            Check::Send { value } => Ok(Verdict::Send(Some(value))),
            Check::Suppressed(suppressed) => {
                bump(&self.stats.suppressed);
                tracing::debug!(
                    target: "anchormq::agent",
                    topic,
                    value = suppressed.value,
                    last_sent = suppressed.last_sent,
                    "reading suppressed"
                );
                Ok(Verdict::Suppressed(suppressed))
            }
            Check::Refused(refused) => {
                bump(&self.stats.refused);
                // the guard doing its job, not a fault: info, not warn
                tracing::info!(
                    target: "anchormq::agent",
                    topic,
                    value = %refused.reading,
                    rule = %refused.rule,
                    reason = %refused.reason,
                    "reading refused"
                );
                Err(AgentError::Refused(refused))
            }
        }
    }

    /// Seals `payloads` (one: signed alone; more: one burst under one signature) and publishes
    /// them in order; returns the last one.
    async fn send_sealed<P: AsRef<[u8]>>(
        &self,
        sender: &mut GroupSender,
        topic: &str,
        payloads: &[P],
        qos: QoS,
        retain: bool,
    ) -> Result<Published, AgentError> {
        self.ensure_ready(sender).await?;
        let group = sender.group;
        let sealer = sender
            .sealer
            .as_mut()
            .ok_or_else(|| self.no_group_note(group))?;
        let stream = *sealer.stream();
        let first = sealer.next_seq();
        let envelopes = sealer
            .seal_batch(topic, payloads)
            .map_err(AgentError::Seal)?;
        let mut link_seq = None;
        for envelope in envelopes {
            link_seq = self
                .link
                .publish(topic.to_owned(), Bytes::from(envelope), qos, retain)
                .await?;
            bump(&self.stats.published);
        }
        if let Some(s) = link_seq {
            self.last_link_seq.fetch_max(s, Ordering::AcqRel);
        }
        Ok(Published {
            group,
            epoch: stream.epoch,
            seq: first + payloads.len() as u64 - 1,
            link_seq,
        })
    }

    /// Brings the senders of changed groups up to date in the background, so a new sender key is
    /// out before the next message. Skips a sender that is busy: its next send checks anyway.
    pub(super) fn refresh_senders(self: &Arc<Self>, groups: &[GroupId]) {
        for group in groups {
            let Some(sender) = self.senders().get(group).cloned() else {
                continue;
            };
            let Ok(mut locked) = sender.try_lock_owned() else {
                continue;
            };
            let inner = self.clone();
            tokio::spawn(async move {
                if let Err(error) = inner.ensure_ready(&mut locked).await {
                    tracing::debug!(target: "anchormq::agent", group = %locked.group, %error, "sender not refreshed");
                }
            });
        }
    }

    /// After a new session the broker may have lost retained messages: put our sender-key
    /// notes back.
    pub(super) fn republish_sender_keys(self: &Arc<Self>) {
        let senders: Vec<_> = self.senders().values().cloned().collect();
        for sender in senders {
            let inner = self.clone();
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
