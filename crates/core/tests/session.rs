//! End-to-end behaviour of the pure state machines: who can read, who can
//! forge, what moves are caught.

mod common;

use anchormq_core::error::SenderIssue;
use anchormq_core::{
    Envelope, IngestError, Ingested, MembershipError, NodeNote, NodeStatus, OpenError, Opened,
    Opener, SealError, SenderKeyError, StreamTag,
};
use common::{EPOCH, World, group, node, position, rng};

fn opened_plaintext(r: Result<Opened, OpenError>) -> Vec<u8> {
    match r {
        Ok(Opened::Message(m)) => m.plaintext,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// 1111 sends to hsu0001; openers of all four nodes have the notes and the sender key.
fn setup() -> (World, anchormq_core::Sealer, Vec<Opener>) {
    let w = World::new();
    let sealer = w.sealer("1111", "hsu0001", 1);
    let note = sealer
        .sender_key_note(&w.book(), &mut rng(2))
        .expect("sender-key note")
        .note;
    let openers = ["1111", "1112", "1113", "1114"]
        .iter()
        .map(|n| {
            let mut o = w.opener(n);
            World::feed(&mut o, &note);
            o
        })
        .collect();
    (w, sealer, openers)
}

#[test]
fn member_reads_non_member_gets_a_clear_error() {
    let (_w, mut sealer, mut openers) = setup();
    let env = sealer.seal("hsu0001/sensor/temp", b"21.5").expect("seal");
    assert_eq!(
        opened_plaintext(openers[1].open("hsu0001/sensor/temp", &env)),
        b"21.5"
    );
    // the sender reads its own message (MQTT echoes it back)
    assert_eq!(
        opened_plaintext(openers[0].open("hsu0001/sensor/temp", &env)),
        b"21.5"
    );
    let err = openers[2]
        .open("hsu0001/sensor/temp", &env)
        .expect_err("1113 is not a member");
    assert_eq!(
        err,
        OpenError::NotMember {
            node: node("1113"),
            group: group("hsu0001"),
            epoch: EPOCH
        }
    );
    assert_eq!(
        err.to_string(),
        "node 1113 is not a member of hsu0001 (epoch 3)"
    );
}

#[test]
fn redelivery_is_a_duplicate_and_old_sequences_are_replays() {
    let (_w, mut sealer, mut openers) = setup();
    let topic = "hsu0001/a";
    let first = sealer.seal(topic, b"0").expect("seal");
    assert_eq!(opened_plaintext(openers[1].open(topic, &first)), b"0");
    assert!(matches!(
        openers[1].open(topic, &first),
        Ok(Opened::Duplicate { seq: 0, .. })
    ));
    // out of order inside the window is fine
    let mut later = Vec::new();
    for i in 1..=200u32 {
        later.push(sealer.seal(topic, &i.to_be_bytes()).expect("seal"));
    }
    assert_eq!(
        opened_plaintext(openers[1].open(topic, &later[199])),
        200u32.to_be_bytes()
    );
    assert_eq!(
        opened_plaintext(openers[1].open(topic, &later[150])),
        151u32.to_be_bytes()
    );
    assert!(matches!(
        openers[1].open(topic, &later[150]),
        Ok(Opened::Duplicate { seq: 151, .. })
    ));
    let err = openers[1]
        .open(topic, &later[9])
        .expect_err("below the window");
    assert!(matches!(err, OpenError::Replay { seq: 10, .. }), "{err:?}");
}

#[test]
fn moving_a_message_to_another_topic_or_group_is_caught() {
    let (w, mut sealer, mut openers) = setup();
    let env = sealer.seal("hsu0001/a", b"x").expect("seal");
    // same group filter, other topic: the signature binds the topic
    assert!(matches!(
        openers[1].open("hsu0001/b", &env),
        Err(OpenError::BadSignature { .. })
    ));
    // outside the group's filter entirely
    assert!(matches!(
        openers[1].open("hsu0002/a", &env),
        Err(OpenError::TopicOutsideGroup { .. })
    ));
    // splice into hsu0002 by giving it the tag of a stream there: the signature is not that
    // stream's
    let mut other = w.sealer("1113", "hsu0002", 40);
    let note = other
        .sender_key_note(&w.book(), &mut rng(41))
        .expect("note")
        .note;
    World::feed(&mut openers[3], &note);
    let genuine = other.seal("hsu0002/a", b"y").expect("seal");
    assert_eq!(
        opened_plaintext(openers[3].open("hsu0002/a", &genuine)),
        b"y"
    );
    let err = openers[3]
        .open("hsu0002/a", &retag(&env, other.tag()))
        .expect_err("spliced");
    assert!(matches!(err, OpenError::BadSignature { .. }), "{err:?}");
    // the original still opens: nothing above consumed its sequence number
    assert_eq!(opened_plaintext(openers[1].open("hsu0001/a", &env)), b"x");
}

#[test]
fn a_member_cannot_send_as_another_member() {
    let (w, sealer, mut openers) = setup();
    // 1112 holds the group's sender keys but only its own signing key
    let mut forger = w.sealer("1112", "hsu0001", 7);
    let note = forger
        .sender_key_note(&w.book(), &mut rng(8))
        .expect("note")
        .note;
    World::feed(&mut openers[0], &note);
    let env = forger.seal("hsu0001/a", b"from 1112").expect("seal");
    let err = openers[0]
        .open("hsu0001/a", &retag(&env, sealer.tag()))
        .expect_err("forged sender");
    assert!(matches!(err, OpenError::BadSignature { .. }), "{err:?}");
    assert_eq!(
        opened_plaintext(openers[0].open("hsu0001/a", &env)),
        b"from 1112"
    );
}

#[test]
fn epoch_changes_remove_members_and_stale_messages() {
    let (w, mut sealer, mut openers) = setup();
    let old = sealer.seal("hsu0001/a", b"old").expect("seal");
    // 1112 removed: epoch 4 with 1111 only
    let epoch4 = w
        .group_note("hsu0001", &["1111"], EPOCH + 1, 30)
        .sign(&w.bridge);
    for o in openers.iter_mut() {
        World::feed(o, &epoch4);
    }
    let err = openers[1].open("hsu0001/a", &old).expect_err("stale");
    assert_eq!(
        err,
        OpenError::StaleEpoch {
            group: group("hsu0001"),
            epoch: EPOCH,
            current: EPOCH + 1
        }
    );
    assert!(matches!(
        sealer
            .seal("hsu0001/a", b"x")
            .map(|_| ())
            .and(sealer.check_current(openers[0].book())),
        Err(SealError::EpochChanged {
            sealer: 3,
            current: 4,
            ..
        })
    ));
    let mut sealer4 = anchormq_core::Sealer::new(
        openers[0].book(),
        node("1111"),
        w.key("1111"),
        group("hsu0001"),
        &mut rng(12),
    )
    .expect("still a member");
    let note4 = sealer4
        .sender_key_note(openers[0].book(), &mut rng(13))
        .expect("note");
    assert_eq!(note4.recipients, 1);
    for o in openers.iter_mut() {
        for c in note4.note.chunks() {
            let got = o.ingest(&c).expect("valid note");
            if o.node() == node("1112") {
                assert!(matches!(got, Ingested::SenderKeyNotForUs { .. }), "{got:?}");
            }
        }
    }
    let new = sealer4.seal("hsu0001/a", b"new").expect("seal");
    assert_eq!(opened_plaintext(openers[0].open("hsu0001/a", &new)), b"new");
    let err = openers[1]
        .open("hsu0001/a", &new)
        .expect_err("removed member");
    assert_eq!(
        err.to_string(),
        "node 1112 is not a member of hsu0001 (epoch 4)"
    );
    // a reader that has not seen epoch 4 yet parks the note and waits for it
    let mut behind = w.opener("1111");
    let parked = behind
        .ingest_signed_note(note4.note.as_bytes())
        .expect("parked");
    assert!(
        matches!(
            parked,
            Ingested::SenderKeyParked {
                reason: MembershipError::EpochAhead {
                    epoch: 4,
                    current: 3,
                    ..
                },
                ..
            }
        ),
        "{parked:?}"
    );
    assert!(matches!(
        behind.open("hsu0001/a", &new),
        Err(OpenError::UnknownStream { .. })
    ));
    assert_eq!(
        openers[1].membership(&group("hsu0001")),
        Err(MembershipError::NotMember {
            node: node("1112"),
            group: group("hsu0001"),
            epoch: 4
        })
    );
}

#[test]
fn missing_sender_key_and_restart() {
    let w = World::new();
    let mut reader = w.opener("1112");
    let mut sealer = w.sealer("1111", "hsu0001", 15);
    let env = sealer.seal("hsu0001/a", b"a").expect("seal");
    assert!(matches!(
        reader.open("hsu0001/a", &env),
        Err(OpenError::UnknownStream { .. })
    ));
    World::feed(
        &mut reader,
        &sealer
            .sender_key_note(&w.book(), &mut rng(17))
            .expect("note")
            .note,
    );
    assert_eq!(opened_plaintext(reader.open("hsu0001/a", &env)), b"a");
    // restart: a new sealer in the same epoch starts at seq 0 with a new key; no false duplicate
    let mut restarted = w.sealer("1111", "hsu0001", 18);
    assert_ne!(restarted.key_id(), sealer.key_id());
    World::feed(
        &mut reader,
        &restarted
            .sender_key_note(&w.book(), &mut rng(19))
            .expect("note")
            .note,
    );
    let env2 = restarted.seal("hsu0001/a", b"b").expect("seal");
    assert_eq!(Envelope::decode(&env2).expect("decode").seq, 0);
    assert_eq!(opened_plaintext(reader.open("hsu0001/a", &env2)), b"b");
}

#[test]
fn revoked_or_unknown_senders_are_refused() {
    let (w, mut sealer, mut openers) = setup();
    let env = sealer.seal("hsu0001/a", b"a").expect("seal");
    let revoked = NodeNote {
        generation: 0,
        position: position(&w.registry, 40, 0),
        node: node("1111"),
        key_version: 1,
        status: NodeStatus::Revoked,
        public_key: w.key("1111").public_key(),
    };
    World::feed(&mut openers[1], &revoked.sign(&w.bridge));
    let err = openers[1].open("hsu0001/a", &env).expect_err("revoked");
    assert!(
        matches!(
            err,
            OpenError::UnknownSender {
                reason: SenderIssue::Revoked,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn sealer_refuses_what_it_must_not_do() {
    let w = World::new();
    let book = w.book();
    let not_member = anchormq_core::Sealer::new(
        &book,
        node("1113"),
        w.key("1113"),
        group("hsu0001"),
        &mut rng(22),
    );
    assert!(matches!(
        not_member,
        Err(SealError::Membership(MembershipError::NotMember { .. }))
    ));
    let wrong_key = anchormq_core::Sealer::new(
        &book,
        node("1111"),
        w.key("1112"),
        group("hsu0001"),
        &mut rng(23),
    );
    assert!(matches!(wrong_key, Err(SealError::WrongNodeKey { .. })));
    let mut sealer = w.sealer("1111", "hsu0001", 24);
    assert!(matches!(
        sealer.seal("hsu0002/a", b""),
        Err(SealError::TopicOutsideGroup { .. })
    ));
    assert!(matches!(
        sealer.seal("hsu0001/+", b""),
        Err(SealError::Topic(_))
    ));
    assert_eq!(sealer.next_seq(), 0);
    sealer
        .seal("hsu0001/a", b"")
        .expect("empty payload is fine");
    assert_eq!(sealer.next_seq(), 1);
}

#[test]
fn sender_key_notes_are_checked_and_parked_until_chain_notes_arrive() {
    let w = World::new();
    let sealer = w.sealer("1111", "hsu0001", 27);
    let note = sealer
        .sender_key_note(&w.book(), &mut rng(28))
        .expect("note")
        .note;
    // a fresh reader has no chain notes yet: the sender-key note is parked, then used
    let mut reader = Opener::new(
        node("1112"),
        w.key("1112"),
        anchormq_core::KeyBook::new(w.registry, w.bridge.public_key()),
    );
    let first = reader.ingest(&note.chunks()[0]).expect("parked");
    assert!(
        matches!(first, Ingested::SenderKeyParked { .. }),
        "{first:?}"
    );
    for n in w.node_notes.iter().chain(&w.group_notes) {
        World::feed(&mut reader, n);
    }
    let mut sealer = sealer;
    let env = sealer.seal("hsu0001/a", b"late").expect("seal");
    assert_eq!(opened_plaintext(reader.open("hsu0001/a", &env)), b"late");

    // our own node note arriving last also works: the note waits for it
    let mut late_self = Opener::new(
        node("1112"),
        w.key("1112"),
        anchormq_core::KeyBook::new(w.registry, w.bridge.public_key()),
    );
    for n in w.group_notes.iter().chain(&w.node_notes[..1]) {
        World::feed(&mut late_self, n);
    }
    let parked = late_self
        .ingest_signed_note(note.as_bytes())
        .expect("parked");
    assert!(
        matches!(parked, Ingested::SenderKeyParked { reason: MembershipError::UnknownNode { node: n }, .. } if n == node("1112")),
        "{parked:?}"
    );
    World::feed(&mut late_self, &w.node_notes[1]);
    let env = sealer.seal("hsu0001/a", b"later").expect("seal");
    assert_eq!(
        opened_plaintext(late_self.open("hsu0001/a", &env)),
        b"later"
    );

    // a tampered sender-key note is refused with the sender named
    let mut bytes = note.as_bytes().to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    let err = reader.ingest_signed_note(&bytes).expect_err("tampered");
    assert!(
        matches!(
            err,
            IngestError::SenderKey(SenderKeyError::BadSignature { .. })
        ),
        "{err:?}"
    );

    // 1113 cannot announce keys for hsu0001
    let outsider = anchormq_core::SenderKeyNote::wrap(
        anchormq_core::StreamId {
            group: group("hsu0001"),
            sender: node("1113"),
            epoch: EPOCH,
        },
        1,
        &anchormq_core::SenderKey::generate(&mut rng(30)),
        anchormq_core::ed25519::SigningKey::generate(&mut rng(32)).verifying_key(),
        &[],
        &mut rng(31),
    )
    .expect("wrap")
    .sign(&w.key("1113"));
    let err = reader
        .ingest_signed_note(outsider.as_bytes())
        .expect_err("not a member");
    assert!(
        matches!(
            err,
            IngestError::SenderKey(SenderKeyError::Sender {
                source: MembershipError::NotMember { .. },
                ..
            })
        ),
        "{err:?}"
    );
}

/// A reorg takes hsu0001 from epoch 4 (1113 added) back to epoch 3, and another branch reaches
/// epoch 4 with 1114 instead. The sender must make a new key at each step, even when the epoch
/// number comes back; the reader forgets the orphaned branch's key, so nothing sealed under it
/// opens at the new epoch 4.
#[test]
fn a_reorg_that_takes_an_epoch_back_leaves_nothing_of_the_orphaned_branch() {
    let w = World::new();
    let hsu = group("hsu0001");
    let mut book = w.book();
    let mut reader = w.opener("1112");
    let mut take = |note: anchormq_core::GroupNote, reader: &mut Opener| {
        let signed = note.sign(&w.bridge);
        book.ingest_note(signed.as_bytes()).expect("newer note");
        World::feed(reader, &signed);
        book.clone()
    };
    let orphaned = w.group_note("hsu0001", &["1111", "1112", "1113"], 4, 60);
    let at_orphan = take(orphaned, &mut reader);
    let mut sealer =
        anchormq_core::Sealer::new(&at_orphan, node("1111"), w.key("1111"), hsu, &mut rng(40))
            .expect("member at epoch 4");
    let note = sealer
        .sender_key_note(&at_orphan, &mut rng(41))
        .expect("note")
        .note;
    World::feed(&mut reader, &note);
    let before = sealer.seal("hsu0001/a", b"before").expect("seal");
    assert_eq!(
        opened_plaintext(reader.open("hsu0001/a", &before)),
        b"before"
    );

    // the reorg: the canonical note is epoch 3 at an earlier block, signed later
    let canonical = w
        .group_note("hsu0001", &["1111", "1112"], 3, 50)
        .with_generation(1);
    let at_canonical = take(canonical, &mut reader);
    assert_eq!(
        sealer.check_current(&at_canonical),
        Err(SealError::EpochChanged {
            group: hsu,
            sealer: 4,
            current: 3
        })
    );

    // another branch: epoch 4 again, with other members
    let other = w
        .group_note("hsu0001", &["1111", "1112", "1114"], 4, 61)
        .with_generation(1);
    let at_other = take(other, &mut reader);
    assert_eq!(
        sealer.check_current(&at_other),
        Err(SealError::GroupChanged { group: hsu })
    );
    let late = sealer.seal("hsu0001/a", b"late").expect("seal");
    assert!(
        matches!(
            reader.open("hsu0001/a", &late),
            Err(OpenError::UnknownStream { .. })
        ),
        "the orphaned branch's key was forgotten"
    );
}

/// The envelope with another stream's tag.
fn retag(env: &[u8], tag: StreamTag) -> Vec<u8> {
    let mut out = env.to_vec();
    out[1..9].copy_from_slice(&tag.0);
    out
}

fn batch_of(sealer: &mut anchormq_core::Sealer, topic: &str, n: usize) -> Vec<Vec<u8>> {
    let payloads: Vec<Vec<u8>> = (0..n).map(|i| format!("m{i}").into_bytes()).collect();
    sealer.seal_batch(topic, &payloads).expect("batch")
}

#[test]
fn a_burst_opens_when_its_end_arrives_and_only_whole() {
    let (_w, mut sealer, mut openers) = setup();
    let topic = "hsu0001/sensor/temp";
    let batch = batch_of(&mut sealer, topic, 5);
    let sizes: Vec<usize> = batch.iter().map(Vec::len).collect();
    // 33 bytes over "m0".."m3", 98 over "m4"
    assert_eq!(sizes, [35, 35, 35, 35, 100]);
    let reader = &mut openers[1];
    for (i, env) in batch[..4].iter().enumerate() {
        assert!(
            matches!(reader.open(topic, env), Ok(Opened::Pending { seq, .. }) if seq == i as u64)
        );
    }
    // a QoS 1 redelivery of a held message is a duplicate, not a second entry
    assert!(matches!(
        reader.open(topic, &batch[1]),
        Ok(Opened::Duplicate { seq: 1, .. })
    ));
    match reader.open(topic, &batch[4]) {
        Ok(Opened::Batch(messages)) => {
            let got: Vec<(u64, Vec<u8>)> =
                messages.into_iter().map(|m| (m.seq, m.plaintext)).collect();
            let want: Vec<(u64, Vec<u8>)> =
                (0..5).map(|i| (i, format!("m{i}").into_bytes())).collect();
            assert_eq!(got, want);
        }
        other => panic!("expected the batch, got {other:?}"),
    }
    // delivered once: every redelivery is a duplicate now
    for env in &batch {
        assert!(matches!(
            reader.open(topic, env),
            Ok(Opened::Duplicate { .. })
        ));
    }

    // a lost message: the end cannot be authenticated, nothing of the batch is delivered
    let lost = batch_of(&mut sealer, topic, 4);
    let reader = &mut openers[0];
    for env in [&lost[0], &lost[2]] {
        assert!(matches!(
            reader.open(topic, env),
            Ok(Opened::Pending { .. })
        ));
    }
    assert_eq!(
        reader.open(topic, &lost[3]),
        Err(OpenError::IncompleteBatch {
            sender: node("1111"),
            group: group("hsu0001"),
            seq: 8,
            count: 3,
            missing: 1
        })
    );

    // the same batch moved to another topic of the group: its members are not bound there
    let moved = batch_of(&mut sealer, topic, 3);
    let reader = &mut openers[1];
    for env in &moved[..2] {
        assert!(
            reader.open("hsu0001/other", env).is_err(),
            "AEAD binds the topic"
        );
    }
    assert!(matches!(
        reader.open("hsu0001/other", &moved[2]),
        Err(OpenError::IncompleteBatch { missing: 2, .. })
    ));
    // on the right topic it is whole
    for env in &moved[..2] {
        assert!(matches!(
            reader.open(topic, env),
            Ok(Opened::Pending { .. })
        ));
    }
    assert!(matches!(
        reader.open(topic, &moved[2]),
        Ok(Opened::Batch(m)) if m.len() == 3
    ));

    // a rewritten count makes the end cover other digests: refused
    let counted = batch_of(&mut sealer, topic, 3);
    for env in &counted[..2] {
        assert!(matches!(
            reader.open(topic, env),
            Ok(Opened::Pending { .. })
        ));
    }
    let mut end = counted[2].clone();
    let at = end.len() - 65;
    end[at] = 1;
    assert!(matches!(
        reader.open(topic, &end),
        Err(OpenError::BadSignature { .. })
    ));
    assert!(matches!(
        reader.open(topic, &counted[2]),
        Ok(Opened::Batch(m)) if m.len() == 3
    ));
}
