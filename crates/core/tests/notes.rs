//! KeyBook rules (signature, registry, rollback) and chunking at fleet scale.

mod common;

use anchormq_core::chunk::{Assembly, MAX_CHUNK_LEN};
use anchormq_core::sender_key::{Recipient, StreamId};
use anchormq_core::{
    ChunkAssembler, ChunkError, DecodeError, GroupId, GroupNote, Ingested, KeyBook, Member,
    MembershipNote, NodeId, NodeNote, NodeSecretKey, NodeStatus, NoteError, NoteUpdate, SenderKey,
    SenderKeyNote,
};
use common::{EPOCH, World, group, node, position, rng};

fn node_note(w: &World, label: &str, block: u64, log: u64, version: u64) -> NodeNote {
    NodeNote {
        generation: 0,
        position: position(&w.registry, block, log),
        node: node(label),
        key_version: version,
        status: NodeStatus::Active,
        public_key: w.key(label).public_key(),
    }
}

#[test]
fn keybook_accepts_only_bridge_signed_notes_for_its_registry() {
    let w = World::new();
    let mut book = KeyBook::new(w.registry, w.bridge.public_key());
    let good = node_note(&w, "1111", 50, 2, 1).sign(&w.bridge);
    assert_eq!(
        book.ingest_note(good.as_bytes()),
        Ok(NoteUpdate::Node {
            node: node("1111"),
            changed: true
        })
    );
    assert_eq!(
        book.ingest_note(good.as_bytes()),
        Ok(NoteUpdate::Node {
            node: node("1111"),
            changed: false
        })
    );

    // unsigned (zero signature) and signed by another key
    let mut unsigned = good.as_bytes().to_vec();
    let n = unsigned.len();
    unsigned[n - 64..].fill(0);
    assert_eq!(book.ingest_note(&unsigned), Err(NoteError::BadSignature));
    let by_node = node_note(&w, "1111", 60, 0, 2).sign(&w.key("1111"));
    assert_eq!(
        book.ingest_note(by_node.as_bytes()),
        Err(NoteError::BadSignature)
    );

    // another chain, another registry
    let mut other = node_note(&w, "1111", 60, 0, 2);
    other.position.chain_id = 1;
    assert!(matches!(
        book.ingest_note(other.sign(&w.bridge).as_bytes()),
        Err(NoteError::WrongRegistry { found_chain: 1, .. })
    ));
    let mut other = node_note(&w, "1111", 60, 0, 2);
    other.position.registry = [1; 20];
    assert!(matches!(
        book.ingest_note(other.sign(&w.bridge).as_bytes()),
        Err(NoteError::WrongRegistry { .. })
    ));

    // rollback: same block lower log index, and older block
    let older = node_note(&w, "1111", 50, 1, 0).sign(&w.bridge);
    assert_eq!(
        book.ingest_note(older.as_bytes()),
        Err(NoteError::Rollback {
            held_generation: 0,
            held_block: 50,
            held_log: 2,
            offered_generation: 0,
            offered_block: 50,
            offered_log: 1
        })
    );
    let much_older = node_note(&w, "1111", 3, 9, 0).sign(&w.bridge);
    assert!(matches!(
        book.ingest_note(much_older.as_bytes()),
        Err(NoteError::Rollback { .. })
    ));
    // equivocation: different note, same generation and position
    let mut twin = node_note(&w, "1111", 50, 2, 1);
    twin.status = NodeStatus::Revoked;
    assert_eq!(
        book.ingest_note(twin.sign(&w.bridge).as_bytes()),
        Err(NoteError::Conflict)
    );
    // the last good note is kept through all of that
    assert_eq!(
        book.node(&node("1111")).map(|n| (n.key_version, n.status)),
        Some((1, NodeStatus::Active))
    );
    // and a newer one replaces it
    let newer = node_note(&w, "1111", 51, 0, 2).sign(&w.bridge);
    assert!(book.ingest_note(newer.as_bytes()).is_ok());
    assert_eq!(book.node(&node("1111")).map(|n| n.key_version), Some(2));

    // wrong version byte and truncation name the problem
    let mut v1 = good.as_bytes().to_vec();
    v1[0] = 1;
    assert_eq!(
        book.ingest_note(&v1),
        Err(NoteError::Decode(DecodeError::UnsupportedVersion {
            version: 1
        }))
    );
    assert!(matches!(
        book.ingest_note(&good.as_bytes()[..40]),
        Err(NoteError::Decode(DecodeError::Malformed { .. }))
    ));
}

