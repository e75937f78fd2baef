//! Registry events decoded from logs, each with the position that orders it on the chain.

use alloy::primitives::{Address, B256, Bytes};
use alloy::rpc::types::Log;
use alloy::sol_types::SolEventInterface;
use serde::{Deserialize, Serialize};

use crate::bindings::IKeyRegistry::IKeyRegistryEvents;

/// Where a log sits on the chain. Ordered by (block number, log index), the order logs were emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogPosition {
    /// Block number.
    pub block_number: u64,
    /// Hash of the block that holds the log; changes when the block is reorged away.
    pub block_hash: B256,
    /// Hash of the transaction that emitted the log.
    pub tx_hash: B256,
    /// Index of the log in its block.
    pub log_index: u64,
}

impl LogPosition {
    /// The sort key: logs are ordered by block, then by index in the block.
    pub fn order(&self) -> (u64, u64) {
        (self.block_number, self.log_index)
    }
}

/// A registry event in chain-independent terms: everything needed to rebuild the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event")]
pub enum RegistryEvent {
    /// A node was registered with key version 1.
    NodeRegistered {
        /// Node ID.
        node: B256,
        /// Owner account.
        owner: Address,
        /// 33-byte compressed public key.
        public_key: Bytes,
        /// Always 1 at registration.
        key_version: u32,
    },
    /// A node's key was replaced.
    NodeKeyRotated {
        /// Node ID.
        node: B256,
        /// The new 33-byte compressed public key.
        public_key: Bytes,
        /// The new key version.
        key_version: u32,
        /// Account that sent the transaction.
        actor: Address,
    },
    /// A node was revoked for good.
    NodeRevoked {
        /// Node ID.
        node: B256,
        /// Account that sent the transaction.
        actor: Address,
    },
    /// A node changed owner.
    NodeOwnershipTransferred {
        /// Node ID.
        node: B256,
        /// Previous owner.
        from: Address,
        /// New owner.
        to: Address,
    },
    /// A group was created with epoch 0 and no members.
    GroupCreated {
        /// Group ID.
        group: B256,
        /// Admin account.
        admin: Address,
        /// MQTT topic filter the group protects (may be empty).
        topic_filter: String,
    },
    /// A group changed admin.
    GroupAdminTransferred {
        /// Group ID.
        group: B256,
        /// Previous admin.
        from: Address,
        /// New admin.
        to: Address,
    },
    /// A node joined a group.
    MemberAdded {
        /// Group ID.
        group: B256,
        /// Node ID.
        node: B256,
        /// The group's new epoch.
        epoch: u64,
        /// Account that sent the transaction.
        actor: Address,
    },
    /// A member's roles were set (bit 1 read, bit 2 write; a `MemberAdded` alone means both).
    MemberRolesSet {
        /// Group ID.
        group: B256,
        /// Node ID.
        node: B256,
        /// The roles, 1 to 3.
        roles: u8,
        /// The group's new epoch.
        epoch: u64,
        /// Account that sent the transaction.
        actor: Address,
    },
    /// A node left a group (removed by the admin, or left by its owner).
    MemberRemoved {
        /// Group ID.
        group: B256,
        /// Node ID.
        node: B256,
        /// The group's new epoch.
        epoch: u64,
        /// Account that sent the transaction.
        actor: Address,
    },
    /// A node's owner offered it to another account (zero: the offer was withdrawn).
    NodeOwnershipTransferStarted {
        /// Node ID.
        node: B256,
        /// Current owner.
        owner: Address,
        /// Account that may accept.
        pending: Address,
    },
    /// A group's admin offered the role to another account (zero: the offer was withdrawn).
    GroupAdminTransferStarted {
        /// Group ID.
        group: B256,
        /// Current admin.
        admin: Address,
        /// Account that may accept.
        pending: Address,
    },
    /// A node owner allowed (or stopped allowing) an admin to add its nodes to the admin's groups.
    AdminApprovalSet {
        /// The node owner.
        owner: Address,
        /// The group admin.
        admin: Address,
        /// Allowed or not.
        approved: bool,
    },
    /// The operator role of a closed registry moved.
    OperatorTransferred {
        /// Previous operator (zero at deployment).
        from: Address,
        /// New operator.
        to: Address,
    },
    /// The operator offered its role to another account (zero: the offer was withdrawn).
    OperatorTransferStarted {
        /// Current operator.
        operator: Address,
        /// Account that may accept.
        pending: Address,
    },
    /// The operator allowed (or stopped allowing) an account to register nodes and create groups.
    RegistrarSet {
        /// The account.
        registrar: Address,
        /// Allowed or not.
        allowed: bool,
    },
}

