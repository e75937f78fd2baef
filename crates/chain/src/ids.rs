//! Human-readable IDs: `bytes32("1111")` is shown as `1111`, anything else as hex.

use alloy::primitives::B256;

/// Shows a bytes32 ID the way anchormq does everywhere (see [`anchormq_core::NodeId`]).
pub fn show_id(id: &B256) -> String {
    anchormq_core::NodeId::from_bytes(id.0).to_string()
}
