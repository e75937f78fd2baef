//! `anchormq pub --guard`, checked by running the built binary: bad rule files are refused naming
//! the rule and the field, and against a running `anchormq up --paper` a subscriber receives
//! exactly the readings the guard lets pass.

use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_anchormq");

/// The binary, with no ANCHORMQ_* variables from the caller's environment but those that say
/// where the tools are.
fn command(args: &[&str], envs: &[(&str, &str)]) -> Command {
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

/// Runs the binary with `input` on its standard input.
async fn anchormq(args: &[&str], envs: &[(&str, &str)], input: &str) -> Output {
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

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// An error is exactly one line on stderr, starting with `error:`.
fn assert_one_line_error(output: &Output, code: i32, needle: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(code), "stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(needle), "{needle:?} not in {err:?}");
}

/// A running `anchormq up --paper`, with the settings it printed.
struct UpPaper {
    child: tokio::process::Child,
    /// The `export` lines, in order.
    exports: Vec<(String, String)>,
    /// The folder holding the paper nodes' key files (`<id>.key`).
    key_dir: std::path::PathBuf,
}

impl UpPaper {
    /// Starts `anchormq up --paper` and reads what it prints up to its example commands.
    async fn start() -> Self {
        let mut child = command(&["up", "--paper"], &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("up starts");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut exports = Vec::new();
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
                    return std::path::Path::new(path).parent().map(|p| p.to_owned());
                }
            }
            None
        })
        .await;
        let Ok(Some(key_dir)) = read else {
            panic!("up printed its settings and an example command");
        };
        // keep draining stdout so up never blocks on a full pipe
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            exports,
            key_dir,
        }
    }

    fn env(&self) -> Vec<(&str, &str)> {
        self.exports
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    fn key(&self, id: &str) -> String {
        self.key_dir.join(format!("{id}.key")).display().to_string()
    }

    async fn interrupt(mut self) -> std::process::ExitStatus {
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
struct Sub {
    child: tokio::process::Child,
}

impl Sub {
    /// Starts `anchormq sub ARGS` and returns once it says it is subscribed.
    async fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut sub = command(&["sub"], env);
        sub.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = sub.spawn().expect("sub starts");
        let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("subscribed to") {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(matches!(ready, Ok(true)), "sub did not get ready");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child }
    }

    /// Waits for it to exit: exit code and stdout.
    async fn finish(self) -> (Option<i32>, String) {
        let output = tokio::time::timeout(Duration::from_secs(90), self.child.wait_with_output())
            .await
            .expect("sub exits")
            .expect("sub output");
        (output.status.code(), stdout(&output))
    }
}

/// Rule files are checked before anything connects; each error is one line naming the rule and
/// the field (or the unknown key).
#[tokio::test(flavor = "multi_thread")]
async fn bad_guard_files_name_the_rule_and_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "[[rule]]\ntopic = \"line1/#\"\n\n[[rule]]\ntopic = \"line2/#\"\nmaxx = 3.0\n",
            "rule 2: unknown field `maxx`",
        ),
        (
            "[[rule]]\ntopic = \"line1/+\"\nmin = 70\nmax = 60\n",
            r#"rule 1 ("line1/+"): min 70 is above max 60"#,
        ),
        (
            "[[rule]]\ntopic = \"line1/+\"\nmax_step = -1.5\n",
            r#"rule 1 ("line1/+"): max_step -1.5 is negative"#,
        ),
        (
            "[[rule]]\ntopic = \"line1/+\"\ndeadband = -0.2\n",
            r#"rule 1 ("line1/+"): deadband -0.2 is negative"#,
        ),
        (
            "[[rule]]\ntopic = \"line1/#/x\"\n",
            r#"rule 1: topic "line1/#/x" is not a valid MQTT topic filter"#,
        ),
        ("[[rule]]\nmin = 1.0\n", "rule 1: missing field `topic`"),
        ("[[rules]]\ntopic = \"line1/#\"\n", "unknown field `rules`"),
    ];
    for (i, (text, needle)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("guard{i}.toml"));
        std::fs::write(&path, text).expect("write guard file");
        let path = path.to_str().expect("utf-8 path");
        let args = [
            "pub",
            "--as",
            "1111",
            "--key",
            "/nonexistent/1111.key",
            "-t",
            "line1/temp",
            "-m",
            "21.5",
        ];
        let out = anchormq(&[&args[..], &["--guard", path][..]].concat(), &[], "").await;
        assert_one_line_error(&out, 1, needle);
        assert!(stderr(&out).contains(path), "{}", stderr(&out));
        // the same from the environment
        let out = anchormq(&args, &[("ANCHORMQ_GUARD", path)], "").await;
        assert_one_line_error(&out, 1, needle);
    }
    let help = anchormq(&["pub", "--help"], &[], "").await;
    assert!(
        stdout(&help).contains("3 when the guard refused a reading"),
        "{}",
        stdout(&help)
    );
}

