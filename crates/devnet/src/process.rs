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
        let mut command = Command::new(program);
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

/// A temp dir holding a service's log, config and state files.
pub fn work_dir(prefix: &str) -> std::io::Result<(tempfile::TempDir, PathBuf)> {
    let keep = std::env::var_os(KEEP_ENV).is_some_and(|v| !v.is_empty() && v != "0");
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .disable_cleanup(keep)
        .tempdir()?;
    let log = dir.path().join("output.log");
    Ok((dir, log))
}
