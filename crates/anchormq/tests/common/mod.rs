//! What the CLI tests share: running the built binary with a clean environment, reading its
//! output, and the long-running commands (`up`, `sub`) as processes. Only this package's tests get
//! `CARGO_BIN_EXE_anchormq`, so this lives here rather than in the test kit.
#![allow(dead_code)] // each test binary uses a different part

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use anchormq_localstack::{Anvil, PaperFixture, await_condition};
use tokio::process::Command;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_anchormq");

/// The binary with no ANCHORMQ_* variables from the caller's environment (but those that say
/// where the tools are), killed when dropped.
pub(crate) fn command(args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("ANCHORMQ_") && key != "ANCHORMQ_ROOT" && key != "ANCHORMQ_ANVIL" {
            command.env_remove(key);
        }
    }
    command
        .args(args)
        .envs(envs.iter().copied())
        .kill_on_drop(true);
    command
}

/// Runs the binary to its end.
pub(crate) async fn anchormq(args: &[&str], envs: &[(&str, &str)]) -> Output {
    tokio::time::timeout(Duration::from_secs(120), command(args, envs).output())
        .await
        .expect("anchormq finished within 120 s")
        .expect("anchormq runs")
}

/// Runs the binary to its end with `input` on its standard input.
pub(crate) async fn anchormq_with_input(
    args: &[&str],
    envs: &[(&str, &str)],
    input: &str,
) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut child = command(args, envs)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("anchormq runs");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(input.as_bytes())
        .await
        .expect("write stdin");
    drop(stdin);
    tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("anchormq finished within 120 s")
        .expect("anchormq output")
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// An error is exactly one line on stderr, starting with `error:`.
pub(crate) fn assert_one_line_error(output: &Output, code: i32, needle: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(code), "stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(needle), "{needle:?} not in {err:?}");
}

/// Reads `lines` until one starts with `prefix` (true), or `limit` passes or the output ends (false).
pub(crate) async fn await_line<R>(
    lines: &mut tokio::io::Lines<R>,
    prefix: &str,
    limit: Duration,
) -> bool
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    let found = tokio::time::timeout(limit, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with(prefix) {
                return true;
            }
        }
        false
    })
    .await;
    matches!(found, Ok(true))
}

/// Anvil with the paper's registry: nodes 1111-1114, hsu0001 = {1111, 1112}, hsu0002 = {1113, 1114}.
pub(crate) async fn paper_anvil() -> (Anvil, PaperFixture) {
    let fixture = PaperFixture::embedded().expect("paper fixture");
    let anvil = Anvil::builder()
        .chain_id(fixture.deployment.chain_id)
        .load_state(fixture.state_path().expect("state file"))
        .spawn()
        .await
        .expect("anvil");
    (anvil, fixture)
}

/// A running `anchormq up`, with the settings it printed.
pub(crate) struct UpPaper {
    pub(crate) child: tokio::process::Child,
    /// The `export` lines, in order.
    pub(crate) exports: Vec<(String, String)>,
    /// The folder holding the paper nodes' key files (`<id>.key`), with `--paper`.
    key_dir: Option<std::path::PathBuf>,
}

impl UpPaper {
    pub(crate) async fn start() -> Self {
        Self::start_with(&["--paper"]).await
    }

    /// Starts `anchormq up ARGS` and reads what it prints up to its example commands.
    pub(crate) async fn start_with(args: &[&str]) -> Self {
        Self::start_with_env(args, &[]).await
    }

    /// Starts `anchormq up ARGS` with `env` (for example an external broker).
    pub(crate) async fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut up = command(&[&["up"], args].concat(), env);
        up.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let mut child = up.spawn().expect("up starts");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut exports = Vec::new();
        let mut key_dir = None;
        let read = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(assignment) = line.strip_prefix("export ") {
                    let assignment = assignment.split_whitespace().next().unwrap_or_default();
                    if let Some((key, value)) = assignment.split_once('=') {
                        exports.push((key.to_owned(), value.to_owned()));
                    }
                }
                if let Some(rest) = line.strip_prefix("anchormq pub --as 1111 --key ") {
                    let path = rest.split_whitespace().next().unwrap_or_default();
                    key_dir = std::path::Path::new(path).parent().map(|p| p.to_owned());
                    return true;
                }
                if line.starts_with("anchormq node register") {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(matches!(read, Ok(true)), "up printed its settings");
        // keep draining stdout so up never blocks on a full pipe
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            exports,
            key_dir,
        }
    }

    pub(crate) fn env(&self) -> Vec<(&str, &str)> {
        self.exports
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    pub(crate) fn key(&self, id: &str) -> String {
        self.key_dir
            .as_ref()
            .expect("up --paper wrote key files")
            .join(format!("{id}.key"))
            .display()
            .to_string()
    }

    pub(crate) async fn verify_agrees(&self) {
        verify_agrees_within(
            &self.env(),
            Duration::from_secs(30),
            Duration::from_millis(200),
        )
        .await
        .expect("the bridge of up mirrors the chain");
    }

    pub(crate) async fn interrupt(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("pid").to_string();
        let killed = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .await
            .expect("kill runs");
        assert!(killed.success());
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("up stops after SIGINT")
            .expect("exit status")
    }
}

