//! The mirror loop: chain events in, signed retained notes out, checkpoint after the broker's ack.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anchormq_chain::{
    B256, Changed, Cursor, EventStream, PositionedEvent, RegistryState, StreamError, StreamItem,
    StreamPosition, StreamStats,
};
use anchormq_core::chunk::{Assembly, ChunkAssembler};
use anchormq_core::{
    GroupId, GroupNote, KeyBook, NodeId, NodeNote, NodeSecretKey, NoteKind, Registry, SignedNote,
    Topics,
};
use anchormq_mqtt::{Link, LinkEvent, Outbound, QoS};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::Checkpoint;
use crate::error::BridgeError;
use crate::metrics::Metrics;
use crate::notes;

/// A note's subject: which retained topics it owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Subject {
    Node([u8; 32]),
    Group([u8; 32]),
    /// A node's membership note.
    Membership([u8; 32]),
}

type StreamMessage = Result<(StreamItem, StreamPosition, StreamStats), StreamError>;

/// After a connection the broker sends the retained notes it holds; the marker we publish after
/// subscribing comes back after them on a broker that handles a client's packets in order
/// (Mosquitto, the embedded broker), or among them (rumqttd 0.20 forwards subscriptions in
/// rounds). What has not come back once the marker has and no note came for [`SYNC_QUIET`], the
/// broker lacks: only that is published again.
pub(crate) struct BrokerSync {
    marker: Bytes,
    marker_sent: bool,
    marker_back: bool,
    /// Note topics the broker showed holding our note.
    held: HashSet<String>,
    /// When to stop waiting: [`SYNC_TIMEOUT`] after connecting for the marker (a broker whose ACL
    /// drops it), then [`SYNC_QUIET`] after the last note shown.
    deadline: tokio::time::Instant,
}

impl BrokerSync {
    /// Records that the broker holds our note on `topic`.
    fn held(&mut self, topic: String) {
        self.held.insert(topic);
        if self.marker_back {
            self.deadline = tokio::time::Instant::now() + SYNC_QUIET;
        }
    }
}

/// How long a marker may take to come back before every note not shown is published again.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after the marker, and after each note shown since, the check waits for more.
const SYNC_QUIET: Duration = Duration::from_millis(200);
/// How much longer the check waits after the marker, per note expected, while the broker has shown
/// none (at 201,000 notes 4 s more; at 1,000, 20 ms).
const SYNC_FIRST_PER_NOTE: Duration = Duration::from_micros(20);

pub(crate) struct Mirror {
    pub(crate) key: NodeSecretKey,
    pub(crate) registry: Registry,
    pub(crate) topics: Topics,
    pub(crate) link: Link,
    pub(crate) link_events: mpsc::Receiver<LinkEvent>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) checkpoint: Checkpoint,
    pub(crate) checkpoint_path: PathBuf,
    pub(crate) state: RegistryState,
    pub(crate) publish_events: bool,
    /// The chunk payload each retained topic should hold.
    pub(crate) expected: HashMap<String, Bytes>,
    /// How many chunk topics each subject holds now.
    pub(crate) chunk_counts: HashMap<Subject, u16>,
    /// Topics seen on the broker with content that is older than ours or not ours: to republish.
    pub(crate) repairs: BTreeSet<String>,
    /// Topics whose note the broker lacked after a connection: to publish again.
    pub(crate) restores: BTreeSet<String>,
    /// Where this process sends itself a marker after each connection (see [`BrokerSync`]).
    pub(crate) sync_topic: String,
    /// The comparison of the broker's notes with ours, from a connection until its marker returns.
    pub(crate) sync: Option<BrokerSync>,
    /// Broker connections so far.
    pub(crate) connections: u64,
    /// The last round published, stored in the checkpoint once the broker acknowledged it.
    pub(crate) pending: Option<Pending>,
    pub(crate) shutdown: CancellationToken,
}

