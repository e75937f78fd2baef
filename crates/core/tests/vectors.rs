//! Known-answer vectors. The generator below rebuilds every vector from a
//! seeded RNG and compares it byte for byte with the checked-in JSON in
//! `tests/vectors/`; a second pass replays the JSON through the public API as
//! an independent implementation would, checking each named outcome.
//!
//! Rewrite the files after an intended format change with
//! `ANCHORMQ_UPDATE_VECTORS=1 cargo test -p anchormq-core --test vectors`.

mod common;

use std::path::PathBuf;

use anchormq_core::{
    GroupId, IngestError, KeyBook, Member, MembershipNote, NodeId, NodeNote, NodePublicKey,
    NodeSecretKey, NodeStatus, Opened, Opener, Registry, Roles, SignedNote, StreamId,
};
use common::{EPOCH, World, group, node, position, rng};
use serde_json::{Value, json};
use sha2::Digest;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn h(b: &[u8]) -> String {
    hex::encode(b)
}

fn unh(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

fn chunks_hex(n: &SignedNote) -> Value {
    n.chunks().iter().map(|c| h(c)).collect()
}

fn err_kind(debug: &str) -> String {
    debug
        .split([' ', '(', '{'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// (name, notes held first, offered note)
type NoteCase = (&'static str, Vec<Vec<u8>>, Vec<u8>);
/// (name, reader, setup notes, offered note)
type SenderKeyCase = (&'static str, &'static str, Vec<Vec<u8>>, Vec<u8>);
/// (name, reader, topic, envelope, setup notes, ingest the sender-key note?)
type EnvelopeCase<'a> = (
    &'static str,
    &'static str,
    &'a str,
    Vec<u8>,
    Vec<Vec<u8>>,
    bool,
);

fn generate() -> Vec<(&'static str, Value)> {
    let w = World::new();
    vec![
        ("keys.json", keys(&w)),
        ("notes.json", notes(&w)),
        ("sender_keys.json", sender_keys(&w)),
        ("envelopes.json", envelopes(&w)),
    ]
}

fn keys(w: &World) -> Value {
    let key_json = |k: &NodeSecretKey| json!({"secret": h(k.to_bytes().as_ref()), "public": h(&k.public_key().to_bytes()), "key_file": k.to_key_file().as_str()});
    let nodes: Vec<Value> = w
        .nodes
        .iter()
        .map(|(id, k)| {
            let mut v = key_json(k);
            v["id"] = json!(id.to_string());
            v["id_bytes"] = json!(h(id.as_bytes()));
            v
        })
        .collect();
    let ids: Vec<Value> = ["1111", "hsu0001", "a b", "0x31313131"]
        .iter()
        .map(|s| {
            let id: NodeId = s.parse().expect("valid");
            json!({"input": s, "bytes": h(id.as_bytes()), "display": id.to_string(), "topic_segment": id.topic_segment()})
        })
        .collect();
    let long = "x".repeat(33);
    let bad_ids: Vec<Value> = ["", long.as_str(), "tab\there"]
        .iter()
        .map(|s| json!({"input": s, "error": format!("{:?}", s.parse::<NodeId>().expect_err("invalid"))}))
        .collect();
    let order = "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141";
    let bad_files: Vec<Value> = [
        ("pem_instead", "-----BEGIN EC PRIVATE KEY-----\n".to_owned()),
        ("short_secret", "anchormq-node-key-v1\nabcd\n".to_owned()),
        (
            "zero_secret",
            format!("anchormq-node-key-v1\n{}\n", "0".repeat(64)),
        ),
        (
            "secret_equals_group_order",
            format!("anchormq-node-key-v1\n{order}\n"),
        ),
        (
            "trailing_line",
            format!("anchormq-node-key-v1\n{}\nextra\n", "1".repeat(64)),
        ),
        (
            "crlf",
            format!("anchormq-node-key-v1\r\n{}\r\n", "1".repeat(64)),
        ),
    ]
    .into_iter()
    .map(|(name, text)| {
        let err = NodeSecretKey::from_key_file(text.as_bytes()).expect_err("invalid key file");
        json!({"name": name, "input": text, "error": format!("{err:?}")})
    })
    .collect();
    let x_not_on_curve = format!("02{}", "0".repeat(63) + "5");
    let bad_points: Vec<Value> = [
        ("all_zero", "00".repeat(33)),
        ("x_not_on_curve", x_not_on_curve),
        (
            "x_equals_p",
            format!(
                "02{}",
                "fffffffffffffffffffffffffffffffffffffffffffffffffffffffefffffc2f"
            ),
        ),
        (
            "bad_prefix",
            format!("05{}", &h(&w.bridge.public_key().to_bytes())[2..]),
        ),
        (
            "uncompressed_on_the_wire",
            h(&w.bridge.public_key().to_uncompressed()),
        ),
    ]
    .into_iter()
    .map(|(name, hx)| {
        let err = NodePublicKey::from_compressed(&hex::decode(&hx).expect("hex"))
            .expect_err("invalid point");
        json!({"name": name, "input": hx, "error": format!("{err:?}")})
    })
    .collect();
    json!({
        "description": "Node keys of the research world, key file format, ID encoding, invalid inputs",
        "bridge": key_json(&w.bridge),
        "nodes": nodes,
        "ids": ids,
        "invalid_ids": bad_ids,
        "invalid_key_files": bad_files,
        "invalid_public_keys": bad_points,
    })
}

fn registry_json(r: &Registry) -> Value {
    json!({"chain_id": r.chain_id, "address": h(&r.address)})
}

fn notes(w: &World) -> Value {
    let valid: Vec<Value> = w
        .node_notes
        .iter()
        .chain(&w.group_notes)
        .map(|n| json!({"note": h(n.as_bytes()), "chunks": chunks_hex(n)}))
        .collect();
    let good = node_note(w, "1111", 50, 2, 1, NodeStatus::Active).sign(&w.bridge);
    let mut unsigned = good.as_bytes().to_vec();
    let len = unsigned.len();
    unsigned[len - 64..].fill(0);
    let mut flipped = good.as_bytes().to_vec();
    flipped[60] ^= 0x01;
    let mut v1 = good.as_bytes().to_vec();
    v1[0] = 1;
    let regenerated = |generation: u64, block: u64, log: u64, status: NodeStatus| {
        NodeNote {
            generation,
            ..node_note(w, "1111", block, log, 1, status)
        }
        .sign(&w.bridge)
        .into_bytes()
    };
    let mut other_chain = node_note(w, "1111", 50, 2, 1, NodeStatus::Active);
    other_chain.position.chain_id = 1;
    let mut other_registry = node_note(w, "1111", 50, 2, 1, NodeStatus::Active);
    other_registry.position.registry = [0x11; 20];
    let cases: Vec<NoteCase> = vec![
        ("unsigned", vec![], unsigned),
        (
            "signed_by_a_node_not_the_bridge",
            vec![],
            node_note(w, "1111", 50, 2, 1, NodeStatus::Active)
                .sign(&w.key("1111"))
                .into_bytes(),
        ),
        ("bit_flip_in_body", vec![], flipped),
        (
            "other_chain",
            vec![],
            other_chain.sign(&w.bridge).into_bytes(),
        ),
        (
            "other_registry",
            vec![],
            other_registry.sign(&w.bridge).into_bytes(),
        ),
        (
            "rollback_lower_log_index",
            vec![good.as_bytes().to_vec()],
            regenerated(0, 50, 1, NodeStatus::Active),
        ),
        (
            "rollback_older_block",
            vec![good.as_bytes().to_vec()],
            regenerated(0, 49, 7, NodeStatus::Active),
        ),
        (
            "rollback_lower_generation_at_a_later_block",
            vec![
                good.as_bytes().to_vec(),
                regenerated(1, 49, 7, NodeStatus::Active),
            ],
            regenerated(0, 51, 0, NodeStatus::Revoked),
        ),
        (
            "equivocation_same_generation_and_position",
            vec![good.as_bytes().to_vec()],
            regenerated(0, 50, 2, NodeStatus::Revoked),
        ),
        ("unsupported_version_1", vec![], v1),
        ("truncated", vec![], good.as_bytes()[..100].to_vec()),
    ];
    let cases = cases.into_iter().chain(membership_cases(w));
    let invalid: Vec<Value> = cases
        .into_iter()
        .map(|(name, held, note)| {
            let mut book = KeyBook::new(w.registry, w.bridge.public_key());
            for n in &held {
                book.ingest_note(n).expect("held note is valid");
            }
            let err = format!("{:?}", book.ingest_note(&note).expect_err(name));
            json!({"name": name, "held": held.iter().map(|n| h(n)).collect::<Vec<_>>(), "note": h(&note), "error_kind": err_kind(&err), "error": err})
        })
        .collect();
    // Readers order by (generation, block, log index): after a reorg the canonical event can sit
    // at an earlier block, under the bridge's next generation.
    let replacements: Vec<Value> = [
        (
            "higher_generation_at_an_earlier_block",
            regenerated(1, 49, 7, NodeStatus::Revoked),
            true,
        ),
        (
            "same_state_under_a_higher_generation",
            regenerated(1, 50, 2, NodeStatus::Active),
            false,
        ),
        (
            "later_position_same_generation",
            regenerated(0, 50, 3, NodeStatus::Revoked),
            true,
        ),
    ]
    .into_iter()
    .map(|(name, note, changed)| {
        let mut book = KeyBook::new(w.registry, w.bridge.public_key());
        book.ingest_note(good.as_bytes())
            .expect("held note is valid");
        assert_eq!(
            book.ingest_note(&note),
            Ok(anchormq_core::NoteUpdate::Node {
                node: node("1111"),
                changed
            }),
            "{name}"
        );
        json!({"name": name, "held": [h(good.as_bytes())], "note": h(&note), "changed": changed})
    })
    .collect();
    // The world's memberships as the bridge mirrors them: at the group's (only) membership event.
    let membership: Vec<Value> = [("1111", "hsu0001", 20), ("1113", "hsu0002", 21)]
        .into_iter()
        .map(|(label, g, block)| {
            let note = membership_note(w, label, block, 0, &[g]).sign(&w.bridge);
            json!({"node": label, "groups": [g], "note": h(note.as_bytes()), "chunks": chunks_hex(&note)})
        })
        .collect();
    // a group note large enough for two chunks
    let members = (0..2460u32)
        .map(|i| {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_be_bytes());
            anchormq_core::Member::new(NodeId::from_bytes(id), u64::from(i % 3))
        })
        .collect();
    let big = anchormq_core::GroupNote::new(
        position(&w.registry, 77, 1),
        group("fleet"),
        5,
        "fleet/+/telemetry",
        Some([0xad; 20]),
        members,
    )
    .expect("valid")
    .sign(&w.bridge);
    let mut forged = good.chunks();
    let last = forged[0].len() - 1;
    forged[0][last] ^= 0x80;
    let mut header_lie = good.chunks();
    header_lie[0][2] ^= 0x01; // subject
    let mut not_canonical = good.chunks();
    not_canonical[0][77] = 2; // chunk count
    let chunk_cases: Vec<Value> = [("piece_tampered", forged), ("header_names_another_subject", header_lie), ("count_not_canonical", not_canonical)]
        .into_iter()
        .map(|(name, chunks)| {
            let mut opener = Opener::new(node("1111"), w.key("1111"), KeyBook::new(w.registry, w.bridge.public_key()));
            let mut last = None;
            for c in &chunks {
                last = Some(opener.ingest(c));
            }
            let err = format!("{:?}", last.expect("some chunk").expect_err(name));
            json!({"name": name, "chunks": chunks.iter().map(|c| h(c)).collect::<Vec<_>>(), "error_kind": err_kind(&err), "error": err})
        })
        .collect();
    json!({
        "description": "Bridge-signed node, group and membership notes; a reader trusting `bridge_public` for `registry` must accept `valid` in order; starting each case from an empty book, it must refuse each `invalid` note (after ingesting `held`) with `error`, and let each `replacements` note replace `held`, reporting whether what the chain says `changed`; reader `node`, after `valid`, must accept its `membership` note as listing `groups`",
        "registry": registry_json(&w.registry),
        "bridge_public": h(&w.bridge.public_key().to_bytes()),
        "valid": valid,
        "invalid": invalid,
        "replacements": replacements,
        "membership": membership,
        "chunked_group_note": {"sha256": h(&sha2::Sha256::digest(big.as_bytes())), "chunks": chunks_hex(&big)},
        "invalid_chunks": chunk_cases,
    })
}

fn node_note(
    w: &World,
    label: &str,
    block: u64,
    log: u64,
    version: u64,
    status: NodeStatus,
) -> NodeNote {
    NodeNote {
        generation: 0,
        position: position(&w.registry, block, log),
        node: node(label),
        key_version: version,
        status,
        public_key: w.key(label).public_key(),
    }
}

fn membership_note(
    w: &World,
    label: &str,
    block: u64,
    log: u64,
    groups: &[&str],
) -> MembershipNote {
    MembershipNote::new(
        position(&w.registry, block, log),
        node(label),
        groups.iter().map(|g| group(g)).collect(),
    )
}

/// Refused membership notes; 1111's note at block 50, log 2 is the one held before a rollback.
fn membership_cases(w: &World) -> Vec<NoteCase> {
    let good = membership_note(w, "1111", 50, 2, &["hsu0001"]).sign(&w.bridge);
    let mut other_registry = membership_note(w, "1111", 50, 2, &["hsu0001"]);
    other_registry.position.registry = [0x11; 20];
    // the encoder sorts, so the wrong orders are written into a sorted note's bytes and re-signed
    let pair = membership_note(w, "1111", 50, 2, &["hsu0001", "hsu0002"]).sign(&w.bridge);
    let groups_at = pair.as_bytes().len() - 64 - 2 * 32;
    let count_at = groups_at - 4;
    let with_body = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut unsigned = pair.as_bytes()[..pair.as_bytes().len() - 64].to_vec();
        edit(&mut unsigned);
        sign_frame(&w.bridge, unsigned)
    };
    let swapped = with_body(&|b| {
        let (first, second) = b[groups_at..].split_at_mut(32);
        first.swap_with_slice(second);
    });
    let duplicate = with_body(&|b| {
        let first = b[groups_at..groups_at + 32].to_vec();
        b[groups_at + 32..].copy_from_slice(&first);
    });
    let count_too_large =
        with_body(&|b| b[count_at..groups_at].copy_from_slice(&3u32.to_be_bytes()));
    vec![
        (
            "membership_signed_by_a_node_not_the_bridge",
            vec![],
            membership_note(w, "1111", 50, 2, &["hsu0001"])
                .sign(&w.key("1111"))
                .into_bytes(),
        ),
        (
            "membership_other_registry",
            vec![],
            other_registry.sign(&w.bridge).into_bytes(),
        ),
        (
            "membership_rollback_older_block",
            vec![good.as_bytes().to_vec()],
            membership_note(w, "1111", 49, 7, &[])
                .sign(&w.bridge)
                .into_bytes(),
        ),
        ("membership_groups_not_ascending", vec![], swapped),
        ("membership_duplicate_group", vec![], duplicate),
        ("membership_group_count_too_large", vec![], count_too_large),
    ]
}

/// Signs `version || kind || body` as the note frame does (§2): for bytes no encoder writes.
fn sign_frame(key: &NodeSecretKey, mut unsigned: Vec<u8>) -> Vec<u8> {
    use k256::ecdsa::signature::DigestSigner;
    const DOMAIN: &[u8] = b"anchormq/v1 note\0";
    let signing = k256::ecdsa::SigningKey::from_slice(key.to_bytes().as_ref()).expect("key");
    let digest = sha2::Sha256::new_with_prefix(DOMAIN).chain_update(&unsigned);
    let signature: k256::ecdsa::Signature = signing.sign_digest(digest);
    let signature = signature.normalize_s().unwrap_or(signature).to_bytes();
    key.public_key()
        .verify_sha256(&[DOMAIN, &unsigned].concat(), &signature)
        .expect("a valid low-S signature");
    unsigned.extend_from_slice(&signature);
    unsigned
}

fn sender_keys(w: &World) -> Value {
    let sealer = w.sealer("1111", "hsu0001", 100);
    let note = sealer
        .sender_key_note(&w.book(), &mut rng(101))
        .expect("note")
        .note;
    let outsider = w.sealer("1113", "hsu0002", 102);
    let mut wrong_group = anchormq_core::SenderKeyNote::decode_signed(
        outsider
            .sender_key_note(&w.book(), &mut rng(103))
            .expect("note")
            .note
            .as_bytes(),
    )
    .expect("decode")
    .0;
    // 1113 announcing a key for hsu0001, properly signed by 1113
    wrong_group = anchormq_core::SenderKeyNote::wrap(
        StreamId {
            group: group("hsu0001"),
            sender: node("1113"),
            epoch: EPOCH,
        },
        wrong_group.sender_key_version(),
        &anchormq_core::SenderKey::generate(&mut rng(104)),
        anchormq_core::ed25519::SigningKey::generate(&mut rng(106)).verifying_key(),
        &[],
        &mut rng(105),
    )
    .expect("wrap");
    let mut flipped = note.as_bytes().to_vec();
    flipped[300] ^= 0x04;
    // the Ed25519 identity point (order 1) as the stream's signing key
    let weak_signing_key = anchormq_core::SenderKeyNote::wrap(
        *sealer.stream(),
        1,
        &anchormq_core::SenderKey::generate(&mut rng(109)),
        anchormq_core::ed25519::VerifyingKey::from_bytes(&IDENTITY).expect("a curve point"),
        &[],
        &mut rng(110),
    )
    .expect("wrap")
    .sign(&w.key("1111"))
    .into_bytes();
    // 1112 as a reader only (same epoch, later block); its note announced a key while it wrote
    let read_only = roles_note(w, "1112", Roles::READ, 25);
    let from_1112 = w
        .sealer("1112", "hsu0001", 107)
        .sender_key_note(&w.book(), &mut rng(108))
        .expect("note")
        .note;
    let cases: Vec<SenderKeyCase> = vec![
        (
            "sender_not_member",
            "1111",
            vec![],
            wrong_group.sign(&w.key("1113")).into_bytes(),
        ),
        ("bit_flip_in_wrapped_key", "1112", vec![], flipped),
        (
            "signed_by_another_member",
            "1112",
            vec![],
            resign(&note, &w.key("1112")),
        ),
        ("weak_signing_key", "1112", vec![], weak_signing_key),
        (
            "sender_without_write_role",
            "1111",
            vec![read_only],
            from_1112.into_bytes(),
        ),
    ];
    let invalid: Vec<Value> = cases
        .into_iter()
        .map(|(name, reader, setup, bytes)| {
            let mut o = w.opener(reader);
            for n in &setup {
                o.ingest_signed_note(n).expect("setup note");
            }
            let err = format!("{:?}", o.ingest_signed_note(&bytes).expect_err(name));
            json!({
                "name": name, "reader": reader, "setup_notes": setup.iter().map(|n| h(n)).collect::<Vec<_>>(),
                "note": h(&bytes), "error_kind": err_kind(&err), "error": err,
            })
        })
        .collect();
    json!({
        "description": "Sender-key note of 1111 for hsu0001 at epoch 3; members unwrap a key whose key ID is `key_id`, and envelopes carry `stream_tag`, signed by `signing_key`; 1113 and 1114 have no entry. Invalid cases: the reader ingests the world notes, then `setup_notes` in order, then `note`",
        "sender": "1111",
        "group": "hsu0001",
        "epoch": EPOCH,
        "key_id": h(sealer.key_id()),
        "stream_tag": h(&sealer.tag().0),
        "signing_key": h(sealer.signing_key().as_bytes()),
        "note": h(note.as_bytes()),
        "chunks": chunks_hex(&note),
        "not_for": ["1113", "1114"],
        "invalid": invalid,
    })
}

/// Replaces a note's signature by one from `key` (a valid signature by the wrong signer).
fn resign(note: &SignedNote, key: &NodeSecretKey) -> Vec<u8> {
    let (skn, _) = anchormq_core::SenderKeyNote::decode_signed(note.as_bytes()).expect("decode");
    let mut bytes = skn.sign(key).into_bytes();
    let n = bytes.len();
    bytes[..n - 64].copy_from_slice(&note.as_bytes()[..n - 64]);
    bytes
}

/// The Ed25519 identity point, of order 1.
const IDENTITY: [u8; 32] = {
    let mut p = [0u8; 32];
    p[0] = 1;
    p
};

/// hsu0001 at the world's epoch with `node`'s roles set to `roles`, mirrored at `block`.
fn roles_note(w: &World, node_label: &str, roles: Roles, block: u64) -> Vec<u8> {
    let members = ["1111", "1112"]
        .iter()
        .map(|m| Member {
            roles: if *m == node_label { roles } else { Roles::BOTH },
            ..Member::new(node(m), 1)
        })
        .collect();
    anchormq_core::GroupNote::new(
        position(&w.registry, block, 0),
        group("hsu0001"),
        EPOCH,
        "hsu0001/#",
        None,
        members,
    )
    .expect("group note")
    .sign(&w.bridge)
    .into_bytes()
}

/// The envelope with another stream's tag.
fn retag(env: &[u8], tag: anchormq_core::StreamTag) -> Vec<u8> {
    let mut out = env.to_vec();
    out[1..9].copy_from_slice(&tag.0);
    out
}

/// The envelope with its Ed25519 S replaced by S + L: the same equation, a non-canonical encoding.
fn s_plus_l(env: &[u8]) -> Vec<u8> {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut out = env.to_vec();
    let s = out.len() - 32;
    let mut carry = 0u16;
    for (i, l) in L.iter().enumerate() {
        let sum = u16::from(out[s + i]) + u16::from(*l) + carry;
        out[s + i] = sum as u8;
        carry = sum >> 8;
    }
    out
}

fn envelopes(w: &World) -> Value {
    let mut sealer = w.sealer("1111", "hsu0001", 200);
    let sk_note = sealer
        .sender_key_note(&w.book(), &mut rng(201))
        .expect("note")
        .note;
    let topic = "hsu0001/sensor/temperature";
    let mut valid = Vec::new();
    let mut sealed = Vec::new();
    for (i, size) in [0usize, 32, 256].into_iter().enumerate() {
        let plaintext: Vec<u8> = (0..size).map(|b| (b * 7 + i) as u8).collect();
        let env = sealer.seal(topic, &plaintext).expect("seal");
        valid.push(json!({"topic": topic, "plaintext": h(&plaintext), "envelope": h(&env), "seq": i, "readers": ["1111", "1112"]}));
        sealed.push(env);
    }
    let base = sealed[1].clone();
    let mut flipped_ct = base.clone();
    flipped_ct[40] ^= 0x20;
    let mut v1 = base.clone();
    v1[0] = 1;
    let mut seq_rewritten = base.clone();
    seq_rewritten[16] = 0;
    let epoch4 = w
        .group_note("hsu0001", &["1111"], EPOCH + 1, 30)
        .sign(&w.bridge)
        .into_bytes();
    // 1112 removed at epoch 4; 1111 seals under the new epoch
    let mut book4 = w.book();
    book4.ingest_note(&epoch4).expect("epoch 4");
    let after_removal = anchormq_core::Sealer::new(
        &book4,
        node("1111"),
        w.key("1111"),
        group("hsu0001"),
        &mut rng(222),
    )
    .expect("member")
    .seal(topic, b"after")
    .expect("seal");
    // 1112's own stream, announced while it wrote; then its write role is taken (same epoch)
    let mut forger = w.sealer("1112", "hsu0001", 220);
    let forger_note = forger
        .sender_key_note(&w.book(), &mut rng(221))
        .expect("note")
        .note
        .into_bytes();
    let from_1112 = forger.seal(topic, b"from 1112").expect("seal");
    let forged = retag(&from_1112, sealer.tag());
    let read_only_1112 = roles_note(w, "1112", Roles::READ, 25);
    let write_only_1112 = roles_note(w, "1112", Roles::WRITE, 25);
    // a stream of 1113 in hsu0002, to splice into
    let other = w.sealer("1113", "hsu0002", 223);
    let other_note = other
        .sender_key_note(&w.book(), &mut rng(224))
        .expect("note")
        .note
        .into_bytes();
    let batch = {
        let mut sealer = w.sealer("1111", "hsu0001", 230);
        let note = sealer
            .sender_key_note(&w.book(), &mut rng(231))
            .expect("note")
            .note;
        let plaintexts: [&[u8]; 3] = [b"burst 0", b"burst 1", b"burst 2"];
        let envelopes = sealer.seal_batch(topic, &plaintexts).expect("batch");
        let mut recounted = envelopes[2].clone();
        let at = recounted.len() - 65;
        recounted[at] = 1;
        let invalid: Vec<Value> = [
            (
                "batch_member_lost",
                vec![envelopes[0].clone(), envelopes[2].clone()],
            ),
            (
                "batch_count_rewritten",
                vec![envelopes[0].clone(), envelopes[1].clone(), recounted],
            ),
        ]
        .into_iter()
        .map(|(name, sent)| {
            let mut o = w.opener("1112");
            o.ingest_signed_note(note.as_bytes()).expect("sender key");
            let (end, before) = sent.split_last().expect("some");
            for env in before {
                o.open(topic, env).expect("held");
            }
            let err = format!("{:?}", o.open(topic, end).expect_err(name));
            json!({
                "name": name, "envelopes": sent.iter().map(|e| h(e)).collect::<Vec<_>>(),
                "error_kind": err_kind(&err), "error": err,
            })
        })
        .collect();
        json!({
            "description": "A burst of 3 sealed by 1111 under one signature: two batched envelopes and a batch end. Reader 1112 ingests the world notes and `sender_key_note`, then opens `envelopes` in order on `topic`: the first two are held, the end delivers all three `plaintexts` in order. Invalid: all but the last envelope are held, the last fails with `error`",
            "reader": "1112",
            "topic": topic,
            "sender_key_note": h(note.as_bytes()),
            "envelopes": envelopes.iter().map(|e| h(e)).collect::<Vec<_>>(),
            "plaintexts": plaintexts.iter().map(|p| h(p)).collect::<Vec<_>>(),
            "invalid": invalid,
        })
    };
    let sk = h(sk_note.as_bytes());
    // (name, reader, topic, envelope, setup notes, ingest the sender-key note?)
    let cases: Vec<EnvelopeCase> = vec![
        (
            "non_member_reader",
            "1113",
            topic,
            base.clone(),
            vec![],
            true,
        ),
        (
            "non_member_reader_without_sender_key_note",
            "1113",
            topic,
            base.clone(),
            vec![],
            false,
        ),
        (
            "moved_to_other_topic_in_group",
            "1112",
            "hsu0001/sensor/humidity",
            base.clone(),
            vec![],
            true,
        ),
        (
            "moved_outside_group_filter",
            "1113",
            "hsu0002/sensor/temperature",
            base.clone(),
            vec![],
            true,
        ),
        (
            "spliced_into_other_group",
            "1113",
            "hsu0002/sensor/temperature",
            retag(&base, other.tag()),
            vec![other_note],
            false,
        ),
        (
            "member_claims_another_sender",
            "1111",
            topic,
            forged,
            vec![forger_note.clone()],
            true,
        ),
        (
            "sender_without_write_role",
            "1111",
            topic,
            from_1112,
            vec![forger_note, read_only_1112],
            false,
        ),
        (
            "reader_without_read_role",
            "1112",
            topic,
            base.clone(),
            vec![write_only_1112],
            true,
        ),
        (
            "ciphertext_bit_flip",
            "1112",
            topic,
            flipped_ct,
            vec![],
            true,
        ),
        (
            "sequence_rewritten",
            "1112",
            topic,
            seq_rewritten,
            vec![],
            true,
        ),
        (
            "stale_epoch",
            "1111",
            topic,
            base.clone(),
            vec![epoch4.clone()],
            true,
        ),
        (
            "removed_member_reads_new_epoch",
            "1112",
            topic,
            after_removal,
            vec![epoch4.clone()],
            false,
        ),
        ("unknown_stream", "1112", topic, base.clone(), vec![], false),
        (
            "stream_tag_rewritten",
            "1112",
            topic,
            retag(&base, anchormq_core::StreamTag([9; 8])),
            vec![],
            true,
        ),
        ("v1_refused", "1112", topic, v1, vec![], true),
        (
            "truncated",
            "1112",
            topic,
            base[..96].to_vec(),
            vec![],
            true,
        ),
        (
            "trailing_byte",
            "1112",
            topic,
            [base.as_slice(), &[0]].concat(),
            vec![],
            true,
        ),
        (
            "non_canonical_signature",
            "1112",
            topic,
            s_plus_l(&base),
            vec![],
            true,
        ),
    ];
    let invalid: Vec<Value> = cases
        .into_iter()
        .map(|(name, reader, t, env, setup, with_key)| {
            let mut o = w.opener(reader);
            if with_key {
                o.ingest_signed_note(sk_note.as_bytes())
                    .expect("sender key");
            }
            for n in &setup {
                o.ingest_signed_note(n).expect("setup note");
            }
            let err = format!("{:?}", o.open(t, &env).expect_err(name));
            json!({
                "name": name, "reader": reader, "topic": t, "envelope": h(&env),
                "setup_notes": setup.iter().map(|n| h(n)).collect::<Vec<_>>(),
                "sender_key_note": with_key, "error_kind": err_kind(&err), "error": err,
            })
        })
        .collect();
    json!({
        "description": "Envelopes sealed by 1111 for hsu0001 (epoch 3). Readers ingest every world note (notes.json valid), then `sender_key_note` where it is true, then each of `setup_notes` in order (after the sender-key note: a later group note makes its epoch stale); then open with the topic given. `duplicates`: after opening `first`, `again` is dropped as already delivered",
        "sender_key_note": sk,
        "key_id": h(sealer.key_id()),
        "stream_tag": h(&sealer.tag().0),
        "overhead": anchormq_core::envelope::OVERHEAD,
        "duplicates": [{"name": "replayed", "reader": "1112", "topic": topic, "first": h(&base), "again": h(&base)}],
        "batch": batch,
        "valid": valid,
        "invalid": invalid,
    })
}

#[test]
fn vectors_regenerate_byte_for_byte() {
    let update = std::env::var_os("ANCHORMQ_UPDATE_VECTORS").is_some();
    for (file, value) in generate() {
        let text = serde_json::to_string_pretty(&value).expect("json") + "\n";
        let path = dir().join(file);
        if update {
            std::fs::create_dir_all(dir()).expect("mkdir");
            std::fs::write(&path, &text).expect("write vectors");
            continue;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run with ANCHORMQ_UPDATE_VECTORS=1 to create it",
                path.display()
            )
        });
        assert!(
            on_disk == text,
            "{file} differs from what the code produces now; if the change is intended, rerun with ANCHORMQ_UPDATE_VECTORS=1"
        );
    }
}

