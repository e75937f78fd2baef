//! Errors of the chain client.

use alloy::primitives::{Address, B256};

use crate::bindings::IKeyRegistry::IKeyRegistryErrors;
use crate::ids::show_id;

/// A revert of the registry, decoded from its custom error, with a message a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe_revert(.0))]
pub struct RegistryRevert(pub IKeyRegistryErrors);

fn describe_revert(error: &IKeyRegistryErrors) -> String {
    use IKeyRegistryErrors as E;
    match error {
        E::ZeroId(_) => "the ID must not be zero".into(),
        E::ZeroAddress(_) => "the account must not be the zero address".into(),
        E::NodeAlreadyRegistered(e) => format!("node {} is already registered", show_id(&e.nodeId)),
        E::NodeNotFound(e) => format!("node {} is not registered", show_id(&e.nodeId)),
        E::NotNodeOwner(e) => format!(
            "account {} does not own node {}",
            e.caller,
            show_id(&e.nodeId)
        ),
        E::NodeIsRevoked(e) => format!("node {} is revoked", show_id(&e.nodeId)),
        E::InvalidPublicKeyLength(e) => {
            format!("public key is {} bytes, expected 33 (compressed)", e.length)
        }
        E::InvalidPublicKeyPrefix(e) => format!(
            "public key starts with 0x{:02x}, expected 0x02 or 0x03",
            e.prefix
        ),
        E::PublicKeyXOutOfRange(_) => "public key x coordinate is not below the field prime".into(),
        E::PublicKeyNotOnCurve(_) => "public key is not a point on secp256k1".into(),
        E::PublicKeyUnchanged(e) => format!("node {} already has this key", show_id(&e.nodeId)),
        E::InvalidSignatureLength(e) => {
            format!("proof of possession is {} bytes, expected 65", e.length)
        }
        E::InvalidSignatureV(e) => {
            format!("proof of possession has v = {}, expected 27 or 28", e.v)
        }
        E::SignatureMalleable(_) => "proof of possession has a high s value (malleable)".into(),
        E::InvalidSignature(e) => format!(
            "proof of possession was not made by the node key (expected signer {}, recovered {})",
            e.expected, e.recovered
        ),
        E::GroupAlreadyExists(e) => format!("group {} already exists", show_id(&e.groupId)),
        E::GroupNotFound(e) => format!("group {} does not exist", show_id(&e.groupId)),
        E::NotGroupAdmin(e) => format!(
            "account {} is not the admin of group {}",
            e.caller,
            show_id(&e.groupId)
        ),
        E::AlreadyMember(e) => {
            format!(
                "node {} is already a member of group {}",
                show_id(&e.nodeId),
                show_id(&e.groupId)
            )
        }
        E::EmptyNodeList(_) => "the list of nodes is empty".into(),
        E::InvalidRoles(e) => format!(
            "roles {} are not valid: use 1 (read), 2 (write) or 3 (both)",
            e.roles
        ),
        E::BatchLengthMismatch(e) => format!(
            "{} node IDs, {} public keys and {} proofs: one of each per node",
            e.nodeIds, e.publicKeys, e.signatures
        ),
        E::NotMember(e) => format!(
            "node {} is not a member of group {}",
            show_id(&e.nodeId),
            show_id(&e.groupId)
        ),
        E::TopicFilterTooLong(e) => format!(
            "topic filter is {} bytes, at most {} allowed",
            e.length, e.limit
        ),
        E::InvalidTopicFilter(e) => format!(
            "topic filter is not a valid MQTT topic filter at byte {}: only printable ASCII, '+' as a \
             whole level and '#' as the whole last level are allowed",
            e.index
        ),
        E::NotPendingNodeOwner(e) => format!(
            "node {} was not offered to account {}",
            show_id(&e.nodeId),
            e.caller
        ),
        E::NotPendingGroupAdmin(e) => format!(
            "the admin role of group {} was not offered to account {}",
            show_id(&e.groupId),
            e.caller
        ),
        E::AdminNotApproved(e) => format!(
            "the owner {} of node {} has not approved admin {}: the owner must run \
             `anchormq node approve-admin --admin {}` first",
            e.owner,
            show_id(&e.nodeId),
            e.admin,
            e.admin
        ),
        E::NotRegistrar(e) => format!(
            "this registry is closed and account {} is not a registrar: ask its operator to add it",
            e.caller
        ),
        E::NotOperator(e) => format!(
            "account {} is not the registry's operator (an open registry has none)",
            e.caller
        ),
        E::NotPendingOperator(e) => {
            format!("the operator role was not offered to account {}", e.caller)
        }
    }
}

