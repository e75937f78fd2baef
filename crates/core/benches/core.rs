//! Core crypto benchmarks. Results and the exact command: docs/benchmarks.md ("## Core crypto").
//!
//! cargo bench -p anchormq-core --bench core -- --warm-up-time 1 --measurement-time 3

use anchormq_core::ed25519::SigningKey as StreamSigningKey;
use anchormq_core::sender_key::Recipient;
use anchormq_core::{
    Begun, ChainPosition, GroupId, GroupNote, KeyBook, Member, NodeId, NodeNote, NodeSecretKey,
    NodeStatus, Opened, Opener, Registry, Roles, Sealer, SenderKey, SenderKeyNote, StreamId,
};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use k256::ecdsa::signature::{Signer, Verifier};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const REGISTRY: Registry = Registry {
    chain_id: 31337,
    address: [0x5f; 20],
};

fn pos(block: u64) -> ChainPosition {
    ChainPosition {
        chain_id: 31337,
        registry: [0x5f; 20],
        block_number: block,
        block_hash: [0; 32],
        tx_hash: [0; 32],
        log_index: 0,
    }
}

fn id(i: usize) -> NodeId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(format!("n{i:07}").as_bytes());
    NodeId::from_bytes(b)
}

/// A book with a group of `members` nodes with both roles; the first `with_keys` have node notes.
/// Returns the book and the keys of those nodes.
fn world(
    members: usize,
    with_keys: usize,
    rng: &mut ChaCha20Rng,
) -> (KeyBook, Vec<(NodeId, NodeSecretKey)>) {
    world_with_roles(members, with_keys, |_| Roles::BOTH, rng)
}

/// Like [`world`], member `i` with `roles(i)`.
fn world_with_roles(
    members: usize,
    with_keys: usize,
    roles: impl Fn(usize) -> Roles,
    rng: &mut ChaCha20Rng,
) -> (KeyBook, Vec<(NodeId, NodeSecretKey)>) {
    let bridge = NodeSecretKey::generate(rng);
    let mut book = KeyBook::new(REGISTRY, bridge.public_key());
    let mut keys = Vec::new();
    for i in 0..with_keys {
        let key = NodeSecretKey::generate(rng);
        let note = NodeNote {
            generation: 0,
            position: pos(i as u64),
            node: id(i),
            key_version: 1,
            status: NodeStatus::Active,
            public_key: key.public_key(),
        };
        book.ingest_note(note.sign(&bridge).as_bytes())
            .expect("node note");
        keys.push((id(i), key));
    }
    let list = (0..members)
        .map(|i| Member {
            roles: roles(i),
            ..Member::new(id(i), 1)
        })
        .collect();
    let group = GroupNote::new(
        pos(1_000_000),
        GroupId::from_label("g").expect("id"),
        1,
        "g/#",
        None,
        list,
    )
    .expect("group");
    book.ingest_note(group.sign(&bridge).as_bytes())
        .expect("group note");
    (book, keys)
}

/// Sealer for node 0 and an opener for node 1 (with node 0's sender key).
fn pair(members: usize, rng: &mut ChaCha20Rng) -> (Sealer, Opener) {
    let (book, keys) = world(members, 2, rng);
    let g = GroupId::from_label("g").expect("id");
    let sealer = Sealer::new(&book, keys[0].0, keys[0].1.clone(), g, rng).expect("sealer");
    let note = sealer.sender_key_note(&book, rng).expect("note");
    // the reader is node 1 if the group has it, else node 0 reading its own messages
    let reader = if members > 1 { 1 } else { 0 };
    let mut opener = Opener::new(keys[reader].0, keys[reader].1.clone(), book);
    opener
        .ingest_signed_note(note.note.as_bytes())
        .expect("sender key");
    (sealer, opener)
}

fn seal_open(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (mut sealer, mut opener) = pair(2, &mut rng);
    let mut seal = c.benchmark_group("seal");
    for size in [32usize, 256, 4096, 65536] {
        let pt = vec![0xa5u8; size];
        seal.throughput(Throughput::Bytes(size as u64));
        seal.bench_with_input(BenchmarkId::from_parameter(size), &pt, |b, pt| {
            b.iter(|| sealer.seal("g/bench", pt).expect("seal"));
        });
    }
    seal.finish();
    let mut open = c.benchmark_group("open");
    for size in [32usize, 256, 4096, 65536] {
        let pt = vec![0xa5u8; size];
        open.throughput(Throughput::Bytes(size as u64));
        open.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter_batched(
                || sealer.seal("g/bench", &pt).expect("seal"),
                |env| opener.open("g/bench", &env).expect("open"),
                BatchSize::SmallInput,
            );
        });
    }
    open.finish();
}

