//! Fuzz entry points, one per decoder. Each must accept any input without
//! panicking; when the input decodes, it re-encodes it and checks the bytes
//! are identical (every format has exactly one encoding). The cargo-fuzz
//! targets in `fuzz/` call these, and `tests/corpus.rs` replays a checked-in
//! seed corpus through them on every `cargo test`.
//!
//! The `assert!`s below are the fuzz oracle: a failure is a real bug.

use crate::chunk::{Chunk, ChunkAssembler};
use crate::envelope::Envelope;
use crate::frame::{self, NoteBody, SignedNote};
use crate::keys::NodeSecretKey;
use crate::notes::{GroupNote, MembershipNote, NodeNote};
use crate::sender_key::SenderKeyNote;
use crate::topics::{topic_matches, validate_topic_filter};

/// Names of all targets, as used for `fuzz/fuzz_targets/<name>.rs` and
/// `tests/corpus/<name>/`.
pub const TARGETS: &[&str] = &[
    "envelope",
    "node_note",
    "group_note",
    "membership_note",
    "sender_key_note",
    "chunk",
    "key_file",
    "topic_filter",
];

/// Runs the named target (for corpus replay). Unknown names do nothing and return false.
pub fn run(target: &str, data: &[u8]) -> bool {
    match target {
        "envelope" => envelope(data),
        "node_note" => node_note(data),
        "group_note" => group_note(data),
        "membership_note" => membership_note(data),
        "sender_key_note" => sender_key_note(data),
        "chunk" => chunk(data),
        "key_file" => key_file(data),
        "topic_filter" => topic_filter(data),
        _ => return false,
    }
    true
}

/// Envelope decoder.
pub fn envelope(data: &[u8]) {
    if let Ok(env) = Envelope::decode(data) {
        assert_eq!(env.as_bytes(), data);
        assert_eq!(&data[1..9], &env.tag.0);
        assert_eq!(data[9..17], env.seq.to_be_bytes());
        let overhead = match env.kind {
            crate::envelope::Kind::Signed => crate::envelope::OVERHEAD,
            crate::envelope::Kind::Batched => crate::envelope::BATCHED_OVERHEAD,
            crate::envelope::Kind::BatchEnd { count } => {
                assert!(count > 0);
                crate::envelope::BATCH_END_OVERHEAD
            }
        };
        assert_eq!(env.plaintext_len() + overhead, data.len());
    }
}

/// A decoded note's body re-encodes to the input's body, and the frame's
/// routing facts are the note's own.
fn body_round_trip<N: NoteBody>(data: &[u8], note: &N, name: &str) {
    assert_eq!(
        frame::body(note),
        &data[2..data.len() - 64],
        "{name} re-encoding differs"
    );
    let routed = SignedNote::from_bytes(data.to_vec()).expect("a decodable note has routing facts");
    assert_eq!(
        (routed.kind(), *routed.subject(), routed.order()),
        (N::KIND, note.subject(), note.order()),
        "{name} routing facts differ"
    );
}

/// Node note decoder (signed form).
pub fn node_note(data: &[u8]) {
    if let Ok((note, _sig)) = NodeNote::decode_signed(data) {
        body_round_trip(data, &note, "node note");
    }
}

/// Group note decoder (signed form).
pub fn group_note(data: &[u8]) {
    if let Ok((note, _sig)) = GroupNote::decode_signed(data) {
        let rebuilt = GroupNote::new(
            *note.position(),
            note.group(),
            note.epoch(),
            note.topic_filter(),
            note.admin(),
            note.members().to_vec(),
        )
        .expect("a decoded group note is valid")
        .with_generation(note.generation());
        assert_eq!(
            rebuilt, note,
            "group note normalisation changed a decoded note"
        );
        body_round_trip(data, &note, "group note");
    }
}

/// Membership note decoder (signed form).
pub fn membership_note(data: &[u8]) {
    if let Ok((note, _sig)) = MembershipNote::decode_signed(data) {
        let rebuilt = MembershipNote::new(note.position, note.node, note.groups().to_vec())
            .with_generation(note.generation);
        assert_eq!(
            rebuilt, note,
            "membership note normalisation changed a decoded note"
        );
        body_round_trip(data, &note, "membership note");
    }
}

/// Sender-key note decoder (signed form).
pub fn sender_key_note(data: &[u8]) {
    if let Ok((note, _sig)) = SenderKeyNote::decode_signed(data) {
        body_round_trip(data, &note, "sender-key note");
    }
}

/// Chunk decoder, then one-shot reassembly (which must not panic either).
pub fn chunk(data: &[u8]) {
    if let Ok(c) = Chunk::decode(data) {
        assert_eq!(c.encode(), data, "chunk re-encoding differs");
    }
    let _ = ChunkAssembler::new(2).push(data);
}

/// Key file parser.
pub fn key_file(data: &[u8]) {
    if let Ok(key) = NodeSecretKey::from_key_file(data) {
        let text = key.to_key_file();
        let back = NodeSecretKey::from_key_file(text.as_bytes()).expect("our own key file parses");
        assert_eq!(back.public_key(), key.public_key());
    }
}

/// Topic filter validation and matching.
pub fn topic_filter(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (filter, topic) = s.split_once('\n').unwrap_or((s, s));
    let valid = validate_topic_filter(filter).is_ok();
    let matched = topic_matches(filter, topic);
    assert!(valid || !matched, "an invalid filter matched");
    if valid && !filter.contains(['+', '#']) {
        assert_eq!(
            matched,
            filter == topic && !topic.is_empty(),
            "literal filter must match exactly itself"
        );
    }
}
