//! `anchormq verify`: compares the retained key notes on the broker with the registry state rebuilt
//! from the chain's logs, and lists every difference (missing, stale, forged or unverifiable, extra).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use alloy::primitives::B256;
use anchormq_bridge::notes;
use anchormq_chain::RegistryState;
use anchormq_core::chunk::Assembly;
use anchormq_core::{
    ChunkAssembler, GroupId, KeyBook, NodeId, NodePublicKey, NoteTopic, NoteUpdate, Topics,
};
use anchormq_mqtt::{Link, LinkEvent, QoS};
use clap::Args;
use eyre::{WrapErr, eyre};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::ChecksFailed;
use crate::context::{Context, core_registry};

/// `verify`.
#[derive(Debug, Args)]
pub struct VerifyCommand {
    /// Stop collecting retained notes after this long without a new one, in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub quiet_ms: u64,
    /// Never collect for longer than this, in seconds.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub max_wait: u64,
    /// One JSON object per difference instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What kind of difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DifferenceKind {
    /// The chain has a node or group and the broker holds no valid note for it.
    Missing,
    /// The broker's note says something older than the chain.
    Stale,
    /// The note on the broker fails verification (signature, registry, encoding, placement).
    Forged,
    /// The broker holds a valid note about something the chain does not know.
    Extra,
}

/// One difference between the broker and the chain.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Difference {
    /// What kind.
    pub kind: DifferenceKind,
    /// `node <id>`, `group <id>` or the topic.
    pub subject: String,
    /// The details.
    pub detail: String,
}

impl VerifyCommand {
    /// Collects, compares, prints; fails with exit code 3 when anything differs.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        let bridge = context.bridge_public_key()?;
        let client = context.reader().await?;
        let (state, head) = client
            .state()
            .await
            .wrap_err("rebuilding the registry state from its logs")?;
        let deployment = *client.deployment();
        let topics = Topics::new(&core_registry(&deployment));
        let broker = context.broker_config(format!("anchormq-verify-{}", std::process::id()))?;
        let retained = collect_retained(
            &broker,
            &[
                topics.node_notes_filter(),
                topics.group_notes_filter(),
                topics.membership_notes_filter(),
            ],
            Duration::from_millis(self.quiet_ms),
            Duration::from_secs(self.max_wait),
        )
        .await?;
        let differences = compare(
            &state,
            &retained,
            &topics,
            &core_registry(&deployment),
            bridge,
        );
        if self.json {
            for d in &differences {
                println!("{}", serde_json::to_string(d)?);
            }
        } else if differences.is_empty() {
            println!(
                "broker and chain agree: {} node notes, {} group notes, {} membership notes (chain head {head})",
                state.nodes.len(),
                state.groups.len(),
                state.nodes.len()
            );
        } else {
            for d in &differences {
                let kind = format!("{:?}", d.kind).to_lowercase();
                println!("{kind:<8} {:<24} {}", d.subject, d.detail);
            }
        }
        if differences.is_empty() {
            Ok(())
        } else {
            Err(ChecksFailed(format!(
                "{} difference(s) between the broker's notes and the chain",
                differences.len()
            ))
            .into())
        }
    }
}

