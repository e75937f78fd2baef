//! The registry's state rebuilt from its events alone: what the bridge mirrors and `verify` compares.

use std::collections::{BTreeMap, BTreeSet};

use alloy::primitives::{Address, B256, Bytes};
use serde::{Deserialize, Serialize};

use crate::events::{LogPosition, PositionedEvent, RegistryEvent};

/// Lifecycle of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeStatus {
    /// Registered and usable.
    Active,
    /// Revoked for good.
    Revoked,
}

/// A node as the events describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Account that may rotate, revoke and transfer the node.
    pub owner: Address,
    /// Current 33-byte compressed public key.
    pub public_key: Bytes,
    /// 1 at registration, +1 per rotation.
    pub key_version: u32,
    /// Active or revoked.
    pub status: NodeStatus,
    /// Groups the node is recorded in (a revoked node stays recorded until removed).
    pub groups: BTreeSet<B256>,
    /// The last event that changed `groups`, or the registration (none in a checkpoint written
    /// before this field existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_at: Option<LogPosition>,
    /// The last event that changed this record.
    pub updated_at: LogPosition,
}

impl NodeRecord {
    /// Where the node's list of groups last changed: its registration until a membership change.
    pub fn groups_position(&self) -> LogPosition {
        self.groups_at.unwrap_or(self.updated_at)
    }
}

/// A group as the events describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// Account that may change membership.
    pub admin: Address,
    /// MQTT topic filter the group protects (may be empty).
    pub topic_filter: String,
    /// Increases on every membership change.
    pub epoch: u64,
    /// Recorded members (revoked nodes included until removed; they read and send nothing).
    pub members: BTreeSet<B256>,
    /// Roles of the members that do not have both (1 read, 2 write); absent means both.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub roles: BTreeMap<B256, u8>,
    /// The last event that changed this record.
    pub updated_at: LogPosition,
}

/// Which records an event changed: the notes the bridge must publish again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changed {
    /// Nodes whose record changed.
    pub nodes: BTreeSet<B256>,
    /// Groups whose record changed.
    pub groups: BTreeSet<B256>,
    /// Nodes whose list of groups changed (or that were registered).
    pub memberships: BTreeSet<B256>,
}

impl Changed {
    /// Adds what `other` changed.
    pub fn extend(&mut self, other: Changed) {
        self.nodes.extend(other.nodes);
        self.groups.extend(other.groups);
        self.memberships.extend(other.memberships);
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.groups.is_empty() && self.memberships.is_empty()
    }
}

/// An event that does not fit the state built so far: the logs are incomplete, out of order,
/// or come from another contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{event} at block {block} index {index} does not fit the registry state: {reason}")]
pub struct InconsistentEvent {
    /// The event's name.
    pub event: &'static str,
    /// Its block.
    pub block: u64,
    /// Its log index.
    pub index: u64,
    /// What did not fit.
    pub reason: String,
}

/// All nodes and groups of one registry, as of `position`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryState {
    /// Nodes by ID.
    pub nodes: BTreeMap<B256, NodeRecord>,
    /// Groups by ID.
    pub groups: BTreeMap<B256, GroupRecord>,
    /// The last event applied.
    pub position: Option<LogPosition>,
}

