//! Replays the checked-in fuzz seed corpus (`tests/corpus/<target>/*`) through
//! the same entry points the cargo-fuzz targets call, plus cheap mutations of
//! each seed (truncations and bit flips), so CI catches decoder regressions
//! without running the fuzzer (`scripts/fuzz.sh` runs the real campaign).

use std::path::PathBuf;

use anchormq_core::fuzz_entry;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target)
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("dir entry").path();
            (
                path.display().to_string(),
                std::fs::read(&path).expect("seed file"),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_target_has_seeds_and_they_replay_cleanly() {
    for target in fuzz_entry::TARGETS {
        let seeds = seeds(target);
        assert!(!seeds.is_empty(), "no seeds for {target}");
        for (name, data) in seeds {
            assert!(
                fuzz_entry::run(target, &data),
                "{target}: unknown target ({name})"
            );
        }
    }
}

#[test]
fn mutated_seeds_never_panic() {
    for target in fuzz_entry::TARGETS {
        for (_name, data) in seeds(target) {
            let step = (data.len() / 64).max(1);
            for cut in (0..data.len()).step_by(step) {
                fuzz_entry::run(target, &data[..cut]);
            }
            let bits = data.len().min(512) * 8;
            for bit in 0..bits {
                let mut m = data.clone();
                m[bit / 8] ^= 1 << (bit % 8);
                fuzz_entry::run(target, &m);
            }
        }
    }
}