fn group_size(c: &mut Criterion) {
    let mut g = c.benchmark_group("per_message_by_group_size");
    let pt = vec![0u8; 256];
    for members in [1usize, 100, 10_000] {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let (mut sealer, mut opener) = pair(members, &mut rng);
        g.bench_function(BenchmarkId::new("seal_256B", members), |b| {
            b.iter(|| sealer.seal("g/bench", &pt).expect("seal"));
        });
        g.bench_function(BenchmarkId::new("open_256B", members), |b| {
            b.iter_batched(
                || sealer.seal("g/bench", &pt).expect("seal"),
                |env| opener.open("g/bench", &env).expect("open"),
                BatchSize::SmallInput,
            );
        });
    }
    g.finish();
}

fn sender_key_notes(c: &mut Criterion) {
    let mut g = c.benchmark_group("sender_key_note");
    for members in [10usize, 1000, 10_000] {
        if members >= 1000 {
            g.sample_size(10);
        }
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let (book, keys) = world(members, members, &mut rng);
        let group = GroupId::from_label("g").expect("id");
        let sealer =
            Sealer::new(&book, keys[0].0, keys[0].1.clone(), group, &mut rng).expect("sealer");
        g.bench_function(BenchmarkId::new("build_and_sign", members), |b| {
            b.iter(|| sealer.sender_key_note(&book, &mut rng).expect("note"));
        });
        let note = sealer.sender_key_note(&book, &mut rng).expect("note").note;
        let (me, my_key) = keys[members / 2].clone();
        g.bench_function(BenchmarkId::new("verify_and_unwrap", members), |b| {
            b.iter(|| {
                let n = SenderKeyNote::verify(note.as_bytes(), &book).expect("verify");
                n.unwrap_for(&me, &my_key, 1).expect("unwrap")
            });
        });
    }
    g.finish();
}

fn primitives(c: &mut Criterion) {
    let mut g = c.benchmark_group("primitives");
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let sk = k256::ecdsa::SigningKey::random(&mut rng);
    let vk = *sk.verifying_key();
    let msg = vec![0u8; 256];
    g.bench_function("ecdsa_sign_256B", |b| {
        b.iter(|| -> k256::ecdsa::Signature { sk.sign(&msg) })
    });
    let sig: k256::ecdsa::Signature = sk.sign(&msg);
    g.bench_function("ecdsa_verify_256B", |b| {
        b.iter(|| vk.verify(&msg, &sig).expect("valid"))
    });
    let stream_key = StreamSigningKey::generate(&mut rng);
    let stream_public = stream_key.verifying_key();
    g.bench_function("ed25519_sign_256B", |b| b.iter(|| stream_key.sign(&msg)));
    let ed_sig = stream_key.sign(&msg);
    g.bench_function("ed25519_verify_strict_256B", |b| {
        b.iter(|| stream_public.verify_strict(&msg, &ed_sig).expect("valid"))
    });
    let aead = ChaCha20Poly1305::new(&[7u8; 32].into());
    for size in [256usize, 4096] {
        let pt = vec![0u8; size];
        g.bench_function(BenchmarkId::new("chacha20poly1305_seal", size), |b| {
            b.iter(|| {
                aead.encrypt(Nonce::from_slice(&[1; 12]), pt.as_slice())
                    .expect("seal")
            });
        });
    }
    let recipient = NodeSecretKey::generate(&mut rng);
    let stream = StreamId {
        group: GroupId::from_label("g").expect("id"),
        sender: id(0),
        epoch: 1,
    };
    let key = SenderKey::generate(&mut rng);
    let signing_key = anchormq_core::ed25519::SigningKey::generate(&mut rng).verifying_key();
    let one = [Recipient {
        node: id(1),
        key_version: 1,
        public_key: recipient.public_key(),
    }];
    g.bench_function("ecies_wrap_one_recipient", |b| {
        b.iter(|| SenderKeyNote::wrap(stream, 1, &key, signing_key, &one, &mut rng).expect("wrap"));
    });
    g.finish();
}