#[test]
fn groups_are_found_by_topic() {
    let w = World::new();
    let book = w.book();
    let found: Vec<GroupId> = book
        .groups_for_topic("hsu0002/x/y")
        .iter()
        .map(|g| g.group())
        .collect();
    assert_eq!(found, vec![group("hsu0002")]);
    assert!(book.groups_for_topic("other/x").is_empty());
    assert!(
        book.check_member(&group("hsu0001"), &node("1112"), EPOCH)
            .is_ok()
    );
}

fn many_members(n: usize) -> Vec<Member> {
    (0..n)
        .map(|i| {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(format!("n{i:07}").as_bytes());
            Member::new(NodeId::from_bytes(id), 1)
        })
        .collect()
}

#[test]
fn a_ten_thousand_member_group_note_travels_in_chunks() {
    let w = World::new();
    let members = many_members(10_000);
    let note = anchormq_core::GroupNote::new(
        position(&w.registry, 70, 0),
        group("fleet"),
        9,
        "fleet/#",
        Some([7; 20]),
        members,
    )
    .expect("valid")
    .sign(&w.bridge);
    assert!(note.as_bytes().len() > 128 * 1024);
    let mut chunks = note.chunks();
    assert!(chunks.len() >= 4);
    assert!(chunks.iter().all(|c| c.len() <= MAX_CHUNK_LEN));
    // any arrival order works; duplicates are harmless
    chunks.reverse();
    let dup = chunks[1].clone();
    chunks.insert(2, dup);
    let mut asm = ChunkAssembler::default();
    let mut complete = None;
    for c in &chunks {
        if let Assembly::Complete(n) = asm.push(c).expect("valid chunk") {
            complete = Some(n);
        }
    }
    let complete = complete.expect("reassembled");
    assert_eq!(complete.as_bytes(), note.as_bytes());
    let mut book = w.book();
    book.ingest_note(complete.as_bytes()).expect("valid note");
    let g = book.group(&group("fleet")).expect("held");
    assert_eq!(g.members().len(), 10_000);
    assert!(g.member(&many_members(10_000)[4321].node).is_some());
}

#[test]
fn chunk_forgeries_fail_reassembly() {
    let w = World::new();
    let note = anchormq_core::GroupNote::new(
        position(&w.registry, 70, 0),
        group("fleet"),
        9,
        "fleet/#",
        None,
        many_members(5000),
    )
    .expect("valid")
    .sign(&w.bridge);
    let chunks = note.chunks();
    assert!(chunks.len() >= 2);
    // a piece swapped for junk: the content hash catches it
    let mut bad = chunks[1].clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let mut asm = ChunkAssembler::default();
    asm.push(&chunks[0]).expect("first");
    for c in &chunks[2..] {
        asm.push(c).expect("rest");
    }
    assert_eq!(asm.push(&bad), Err(ChunkError::HashMismatch));
    // a chunk header that disagrees with its note: header check after reassembly
    let single = node_note(&w, "1111", 50, 0, 1)
        .sign(&w.bridge)
        .chunks()
        .remove(0);
    let mut lying = single.clone();
    lying[34] ^= 1; // order hint
    assert_eq!(
        ChunkAssembler::default().push(&lying),
        Err(ChunkError::HeaderMismatch)
    );
    let mut bad_count = single;
    bad_count[77] = 2; // count 2 for a one-piece note: not canonical
    assert!(matches!(
        ChunkAssembler::default().push(&bad_count),
        Err(ChunkError::Decode(DecodeError::Malformed {
            field: "chunk.count"
        }))
    ));
}

