//! Where the repository is, for tests that read its files.

use std::path::{Path, PathBuf};

/// The anchormq repository root: `ANCHORMQ_ROOT` when set, else the checkout this crate was
/// compiled from (the test kit only ever runs inside a checkout).
pub fn repo_root() -> PathBuf {
    match std::env::var_os("ANCHORMQ_ROOT") {
        Some(root) if !root.is_empty() => PathBuf::from(root),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .canonicalize()
            .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")),
    }
}
