//! The whole flow with the research setup: four nodes 1111-1114, groups
//! hsu0001 (1111, 1112) and hsu0002 (1113, 1114).
//!
//! bridge signs notes -> each agent ingests them -> 1111 seals to hsu0001 ->
//! 1112 opens it, 1113 gets `NotMember`.
//!
//! Run: `cargo run -p anchormq-core --example full_flow`

use anchormq_core::{
    ChainPosition, GroupId, GroupNote, KeyBook, Member, NodeId, NodeNote, NodeSecretKey,
    NodeStatus, OpenError, Opened, Opener, Registry, Sealer, Topics,
};
use rand_core::OsRng;

pub(crate) fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = Registry {
        chain_id: 31337,
        address: [0x5f; 20],
    };
    let topics = Topics::new(&registry);
    let bridge = NodeSecretKey::generate(&mut OsRng);
    let position = |block: u64| ChainPosition {
        chain_id: registry.chain_id,
        registry: registry.address,
        block_number: block,
        block_hash: [block as u8; 32],
        tx_hash: [0xaa; 32],
        log_index: 0,
    };

    // Bridge side: one signed note per chain fact, published as retained chunks.
    let mut retained: Vec<(String, Vec<u8>)> = Vec::new();
    let mut keys = Vec::new();
    for (i, label) in ["1111", "1112", "1113", "1114"].into_iter().enumerate() {
        let node = NodeId::from_label(label)?;
        let key = NodeSecretKey::generate(&mut OsRng);
        let note = NodeNote {
            generation: 0,
            position: position(10 + i as u64),
            node,
            key_version: 1,
            status: NodeStatus::Active,
            public_key: key.public_key(),
        };
        for (c, chunk) in note.sign(&bridge).chunks().into_iter().enumerate() {
            retained.push((topics.node_note(&node, c as u16), chunk));
        }
        keys.push((node, key));
    }
    for (block, (label, members)) in [("hsu0001", ["1111", "1112"]), ("hsu0002", ["1113", "1114"])]
        .into_iter()
        .enumerate()
    {
        let group = GroupId::from_label(label)?;
        let members = members
            .iter()
            .map(|m| Ok(Member::new(NodeId::from_label(m)?, 1)))
            .collect::<Result<Vec<_>, anchormq_core::IdError>>()?;
        let note = GroupNote::new(
            position(20 + block as u64),
            group,
            3,
            format!("{label}/#"),
            None,
            members,
        )?;
        for (c, chunk) in note.sign(&bridge).chunks().into_iter().enumerate() {
            retained.push((topics.group_note(&group, c as u16), chunk));
        }
    }

    // Agent side: every node subscribes to the note topics and feeds an Opener.
    let mut openers: Vec<Opener> = keys
        .iter()
        .map(|(node, key)| {
            Opener::new(
                *node,
                key.clone(),
                KeyBook::new(registry, bridge.public_key()),
            )
        })
        .collect();
    for opener in &mut openers {
        for (_topic, payload) in &retained {
            opener.ingest(payload)?;
        }
    }

    // 1111 starts sending to hsu0001: new sender key, announced to the members.
    let hsu0001 = GroupId::from_label("hsu0001")?;
    let (n1111, k1111) = keys[0].clone();
    let mut sealer = Sealer::new(openers[0].book(), n1111, k1111, hsu0001, &mut OsRng)?;
    let announcement = sealer.sender_key_note(openers[0].book(), &mut OsRng)?;
    println!(
        "sender-key note: {} recipients, {} chunk(s)",
        announcement.recipients,
        announcement.note.chunks().len()
    );
    for opener in &mut openers {
        for chunk in announcement.note.chunks() {
            opener.ingest(&chunk)?;
        }
    }

    let topic = "hsu0001/sensor/temperature";
    let envelope = sealer.seal(topic, b"21.5 C")?;

    match openers[1].open(topic, &envelope)? {
        Opened::Message(m) => println!(
            "1112 read {:?} from {} (seq {})",
            String::from_utf8_lossy(&m.plaintext),
            m.stream.sender,
            m.seq
        ),
        other => return Err(format!("a single signed message opens at once: {other:?}").into()),
    }
    // QoS 1 redelivery is not an error
    assert!(matches!(
        openers[1].open(topic, &envelope)?,
        Opened::Duplicate { .. }
    ));

    match openers[2].open(topic, &envelope) {
        Err(e @ OpenError::NotMember { .. }) => println!("1113: {e}"),
        other => return Err(format!("1113 should not read hsu0001: {other:?}").into()),
    }
    Ok(())
}