fn load(file: &str) -> Value {
    let text = std::fs::read_to_string(dir().join(file)).expect("vector file");
    serde_json::from_str(&text).expect("json")
}

/// A reader built only from the JSON files (as another implementation would).
fn reader_from_files(label: &str) -> Opener {
    let keys = load("keys.json");
    let notes = load("notes.json");
    let reg = &notes["registry"];
    let registry = Registry {
        chain_id: reg["chain_id"].as_u64().expect("u64"),
        address: unh(&reg["address"]).try_into().expect("20 bytes"),
    };
    let bridge = NodePublicKey::from_compressed(&unh(&notes["bridge_public"])).expect("bridge key");
    let node_json = keys["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["id"] == label)
        .expect("known node");
    let key =
        NodeSecretKey::from_key_file(node_json["key_file"].as_str().expect("text").as_bytes())
            .expect("key file");
    let mut opener = Opener::new(
        label.parse().expect("id"),
        key,
        KeyBook::new(registry, bridge),
    );
    for v in notes["valid"].as_array().expect("valid") {
        for c in v["chunks"].as_array().expect("chunks") {
            opener.ingest(&unh(c)).expect("valid chunk");
        }
    }
    opener
}

#[test]
fn vector_files_replay_through_the_public_api() {
    let keys = load("keys.json");
    for n in keys["nodes"].as_array().expect("nodes") {
        let key = NodeSecretKey::from_key_file(n["key_file"].as_str().expect("s").as_bytes())
            .expect("key file");
        assert_eq!(h(&key.public_key().to_bytes()), n["public"]);
        assert_eq!(h(key.to_bytes().as_ref()), n["secret"]);
    }
    for v in keys["ids"].as_array().expect("ids") {
        let id: GroupId = v["input"].as_str().expect("s").parse().expect("id");
        assert_eq!(h(id.as_bytes()), v["bytes"]);
        assert_eq!(id.to_string(), v["display"]);
    }
    for v in keys["invalid_ids"].as_array().expect("ids") {
        assert_eq!(
            format!(
                "{:?}",
                v["input"]
                    .as_str()
                    .expect("s")
                    .parse::<NodeId>()
                    .expect_err("invalid")
            ),
            v["error"]
        );
    }
    for v in keys["invalid_key_files"].as_array().expect("files") {
        let err = NodeSecretKey::from_key_file(v["input"].as_str().expect("s").as_bytes())
            .expect_err("invalid");
        assert_eq!(format!("{err:?}"), v["error"], "{}", v["name"]);
    }
    for v in keys["invalid_public_keys"].as_array().expect("points") {
        assert_eq!(
            format!(
                "{:?}",
                NodePublicKey::from_compressed(&unh(&v["input"])).expect_err("invalid")
            ),
            v["error"]
        );
    }

    let notes = load("notes.json");
    let fresh = || {
        let o = reader_from_files("1111");
        KeyBook::new(o.book().registry(), *o.book().bridge_key())
    };
    for v in notes["invalid"].as_array().expect("invalid") {
        let mut book = fresh();
        for n in v["held"].as_array().expect("held") {
            book.ingest_note(&unh(n)).expect("held");
        }
        let err = book.ingest_note(&unh(&v["note"])).expect_err("must fail");
        assert_eq!(format!("{err:?}"), v["error"], "{}", v["name"]);
    }
    for v in notes["replacements"].as_array().expect("replacements") {
        let mut book = fresh();
        for n in v["held"].as_array().expect("held") {
            book.ingest_note(&unh(n)).expect("held");
        }
        let note = unh(&v["note"]);
        match book.ingest_note(&note).expect("replaces") {
            anchormq_core::NoteUpdate::Node { changed, .. } => {
                assert_eq!(Some(changed), v["changed"].as_bool(), "{}", v["name"]);
            }
            other => panic!("unexpected {other:?}"),
        }
        let (expected, _) = NodeNote::decode_signed(&note).expect("decodes");
        assert_eq!(book.node(&expected.node), Some(&expected), "{}", v["name"]);
    }
    for v in notes["membership"].as_array().expect("membership") {
        let label = v["node"].as_str().expect("s");
        let id: NodeId = label.parse().expect("id");
        let mut o = reader_from_files(label);
        let mut last = None;
        for c in v["chunks"].as_array().expect("chunks") {
            last = Some(o.ingest(&unh(c)).expect("valid chunk"));
        }
        assert_eq!(
            last,
            Some(anchormq_core::Ingested::Note(
                anchormq_core::NoteUpdate::Membership {
                    node: id,
                    changed: true
                }
            )),
            "{label}"
        );
        let held = o.book().membership(&id).expect("held");
        let listed: Vec<String> = held.groups().iter().map(ToString::to_string).collect();
        assert_eq!(json!(listed), v["groups"], "{label}");
        // the hint agrees with the group notes of `valid`, which alone decide membership
        for g in o.book().groups() {
            assert_eq!(
                g.member(&id).is_some(),
                held.groups().contains(&g.group()),
                "{label} in {}",
                g.group()
            );
        }
    }
    let big = &notes["chunked_group_note"];
    let mut o = reader_from_files("1111");
    let chunks = big["chunks"].as_array().expect("chunks");
    assert!(chunks.len() >= 2);
    for c in chunks.iter().rev() {
        o.ingest(&unh(c)).expect("chunk");
    }
    assert_eq!(
        o.book().group(&group("fleet")).map(|g| g.members().len()),
        Some(2460)
    );
    for v in notes["invalid_chunks"].as_array().expect("chunks") {
        let mut o = reader_from_files("1111");
        let mut last = None;
        for c in v["chunks"].as_array().expect("chunks") {
            last = Some(o.ingest(&unh(c)));
        }
        let err: IngestError = last.expect("some").expect_err("must fail");
        assert_eq!(format!("{err:?}"), v["error"], "{}", v["name"]);
    }

    let sk = load("sender_keys.json");
    for reader in ["1111", "1112", "1113", "1114"] {
        let mut o = reader_from_files(reader);
        let mut outcome = None;
        for c in sk["chunks"].as_array().expect("chunks") {
            outcome = Some(o.ingest(&unh(c)).expect("valid"));
        }
        let not_for = sk["not_for"]
            .as_array()
            .expect("list")
            .iter()
            .any(|n| n == reader);
        match outcome.expect("some") {
            anchormq_core::Ingested::SenderKey { key_id, .. } => {
                assert!(!not_for);
                assert_eq!(h(&key_id), sk["key_id"]);
            }
            anchormq_core::Ingested::SenderKeyNotForUs { .. } => assert!(not_for),
            other => panic!("unexpected {other:?}"),
        }
    }
    for v in sk["invalid"].as_array().expect("invalid") {
        let mut o = reader_from_files(v["reader"].as_str().expect("s"));
        for n in v["setup_notes"].as_array().expect("setup") {
            o.ingest_signed_note(&unh(n)).expect("setup");
        }
        let err = o
            .ingest_signed_note(&unh(&v["note"]))
            .expect_err("must fail");
        assert_eq!(format!("{err:?}"), v["error"], "{}", v["name"]);
    }

    let env = load("envelopes.json");
    for v in env["valid"].as_array().expect("valid") {
        for reader in v["readers"].as_array().expect("readers") {
            let mut o = reader_from_files(reader.as_str().expect("s"));
            o.ingest_signed_note(&unh(&env["sender_key_note"]))
                .expect("sender key");
            match o
                .open(v["topic"].as_str().expect("s"), &unh(&v["envelope"]))
                .expect("opens")
            {
                Opened::Message(m) => {
                    assert_eq!(h(&m.plaintext), v["plaintext"]);
                    assert_eq!(Some(m.seq), v["seq"].as_u64());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    for v in env["invalid"].as_array().expect("invalid") {
        let mut o = reader_from_files(v["reader"].as_str().expect("s"));
        if v["sender_key_note"].as_bool() == Some(true) {
            o.ingest_signed_note(&unh(&env["sender_key_note"]))
                .expect("sender key");
        }
        for n in v["setup_notes"].as_array().expect("setup") {
            o.ingest_signed_note(&unh(n)).expect("setup");
        }
        let err = o
            .open(v["topic"].as_str().expect("s"), &unh(&v["envelope"]))
            .expect_err("must fail");
        assert_eq!(format!("{err:?}"), v["error"], "{}", v["name"]);
    }
    let batch = &env["batch"];
    let topic = batch["topic"].as_str().expect("s");
    let batch_reader = || {
        let mut o = reader_from_files(batch["reader"].as_str().expect("s"));
        o.ingest_signed_note(&unh(&batch["sender_key_note"]))
            .expect("sender key");
        o
    };
    let mut o = batch_reader();
    let envelopes = batch["envelopes"].as_array().expect("envelopes");
    let (end, before) = envelopes.split_last().expect("some");
    for e in before {
        assert!(matches!(o.open(topic, &unh(e)), Ok(Opened::Pending { .. })));
    }
    match o.open(topic, &unh(end)).expect("the batch") {
        Opened::Batch(messages) => {
            let got: Vec<String> = messages.iter().map(|m| h(&m.plaintext)).collect();
            assert_eq!(json!(got), batch["plaintexts"]);
        }
        other => panic!("unexpected {other:?}"),
    }
    for v in batch["invalid"].as_array().expect("invalid") {
        let mut o = batch_reader();
        let sent = v["envelopes"].as_array().expect("envelopes");
        let (end, before) = sent.split_last().expect("some");
        for e in before {
            o.open(topic, &unh(e)).expect("held");
        }
        let err = o.open(topic, &unh(end)).expect_err("must fail");
        assert_eq!(format!("{err:?}"), v["error"], "{}", v["name"]);
    }
    for v in env["duplicates"].as_array().expect("duplicates") {
        let mut o = reader_from_files(v["reader"].as_str().expect("s"));
        o.ingest_signed_note(&unh(&env["sender_key_note"]))
            .expect("sender key");
        let topic = v["topic"].as_str().expect("s");
        assert!(matches!(
            o.open(topic, &unh(&v["first"])),
            Ok(Opened::Message(_))
        ));
        assert!(
            matches!(
                o.open(topic, &unh(&v["again"])),
                Ok(Opened::Duplicate { .. })
            ),
            "{}",
            v["name"]
        );
    }
}