/// A running `anchormq sub`, started and subscribed.
pub(crate) struct Sub {
    child: tokio::process::Child,
    /// Everything it writes on stderr after "subscribed to", once it exits.
    stderr: tokio::sync::oneshot::Receiver<String>,
}

impl Sub {
    /// Starts `anchormq sub ARGS` and returns once it says it is subscribed.
    pub(crate) async fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut sub = command(&[&["sub"], args].concat(), env);
        sub.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = sub.spawn().expect("sub starts");
        let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut before = String::new();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("subscribed to") {
                    return true;
                }
                before.push_str(&line);
                before.push('\n');
            }
            false
        })
        .await;
        assert!(matches!(ready, Ok(true)), "sub did not get ready: {before}");
        let (tx, stderr) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut rest = before;
            while let Ok(Some(line)) = lines.next_line().await {
                rest.push_str(&line);
                rest.push('\n');
            }
            let _ = tx.send(rest);
        });
        Self { child, stderr }
    }

    /// Waits for it to exit: exit code, stdout, the rest of stderr.
    pub(crate) async fn finish(self) -> (Option<i32>, String, String) {
        let output = tokio::time::timeout(Duration::from_secs(90), self.child.wait_with_output())
            .await
            .expect("sub exits")
            .expect("sub output");
        let rest = self.stderr.await.unwrap_or_default();
        (output.status.code(), stdout(&output), rest)
    }
}

/// Writes the fixture's key of node `id` as an anchormq key file (mode 0600); returns its path.
pub(crate) fn paper_key_file(fixture: &PaperFixture, id: &str, dir: &Path) -> String {
    let hex_key = fixture.node(id).expect("paper node").private_key.expose();
    let bytes: [u8; 32] = hex::decode(hex_key.trim_start_matches("0x"))
        .expect("hex key")
        .try_into()
        .expect("32-byte key");
    let key = anchormq_core::NodeSecretKey::from_bytes(&bytes).expect("valid key");
    let path = dir.join(format!("{id}.key"));
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut file| file.write_all(key.to_key_file().as_bytes()))
        .expect("write key file");
    path.to_str().expect("utf-8 path").to_owned()
}

/// A fresh key for the bridge, made by `anchormq node keygen`; returns its path and public key.
pub(crate) async fn bridge_key(dir: &Path) -> (String, String) {
    let path = dir.join("bridge.key").to_str().expect("utf-8").to_owned();
    let output = anchormq(&["node", "keygen", "--out", &path], &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let public = anchormq_core::NodeSecretKey::from_key_file(&std::fs::read(&path).expect("read"))
        .expect("bridge key")
        .public_key()
        .to_string();
    (path, public)
}

/// Runs `anchormq verify` every `every` until it finds broker and chain in agreement, for at most
/// `limit`.
pub(crate) async fn verify_agrees_within(
    env: &[(&str, &str)],
    limit: Duration,
    every: Duration,
) -> Result<(), anchormq_localstack::WaitTimeout> {
    await_condition(
        "verify to find broker and chain in agreement",
        limit,
        every,
        || async {
            anchormq(&["verify", "--quiet-ms", "300"], env)
                .await
                .status
                .success()
        },
    )
    .await
}

/// `anchormq pub -l -q 1 --wait 60` as 1111 on hsu/0001/seq, started with its standard input
/// piped for the lines to send, its standard error piped, its output discarded.
pub(crate) fn line_publisher(key_1111: &str, env: &[(&str, &str)]) -> tokio::process::Child {
    let mut publisher = command(
        &[
            "pub",
            "--as",
            "1111",
            "--key",
            key_1111,
            "-t",
            "hsu/0001/seq",
            "-l",
            "-q",
            "1",
            "--wait",
            "60",
        ],
        env,
    );
    publisher
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    publisher.spawn().expect("pub starts")
}