/// A round whose notes and events are queued on the link and not yet in the checkpoint.
pub(crate) struct Pending {
    round: Vec<Batch>,
    /// The last QoS 1 message of the round.
    seq: u64,
}

/// How long a stopping bridge waits for the acknowledgement of its last round, to store it.
const COMMIT_ON_STOP: Duration = Duration::from_secs(2);

impl Mirror {
    pub(crate) async fn run(
        mut self,
        stream: EventStream,
        shutdown: CancellationToken,
    ) -> Result<(), BridgeError> {
        let (items_tx, mut items) = mpsc::channel::<StreamMessage>(4);
        let stream_task = tokio::spawn(drive_stream(stream, items_tx, shutdown.clone()));
        // What the broker should hold, from the checkpoint: a connection publishes only what differs.
        let all = self.all_subjects();
        for part in all.chunks(SLICE) {
            // only `expected` is wanted here: a slice at a time bounds what is signed at once
            self.subject_messages(part)?;
        }
        self.link
            .subscribe(self.sync_topic.clone(), QoS::AtLeastOnce)
            .await?;
        // The notes come back at QoS 0: brokers bound what they send a new QoS 1 subscription at
        // once (rumqttd 0.20 100 retained messages, Mosquitto its queue of 1,000 by default), and
        // an echo that is lost only makes the bridge publish that note again.
        for filter in [
            self.topics.node_notes_filter(),
            self.topics.group_notes_filter(),
            self.topics.membership_notes_filter(),
        ] {
            self.link.subscribe(filter, QoS::AtMostOnce).await?;
        }
        let result = loop {
            // One round of repairs per turn, so that content published faster than we repair it
            // (an attacker's flood on the note topics) cannot keep the chain from being mirrored.
            if let Err(error) = self.repair_once().await {
                break Err(error);
            }
            let more_repairs = !self.repairs.is_empty() || !self.restores.is_empty();
            let sync_deadline = self.sync.as_ref().map(|sync| sync.deadline);
            let pending = self.pending.as_ref().map(|pending| pending.seq);
            let link = self.link.clone();
            let pending_acked = async move {
                match pending {
                    Some(seq) => link.acked(seq).await,
                    None => Ok(()),
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                acked = pending_acked, if pending.is_some() => {
                    if let Err(error) = acked.map_err(BridgeError::from) {
                        break Err(error);
                    }
                    if let Some(pending) = self.pending.take()
                        && let Err(error) = self.store(pending.round)
                    {
                        break Err(error);
                    }
                }
                () = std::future::ready(()), if more_repairs => {}
                () = tokio::time::sleep_until(sync_deadline.unwrap_or_else(tokio::time::Instant::now)), if sync_deadline.is_some() => {
                    self.finish_sync();
                }
                event = self.link_events.recv() => match event {
                    Some(event) => self.on_link_event(event),
                    None => break Err(BridgeError::MqttClosed),
                },
                item = items.recv() => match item {
                    Some(Ok((StreamItem::Batch { events, cursor, .. }, position, stats))) => {
                        let (round, stats, after) =
                            take_round((events, cursor, position), stats, &mut items);
                        self.on_stats(&stats);
                        if let Err(error) = self.on_batches(round).await {
                            break Err(error);
                        }
                        match after {
                            None => {}
                            Some(Ok((to, position, stats))) => {
                                self.on_stats(&stats);
                                if let Err(error) = self.on_rewind(to, position).await {
                                    break Err(error);
                                }
                            }
                            Some(Err(error)) => break Err(error.into()),
                        }
                    }
                    Some(Ok((StreamItem::Rewind { to }, position, stats))) => {
                        self.on_stats(&stats);
                        if let Err(error) = self.on_rewind(to, position).await {
                            break Err(error);
                        }
                    }
                    Some(Err(error)) => break Err(error.into()),
                    None => break Ok(()),
                },
            }
        };
        stream_task.abort();
        if result.is_ok() {
            self.commit_on_stop().await;
        }
        match result {
            Err(BridgeError::Stopped) => Ok(()),
            other => other,
        }
    }

    fn on_stats(&self, stats: &StreamStats) {
        self.metrics.chain_head.store(stats.head, Ordering::Relaxed);
        self.metrics
            .rpc_reconnects
            .store(stats.reconnects, Ordering::Relaxed);
        self.metrics
            .range_refusals
            .store(stats.range_refusals, Ordering::Relaxed);
        self.metrics.reorgs.store(stats.reorgs, Ordering::Relaxed);
        self.metrics
            .rpc_disagreements
            .store(stats.disagreements, Ordering::Relaxed);
    }

    /// Mirrors consecutive batches in one round: their events applied in order, the note of every
    /// subject they changed published once, then their events. The round is stored in the
    /// checkpoint once the broker acknowledged all of it: when the next round has been published,
    /// or when the main loop sees the acknowledgement. Not before the next round is out: a broker
    /// with Nagle's algorithm on (Mosquitto's default) holds its acknowledgement until our side
    /// sends again or 40 ms pass, and the next round's notes would wait for that.
    async fn on_batches(&mut self, round: Vec<Batch>) -> Result<(), BridgeError> {
        let mut changed = Changed::default();
        for (events, ..) in &round {
            for event in events {
                changed.extend(self.state.apply(event)?);
            }
        }
        let last = self.publish_subjects(&subjects(&changed)).await?;
        let mut slices = Slices::new(last);
        if self.publish_events {
            let events: Vec<&PositionedEvent> =
                round.iter().flat_map(|(events, ..)| events).collect();
            for part in events.chunks(SLICE) {
                let messages = part
                    .iter()
                    .map(|event| self.event_message(event))
                    .collect::<Result<_, _>>()?;
                self.publish_slice(&mut slices, messages).await?;
            }
        }
        match (slices.last, &mut self.pending) {
            // Nothing of this round to acknowledge (blocks without registry events): it is
            // stored with the round before, without waiting for that one here.
            (None, Some(pending)) => pending.round.extend(round),
            (None, None) => self.store(round)?,
            (Some(seq), _) => {
                self.commit().await?;
                self.pending = Some(Pending { round, seq });
            }
        }
        Ok(())
    }

    /// Stores the pending round in the checkpoint once the broker has acknowledged it.
    async fn commit(&mut self) -> Result<(), BridgeError> {
        let Some(pending) = self.pending.take() else {
            return Ok(());
        };
        self.wait_acked(Some(pending.seq)).await?;
        self.store(pending.round)
    }

    fn store(&mut self, round: Vec<Batch>) -> Result<(), BridgeError> {
        let mut events = 0;
        for (batch, _, position) in &round {
            self.checkpoint.record_batch(batch, position.clone())?;
            events += batch.len();
        }
        self.checkpoint.store(&self.checkpoint_path)?;
        let block = round.last().map_or(0, |(_, cursor, _)| cursor.block_number);
        self.metrics
            .events_processed
            .fetch_add(events as u64, Ordering::Relaxed);
        self.metrics.mirrored_block.store(block, Ordering::Relaxed);
        if events > 0 {
            tracing::info!(target: "anchormq::bridge", events, block, "mirrored");
        }
        Ok(())
    }

    /// A stopping bridge stores its last round if the broker acknowledges it in time; otherwise
    /// the next start mirrors it again.
    async fn commit_on_stop(&mut self) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let link = self.link.clone();
        let acked = link.acked(pending.seq);
        tokio::pin!(acked);
        let deadline = tokio::time::sleep(COMMIT_ON_STOP);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                result = &mut acked => match result {
                    Ok(()) => break,
                    Err(_) => return,
                },
                () = &mut deadline => return,
                // the link may wait for us to take its events before it reports more
                event = self.link_events.recv() => if event.is_none() {
                    return;
                },
            }
        }
        if let Err(error) = self.store(pending.round) {
            tracing::warn!(target: "anchormq::bridge", %error, "the last round was not stored; the next start mirrors it again");
        }
    }

    /// A reorg: the notes of the canonical chain back on the broker, then the checkpoint.
    async fn on_rewind(&mut self, to: Cursor, position: StreamPosition) -> Result<(), BridgeError> {
        self.commit().await?;
        self.checkpoint.rewind(to, position);
        let rewound = self.checkpoint.state()?;
        let changed = diff(&self.state, &rewound);
        self.state = rewound;
        tracing::warn!(target: "anchormq::bridge", fork_block = to.block_number, nodes = changed.nodes.len(), groups = changed.groups.len(), "reorg: restoring notes of the canonical chain");
        let last = self.publish_subjects(&subjects(&changed)).await?;
        self.wait_acked(last).await?;
        self.checkpoint.store(&self.checkpoint_path)?;
        self.metrics
            .mirrored_block
            .store(to.block_number, Ordering::Relaxed);
        Ok(())
    }

    fn on_link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Connected { .. } => {
                if self.connections > 0 {
                    self.metrics
                        .broker_reconnects
                        .fetch_add(1, Ordering::Relaxed);
                }
                self.connections += 1;
                self.sync = Some(BrokerSync {
                    // the topic is this process's own: a count tells its connections apart
                    marker: Bytes::from(self.connections.to_string()),
                    marker_sent: false,
                    marker_back: false,
                    held: HashSet::new(),
                    deadline: tokio::time::Instant::now() + SYNC_TIMEOUT,
                });
                tracing::info!(target: "anchormq::bridge", notes = self.expected.len(), "connected to broker: checking which notes it holds");
            }
            LinkEvent::Disconnected { reason } => {
                tracing::warn!(target: "anchormq::bridge", %reason, "broker connection lost");
            }
            LinkEvent::Subscribed => {}
            LinkEvent::Message(message) => {
                if message.topic == self.sync_topic {
                    let expected = self.expected.len();
                    if let Some(sync) = &mut self.sync
                        && sync.marker == message.payload
                    {
                        sync.marker_back = true;
                        // A broker that serves a new subscription's retained messages in rounds
                        // (rumqttd 0.20) may return the marker before the first of many: until one
                        // comes, wait longer the more notes there are.
                        let first = if sync.held.is_empty() {
                            SYNC_FIRST_PER_NOTE * u32::try_from(expected).unwrap_or(u32::MAX)
                        } else {
                            Duration::ZERO
                        };
                        sync.deadline =
                            tokio::time::Instant::now() + SYNC_QUIET + first.min(SYNC_TIMEOUT);
                        if sync.held.len() >= expected {
                            self.finish_sync();
                        }
                    }
                    return;
                }
                if self.expected.get(&message.topic) == Some(&message.payload) {
                    if let Some(sync) = &mut self.sync {
                        sync.held(message.topic);
                    }
                    return;
                }
                if message.payload.is_empty() && !self.expected.contains_key(&message.topic) {
                    return;
                }
                // A note that differs from ours: another instance of this bridge ahead of us
                // (leave it: fighting it would delete notes readers need), or an older, forged,
                // foreign or leftover one (put ours back, or clear the topic).
                if self.other_instance_ahead(&message.topic, &message.payload) {
                    // the broker holds a note at least as new as ours: not one it lacks
                    if let Some(sync) = &mut self.sync {
                        sync.held(message.topic);
                    }
                    return;
                }
                self.repairs.insert(message.topic);
            }
        }
    }

    /// Whether `theirs`, found on `topic`, is a note another instance of this bridge published
    /// and readers would take over ours: a one-chunk note signed with this bridge's key, for this
    /// registry, on its own topic, and later than ours; or, where we have no note, of a
    /// generation no older than ours (that instance is further along the chain: we will publish
    /// the same note when we get there). A chunk of a larger note cannot be verified alone: it is
    /// never left in place.
    fn other_instance_ahead(&self, topic: &str, theirs: &[u8]) -> bool {
        let Some(theirs) = one_chunk_note(theirs) else {
            return false;
        };
        let own_topic = match theirs.kind() {
            NoteKind::Node => self
                .topics
                .node_note(&NodeId::from_bytes(*theirs.subject()), 0),
            NoteKind::Group => self
                .topics
                .group_note(&GroupId::from_bytes(*theirs.subject()), 0),
            NoteKind::Membership => self
                .topics
                .membership_note(&NodeId::from_bytes(*theirs.subject()), 0),
            NoteKind::SenderKey => return false,
        };
        if own_topic != topic {
            return false;
        }
        let mut book = KeyBook::new(self.registry, self.key.public_key());
        match self
            .expected
            .get(topic)
            .and_then(|ours| one_chunk_note(ours))
        {
            Some(ours) => {
                book.ingest_note(ours.as_bytes()).is_ok()
                    && book.ingest_note(theirs.as_bytes()).is_ok()
            }
            None if self.expected.contains_key(topic) => false,
            None => {
                book.ingest_note(theirs.as_bytes()).is_ok()
                    && note_generation(&book, &theirs) >= self.checkpoint.generation()
            }
        }
    }

    async fn repair_once(&mut self) -> Result<(), BridgeError> {
        let mut messages = Vec::new();
        if let Some(sync) = &mut self.sync
            && !sync.marker_sent
        {
            sync.marker_sent = true;
            messages.push(Outbound {
                topic: self.sync_topic.clone(),
                payload: sync.marker.clone(),
                qos: QoS::AtLeastOnce,
                retain: false,
            });
        }
        for topic in std::mem::take(&mut self.repairs) {
            let payload = self.expected.get(&topic).cloned().unwrap_or_default();
            tracing::info!(target: "anchormq::bridge", %topic, clear = payload.is_empty(), "repairing retained note");
            messages.push(retained(topic, payload));
        }
        for topic in std::mem::take(&mut self.restores) {
            // a note published or cleared since the comparison is already on its way
            if let Some(payload) = self.expected.get(&topic) {
                messages.push(retained(topic, payload.clone()));
            }
        }
        let last = self.publish_all(messages).await?;
        self.wait_acked(last).await
    }

    /// Ends the comparison after a connection: every note the broker did not show is published
    /// again.
    fn finish_sync(&mut self) {
        let Some(sync) = self.sync.take() else { return };
        let marker_back = sync.marker_back;
        let lacking: Vec<String> = self
            .expected
            .keys()
            .filter(|topic| !sync.held.contains(*topic))
            .cloned()
            .collect();
        if !marker_back {
            tracing::warn!(target: "anchormq::bridge", topic = %self.sync_topic, timeout_s = SYNC_TIMEOUT.as_secs(), "the broker did not return this bridge's marker (an ACL may forbid the topic): publishing every note it did not show");
        }
        tracing::info!(target: "anchormq::bridge", held = sync.held.len(), lacking = lacking.len(), "broker checked: publishing the notes it lacks");
        self.metrics.broker_syncs.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .notes_restored
            .fetch_add(lacking.len() as u64, Ordering::Relaxed);
        self.restores.extend(lacking);
    }

    fn all_subjects(&self) -> Vec<Subject> {
        self.state
            .nodes
            .keys()
            .flat_map(|id| [Subject::Node(id.0), Subject::Membership(id.0)])
            .chain(self.state.groups.keys().map(|id| Subject::Group(id.0)))
            .collect()
    }

    /// Waits for the broker to acknowledge everything up to `seq`, still taking link events so the
    /// link never blocks on a full event queue.
    async fn wait_acked(&mut self, seq: Option<u64>) -> Result<(), BridgeError> {
        let Some(seq) = seq else { return Ok(()) };
        let link = self.link.clone();
        Ok(self.drive(link.acked(seq)).await??)
    }

    /// Signs and queues the notes of `subjects`, a slice at a time: at most two slices wait for
    /// the broker's acknowledgement at once, so a cold start over a large registry does not hold
    /// every note (and the link's copy of it) in memory together. Returns the last sequence number.
    async fn publish_subjects(&mut self, subjects: &[Subject]) -> Result<Option<u64>, BridgeError> {
        let mut slices = Slices::new(None);
        for part in subjects.chunks(SLICE) {
            let messages = self.subject_messages(part)?;
            self.publish_slice(&mut slices, messages).await?;
        }
        Ok(slices.last)
    }

    /// Queues one slice of a large batch, after the broker acknowledged the slice before the last.
    async fn publish_slice(
        &mut self,
        slices: &mut Slices,
        messages: Vec<Outbound>,
    ) -> Result<(), BridgeError> {
        let len = messages.len();
        let last = self.publish_all(messages).await?;
        let wait = slices.next(last, len);
        self.wait_acked(wait).await
    }

    /// Queues messages on the link, in order.
    async fn publish_all(&mut self, messages: Vec<Outbound>) -> Result<Option<u64>, BridgeError> {
        if messages.is_empty() {
            return Ok(None);
        }
        let notes = messages
            .iter()
            .filter(|m| m.retain && !m.payload.is_empty())
            .count();
        let link = self.link.clone();
        let last = self.drive(link.publish_all(messages)).await??;
        self.metrics
            .notes_published
            .fetch_add(notes as u64, Ordering::Relaxed);
        Ok(last)
    }

    /// Runs `work` on the link while still taking link events: the link may be waiting for us to take
    /// an echo of our own notes before it takes another message or reports an acknowledgement.
    async fn drive<T>(
        &mut self,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, BridgeError> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                // Stopping while the broker is away: the checkpoint stays where it was, nothing is lost.
                () = self.shutdown.cancelled() => return Err(BridgeError::Stopped),
                output = &mut work => return Ok(output),
                event = self.link_events.recv() => match event {
                    Some(event) => self.on_link_event(event),
                    None => return Err(BridgeError::MqttClosed),
                },
            }
        }
    }

    /// The retained chunks of the subjects' notes, and clears for chunk topics they no longer
    /// use; records them as what the broker should hold. Notes are signed on every core.
    fn subject_messages(&mut self, subjects: &[Subject]) -> Result<Vec<Outbound>, BridgeError> {
        let signed = self.maker().sign_all(subjects);
        let mut messages = Vec::new();
        for (subject, chunks) in subjects.iter().zip(signed) {
            let topic = |index: u16| match subject {
                Subject::Node(id) => self.topics.node_note(&NodeId::from_bytes(*id), index),
                Subject::Group(id) => self.topics.group_note(&GroupId::from_bytes(*id), index),
                Subject::Membership(id) => {
                    self.topics.membership_note(&NodeId::from_bytes(*id), index)
                }
            };
            let count = u16::try_from(chunks.len()).map_err(|_| BridgeError::NoteTooLarge)?;
            let previous = self.chunk_counts.insert(*subject, count).unwrap_or(0);
            // A subject that no longer exists (reorged away) clears at least its first chunk, even
            // when this process never published it.
            let previous = if count == 0 {
                previous.max(1)
            } else {
                previous
            };
            let names: Vec<String> = (0..count.max(previous)).map(topic).collect();
            for (name, chunk) in names.iter().zip(chunks) {
                let chunk = Bytes::from(chunk);
                self.expected.insert(name.clone(), chunk.clone());
                messages.push(retained(name.clone(), chunk));
                // published after the marker: not something the broker lacks at the check
                if let Some(sync) = &mut self.sync {
                    sync.held.insert(name.clone());
                }
            }
            for name in &names[usize::from(count)..] {
                self.expected.remove(name);
                messages.push(retained(name.clone(), Bytes::new()));
            }
        }
        Ok(messages)
    }

    fn event_message(&self, event: &PositionedEvent) -> Result<Outbound, BridgeError> {
        let json = serde_json::to_vec(event).map_err(|e| BridgeError::Encode(e.to_string()))?;
        Ok(Outbound {
            topic: self.topics.events(),
            payload: Bytes::from(json),
            qos: QoS::AtLeastOnce,
            retain: false,
        })
    }

    fn maker(&self) -> NoteMaker<'_> {
        NoteMaker {
            key: &self.key,
            registry: &self.registry,
            state: &self.state,
            generation: self.checkpoint.generation(),
            metrics: &self.metrics,
        }
    }
}

