//! Chain state → key notes: the one place that decides what note a node or group gets. The mirror
//! publishes these notes and `anchormq verify` expects them, so the two can never disagree.
//!
//! Chain data is hostile input: anyone can write it. What a note cannot carry is never a reason to
//! stop mirroring everyone else. A group whose topic filter is not a valid MQTT filter of
//! printable ASCII (the registry refuses those, but a bridge does not rely on it) is mirrored as a
//! group that claims no topic; a node whose key is unreadable gets no note at all.

use anchormq_chain::{
    B256, GroupRecord, LogPosition, NodeRecord, NodeStatus as ChainStatus, RegistryState,
};
use anchormq_core::topics::validate_topic_filter;
use anchormq_core::{
    ChainPosition, GroupId, GroupNote, Member, MembershipNote, NodeId, NodeNote, NodePublicKey,
    NodeStatus, Registry, Roles,
};

/// Why chain data could not be mirrored as it stands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unrepresentable {
    /// The group's topic filter is not a valid MQTT filter of printable ASCII: the group is
    /// mirrored as claiming no topic.
    #[error(
        "group {group}: topic filter {filter:?} is not a valid MQTT topic filter ({reason}); mirrored as claiming no topic"
    )]
    TopicFilter {
        /// The group.
        group: GroupId,
        /// The filter as decoded from the chain (escaped when shown).
        filter: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The node's key on chain is not a valid compressed secp256k1 key: no note is published.
    #[error("node {node}: public key on chain is not a valid compressed secp256k1 key; no note")]
    NodeKey {
        /// The node.
        node: NodeId,
    },
    /// The group cannot be written as a note at all (for example more members than a note holds).
    #[error("group {group}: {reason}; no note")]
    Group {
        /// The group.
        group: GroupId,
        /// Why.
        reason: String,
    },
}

/// Where `at` sits, as notes carry it.
pub fn position(registry: &Registry, at: &LogPosition) -> ChainPosition {
    ChainPosition {
        chain_id: registry.chain_id,
        registry: registry.address,
        block_number: at.block_number,
        block_hash: at.block_hash.0,
        tx_hash: at.tx_hash.0,
        log_index: at.log_index,
    }
}

/// The note of node `id`.
pub fn node_note(
    registry: &Registry,
    id: &B256,
    record: &NodeRecord,
) -> Result<NodeNote, Unrepresentable> {
    let node = NodeId::from_bytes(id.0);
    let public_key = NodePublicKey::from_compressed(&record.public_key)
        .map_err(|_| Unrepresentable::NodeKey { node })?;
    Ok(NodeNote {
        // the mirror signs it under its current generation
        generation: 0,
        position: position(registry, &record.updated_at),
        node,
        key_version: u64::from(record.key_version),
        status: match record.status {
            ChainStatus::Active => NodeStatus::Active,
            ChainStatus::Revoked => NodeStatus::Revoked,
        },
        public_key,
    })
}

/// The membership note of node `id`: the groups it is in. Every registered node has one (an empty
/// list included), so an agent can tell "in no group" from "not arrived yet".
pub fn membership_note(registry: &Registry, id: &B256, record: &NodeRecord) -> MembershipNote {
    MembershipNote::new(
        position(registry, &record.groups_position()),
        NodeId::from_bytes(id.0),
        record
            .groups
            .iter()
            .map(|group| GroupId::from_bytes(group.0))
            .collect(),
    )
}