/// `pub -l --guard` against `up --paper`: each line goes through the guard; 1112 receives exactly
/// the readings that pass, `pub` says why the others were not sent, prints a summary and exits 3
/// because readings were refused (0 when they were only suppressed).
#[tokio::test(flavor = "multi_thread")]
async fn pub_lines_through_the_guard_deliver_only_the_readings_that_pass() {
    let up = UpPaper::start().await;
    let env = up.env();
    let dir = tempfile::tempdir().expect("tempdir");
    let guard = dir.path().join("guard.toml");
    std::fs::write(
        &guard,
        "[[rule]]\n\
         topic = \"hsu/0001/temperature\"\n\
         min = -20.0\n\
         max = 60\n\
         max_step = 5.0\n\
         deadband = 0.2\n\
         heartbeat_secs = 3600\n",
    )
    .expect("write guard file");
    let guard = guard.to_str().expect("utf-8 path");

    let reader = Sub::start(
        &[
            "--as",
            "1112",
            "--key",
            &up.key("1112"),
            "-t",
            "hsu/0001/temperature",
            "-C",
            "4",
            "-W",
            "90",
        ],
        &env,
    )
    .await;
    let key = up.key("1111");
    let publish = [
        "pub",
        "--as",
        "1111",
        "--key",
        &key,
        "-t",
        "hsu/0001/temperature",
        "-q",
        "1",
        "--wait",
        "30",
        "-l",
        "--guard",
        guard,
    ];
    let out = anchormq(
        &publish,
        &env,
        "21.3\n21.4\n85.0\n21.8\nwarm\n27.5\n21.9\n23.0\n",
    )
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            "reading 21.4 suppressed: within deadband 0.2 of last sent 21.3",
            "reading 85.0 on hsu/0001/temperature refused: above max 60 (rule for 'hsu/0001/temperature')",
            r#"payload "warm" on hsu/0001/temperature refused: not a number (rule for 'hsu/0001/temperature')"#,
            "reading 27.5 on hsu/0001/temperature refused: more than max_step 5 from previous accepted 21.8 (rule for 'hsu/0001/temperature')",
            "reading 21.9 suppressed: within deadband 0.2 of last sent 21.8",
            "3 sent, 2 suppressed, 3 refused",
            "error: 3 of 8 reading(s) refused by the guard",
        ],
        "{err}"
    );

    // only suppressed readings: exit 0 (a new process remembers nothing of the last one)
    let out = anchormq(&publish, &env, "23.0\n23.1\n").await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        [
            "reading 23.1 suppressed: within deadband 0.2 of last sent 23",
            "1 sent, 1 suppressed, 0 refused",
        ]
    );

    let (code, out) = reader.finish().await;
    assert_eq!(code, Some(0));
    assert_eq!(out, "21.3\n21.8\n23.0\n23.0\n");
    assert_eq!(up.interrupt().await.code(), Some(0));
}