/// Subscribes to `filters` and keeps every retained message (topic -> payload) until `quiet` passes
/// without one after the subscriptions were acknowledged, or `max_wait` in all.
pub async fn collect_retained(
    broker: &anchormq_mqtt::BrokerConfig,
    filters: &[String],
    quiet: Duration,
    max_wait: Duration,
) -> eyre::Result<BTreeMap<String, Vec<u8>>> {
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let (link, mut events) = Link::start(broker, shutdown.clone()).wrap_err("broker")?;
    // QoS 0, as the bridge takes its echoes: some brokers bound the retained messages a new QoS 1
    // subscription is sent (rumqttd 0.20: 100), so verify would report notes missing
    for filter in filters {
        link.subscribe(filter.clone(), QoS::AtMostOnce)
            .await
            .wrap_err("subscribing to the note topics")?;
    }
    let deadline = tokio::time::Instant::now() + max_wait;
    let mut retained = BTreeMap::new();
    let mut acked = 0;
    let mut last_error = None;
    loop {
        let wait = if acked >= filters.len() {
            quiet
        } else {
            max_wait
        };
        let next = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + wait),
            events.recv(),
        )
        .await;
        match next {
            Ok(Some(LinkEvent::Subscribed)) => acked += 1,
            Ok(Some(LinkEvent::Message(message))) if message.retain => {
                if message.payload.is_empty() {
                    retained.remove(&message.topic);
                } else {
                    retained.insert(message.topic, message.payload.to_vec());
                }
            }
            Ok(Some(LinkEvent::Disconnected { reason })) => last_error = Some(reason),
            Ok(Some(_)) => {}
            Ok(None) => return Err(eyre!("the MQTT link closed")),
            Err(_) => break,
        }
    }
    if acked < filters.len() {
        return Err(eyre!(
            "cannot subscribe on the broker {} within {} s{}",
            broker.display_url(),
            max_wait.as_secs(),
            last_error.map_or_else(String::new, |e| format!(": {e}"))
        ));
    }
    Ok(retained)
}

/// The node or group a retained note topic names; shown as the topic part its chunks share,
/// `node/<id>` or `group/<id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Subject {
    Node(NodeId),
    Group(GroupId),
    Membership(NodeId),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Node(node) => write!(f, "node/{}", node.topic_segment()),
            Self::Group(group) => write!(f, "group/{}", group.topic_segment()),
            Self::Membership(node) => write!(f, "membership/{}", node.topic_segment()),
        }
    }
}

