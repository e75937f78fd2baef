//! A child process whose output goes to a log file, stopped gracefully or killed.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// How long a SIGTERM may take before the process is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// How many trailing log lines an error carries.
const LOG_TAIL_LINES: usize = 40;

/// A running child process writing stdout and stderr to `log`.
#[derive(Debug)]
pub struct LoggedChild {
    child: Child,
    /// Byte offset in the log where this run's output starts (the log is shared by restarts).
    pub log_start: u64,
}

impl LoggedChild {
    /// Spawns `program args` with output appended to `log`. `shown_args` is what the log header
    /// prints, so callers can leave secrets out of it.
    ///
    /// Where util-linux's `setpriv` is installed the child gets SIGTERM when this process dies,
    /// even by SIGKILL (a handle dropped on a normal exit kills it anyway): a killed `anchormq up`
    /// leaves no Anvil running.
    pub fn spawn<I, S>(
        program: &Path,
        args: I,
        shown_args: &str,
        log: &Path,
        configure: impl FnOnce(&mut Command),
    ) -> std::io::Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut file = OpenOptions::new().create(true).append(true).open(log)?;
        writeln!(file, "=== {} {}", program.display(), shown_args)?;
        let log_start = file.metadata()?.len();
        let stderr = file.try_clone()?;
        let mut command = match setpriv() {
            // setpriv would start and then fail to exec: say what is missing, as a direct spawn does
            Some(_) if program.components().count() > 1 && !program.is_file() => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{} does not exist", program.display()),
                ));
            }
            Some(setpriv) => {
                let mut command = Command::new(setpriv);
                command.args(["--pdeathsig", "TERM", "--"]).arg(program);
                command
            }
            None => Command::new(program),
        };
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        configure(&mut command);
        let child = command.spawn()?;
        Ok(Self { child, log_start })
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub async fn stop(&mut self, grace: Duration) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.exited() {
            return Ok(status);
        }
        if let Some(pid) = self.child.id().and_then(|id| i32::try_from(id).ok()) {
            // ESRCH here means it exited in between; wait() below collects it either way.
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status,
            Err(_) => self.kill().await,
        }
    }

    /// SIGKILL and wait for it.
    pub async fn kill(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.exited() {
            return Ok(status);
        }
        self.child.kill().await?;
        self.child.wait().await
    }
}

/// `setpriv`, when installed: it sets the parent-death signal and then execs the program, so the
/// child keeps its pid (signals and waits reach the program itself).
fn setpriv() -> Option<&'static Path> {
    ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
}

/// The last lines of a log file from byte `from`, for error messages.
pub fn log_tail(log: &Path, from: u64) -> String {
    let Ok(bytes) = std::fs::read(log) else {
        return format!("(log {} unreadable)", log.display());
    };
    let start = usize::try_from(from).unwrap_or(0).min(bytes.len());
    let text = String::from_utf8_lossy(&bytes[start..]);
    let lines: Vec<&str> = text.lines().collect();
    let keep = lines.len().saturating_sub(LOG_TAIL_LINES);
    lines[keep..].join("\n")
}

/// The log text from byte `from`.
pub fn log_since(log: &Path, from: u64) -> String {
    let bytes = std::fs::read(log).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(0).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// Set to keep every service's temp dir (logs, configs, state) after the handle is dropped.
pub const KEEP_ENV: &str = "ANCHORMQ_KEEP_LOGS";

/// The file in a work dir naming the process that owns it.
const OWNER_FILE: &str = "owner.pid";

/// A temp dir holding a service's log, config and state files (and perhaps keys), removed when
/// dropped. Dirs of the same prefix left behind by a process that no longer runs (killed with
/// SIGKILL, so it could not clean up) are removed first.
pub fn work_dir(prefix: &str) -> std::io::Result<(tempfile::TempDir, PathBuf)> {
    let keep = std::env::var_os(KEEP_ENV).is_some_and(|v| !v.is_empty() && v != "0");
    if !keep {
        remove_orphans(&std::env::temp_dir(), prefix);
    }
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .disable_cleanup(keep)
        .tempdir()?;
    std::fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string())?;
    let log = dir.path().join("output.log");
    Ok((dir, log))
}

/// Removes `prefix*` dirs in `parent` whose owner process is gone. Dirs without an owner file
/// (someone else's, or kept on purpose) are left alone; errors only mean a dir stays.
fn remove_orphans(parent: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let owned = entry.file_name().to_string_lossy().starts_with(prefix);
        let owner = std::fs::read_to_string(path.join(OWNER_FILE))
            .ok()
            .and_then(|pid| pid.trim().parse::<i32>().ok());
        if let (true, Some(pid)) = (owned, owner)
            && !running(pid)
        {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Whether process `pid` exists (EPERM: it does, owned by someone else).
fn running(pid: i32) -> bool {
    !matches!(
        kill(Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dir whose owner is gone is removed; one whose owner runs, or without an owner, stays.
    #[test]
    fn only_dirs_of_dead_owners_are_removed() {
        let parent = tempfile::tempdir().expect("tempdir");
        let make = |name: &str, owner: Option<String>| {
            let dir = parent.path().join(name);
            std::fs::create_dir(&dir).expect("mkdir");
            if let Some(owner) = owner {
                std::fs::write(dir.join(OWNER_FILE), owner).expect("owner");
            }
            dir
        };
        let mut gone = std::process::Command::new("true")
            .spawn()
            .expect("true runs");
        let dead_pid = gone.id();
        gone.wait().expect("reaped");
        let dead = make("x-dead", Some(dead_pid.to_string()));
        let alive = make("x-alive", Some(std::process::id().to_string()));
        let unowned = make("x-unowned", None);
        let other = make("y-dead", Some(dead_pid.to_string()));
        remove_orphans(parent.path(), "x-");
        assert!(!dead.exists());
        assert!(alive.exists() && unowned.exists() && other.exists());
    }
}
