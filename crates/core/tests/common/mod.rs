//! The research world (nodes 1111-1114, groups hsu0001 = {1111, 1112} and
//! hsu0002 = {1113, 1114}) built deterministically from a seed.
#![allow(dead_code, unreachable_pub)]

use anchormq_core::{
    ChainPosition, GroupId, GroupNote, KeyBook, Member, NodeId, NodeNote, NodeSecretKey,
    NodeStatus, Opener, Registry, Sealer, SignedNote,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

pub const SEED: u64 = 0x616e_6368_6f72_6d71; // "anchormq"
pub const EPOCH: u64 = 3;

pub fn rng(label: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(SEED ^ label)
}

pub fn node(label: &str) -> NodeId {
    NodeId::from_label(label).expect("test label")
}

pub fn group(label: &str) -> GroupId {
    GroupId::from_label(label).expect("test label")
}

pub struct World {
    pub registry: Registry,
    pub bridge: NodeSecretKey,
    pub nodes: Vec<(NodeId, NodeSecretKey)>,
    pub node_notes: Vec<SignedNote>,
    pub group_notes: Vec<SignedNote>,
}

pub fn position(registry: &Registry, block: u64, log: u64) -> ChainPosition {
    ChainPosition {
        chain_id: registry.chain_id,
        registry: registry.address,
        block_number: block,
        block_hash: [block as u8; 32],
        tx_hash: [(block as u8) ^ 0x55; 32],
        log_index: log,
    }
}

impl World {
    pub fn new() -> Self {
        let mut rng = rng(0);
        let registry = Registry {
            chain_id: 31337,
            address: [0x5f; 20],
        };
        let bridge = NodeSecretKey::generate(&mut rng);
        let mut nodes = Vec::new();
        let mut node_notes = Vec::new();
        for (i, label) in ["1111", "1112", "1113", "1114"].iter().enumerate() {
            let id = node(label);
            let key = NodeSecretKey::generate(&mut rng);
            let note = NodeNote {
                generation: 0,
                position: position(&registry, 10 + i as u64, 0),
                node: id,
                key_version: 1,
                status: NodeStatus::Active,
                public_key: key.public_key(),
            };
            node_notes.push(note.sign(&bridge));
            nodes.push((id, key));
        }
        let mut world = Self {
            registry,
            bridge,
            nodes,
            node_notes,
            group_notes: Vec::new(),
        };
        world.group_notes.push(
            world
                .group_note("hsu0001", &["1111", "1112"], EPOCH, 20)
                .sign(&world.bridge),
        );
        world.group_notes.push(
            world
                .group_note("hsu0002", &["1113", "1114"], EPOCH, 21)
                .sign(&world.bridge),
        );
        world
    }

    pub fn group_note(&self, label: &str, members: &[&str], epoch: u64, block: u64) -> GroupNote {
        let members = members.iter().map(|m| Member::new(node(m), 1)).collect();
        GroupNote::new(
            position(&self.registry, block, 0),
            group(label),
            epoch,
            format!("{label}/#"),
            None,
            members,
        )
        .expect("valid group note")
    }

    pub fn key(&self, label: &str) -> NodeSecretKey {
        let id = node(label);
        self.nodes
            .iter()
            .find(|(n, _)| *n == id)
            .expect("known node")
            .1
            .clone()
    }

    pub fn book(&self) -> KeyBook {
        let mut book = KeyBook::new(self.registry, self.bridge.public_key());
        for n in self.node_notes.iter().chain(&self.group_notes) {
            book.ingest_note(n.as_bytes())
                .expect("world notes are valid");
        }
        book
    }

    pub fn opener(&self, label: &str) -> Opener {
        Opener::new(node(label), self.key(label), self.book())
    }

    pub fn sealer(&self, label: &str, group_label: &str, seed: u64) -> Sealer {
        Sealer::new(
            &self.book(),
            node(label),
            self.key(label),
            group(group_label),
            &mut rng(seed),
        )
        .expect("member")
    }

    /// Feeds a signed note to an opener through the chunk layer.
    pub fn feed(opener: &mut Opener, note: &SignedNote) {
        for chunk in note.chunks() {
            opener.ingest(&chunk).expect("valid note");
        }
    }
}