/// Compares retained note chunks with the chain state. Topics are read with [`Topics::parse`]: a
/// retained topic under the registry's prefix that the layout does not build is a forged difference
/// naming that topic.
pub fn compare(
    state: &RegistryState,
    retained: &BTreeMap<String, Vec<u8>>,
    topics: &Topics,
    registry: &anchormq_core::Registry,
    bridge: NodePublicKey,
) -> Vec<Difference> {
    let mut differences = Vec::new();
    let mut book = KeyBook::new(*registry, bridge);
    // Chunks by the node or group their topic names, in chunk order.
    let mut subjects: BTreeMap<Subject, BTreeMap<u16, &[u8]>> = BTreeMap::new();
    for (topic, payload) in retained {
        let (subject, chunk) = match topics.parse(topic) {
            Some(NoteTopic::Node { node, chunk }) => (Subject::Node(node), chunk),
            Some(NoteTopic::Group { group, chunk }) => (Subject::Group(group), chunk),
            Some(NoteTopic::Membership { node, chunk }) => (Subject::Membership(node), chunk),
            Some(NoteTopic::Unknown) => {
                differences.push(Difference {
                    kind: DifferenceKind::Forged,
                    subject: topic.clone(),
                    detail: "retained message on a topic the note layout does not use".into(),
                });
                continue;
            }
            // not a node or group note topic: nothing the chain state says anything about
            Some(NoteTopic::SenderKey { .. } | NoteTopic::Events) | None => continue,
        };
        subjects
            .entry(subject)
            .or_default()
            .insert(chunk, payload.as_slice());
    }
    // Subjects whose retained note verifies under the topic it names.
    let mut valid = BTreeSet::new();
    for (subject, chunks) in &subjects {
        let mut assembler = ChunkAssembler::new(1);
        let mut complete = None;
        let mut problem = None;
        for payload in chunks.values() {
            match assembler.push(payload) {
                Ok(Assembly::Complete(note)) => complete = Some(note),
                Ok(Assembly::Partial { .. }) => {}
                Err(e) => problem = Some(format!("bad chunk: {e}")),
            }
        }
        let forged = |detail: String| Difference {
            kind: DifferenceKind::Forged,
            subject: subject.to_string(),
            detail,
        };
        let Some(note) = complete else {
            differences.push(forged(problem.unwrap_or_else(|| {
                format!("incomplete note ({} chunk(s) retained)", chunks.len())
            })));
            continue;
        };
        let named = match book.ingest_note(note.as_bytes()) {
            Ok(NoteUpdate::Node { node, .. }) => Subject::Node(node),
            Ok(NoteUpdate::Group { group, .. }) => Subject::Group(group),
            Ok(NoteUpdate::Membership { node, .. }) => Subject::Membership(node),
            Err(e) => {
                differences.push(forged(format!("does not verify: {e}")));
                continue;
            }
        };
        if named == *subject {
            valid.insert(named);
        } else {
            differences.push(forged(
                "a valid note, but retained under another subject's topic".into(),
            ));
        }
    }
    // What the bridge must publish for this state: the same mapping it uses.
    for (id, record) in &state.nodes {
        let node = NodeId::from_bytes(id.0);
        let subject = format!("node {node}");
        let Ok(expected) = notes::node_note(registry, id, record) else {
            // the bridge publishes no note for a node it cannot represent
            continue;
        };
        let Some(note) = book
            .node(&node)
            .filter(|_| valid.contains(&Subject::Node(node)))
        else {
            differences.push(Difference {
                kind: DifferenceKind::Missing,
                subject,
                detail: format!(
                    "no valid note on the broker (chain: key v{}, {:?})",
                    expected.key_version, expected.status
                ),
            });
            continue;
        };
        if (note.key_version, note.status, note.public_key)
            != (expected.key_version, expected.status, expected.public_key)
        {
            differences.push(Difference {
                kind: DifferenceKind::Stale,
                subject,
                detail: format!(
                    "broker: key v{} {:?} (block {}); chain: key v{} {:?} (block {})",
                    note.key_version,
                    note.status,
                    note.position.block_number,
                    expected.key_version,
                    expected.status,
                    expected.position.block_number
                ),
            });
        }
    }
    for (id, record) in &state.groups {
        let group = GroupId::from_bytes(id.0);
        let subject = format!("group {group}");
        let Ok((expected, _)) = notes::group_note(registry, state, id, record) else {
            continue;
        };
        let Some(note) = book
            .group(&group)
            .filter(|_| valid.contains(&Subject::Group(group)))
        else {
            differences.push(Difference {
                kind: DifferenceKind::Missing,
                subject,
                detail: format!(
                    "no valid note on the broker (chain: epoch {}, {} members)",
                    expected.epoch(),
                    expected.members().len()
                ),
            });
            continue;
        };
        let mut problems = Vec::new();
        if note.epoch() != expected.epoch() {
            problems.push(format!(
                "epoch {} vs chain {}",
                note.epoch(),
                expected.epoch()
            ));
        }
        if note.topic_filter() != expected.topic_filter() {
            problems.push(format!(
                "topic filter {:?} vs chain {:?}",
                note.topic_filter(),
                expected.topic_filter()
            ));
        }
        if note.admin() != expected.admin() {
            problems.push("admin differs".into());
        }
        if note.members() != expected.members() {
            let show = |members: &[anchormq_core::Member]| {
                members
                    .iter()
                    .map(|m| format!("{}@v{}", m.node, m.key_version))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            problems.push(format!(
                "members [{}] vs chain [{}]",
                show(note.members()),
                show(expected.members())
            ));
        }
        if !problems.is_empty() {
            differences.push(Difference {
                kind: DifferenceKind::Stale,
                subject,
                detail: format!(
                    "{} (note block {}, chain block {})",
                    problems.join("; "),
                    note.position().block_number,
                    expected.position().block_number
                ),
            });
        }
    }
    let show = |groups: &[GroupId]| {
        groups
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    for (id, record) in &state.nodes {
        let node = NodeId::from_bytes(id.0);
        let subject = format!("membership {node}");
        let expected = notes::membership_note(registry, id, record);
        match book
            .membership(&node)
            .filter(|_| valid.contains(&Subject::Membership(node)))
        {
            None => differences.push(Difference {
                kind: DifferenceKind::Missing,
                subject,
                detail: format!(
                    "no valid note on the broker (chain: groups [{}])",
                    show(expected.groups())
                ),
            }),
            Some(note) if note.groups() != expected.groups() => differences.push(Difference {
                kind: DifferenceKind::Stale,
                subject,
                detail: format!(
                    "groups [{}] vs chain [{}] (note block {}, chain block {})",
                    show(note.groups()),
                    show(expected.groups()),
                    note.position.block_number,
                    expected.position.block_number
                ),
            }),
            Some(_) => {}
        }
    }
    for subject in &valid {
        let (on_chain, subject, detail) = match subject {
            Subject::Node(node) => (
                state.nodes.contains_key(&B256::from(*node.as_bytes())),
                format!("node {node}"),
                "valid note for a node the chain does not have",
            ),
            Subject::Membership(node) => (
                state.nodes.contains_key(&B256::from(*node.as_bytes())),
                format!("membership {node}"),
                "valid membership note for a node the chain does not have",
            ),
            Subject::Group(group) => (
                state.groups.contains_key(&B256::from(*group.as_bytes())),
                format!("group {group}"),
                "valid note for a group the chain does not have",
            ),
        };
        if !on_chain {
            differences.push(Difference {
                kind: DifferenceKind::Extra,
                subject,
                detail: detail.into(),
            });
        }
    }
    differences.sort();
    differences
}

#[cfg(test)]
mod tests {
    use anchormq_core::{ChainPosition, NodeNote, NodeSecretKey, NodeStatus, Registry};

    use super::*;

    const REGISTRY: Registry = Registry {
        chain_id: 31337,
        address: [0xab; 20],
    };

    fn key(seed: u8) -> NodeSecretKey {
        NodeSecretKey::from_bytes(&[seed; 32]).expect("valid key")
    }

    fn node(label: &str) -> NodeId {
        label.parse().expect("valid ID")
    }

    #[test]
    fn retained_topics_are_read_through_the_topic_layout() {
        let topics = Topics::new(&REGISTRY);
        let bridge = key(1);
        let note = NodeNote {
            generation: 0,
            position: ChainPosition {
                chain_id: REGISTRY.chain_id,
                registry: REGISTRY.address,
                block_number: 5,
                block_hash: [0; 32],
                tx_hash: [0; 32],
                log_index: 0,
            },
            node: node("1111"),
            key_version: 1,
            status: NodeStatus::Active,
            public_key: key(2).public_key(),
        }
        .sign(&bridge);
        let chunk = note.chunks().remove(0);
        let unknown = format!("{}/node/1111", topics.prefix());
        let retained = BTreeMap::from([
            (unknown.clone(), chunk.clone()),
            (
                topics.group_note(&"line1".parse().expect("valid ID"), 0),
                vec![1, 2, 3],
            ),
            (topics.node_note(&node("1112"), 0), chunk.clone()),
            (topics.node_note(&node("1111"), 0), chunk),
        ]);
        // an empty chain: the one valid, well-placed note is extra
        let found = compare(
            &RegistryState::default(),
            &retained,
            &topics,
            &REGISTRY,
            bridge.public_key(),
        );
        let seen: Vec<(DifferenceKind, &str)> =
            found.iter().map(|d| (d.kind, d.subject.as_str())).collect();
        assert_eq!(
            seen,
            [
                (DifferenceKind::Forged, unknown.as_str()),
                (DifferenceKind::Forged, "group/line1"),
                (DifferenceKind::Forged, "node/1112"),
                (DifferenceKind::Extra, "node 1111"),
            ],
            "{found:?}"
        );
        assert!(
            found[0]
                .detail
                .contains("topic the note layout does not use")
        );
        assert!(found[1].detail.starts_with("bad chunk"));
        assert!(found[2].detail.contains("another subject's topic"));
    }
}
