//! Which groups a node accepts: a local policy layered on top of on-chain membership.
//!
//! On chain a node joins a group only with its owner's consent, so by default a node accepts any
//! group it is a member of. A device's configuration can narrow that to named groups, or to groups
//! administered by named accounts; everything else is refused on both the send and the read side.

use std::collections::BTreeSet;

use crate::ids::GroupId;
use crate::notes::{Address, GroupNote};

/// The groups a node accepts. [`Trust::default`] accepts every group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trust {
    groups: BTreeSet<GroupId>,
    admins: BTreeSet<Address>,
}

impl Trust {
    /// Accepts exactly `groups` and the groups administered by `admins`; both empty accepts all.
    pub fn new(
        groups: impl IntoIterator<Item = GroupId>,
        admins: impl IntoIterator<Item = Address>,
    ) -> Self {
        Self {
            groups: groups.into_iter().collect(),
            admins: admins.into_iter().collect(),
        }
    }

    /// True when no group or admin is named: every group is accepted.
    pub fn accepts_all(&self) -> bool {
        self.groups.is_empty() && self.admins.is_empty()
    }

    /// Whether the group of `note` is accepted: named, or administered by a named admin.
    pub fn accepts(&self, note: &GroupNote) -> bool {
        self.accepts_all()
            || self.groups.contains(&note.group())
            || note
                .admin()
                .is_some_and(|admin| self.admins.contains(&admin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notes::ChainPosition;

    fn note(group: &str, admin: Option<Address>) -> GroupNote {
        let position = ChainPosition {
            chain_id: 1,
            registry: [1; 20],
            block_number: 1,
            block_hash: [0; 32],
            tx_hash: [0; 32],
            log_index: 0,
        };
        let group = GroupId::from_label(group).expect("id");
        GroupNote::new(position, group, 1, "a/#", admin, Vec::new()).expect("note")
    }

    #[test]
    fn default_accepts_all_and_naming_narrows() {
        let (mine, stranger) = ([1; 20], [2; 20]);
        assert!(Trust::default().accepts(&note("g1", Some(stranger))));

        let by_group = Trust::new([GroupId::from_label("g1").expect("id")], []);
        assert!(by_group.accepts(&note("g1", Some(stranger))));
        assert!(!by_group.accepts(&note("g2", Some(mine))));

        let by_admin = Trust::new([], [mine]);
        assert!(by_admin.accepts(&note("g2", Some(mine))));
        assert!(!by_admin.accepts(&note("g1", Some(stranger))));
        assert!(
            !by_admin.accepts(&note("g3", None)),
            "no admin named: refused"
        );
    }
}