/// Errors of [`crate::RegistryClient`] and [`crate::EventStream`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The RPC endpoint could not be reached or refused to talk.
    #[error("cannot reach the RPC at {url}: {source}")]
    Unreachable {
        /// The endpoint, without credentials.
        url: String,
        /// The transport's reason.
        source: alloy::transports::TransportError,
    },
    /// The RPC's chain differs from the deployment's.
    #[error("the RPC serves chain {actual}, but the registry was deployed on chain {expected}")]
    WrongChain {
        /// Chain ID of the deployment.
        expected: u64,
        /// Chain ID the RPC reports.
        actual: u64,
    },
    /// No contract code at the registry address.
    #[error(
        "no contract at {address} on chain {chain_id}: wrong registry address or deployment file?"
    )]
    NoRegistry {
        /// The address that holds no code.
        address: Address,
        /// The chain asked.
        chain_id: u64,
    },
    /// The address holds a contract, but not a KeyRegistry.
    #[error("the contract at {address} does not answer as a KeyRegistry: {reason}")]
    NotARegistry {
        /// The address.
        address: Address,
        /// What failed.
        reason: String,
    },
    /// The registry rejected the call or transaction.
    #[error("the registry rejected the transaction: {0}")]
    Reverted(#[from] RegistryRevert),
    /// The transaction was mined but failed without a decodable reason.
    #[error("transaction {tx_hash} failed on chain without a reason")]
    Failed {
        /// The failed transaction.
        tx_hash: B256,
    },
    /// Any other RPC or contract error.
    #[error("RPC call {call} failed: {source}")]
    Rpc {
        /// What was being done.
        call: &'static str,
        /// The transport's reason.
        source: alloy::transports::TransportError,
    },
    /// A contract call failed in a way that is not a registry revert.
    #[error("{call} failed: {source}")]
    Contract {
        /// What was being done.
        call: &'static str,
        /// The contract layer's reason.
        source: Box<alloy::contract::Error>,
    },
    /// A receipt could not be obtained.
    #[error("waiting for the receipt of {call} failed: {source}")]
    Receipt {
        /// What was being done.
        call: &'static str,
        /// The reason.
        source: Box<alloy::providers::PendingTransactionError>,
    },
    /// A log could not be decoded.
    #[error(transparent)]
    Log(#[from] crate::events::LogDecodeError),
    /// The RPC does not have something the registry's history names (a pruned node?).
    #[error("the RPC does not have {what}")]
    Missing {
        /// What is missing.
        what: String,
    },
    /// The registry's events do not add up (an RPC serving incomplete or foreign logs).
    #[error(transparent)]
    Inconsistent(#[from] crate::state::InconsistentEvent),
    /// The node key could not sign.
    #[error("signing the proof of possession failed: {0}")]
    Signing(String),
}

impl ChainError {
    /// Turns a contract-layer error into a decoded registry revert when it is one.
    pub(crate) fn from_contract(call: &'static str, source: alloy::contract::Error) -> Self {
        match source.as_decoded_interface_error::<IKeyRegistryErrors>() {
            Some(decoded) => Self::Reverted(RegistryRevert(decoded)),
            None => Self::Contract {
                call,
                source: Box::new(source),
            },
        }
    }

    /// The decoded registry revert, if this error is one.
    pub fn revert(&self) -> Option<&IKeyRegistryErrors> {
        match self {
            Self::Reverted(RegistryRevert(e)) => Some(e),
            _ => None,
        }
    }
}
