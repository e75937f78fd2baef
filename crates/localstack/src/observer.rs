//! An independent observer of a bridge's retained notes, and the check that they say what the
//! chain says.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anchormq_chain::RegistryClient;
use anchormq_chain::bindings::IKeyRegistry;
use anchormq_core::chunk::{Assembly, ChunkAssembler};
use anchormq_core::{GroupId, KeyBook, NodeId, NodePublicKey, NodeStatus, Registry, Topics};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::task::JoinHandle;

use crate::wait::await_condition;

/// How long [`Observer::await_chain`] waits for the notes to equal the chain.
pub const SETTLE: Duration = Duration::from_secs(60);
/// How often [`Observer::await_chain`] compares.
pub const POLL: Duration = Duration::from_millis(50);

/// An independent observer: a plain rumqttc client that keeps the latest payload of every retained
/// note topic of one registry, and starts over when its connection (and so the broker's retained
/// set) is new. It also records when each topic first arrived.
#[derive(Debug)]
pub struct Observer {
    registry: Registry,
    bridge: NodePublicKey,
    topics: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    arrivals: Arc<Mutex<HashMap<String, Instant>>>,
    deliveries: Arc<Mutex<HashMap<String, u64>>>,
    task: JoinHandle<()>,
}

impl Observer {
    /// Subscribes to the node and group notes of `registry` on `broker_url` (`mqtt://host:port`);
    /// notes are verified with `bridge`, the bridge's public key.
    ///
    /// # Panics
    /// When `broker_url` has no `host:port`.
    pub fn start(broker_url: &str, registry: Registry, bridge: NodePublicKey) -> Self {
        let address = broker_url.trim_start_matches("mqtt://");
        let (host, port) = address.rsplit_once(':').expect("host:port");
        let mut options = MqttOptions::new(
            format!("observer-{}", rand_suffix()),
            host,
            port.parse().expect("port"),
        );
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let topics = Arc::new(Mutex::new(BTreeMap::new()));
        let arrivals = Arc::new(Mutex::new(HashMap::new()));
        let deliveries = Arc::new(Mutex::new(HashMap::new()));
        let (seen, arrived, delivered) = (topics.clone(), arrivals.clone(), deliveries.clone());
        let prefix = Topics::new(&registry).prefix().to_owned();
        let filters = [format!("{prefix}/node/#"), format!("{prefix}/group/#")];
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        seen.lock().expect("lock").clear();
                        for filter in &filters {
                            client
                                .try_subscribe(filter.clone(), QoS::AtLeastOnce)
                                .expect("subscribe");
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        arrived
                            .lock()
                            .expect("lock")
                            .entry(publish.topic.clone())
                            .or_insert_with(Instant::now);
                        *delivered
                            .lock()
                            .expect("lock")
                            .entry(publish.topic.clone())
                            .or_insert(0) += 1;
                        let mut seen = seen.lock().expect("lock");
                        if publish.payload.is_empty() {
                            seen.remove(&publish.topic);
                        } else {
                            seen.insert(publish.topic, publish.payload.to_vec());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Self {
            registry,
            bridge,
            topics,
            arrivals,
            deliveries,
            task,
        }
    }

    /// Reassembles and verifies every note it holds.
    ///
    /// # Panics
    /// When a note or chunk fails verification: a broken note fails the test.
    pub fn book(&self) -> KeyBook {
        let mut book = KeyBook::new(self.registry, self.bridge);
        let mut assembler = ChunkAssembler::new(100_000);
        let topics = self.topics.lock().expect("lock").clone();
        for (topic, payload) in topics {
            match assembler.push(&payload) {
                Ok(Assembly::Complete(note)) => {
                    book.ingest_note(note.as_bytes())
                        .unwrap_or_else(|e| panic!("note on {topic} rejected: {e}"));
                }
                Ok(Assembly::Partial { .. }) => {}
                Err(e) => panic!("chunk on {topic} rejected: {e}"),
            }
        }
        book
    }

    /// The payload retained on `topic` as last seen, if any.
    pub fn payload(&self, topic: &str) -> Option<Vec<u8>> {
        self.topics.lock().expect("lock").get(topic).cloned()
    }

    /// How many messages arrived on `topic`, over every connection.
    pub fn deliveries(&self, topic: &str) -> u64 {
        self.deliveries
            .lock()
            .expect("lock")
            .get(topic)
            .copied()
            .unwrap_or(0)
    }

    /// When each topic's first message arrived, over every connection.
    pub fn arrivals(&self) -> HashMap<String, Instant> {
        self.arrivals.lock().expect("lock").clone()
    }

    /// Waits until the verified notes equal what the chain says about `nodes` and `groups`, read
    /// through `client` with `eth_call`.
    ///
    /// # Panics
    /// When they are not equal within [`SETTLE`]; the message gives both sides' counts.
    pub async fn await_chain(&self, client: &RegistryClient, nodes: &[NodeId], groups: &[GroupId]) {
        let truth = NoteView::of_chain(client, nodes, groups).await;
        let result = await_condition(
            "the retained notes to equal the chain state",
            SETTLE,
            POLL,
            || {
                let equal = NoteView::of_book(&self.book()) == truth;
                async move { equal }
            },
        )
        .await;
        if let Err(error) = result {
            let got = NoteView::of_book(&self.book());
            panic!(
                "{error}\nchain has {} nodes / {} groups, broker has {} / {}",
                truth.nodes.len(),
                truth.groups.len(),
                got.nodes.len(),
                got.groups.len()
            );
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn rand_suffix() -> u64 {
    use rand_core::RngCore;
    rand_core::OsRng.next_u64()
}

/// A group in note terms: epoch, topic filter, members with their key versions.
pub type GroupView = (u64, String, Vec<(NodeId, u64)>);

/// Registry state in note terms, from the chain or from notes, so the two can be compared.
#[derive(Debug, PartialEq, Eq)]
pub struct NoteView {
    /// Each node's public key, key version and status.
    pub nodes: BTreeMap<NodeId, (Vec<u8>, u64, NodeStatus)>,
    /// Each group.
    pub groups: BTreeMap<GroupId, GroupView>,
}

impl NoteView {
    /// What the chain says about `nodes` and `groups`, read with `eth_call`; IDs that were never
    /// registered are left out, as they have no note.
    ///
    /// # Panics
    /// When a group's members cannot be read.
    pub async fn of_chain(client: &RegistryClient, nodes: &[NodeId], groups: &[GroupId]) -> Self {
        let mut view = Self {
            nodes: BTreeMap::new(),
            groups: BTreeMap::new(),
        };
        let mut versions = HashMap::new();
        for id in nodes {
            // IDs that were never registered (the property test draws from a pool) have no note.
            let Ok(n) = client.node(*id).await else {
                continue;
            };
            let status = if n.status == IKeyRegistry::NodeStatus::Revoked {
                NodeStatus::Revoked
            } else {
                NodeStatus::Active
            };
            versions.insert(*id, u64::from(n.keyVersion));
            view.nodes
                .insert(*id, (n.publicKey.to_vec(), u64::from(n.keyVersion), status));
        }
        for id in groups {
            let Ok(g) = client.group(*id).await else {
                continue;
            };
            let mut members: Vec<(NodeId, u64)> = client
                .members(*id)
                .await
                .expect("members")
                .into_iter()
                .map(|m| (m, versions[&m]))
                .collect();
            members.sort();
            view.groups.insert(*id, (g.epoch, g.topicFilter, members));
        }
        view
    }

    /// What the notes in `book` say.
    pub fn of_book(book: &KeyBook) -> Self {
        let nodes = book
            .nodes()
            .map(|n| {
                (
                    n.node,
                    (n.public_key.to_bytes().to_vec(), n.key_version, n.status),
                )
            })
            .collect();
        let groups = book
            .groups()
            .map(|g| {
                let members = g
                    .members()
                    .iter()
                    .map(|m| (m.node, m.key_version))
                    .collect();
                (g.group(), (g.epoch(), g.topic_filter().to_owned(), members))
            })
            .collect();
        Self { nodes, groups }
    }
}