/// What signing notes needs, apart from the mirror's link: shared by the signing threads.
struct NoteMaker<'a> {
    key: &'a NodeSecretKey,
    registry: &'a Registry,
    state: &'a RegistryState,
    generation: u64,
    metrics: &'a Metrics,
}

/// Subjects below this many are signed on the mirror's own thread: a thread costs more than it saves.
const SIGN_ALONE_BELOW: usize = 64;

impl NoteMaker<'_> {
    /// The signed chunks of each subject's note, in order, spread over the machine's cores.
    fn sign_all(&self, subjects: &[Subject]) -> Vec<Vec<Vec<u8>>> {
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(subjects.len() / SIGN_ALONE_BELOW);
        if threads <= 1 {
            return subjects.iter().map(|s| self.note_chunks(*s)).collect();
        }
        let per_thread = subjects.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let parts: Vec<_> = subjects
                .chunks(per_thread)
                .map(|part| {
                    scope.spawn(move || part.iter().map(|s| self.note_chunks(*s)).collect())
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|part| -> Vec<Vec<Vec<u8>>> {
                    part.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        })
    }

    /// The signed chunks of a subject's note, under the current generation; none for a subject the
    /// chain no longer has, or one the chain describes in a way no note can carry (logged and
    /// counted, never fatal).
    fn note_chunks(&self, subject: Subject) -> Vec<Vec<u8>> {
        let generation = self.generation;
        let made = match subject {
            Subject::Node(id) => match self.state.nodes.get(&B256::from(id)) {
                Some(record) => notes::node_note(self.registry, &B256::from(id), record)
                    .map(|note| Some(NodeNote { generation, ..note }.sign(self.key))),
                None => Ok(None),
            },
            Subject::Group(id) => match self.state.groups.get(&B256::from(id)) {
                Some(record) => {
                    notes::group_note(self.registry, self.state, &B256::from(id), record).map(
                        |(note, refused)| {
                            if let Some(refused) = refused {
                                self.refuse(&refused);
                            }
                            Some(note.with_generation(generation).sign(self.key))
                        },
                    )
                }
                None => Ok(None),
            },
            Subject::Membership(id) => Ok(self.state.nodes.get(&B256::from(id)).map(|record| {
                notes::membership_note(self.registry, &B256::from(id), record)
                    .with_generation(generation)
                    .sign(self.key)
            })),
        };
        match made {
            Ok(note) => note.map(|n| n.chunks()).unwrap_or_default(),
            Err(refused) => {
                self.refuse(&refused);
                Vec::new()
            }
        }
    }

    fn refuse(&self, refused: &notes::Unrepresentable) {
        self.metrics
            .chain_data_refused
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(target: "anchormq::bridge", reason = %refused, "chain data the notes cannot carry");
    }
}