#[test]
fn a_sender_key_note_for_ten_thousand_members_chunks_and_unwraps() {
    let mut r = rng(90);
    let recipients: Vec<(NodeSecretKey, Recipient)> = many_members(10_000)
        .into_iter()
        .map(|m| {
            let key = NodeSecretKey::generate(&mut r);
            let recipient = Recipient {
                node: m.node,
                key_version: 1,
                public_key: key.public_key(),
            };
            (key, recipient)
        })
        .collect();
    let list: Vec<Recipient> = recipients.iter().map(|(_, rcp)| *rcp).collect();
    let stream = StreamId {
        group: group("fleet"),
        sender: recipients[0].1.node,
        epoch: 1,
    };
    let sender_key = SenderKey::generate(&mut r);
    let note = SenderKeyNote::wrap(
        stream,
        1,
        &sender_key,
        anchormq_core::ed25519::SigningKey::generate(&mut r).verifying_key(),
        &list,
        &mut r,
    )
    .expect("wrap");
    let signed = note.sign(&recipients[0].0);
    let chunks = signed.chunks();
    assert!(chunks.len() >= 14, "{} chunks", chunks.len());
    assert!(chunks.iter().all(|c| c.len() <= MAX_CHUNK_LEN));
    let mut asm = ChunkAssembler::default();
    let mut whole = None;
    for c in &chunks {
        if let Assembly::Complete(n) = asm.push(c).expect("chunk") {
            whole = Some(n);
        }
    }
    let (decoded, _) =
        SenderKeyNote::decode_signed(whole.expect("complete").as_bytes()).expect("decode");
    let (key, me) = &recipients[7777];
    let unwrapped = decoded
        .unwrap_for(&me.node, key, 1)
        .expect("member unwraps");
    assert_eq!(unwrapped.key_id(&stream), sender_key.key_id(&stream));
    // someone else's key does not open this member's entry
    assert!(decoded.unwrap_for(&me.node, &recipients[1].0, 1).is_err());
}

/// After a reorg the canonical event can sit at an earlier block than the held note's: the bridge
/// signs it under a higher generation, which outranks any position.
#[test]
fn a_higher_generation_replaces_a_note_from_a_later_block() {
    let w = World::new();
    let mut book = w.book();
    let orphaned = w.group_note("hsu0001", &["1111", "1112", "1113"], 3, 60);
    book.ingest_note(orphaned.sign(&w.bridge).as_bytes())
        .expect("held");
    // the canonical note: epoch 2 at block 55, under the bridge's next generation
    let canonical = w
        .group_note("hsu0001", &["1111", "1112"], 2, 55)
        .with_generation(orphaned.generation() + 1);
    assert_eq!(
        book.ingest_note(canonical.sign(&w.bridge).as_bytes()),
        Ok(NoteUpdate::Group {
            group: group("hsu0001"),
            changed: true
        })
    );
    let held = book.group(&group("hsu0001")).expect("held");
    assert_eq!((held.epoch(), held.members().len()), (2, 2));
    // the orphaned note cannot come back
    assert!(matches!(
        book.ingest_note(orphaned.sign(&w.bridge).as_bytes()),
        Err(NoteError::Rollback { .. })
    ));
}

/// A bridge that follows a reorg again (it restarted before storing its checkpoint) may sign an
/// unchanged state under a higher generation: stored, but reported unchanged, so nobody re-keys.
#[test]
fn the_same_state_under_a_higher_generation_is_unchanged() {
    let w = World::new();
    let mut book = w.book();
    let note = w.group_note("hsu0001", &["1111", "1112"], 2, 55);
    book.ingest_note(note.sign(&w.bridge).as_bytes())
        .expect("held");
    let state = book.group_state(&group("hsu0001"));
    let again = note.clone().with_generation(note.generation() + 1);
    assert_eq!(
        book.ingest_note(again.sign(&w.bridge).as_bytes()),
        Ok(NoteUpdate::Group {
            group: group("hsu0001"),
            changed: false
        })
    );
    assert_eq!(book.group_state(&group("hsu0001")), state);
    assert_eq!(
        book.group(&group("hsu0001")).map(GroupNote::generation),
        Some(note.generation() + 1)
    );
}

#[test]
fn an_opener_takes_membership_notes_and_the_book_refuses_sender_key_notes() {
    let w = World::new();
    let mut opener = w.opener("1113");
    let note = MembershipNote::new(
        position(&w.registry, 21, 0),
        node("1113"),
        vec![group("hsu0002")],
    )
    .sign(&w.bridge);
    let mut last = None;
    for chunk in note.chunks() {
        last = Some(opener.ingest(&chunk).expect("valid chunk"));
    }
    assert_eq!(
        last,
        Some(Ingested::Note(NoteUpdate::Membership {
            node: node("1113"),
            changed: true
        }))
    );
    assert_eq!(
        opener
            .book()
            .membership(&node("1113"))
            .map(MembershipNote::groups),
        Some(&[group("hsu0002")][..])
    );
    // the hint grants nothing: membership is still the group note's
    assert!(opener.membership(&group("hsu0002")).is_ok());
    assert!(opener.membership(&group("hsu0001")).is_err());

    let sender_key = w
        .sealer("1111", "hsu0001", 40)
        .sender_key_note(&w.book(), &mut rng(41))
        .expect("note")
        .note;
    assert_eq!(
        w.book().ingest_note(sender_key.as_bytes()),
        Err(NoteError::NotAChainNote { kind: 3 })
    );
}