impl RegistryState {
    /// Applies one event; events must come in chain order.
    pub fn apply(&mut self, positioned: &PositionedEvent) -> Result<Changed, InconsistentEvent> {
        let at = positioned.position;
        let fail = |reason: String| InconsistentEvent {
            event: positioned.event.name(),
            block: at.block_number,
            index: at.log_index,
            reason,
        };
        if let Some(last) = self.position
            && at.order() <= last.order()
        {
            return Err(fail(format!(
                "it does not come after the last applied event (block {} index {})",
                last.block_number, last.log_index
            )));
        }
        let mut changed = Changed::default();
        match &positioned.event {
            RegistryEvent::NodeRegistered {
                node,
                owner,
                public_key,
                key_version,
            } => {
                if self.nodes.contains_key(node) {
                    return Err(fail(format!("node {node} is already registered")));
                }
                self.nodes.insert(
                    *node,
                    NodeRecord {
                        owner: *owner,
                        public_key: public_key.clone(),
                        key_version: *key_version,
                        status: NodeStatus::Active,
                        groups: BTreeSet::new(),
                        groups_at: Some(at),
                        updated_at: at,
                    },
                );
                changed.nodes.insert(*node);
                changed.memberships.insert(*node);
            }
            RegistryEvent::NodeKeyRotated {
                node,
                public_key,
                key_version,
                ..
            } => {
                let record = self
                    .nodes
                    .get_mut(node)
                    .ok_or_else(|| fail(format!("unknown node {node}")))?;
                record.public_key = public_key.clone();
                record.key_version = *key_version;
                record.updated_at = at;
                changed.nodes.insert(*node);
                // Group notes carry each member's key version: the node's groups change with it
                // (the chain bumps no epoch; members re-key when a member's key changes).
                for group in &record.groups {
                    if let Some(group_record) = self.groups.get_mut(group) {
                        group_record.updated_at = at;
                        changed.groups.insert(*group);
                    }
                }
            }
            RegistryEvent::NodeRevoked { node, .. } => {
                let record = self
                    .nodes
                    .get_mut(node)
                    .ok_or_else(|| fail(format!("unknown node {node}")))?;
                record.status = NodeStatus::Revoked;
                record.updated_at = at;
                changed.nodes.insert(*node);
            }
            RegistryEvent::NodeOwnershipTransferred { node, to, .. } => {
                let record = self
                    .nodes
                    .get_mut(node)
                    .ok_or_else(|| fail(format!("unknown node {node}")))?;
                record.owner = *to;
                record.updated_at = at;
                changed.nodes.insert(*node);
            }
            RegistryEvent::GroupCreated {
                group,
                admin,
                topic_filter,
            } => {
                if self.groups.contains_key(group) {
                    return Err(fail(format!("group {group} already exists")));
                }
                self.groups.insert(
                    *group,
                    GroupRecord {
                        admin: *admin,
                        topic_filter: topic_filter.clone(),
                        epoch: 0,
                        members: BTreeSet::new(),
                        roles: BTreeMap::new(),
                        updated_at: at,
                    },
                );
                changed.groups.insert(*group);
            }
            RegistryEvent::GroupAdminTransferred { group, to, .. } => {
                let record = self
                    .groups
                    .get_mut(group)
                    .ok_or_else(|| fail(format!("unknown group {group}")))?;
                record.admin = *to;
                record.updated_at = at;
                changed.groups.insert(*group);
            }
            RegistryEvent::MemberAdded {
                group, node, epoch, ..
            } => {
                let node_record = self
                    .nodes
                    .get_mut(node)
                    .ok_or_else(|| fail(format!("unknown node {node}")))?;
                let record = self
                    .groups
                    .get_mut(group)
                    .ok_or_else(|| fail(format!("unknown group {group}")))?;
                if !record.members.insert(*node) {
                    return Err(fail(format!("node {node} is already a member")));
                }
                node_record.groups.insert(*group);
                node_record.groups_at = Some(at);
                changed.memberships.insert(*node);
                record.epoch = *epoch;
                record.updated_at = at;
                changed.groups.insert(*group);
            }
            RegistryEvent::MemberRemoved {
                group, node, epoch, ..
            } => {
                let node_record = self
                    .nodes
                    .get_mut(node)
                    .ok_or_else(|| fail(format!("unknown node {node}")))?;
                let record = self
                    .groups
                    .get_mut(group)
                    .ok_or_else(|| fail(format!("unknown group {group}")))?;
                if !record.members.remove(node) {
                    return Err(fail(format!("node {node} is not a member")));
                }
                record.roles.remove(node);
                node_record.groups.remove(group);
                node_record.groups_at = Some(at);
                changed.memberships.insert(*node);
                record.epoch = *epoch;
                record.updated_at = at;
                changed.groups.insert(*group);
            }
            RegistryEvent::MemberRolesSet {
                group,
                node,
                roles,
                epoch,
                ..
            } => {
                let record = self
                    .groups
                    .get_mut(group)
                    .ok_or_else(|| fail(format!("unknown group {group}")))?;
                if !record.members.contains(node) {
                    return Err(fail(format!("node {node} is not a member")));
                }
                match roles {
                    3 => record.roles.remove(node),
                    1 | 2 => record.roles.insert(*node, *roles),
                    _ => return Err(fail(format!("roles {roles} are not 1, 2 or 3"))),
                };
                record.epoch = *epoch;
                record.updated_at = at;
                changed.groups.insert(*group);
            }
            // Offers, approvals and registrar roles change who may send future transactions,
            // not what any note says.
            RegistryEvent::NodeOwnershipTransferStarted { .. }
            | RegistryEvent::GroupAdminTransferStarted { .. }
            | RegistryEvent::AdminApprovalSet { .. }
            | RegistryEvent::OperatorTransferred { .. }
            | RegistryEvent::OperatorTransferStarted { .. }
            | RegistryEvent::RegistrarSet { .. } => {}
        }
        self.position = Some(at);
        Ok(changed)
    }
}