async fn drive_stream(
    mut stream: EventStream,
    items: mpsc::Sender<StreamMessage>,
    shutdown: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => return,
            next = stream.next() => next,
        };
        let message = next.map(|item| (item, stream.position().clone(), stream.stats()));
        let failed = message.is_err();
        if items.send(message).await.is_err() || failed {
            return;
        }
    }
}

/// Notes or events handed to the link at once in a large batch.
const SLICE: usize = 10_000;

/// The slices queued so far: once more than a slice is queued after the one before the last,
/// that one must be acknowledged first, so the broker always has work while at most two slices
/// are held. A small batch never waits here.
struct Slices {
    last: Option<u64>,
    /// Messages queued after the end of the slice before `last`.
    queued: usize,
}

impl Slices {
    const fn new(last: Option<u64>) -> Self {
        Self { last, queued: 0 }
    }

    /// Records a slice of `len` messages that ends at `last`; returns what to wait for before
    /// the next one.
    fn next(&mut self, last: Option<u64>, len: usize) -> Option<u64> {
        self.queued += len;
        let previous = self.last;
        self.last = last.or(self.last);
        if self.queued <= SLICE {
            return None;
        }
        self.queued = len;
        previous
    }
}

fn one_chunk_note(payload: &[u8]) -> Option<SignedNote> {
    match ChunkAssembler::new(1).push(payload) {
        Ok(Assembly::Complete(note)) => Some(note),
        _ => None,
    }
}