/// A group of 10,000 writers and 5 readers: what an epoch change costs one writer, and the size
/// of its note (the fleet publishes one per writer).
fn writers_and_readers(c: &mut Criterion) {
    let mut g = c.benchmark_group("sender_key_note_10000_writers_5_readers");
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let (book, keys) = world_with_roles(
        10_005,
        10_005,
        |i| {
            if i < 10_000 {
                Roles::WRITE
            } else {
                Roles::READ
            }
        },
        &mut rng,
    );
    let group = GroupId::from_label("g").expect("id");
    let sealer = Sealer::new(&book, keys[0].0, keys[0].1.clone(), group, &mut rng).expect("sealer");
    let note = sealer.sender_key_note(&book, &mut rng).expect("note");
    assert_eq!(note.recipients, 5);
    eprintln!(
        "writer's sender-key note: {} bytes signed; 10,000 writers: {} bytes of notes",
        note.note.as_bytes().len(),
        10_000 * note.note.as_bytes().len()
    );
    g.bench_function("new_sealer_and_note", |b| {
        b.iter(|| {
            let s =
                Sealer::new(&book, keys[0].0, keys[0].1.clone(), group, &mut rng).expect("sealer");
            s.sender_key_note(&book, &mut rng).expect("note")
        });
    });
    g.finish();
}

/// Opening 4 senders' signed messages on 1 and 2 threads sharing one opener: each thread holds
/// the lock only to begin and commit, and verifies and decrypts outside it.
fn open_parallel(c: &mut Criterion) {
    const SENDERS: usize = 4;
    const PER_SENDER: usize = 256;
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let (book, keys) = world(SENDERS + 1, SENDERS + 1, &mut rng);
    let group = GroupId::from_label("g").expect("id");
    let (reader, reader_key) = keys[SENDERS].clone();
    let mut opener = Opener::new(reader, reader_key, book.clone());
    let mut sealers: Vec<Sealer> = keys[..SENDERS]
        .iter()
        .map(|(node, key)| {
            let sealer = Sealer::new(&book, *node, key.clone(), group, &mut rng).expect("sealer");
            let note = sealer.sender_key_note(&book, &mut rng).expect("note");
            opener
                .ingest_signed_note(note.note.as_bytes())
                .expect("sender key");
            sealer
        })
        .collect();
    let opener = std::sync::Mutex::new(opener);
    let pt = vec![0x5au8; 256];
    let mut g = c.benchmark_group("open_4_senders_256B");
    g.throughput(Throughput::Elements((SENDERS * PER_SENDER) as u64));
    for threads in [1usize, 2] {
        g.bench_function(BenchmarkId::new("threads", threads), |b| {
            b.iter_batched(
                || {
                    sealers
                        .iter_mut()
                        .map(|s| {
                            (0..PER_SENDER)
                                .map(|_| s.seal("g/bench", &pt).expect("seal"))
                                .collect::<Vec<_>>()
                        })
                        .collect::<Vec<_>>()
                },
                |streams| {
                    std::thread::scope(|scope| {
                        for t in 0..threads {
                            let (opener, streams) = (&opener, &streams);
                            // each stream is opened by one thread, in order
                            scope.spawn(move || {
                                for stream in streams.iter().skip(t).step_by(threads) {
                                    for env in stream {
                                        open_apart(opener, env);
                                    }
                                }
                            });
                        }
                    });
                },
                BatchSize::PerIteration,
            );
        });
    }
    g.finish();
}

fn open_apart(opener: &std::sync::Mutex<Opener>, env: &[u8]) {
    let begun = opener
        .lock()
        .expect("lock")
        .begin("g/bench", env, |_| false)
        .expect("begin");
    let Begun::Unverified(unverified) = begun else {
        panic!("signed envelopes are verified apart");
    };
    let verified = unverified.verify("g/bench").expect("verify");
    let opened = opener
        .lock()
        .expect("lock")
        .commit(verified)
        .expect("commit");
    assert!(matches!(opened, Opened::Message(_)));
}

criterion_group!(
    benches,
    primitives,
    seal_open,
    group_size,
    sender_key_notes,
    writers_and_readers,
    open_parallel
);
criterion_main!(benches);
