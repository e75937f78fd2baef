//! Property tests: round trips, single-bit flips anywhere, splices.

mod common;

use std::cell::RefCell;
use std::collections::HashSet;

use anchormq_core::{
    GroupId, GroupNote, Ingested, KeyBook, Member, NodeId, Opened, Opener, ReplayVerdict,
    ReplayWindow,
};
use common::{World, group, position, rng};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

struct Fixture {
    world: World,
    sealer: RefCell<anchormq_core::Sealer>,
    reader: RefCell<Opener>,
    sender_key_note: Vec<u8>,
}

fn fixture() -> Fixture {
    let world = World::new();
    let sealer = world.sealer("1111", "hsu0001", 300);
    let note = sealer
        .sender_key_note(&world.book(), &mut rng(301))
        .expect("note")
        .note;
    let mut reader = world.opener("1112");
    reader
        .ingest_signed_note(note.as_bytes())
        .expect("sender key");
    Fixture {
        world,
        sealer: RefCell::new(sealer),
        reader: RefCell::new(reader),
        sender_key_note: note.into_bytes(),
    }
}

fn topic_strategy() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,3}".prop_map(|s| format!("hsu0001/{s}"))
}

#[test]
fn seal_open_round_trip() {
    let f = fixture();
    runner(64)
        .run(
            &(
                topic_strategy(),
                proptest::collection::vec(any::<u8>(), 0..2048),
            ),
            |(topic, pt)| {
                let env = f.sealer.borrow_mut().seal(&topic, &pt).expect("seal");
                match f.reader.borrow_mut().open(&topic, &env) {
                    Ok(Opened::Message(m)) => prop_assert_eq!(m.plaintext, pt),
                    other => prop_assert!(false, "{:?}", other),
                }
                Ok(())
            },
        )
        .expect("property");
}

/// Exhaustive, not sampled: every bit of a sealed envelope.
#[test]
fn every_single_bit_flip_in_an_envelope_is_rejected() {
    let f = fixture();
    let env = f
        .sealer
        .borrow_mut()
        .seal("hsu0001/flip", b"a payload worth protecting")
        .expect("seal");
    let mut reader = f.reader.borrow_mut();
    for bit in 0..env.len() * 8 {
        let mut flipped = env.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let got = reader.open("hsu0001/flip", &flipped);
        assert!(got.is_err(), "bit {bit} accepted: {got:?}");
    }
    // and none of those attempts consumed the real message's sequence number
    assert!(matches!(
        reader.open("hsu0001/flip", &env),
        Ok(Opened::Message(_))
    ));
}

/// Exhaustive: every bit of every world note, as a note and as a chunk, and of a sender-key note.
#[test]
fn every_single_bit_flip_in_a_note_or_chunk_is_rejected() {
    let f = fixture();
    let w = &f.world;
    let mut book = KeyBook::new(w.registry, w.bridge.public_key());
    let mut fresh = Opener::new(
        common::node("1112"),
        w.key("1112"),
        KeyBook::new(w.registry, w.bridge.public_key()),
    );
    for note in w.node_notes.iter().chain(&w.group_notes) {
        let bytes = note.as_bytes();
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.to_vec();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                book.ingest_note(&flipped).is_err(),
                "note bit {bit} accepted"
            );
        }
        let chunk = note.chunks().remove(0);
        for bit in 0..chunk.len() * 8 {
            let mut flipped = chunk.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(fresh.ingest(&flipped).is_err(), "chunk bit {bit} accepted");
        }
    }
    let skn = &f.sender_key_note;
    let mut reader = w.opener("1112");
    for bit in 0..skn.len() * 8 {
        let mut flipped = skn.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let got = reader.ingest_signed_note(&flipped);
        assert!(
            !matches!(got, Ok(Ingested::SenderKey { .. })),
            "sender-key note bit {bit} accepted"
        );
    }
}

#[test]
fn splices_across_topics_and_groups_are_rejected() {
    let f = fixture();
    runner(64)
        .run(
            &(topic_strategy(), topic_strategy(), any::<[u8; 8]>()),
            |(topic, other, tag)| {
                prop_assume!(topic != other);
                let env = f.sealer.borrow_mut().seal(&topic, b"x").expect("seal");
                prop_assert!(f.reader.borrow_mut().open(&other, &env).is_err());
                // any other stream tag, on any topic of either group
                let mut retagged = env.clone();
                retagged[1..9].copy_from_slice(&tag);
                prop_assume!(retagged != env);
                let moved = other.replacen("hsu0001", "hsu0002", 1);
                let mut outsider = f.world.opener("1113");
                for t in [&topic, &other, &moved] {
                    prop_assert!(outsider.open(t, &env).is_err());
                    prop_assert!(outsider.open(t, &retagged).is_err());
                    prop_assert!(f.reader.borrow_mut().open(t, &retagged).is_err());
                }
                Ok(())
            },
        )
        .expect("property");
}

#[test]
fn group_notes_round_trip() {
    let w = World::new();
    let member = (any::<[u8; 32]>(), any::<u64>())
        .prop_map(|(id, v)| Member::new(NodeId::from_bytes(id), v));
    runner(64)
        .run(
            &(
                proptest::collection::vec(member, 0..64),
                any::<u64>(),
                any::<Option<[u8; 20]>>(),
                "[a-z]{1,6}(/[a-z+]{1,3}){0,2}(/#)?",
            ),
            |(members, epoch, admin, filter)| {
                let Ok(note) = GroupNote::new(
                    position(&w.registry, 5, 5),
                    group("g"),
                    epoch,
                    filter.as_str(),
                    admin,
                    members,
                ) else {
                    return Ok(()); // duplicate members or a bad filter: refused at construction
                };
                let signed = note.sign(&w.bridge);
                let (back, _) = GroupNote::decode_signed(signed.as_bytes()).expect("decode");
                prop_assert_eq!(&back, &note);
                let mut book = KeyBook::new(w.registry, w.bridge.public_key());
                prop_assert!(book.ingest_note(signed.as_bytes()).is_ok());
                Ok(())
            },
        )
        .expect("property");
}

#[test]
fn ids_display_and_parse_round_trip() {
    runner(256)
        .run(&any::<[u8; 32]>(), |bytes| {
            let id = GroupId::from_bytes(bytes);
            prop_assert_eq!(id.to_string().parse::<GroupId>(), Ok(id));
            Ok(())
        })
        .expect("property");
    runner(256)
        .run(&"[ -~]{1,32}", |label| {
            let id = NodeId::from_label(&label).expect("printable");
            prop_assert_eq!(id.to_string().parse::<NodeId>(), Ok(id));
            Ok(())
        })
        .expect("property");
}

#[test]
fn replay_window_matches_a_reference_model() {
    runner(128)
        .run(&proptest::collection::vec(0u64..400, 1..300), |seqs| {
            let mut w = ReplayWindow::new();
            let mut seen = HashSet::new();
            let mut highest: Option<u64> = None;
            for s in seqs {
                let expected = match highest {
                    Some(h) if s + 128 <= h => ReplayVerdict::TooOld,
                    _ if seen.contains(&s) => ReplayVerdict::Duplicate,
                    _ => ReplayVerdict::Fresh,
                };
                prop_assert_eq!(w.check(s), expected, "seq {}", s);
                if expected == ReplayVerdict::Fresh {
                    w.record(s);
                    seen.insert(s);
                    highest = Some(highest.map_or(s, |h| h.max(s)));
                }
            }
            Ok(())
        })
        .expect("property");
}