/// The generation of `note`, held in `book`.
fn note_generation(book: &KeyBook, note: &SignedNote) -> u64 {
    match note.kind() {
        NoteKind::Node => book
            .node(&NodeId::from_bytes(*note.subject()))
            .map_or(0, |n| n.generation),
        NoteKind::Group => book
            .group(&GroupId::from_bytes(*note.subject()))
            .map_or(0, GroupNote::generation),
        NoteKind::Membership => book
            .membership(&NodeId::from_bytes(*note.subject()))
            .map_or(0, |n| n.generation),
        NoteKind::SenderKey => 0,
    }
}

fn retained(topic: String, payload: Bytes) -> Outbound {
    Outbound {
        topic,
        payload,
        qos: QoS::AtLeastOnce,
        retain: true,
    }
}

/// A batch as the mirror takes it: its events, its last block, and the stream's position after it.
type Batch = (Vec<PositionedEvent>, Cursor, StreamPosition);

/// A rewind's fork point and stream position, or the stream's error.
type AfterRound = Result<(Cursor, StreamPosition, StreamStats), StreamError>;

/// `first` and the batches queued behind it, which go out in one round (one wait for the broker's
/// acknowledgements, one store), with the latest stream statistics and the first queued item that
/// is not a batch.
fn take_round(
    first: Batch,
    mut stats: StreamStats,
    items: &mut mpsc::Receiver<StreamMessage>,
) -> (Vec<Batch>, StreamStats, Option<AfterRound>) {
    let mut round = vec![first];
    while let Ok(next) = items.try_recv() {
        match next {
            Ok((StreamItem::Batch { events, cursor, .. }, position, next_stats)) => {
                round.push((events, cursor, position));
                stats = next_stats;
            }
            Ok((StreamItem::Rewind { to }, position, next_stats)) => {
                return (round, stats, Some(Ok((to, position, next_stats))));
            }
            Err(error) => return (round, stats, Some(Err(error))),
        }
    }
    (round, stats, None)
}

fn subjects(changed: &Changed) -> Vec<Subject> {
    changed
        .nodes
        .iter()
        .map(|id| Subject::Node(id.0))
        .chain(changed.groups.iter().map(|id| Subject::Group(id.0)))
        .chain(
            changed
                .memberships
                .iter()
                .map(|id| Subject::Membership(id.0)),
        )
        .collect()
}

/// Records that differ between two states: the notes a reorg changed.
fn diff(before: &RegistryState, after: &RegistryState) -> Changed {
    let mut changed = Changed::default();
    for id in before.nodes.keys().chain(after.nodes.keys()) {
        let (old, new) = (before.nodes.get(id), after.nodes.get(id));
        if old != new {
            changed.nodes.insert(*id);
        }
        let groups = |record: Option<&anchormq_chain::NodeRecord>| {
            record.map(|r| (r.groups.clone(), r.groups_position()))
        };
        if groups(old) != groups(new) {
            changed.memberships.insert(*id);
        }
    }
    for id in before.groups.keys().chain(after.groups.keys()) {
        if before.groups.get(id) != after.groups.get(id) {
            changed.groups.insert(*id);
        }
    }
    changed
}
