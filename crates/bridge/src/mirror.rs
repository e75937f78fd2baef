//! The mirror loop: chain events in, signed retained notes out, checkpoint after the broker's ack.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anchormq_chain::{
    B256, Changed, EventStream, PositionedEvent, RegistryState, StreamError, StreamItem,
    StreamPosition, StreamStats,
};
use anchormq_core::chunk::{Assembly, ChunkAssembler};
use anchormq_core::{GroupId, KeyBook, NodeId, NodeNote, NodeSecretKey, Registry, Topics};
use anchormq_mqtt::{Link, LinkEvent, QoS};
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
}

type StreamMessage = Result<(StreamItem, StreamPosition, StreamStats), StreamError>;

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
    /// Set on every (re)connection: the broker may have lost the retained notes.
    pub(crate) republish_all: bool,
    pub(crate) connected_once: bool,
    pub(crate) shutdown: CancellationToken,
}

impl Mirror {
    pub(crate) async fn run(
        mut self,
        stream: EventStream,
        shutdown: CancellationToken,
    ) -> Result<(), BridgeError> {
        let (items_tx, mut items) = mpsc::channel::<StreamMessage>(4);
        let stream_task = tokio::spawn(drive_stream(stream, items_tx, shutdown.clone()));
        self.link
            .subscribe(format!("{}/node/#", self.topics.prefix()), QoS::AtLeastOnce)
            .await?;
        self.link
            .subscribe(
                format!("{}/group/#", self.topics.prefix()),
                QoS::AtLeastOnce,
            )
            .await?;
        let result = loop {
            if let Err(error) = self.repair().await {
                break Err(error);
            }
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                event = self.link_events.recv() => match event {
                    Some(event) => self.on_link_event(event),
                    None => break Err(BridgeError::MqttClosed),
                },
                item = items.recv() => match item {
                    Some(Ok((item, position, stats))) => {
                        if let Err(error) = self.on_item(item, position, &stats).await {
                            break Err(error);
                        }
                    }
                    Some(Err(error)) => break Err(error.into()),
                    None => break Ok(()),
                },
            }
        };
        stream_task.abort();
        match result {
            Err(BridgeError::Stopped) => Ok(()),
            other => other,
        }
    }

    async fn on_item(
        &mut self,
        item: StreamItem,
        position: StreamPosition,
        stats: &StreamStats,
    ) -> Result<(), BridgeError> {
        self.metrics.chain_head.store(stats.head, Ordering::Relaxed);
        self.metrics
            .rpc_reconnects
            .store(stats.reconnects, Ordering::Relaxed);
        self.metrics
            .range_refusals
            .store(stats.range_refusals, Ordering::Relaxed);
        self.metrics.reorgs.store(stats.reorgs, Ordering::Relaxed);
        match item {
            StreamItem::Batch { events, cursor, .. } => {
                let mut changed = Changed::default();
                for event in &events {
                    changed.extend(self.state.apply(event)?);
                }
                self.checkpoint.record_batch(&events, position)?;
                let mut last = None;
                for subject in subjects(&changed) {
                    last = self.publish_subject(subject).await?.or(last);
                }
                if self.publish_events {
                    for event in &events {
                        last = self.publish_event(event).await?.or(last);
                    }
                }
                self.wait_acked(last).await?;
                self.checkpoint.store(&self.checkpoint_path)?;
                self.metrics
                    .events_processed
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                self.metrics
                    .mirrored_block
                    .store(cursor.block_number, Ordering::Relaxed);
                if !events.is_empty() {
                    tracing::info!(target: "anchormq::bridge", events = events.len(), block = cursor.block_number, nodes = changed.nodes.len(), groups = changed.groups.len(), "mirrored");
                }
            }
            StreamItem::Rewind { to } => {
                self.checkpoint.rewind(to, position);
                let rewound = self.checkpoint.state()?;
                let changed = diff(&self.state, &rewound);
                self.state = rewound;
                tracing::warn!(target: "anchormq::bridge", fork_block = to.block_number, nodes = changed.nodes.len(), groups = changed.groups.len(), "reorg: restoring notes of the canonical chain");
                let mut last = None;
                for subject in subjects(&changed) {
                    last = self.publish_subject(subject).await?.or(last);
                }
                self.wait_acked(last).await?;
                self.checkpoint.store(&self.checkpoint_path)?;
                self.metrics
                    .mirrored_block
                    .store(to.block_number, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn on_link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Connected { .. } => {
                if self.connected_once {
                    self.metrics
                        .broker_reconnects
                        .fetch_add(1, Ordering::Relaxed);
                }
                self.connected_once = true;
                self.republish_all = true;
            }
            LinkEvent::Disconnected { reason } => {
                tracing::warn!(target: "anchormq::bridge", %reason, "broker connection lost");
            }
            LinkEvent::Subscribed => {}
            LinkEvent::Message(message) => {
                if self.expected.get(&message.topic) == Some(&message.payload) {
                    return;
                }
                if message.payload.is_empty() && !self.expected.contains_key(&message.topic) {
                    return;
                }
                // A note that differs from ours: a later one of this bridge's key (another instance
                // ahead of us: leave it), or an older, forged, foreign or leftover one (put ours back,
                // or clear the topic).
                if let Some(ours) = self.expected.get(&message.topic)
                    && self.ours_later(ours, &message.payload)
                {
                    return;
                }
                self.repairs.insert(message.topic);
            }
        }
    }

    /// Whether `theirs` is a one-chunk note that readers would take over `ours`: a valid chunk of a
    /// note of the same node or group, signed with this bridge's key, and later. A chunk of a
    /// larger note cannot be verified alone: it is never left in place.
    fn ours_later(&self, ours: &[u8], theirs: &[u8]) -> bool {
        let note = |payload: &[u8]| match ChunkAssembler::new(1).push(payload) {
            Ok(Assembly::Complete(note)) => Some(note),
            _ => None,
        };
        let (Some(ours), Some(theirs)) = (note(ours), note(theirs)) else {
            return false;
        };
        let mut book = KeyBook::new(self.registry, self.key.public_key());
        (ours.kind(), ours.subject()) == (theirs.kind(), theirs.subject())
            && book.ingest_note(ours.as_bytes()).is_ok()
            && book.ingest_note(theirs.as_bytes()).is_ok()
    }

    /// Republishes everything after a (re)connection, and repairs topics found wrong on the broker,
    /// until nothing is left to do: a wrong note seen while waiting for the broker's
    /// acknowledgements is repaired now, not when the next unrelated event wakes the loop.
    async fn repair(&mut self) -> Result<(), BridgeError> {
        while self.republish_all || !self.repairs.is_empty() {
            self.repair_once().await?;
        }
        Ok(())
    }

    async fn repair_once(&mut self) -> Result<(), BridgeError> {
        let mut last = None;
        if std::mem::take(&mut self.republish_all) {
            let subjects: Vec<Subject> = self
                .state
                .nodes
                .keys()
                .map(|id| Subject::Node(id.0))
                .chain(self.state.groups.keys().map(|id| Subject::Group(id.0)))
                .collect();
            tracing::info!(target: "anchormq::bridge", notes = subjects.len(), "connected to broker: publishing all notes");
            for subject in subjects {
                last = self.publish_subject(subject).await?.or(last);
            }
        }
        for topic in std::mem::take(&mut self.repairs) {
            let payload = self.expected.get(&topic).cloned().unwrap_or_default();
            tracing::info!(target: "anchormq::bridge", %topic, clear = payload.is_empty(), "repairing retained note");
            last = self.publish(topic, payload, true).await?.or(last);
        }
        self.wait_acked(last).await
    }

    /// Waits for the broker to acknowledge everything up to `seq`, still taking link events so the
    /// link never blocks on a full event queue.
    async fn wait_acked(&mut self, seq: Option<u64>) -> Result<(), BridgeError> {
        let Some(seq) = seq else { return Ok(()) };
        let link = self.link.clone();
        Ok(self.drive(link.acked(seq)).await??)
    }

    /// Queues a QoS 1 message on the link.
    async fn publish(
        &mut self,
        topic: String,
        payload: Bytes,
        retain: bool,
    ) -> Result<Option<u64>, BridgeError> {
        let link = self.link.clone();
        Ok(self
            .drive(link.publish(topic, payload, QoS::AtLeastOnce, retain))
            .await??)
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

    /// Publishes a subject's note as retained chunks and clears chunk topics it no longer uses.
    async fn publish_subject(&mut self, subject: Subject) -> Result<Option<u64>, BridgeError> {
        let chunks = self.note_chunks(subject);
        let topic = |index: u16| match subject {
            Subject::Node(id) => self.topics.node_note(&NodeId::from_bytes(id), index),
            Subject::Group(id) => self.topics.group_note(&GroupId::from_bytes(id), index),
        };
        let count = u16::try_from(chunks.len()).map_err(|_| BridgeError::NoteTooLarge)?;
        let previous = self.chunk_counts.insert(subject, count).unwrap_or(0);
        // A subject that no longer exists (reorged away) clears at least its first chunk, even when
        // this process never published it.
        let previous = if count == 0 {
            previous.max(1)
        } else {
            previous
        };
        let names: Vec<String> = (0..count.max(previous)).map(topic).collect();
        let mut last = None;
        for (name, chunk) in names.iter().zip(chunks) {
            let chunk = Bytes::from(chunk);
            self.expected.insert(name.clone(), chunk.clone());
            last = self.publish(name.clone(), chunk, true).await?.or(last);
            self.metrics.notes_published.fetch_add(1, Ordering::Relaxed);
        }
        for name in &names[usize::from(count)..] {
            self.expected.remove(name);
            last = self
                .publish(name.clone(), Bytes::new(), true)
                .await?
                .or(last);
        }
        Ok(last)
    }

    async fn publish_event(&mut self, event: &PositionedEvent) -> Result<Option<u64>, BridgeError> {
        let json = serde_json::to_vec(event).map_err(|e| BridgeError::Encode(e.to_string()))?;
        self.publish(self.topics.events(), Bytes::from(json), false)
            .await
    }

    /// The signed chunks of a subject's note, under the current generation; none for a subject the
    /// chain no longer has, or one the chain describes in a way no note can carry (logged and
    /// counted, never fatal).
    fn note_chunks(&self, subject: Subject) -> Vec<Vec<u8>> {
        let generation = self.checkpoint.generation();
        let made = match subject {
            Subject::Node(id) => match self.state.nodes.get(&B256::from(id)) {
                Some(record) => notes::node_note(&self.registry, &B256::from(id), record)
                    .map(|note| Some(NodeNote { generation, ..note }.sign(&self.key))),
                None => Ok(None),
            },
            Subject::Group(id) => match self.state.groups.get(&B256::from(id)) {
                Some(record) => {
                    notes::group_note(&self.registry, &self.state, &B256::from(id), record).map(
                        |(note, refused)| {
                            if let Some(refused) = refused {
                                self.refuse(&refused);
                            }
                            Some(note.with_generation(generation).sign(&self.key))
                        },
                    )
                }
                None => Ok(None),
            },
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

fn subjects(changed: &Changed) -> Vec<Subject> {
    changed
        .nodes
        .iter()
        .map(|id| Subject::Node(id.0))
        .chain(changed.groups.iter().map(|id| Subject::Group(id.0)))
        .collect()
}

/// Records that differ between two states: the notes a reorg changed.
fn diff(before: &RegistryState, after: &RegistryState) -> Changed {
    let mut changed = Changed::default();
    for id in before.nodes.keys().chain(after.nodes.keys()) {
        if before.nodes.get(id) != after.nodes.get(id) {
            changed.nodes.insert(*id);
        }
    }
    for id in before.groups.keys().chain(after.groups.keys()) {
        if before.groups.get(id) != after.groups.get(id) {
            changed.groups.insert(*id);
        }
    }
    changed
}
