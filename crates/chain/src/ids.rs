//! Human-readable IDs: `bytes32("1111")` is shown as `1111`, anything else as hex.

use alloy::primitives::B256;

/// Shows a bytes32 ID the way anchormq does everywhere (see [`anchormq_core::NodeId`]).
pub fn show_id(id: &B256) -> String {
    anchormq_core::NodeId::from_bytes(id.0).to_string()
}

/// The ABI's `bytes32` for a typed ID. Only the chain client converts: its API takes
/// [`anchormq_core::NodeId`] and [`anchormq_core::GroupId`], so swapped arguments do not compile.
pub(crate) trait Word {
    fn word(&self) -> B256;
}

impl Word for anchormq_core::NodeId {
    fn word(&self) -> B256 {
        B256::from(*self.as_bytes())
    }
}

impl Word for anchormq_core::GroupId {
    fn word(&self) -> B256 {
        B256::from(*self.as_bytes())
    }
}
