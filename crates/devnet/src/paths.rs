//! Finding the external programs a local network runs (Anvil; Mosquitto in tests).

use std::path::{Path, PathBuf};

/// Where a program was looked for, for error messages.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The program, if found.
    pub found: Option<PathBuf>,
    /// Every place tried, in order.
    pub tried: Vec<PathBuf>,
}

impl Lookup {
    /// The places tried, comma separated.
    pub fn describe(&self) -> String {
        let tried: Vec<String> = self.tried.iter().map(|p| p.display().to_string()).collect();
        tried.join(", ")
    }
}

/// Finds `name`: the `env_var` override if set (used as is, even when missing, so a wrong
/// override is reported rather than silently ignored), then `PATH`, then each of `candidates`.
pub fn find_binary(name: &str, env_var: &str, candidates: &[PathBuf]) -> Lookup {
    if let Some(path) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        let found = is_executable(&path).then(|| path.clone());
        return Lookup {
            found,
            tried: vec![path],
        };
    }
    let mut tried = Vec::new();
    if let Some(path_var) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path_var) {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return Lookup {
                    found: Some(candidate),
                    tried,
                };
            }
        }
    }
    tried.push(PathBuf::from(format!("{name} on PATH")));
    for candidate in candidates {
        tried.push(candidate.clone());
        if is_executable(candidate) {
            return Lookup {
                found: Some(candidate.clone()),
                tried,
            };
        }
    }
    Lookup { found: None, tried }
}

/// `.toolchain/bin/<name>` in the current directory and each of its parents, then beside the
/// running executable and each of its parents: where `scripts/bootstrap.sh` of a checkout puts
/// Foundry, found whether anchormq runs from the checkout or from its `target/` folder.
pub fn toolchain_candidates(name: &str) -> Vec<PathBuf> {
    let mut starts = Vec::new();
    if let Ok(dir) = std::env::current_dir() {
        starts.push(dir);
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_owned))
    {
        starts.push(dir);
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    for start in starts {
        for dir in start.ancestors() {
            let candidate = dir.join(".toolchain/bin").join(name);
            if !candidates.contains(&candidate) {
                candidates.push(candidate);
            }
        }
    }
    candidates
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
