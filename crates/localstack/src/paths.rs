//! Where the repository and the external binaries are.

use std::path::{Path, PathBuf};

/// The anchormq repository root: `ANCHORMQ_ROOT` when set, else the checkout this crate was
/// compiled from.
pub fn repo_root() -> PathBuf {
    match std::env::var_os("ANCHORMQ_ROOT") {
        Some(root) if !root.is_empty() => PathBuf::from(root),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .canonicalize()
            .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")),
    }
}

/// Where a binary was looked for, for error messages.
#[derive(Debug, Clone)]
pub(crate) struct Lookup {
    pub(crate) found: Option<PathBuf>,
    pub(crate) tried: Vec<PathBuf>,
}

impl Lookup {
    pub(crate) fn describe(&self) -> String {
        let tried: Vec<String> = self.tried.iter().map(|p| p.display().to_string()).collect();
        tried.join(", ")
    }
}

/// Finds `name`: the `env_var` override if set (used as is, even when missing, so a wrong
/// override is reported rather than silently ignored), then each of `candidates`, then `PATH`.
pub(crate) fn find_binary(name: &str, env_var: &str, candidates: &[PathBuf]) -> Lookup {
    if let Some(path) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        let found = is_executable(&path).then(|| path.clone());
        return Lookup {
            found,
            tried: vec![path],
        };
    }
    let mut tried = Vec::new();
    for candidate in candidates {
        tried.push(candidate.clone());
        if is_executable(candidate) {
            return Lookup {
                found: Some(candidate.clone()),
                tried,
            };
        }
    }
    if let Some(path_var) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path_var) {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                tried.push(candidate.clone());
                return Lookup {
                    found: Some(candidate),
                    tried,
                };
            }
        }
    }
    tried.push(PathBuf::from(format!("{name} on PATH")));
    Lookup { found: None, tried }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
