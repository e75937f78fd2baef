//! The reading half: the task that reads the link. Notes go into the [`Opener`] (and wake senders
//! and held messages); messages are opened and delivered to the subscriptions whose filters match,
//! or held briefly when a note they need has not arrived yet.
//!
//! [`Opener`]: anchormq_core::Opener

use std::sync::Arc;

use anchormq_core::{
    GroupId, IngestError, Ingested, MembershipError, NoteError, NoteTopic, NoteUpdate, OpenError,
    Opened, SenderKeyError, topic_matches,
};
use anchormq_mqtt::{LinkEvent, Message, QoS};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Inner, State, bump, lock};
use crate::hold::{Fix, Held, HoldQueue, worth_holding};
use crate::received::{Missing, Received, ReceivedMessage, Unreadable};

/// The task that reads the link.
pub(super) struct Reader {
    inner: Arc<Inner>,
    held: HoldQueue,
    connected_once: bool,
}

impl Reader {
    pub(super) fn new(inner: Arc<Inner>, held: HoldQueue) -> Self {
        Self {
            inner,
            held,
            connected_once: false,
        }
    }

    pub(super) async fn run(
        mut self,
        mut events: mpsc::Receiver<LinkEvent>,
        shutdown: CancellationToken,
    ) {
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
        match self.inner.topics.parse(&message.topic) {
            Some(
                NoteTopic::Node { .. } | NoteTopic::Group { .. } | NoteTopic::SenderKey { .. },
            ) => {
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

    async fn deliver_opened(&self, topic: &str, message: anchormq_core::Message, retain: bool) {
        bump(&self.inner.stats.opened);
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
        let mut st = lock(&self.inner.state);
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
        self.inner
            .stats
            .missing
            .fetch_add(missing.count(), std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(target: "anchormq::agent", group = %message.stream.group, sender = %message.stream.sender, from = missing.from, to = missing.to, "messages missing");
        Some(missing)
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
                Ok(
                    Ingested::SenderKey { stream, tag, .. }
                    | Ingested::SenderKeyNotForUs { stream, tag, .. },
                ) => fixes.push(Fix::SenderKey { stream, tag }),
                Ok(_) => {}
                Err(error) if superseded(&error) => {
                    // a retained note older than one already held: expected after every change
                    tracing::debug!(target: "anchormq::agent", topic = %message.topic, %error, "older note ignored");
                }
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
            self.inner.refresh_senders(&touched);
            if !self.held.is_empty() {
                self.retry_held(&fixes).await;
            }
        }
    }
}

async fn sleep_until_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
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