/// The note of group `id`, and what had to be left out of it (a refused topic filter). Members
/// carry their current key version from `state`.
pub fn group_note(
    registry: &Registry,
    state: &RegistryState,
    id: &B256,
    record: &GroupRecord,
) -> Result<(GroupNote, Option<Unrepresentable>), Unrepresentable> {
    let group = GroupId::from_bytes(id.0);
    let members: Vec<Member> = record
        .members
        .iter()
        .map(|member| Member {
            node: NodeId::from_bytes(member.0),
            key_version: state
                .nodes
                .get(member)
                .map_or(0, |n| u64::from(n.key_version)),
            // the state only holds roles of 1 or 2 (the event fold refuses others)
            roles: record
                .roles
                .get(member)
                .and_then(|r| Roles::from_bits(*r))
                .unwrap_or(Roles::BOTH),
        })
        .collect();
    let refused =
        check_filter(&record.topic_filter)
            .err()
            .map(|reason| Unrepresentable::TopicFilter {
                group,
                filter: record.topic_filter.clone(),
                reason,
            });
    let filter = if refused.is_some() {
        ""
    } else {
        record.topic_filter.as_str()
    };
    let note = GroupNote::new(
        position(registry, &record.updated_at),
        group,
        record.epoch,
        filter,
        Some(record.admin.0.0),
        members,
    )
    .map_err(|e| Unrepresentable::Group {
        group,
        reason: e.to_string(),
    })?;
    Ok((note, refused))
}

/// The registry's rule for group filters: empty, or a valid MQTT topic filter of printable ASCII.
/// Printable ASCII also rules out what a lossy decoding of invalid UTF-8 would let through.
fn check_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Ok(());
    }
    if let Some((index, c)) = filter
        .char_indices()
        .find(|(_, c)| !(' '..='~').contains(c))
    {
        return Err(format!(
            "character {c:?} at byte {index} is not printable ASCII"
        ));
    }
    validate_topic_filter(filter).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use anchormq_chain::Address;

    use super::*;

    fn record(filter: &str) -> GroupRecord {
        GroupRecord {
            admin: Address::repeat_byte(7),
            topic_filter: filter.to_owned(),
            epoch: 3,
            members: BTreeSet::new(),
            roles: Default::default(),
            updated_at: LogPosition {
                block_number: 5,
                block_hash: B256::repeat_byte(1),
                tx_hash: B256::repeat_byte(2),
                log_index: 0,
            },
        }
    }

    fn registry() -> Registry {
        Registry {
            chain_id: 31337,
            address: [9; 20],
        }
    }

    /// Filters a stranger could get mined on a registry without the contract's checks: each is
    /// mirrored as a group claiming no topic, with the reason, instead of stopping the bridge.
    #[test]
    fn hostile_filters_become_groups_that_claim_no_topic() {
        let state = RegistryState::default();
        for filter in [
            "a+",
            "#/a",
            "a/#/b",
            "x\0y",
            "caf\u{e9}/#",
            "\u{fffd}",
            "tab\there",
        ] {
            let (note, refused) =
                group_note(&registry(), &state, &B256::repeat_byte(3), &record(filter))
                    .expect("a note is still made");
            assert_eq!(note.topic_filter(), "", "{filter:?}");
            assert_eq!(note.epoch(), 3);
            assert!(
                matches!(refused, Some(Unrepresentable::TopicFilter { .. })),
                "{filter:?}: {refused:?}"
            );
        }
    }

    #[test]
    fn valid_filters_are_kept() {
        let state = RegistryState::default();
        for filter in ["", "#", "+", "a/+/b", "a/#", "with space/#", "a//b"] {
            let (note, refused) =
                group_note(&registry(), &state, &B256::repeat_byte(3), &record(filter))
                    .expect("note");
            assert_eq!(note.topic_filter(), filter);
            assert_eq!(refused, None);
        }
    }

    #[test]
    fn a_node_with_an_unreadable_key_gets_no_note() {
        let record = NodeRecord {
            owner: Address::ZERO,
            public_key: vec![4; 33].into(),
            key_version: 1,
            status: ChainStatus::Active,
            groups: BTreeSet::new(),
            groups_at: None,
            updated_at: record("").updated_at,
        };
        assert!(matches!(
            node_note(&registry(), &B256::repeat_byte(1), &record),
            Err(Unrepresentable::NodeKey { .. })
        ));
    }
}