impl RegistryEvent {
    /// The event's name as declared in `IKeyRegistry.sol`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::NodeRegistered { .. } => "NodeRegistered",
            Self::NodeKeyRotated { .. } => "NodeKeyRotated",
            Self::NodeRevoked { .. } => "NodeRevoked",
            Self::NodeOwnershipTransferred { .. } => "NodeOwnershipTransferred",
            Self::GroupCreated { .. } => "GroupCreated",
            Self::GroupAdminTransferred { .. } => "GroupAdminTransferred",
            Self::MemberAdded { .. } => "MemberAdded",
            Self::MemberRolesSet { .. } => "MemberRolesSet",
            Self::MemberRemoved { .. } => "MemberRemoved",
            Self::NodeOwnershipTransferStarted { .. } => "NodeOwnershipTransferStarted",
            Self::GroupAdminTransferStarted { .. } => "GroupAdminTransferStarted",
            Self::AdminApprovalSet { .. } => "AdminApprovalSet",
            Self::OperatorTransferred { .. } => "OperatorTransferred",
            Self::OperatorTransferStarted { .. } => "OperatorTransferStarted",
            Self::RegistrarSet { .. } => "RegistrarSet",
        }
    }

    /// The node the event is about, if any.
    pub fn node(&self) -> Option<B256> {
        match self {
            Self::NodeRegistered { node, .. }
            | Self::NodeKeyRotated { node, .. }
            | Self::NodeRevoked { node, .. }
            | Self::NodeOwnershipTransferred { node, .. }
            | Self::NodeOwnershipTransferStarted { node, .. }
            | Self::MemberAdded { node, .. }
            | Self::MemberRolesSet { node, .. }
            | Self::MemberRemoved { node, .. } => Some(*node),
            _ => None,
        }
    }

    /// The group the event is about, if any.
    pub fn group(&self) -> Option<B256> {
        match self {
            Self::GroupCreated { group, .. }
            | Self::GroupAdminTransferred { group, .. }
            | Self::GroupAdminTransferStarted { group, .. }
            | Self::MemberAdded { group, .. }
            | Self::MemberRolesSet { group, .. }
            | Self::MemberRemoved { group, .. } => Some(*group),
            _ => None,
        }
    }
}

impl From<IKeyRegistryEvents> for RegistryEvent {
    fn from(event: IKeyRegistryEvents) -> Self {
        use IKeyRegistryEvents as E;
        match event {
            E::NodeRegistered(e) => Self::NodeRegistered {
                node: e.nodeId,
                owner: e.owner,
                public_key: e.publicKey,
                key_version: e.keyVersion,
            },
            E::NodeKeyRotated(e) => Self::NodeKeyRotated {
                node: e.nodeId,
                public_key: e.publicKey,
                key_version: e.keyVersion,
                actor: e.actor,
            },
            E::NodeRevoked(e) => Self::NodeRevoked {
                node: e.nodeId,
                actor: e.actor,
            },
            E::NodeOwnershipTransferred(e) => Self::NodeOwnershipTransferred {
                node: e.nodeId,
                from: e.previousOwner,
                to: e.newOwner,
            },
            E::GroupCreated(e) => Self::GroupCreated {
                group: e.groupId,
                admin: e.admin,
                topic_filter: e.topicFilter,
            },
            E::GroupAdminTransferred(e) => Self::GroupAdminTransferred {
                group: e.groupId,
                from: e.previousAdmin,
                to: e.newAdmin,
            },
            E::MemberAdded(e) => Self::MemberAdded {
                group: e.groupId,
                node: e.nodeId,
                epoch: e.epoch,
                actor: e.actor,
            },
            E::MemberRolesSet(e) => Self::MemberRolesSet {
                group: e.groupId,
                node: e.nodeId,
                roles: e.roles,
                epoch: e.epoch,
                actor: e.actor,
            },
            E::MemberRemoved(e) => Self::MemberRemoved {
                group: e.groupId,
                node: e.nodeId,
                epoch: e.epoch,
                actor: e.actor,
            },
            E::NodeOwnershipTransferStarted(e) => Self::NodeOwnershipTransferStarted {
                node: e.nodeId,
                owner: e.owner,
                pending: e.pendingOwner,
            },
            E::GroupAdminTransferStarted(e) => Self::GroupAdminTransferStarted {
                group: e.groupId,
                admin: e.admin,
                pending: e.pendingAdmin,
            },
            E::AdminApprovalSet(e) => Self::AdminApprovalSet {
                owner: e.owner,
                admin: e.admin,
                approved: e.approved,
            },
            E::OperatorTransferred(e) => Self::OperatorTransferred {
                from: e.previousOperator,
                to: e.newOperator,
            },
            E::OperatorTransferStarted(e) => Self::OperatorTransferStarted {
                operator: e.operator,
                pending: e.pendingOperator,
            },
            E::RegistrarSet(e) => Self::RegistrarSet {
                registrar: e.registrar,
                allowed: e.allowed,
            },
        }
    }
}

/// A decoded event with its position on the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionedEvent {
    /// Where the log sits.
    pub position: LogPosition,
    /// What happened.
    pub event: RegistryEvent,
}

/// Why a log could not be turned into a [`PositionedEvent`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogDecodeError {
    /// The RPC returned a log without block number, block hash, tx hash or log index (a pending log).
    #[error("log is missing its {0} (pending logs are not accepted)")]
    MissingField(&'static str),
    /// The log's topics and data match no event of `IKeyRegistry`.
    #[error("log at block {block} index {index} is not an IKeyRegistry event: {source}")]
    UnknownEvent {
        /// Block number of the log.
        block: u64,
        /// Log index.
        index: u64,
        /// The ABI decoder's reason.
        source: alloy::sol_types::Error,
    },
}

impl PositionedEvent {
    /// Decodes an RPC log of the registry.
    pub fn from_log(log: &Log) -> Result<Self, LogDecodeError> {
        let position = LogPosition {
            block_number: log
                .block_number
                .ok_or(LogDecodeError::MissingField("block number"))?,
            block_hash: log
                .block_hash
                .ok_or(LogDecodeError::MissingField("block hash"))?,
            tx_hash: log
                .transaction_hash
                .ok_or(LogDecodeError::MissingField("transaction hash"))?,
            log_index: log
                .log_index
                .ok_or(LogDecodeError::MissingField("log index"))?,
        };
        let decoded = IKeyRegistryEvents::decode_log(&log.inner).map_err(|source| {
            LogDecodeError::UnknownEvent {
                block: position.block_number,
                index: position.log_index,
                source,
            }
        })?;
        Ok(Self {
            position,
            event: decoded.data.into(),
        })
    }
}
