//! A QoS 1 stream through Mosquitto restarts, as a user runs it: `anchormq up --paper` on an
//! external Mosquitto, `anchormq pub -l -q 1` feeding 500 numbered lines, `anchormq sub -c -i`
//! (a persistent session) reading them, and the broker restarted three times mid-stream.
//! With persistence nothing is lost or doubled; without it (SIGKILL) every loss is reported.

use std::process::Stdio;
use std::time::Duration;

use anchormq_localstack::Mosquitto;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

mod common;
use common::{UpPaper, await_line, command, line_publisher};

const MESSAGES: u64 = 500;
/// Messages between restarts.
const CHUNK: u64 = 125;

/// What the subscriber printed: the payloads of the messages it read (in order) and the number
/// of messages it reported missing.
struct Outcome {
    payloads: Vec<u64>,
    reported_missing: u64,
    stderr: String,
}

impl Outcome {
    /// Takes one JSON line of `sub --json`.
    fn take(&mut self, value: serde_json::Value) {
        if let Some(n) = value["payload"]
            .as_str()
            .and_then(|p| p.parse::<u64>().ok())
        {
            self.payloads.push(n);
        }
        self.reported_missing += value["missing"]["count"].as_u64().unwrap_or(0);
    }
}

async fn stream_through_restarts(persistence: bool) -> Outcome {
    let mut mosquitto = Mosquitto::builder()
        .persistence(persistence)
        .spawn()
        .await
        .expect("mosquitto");
    let url = mosquitto.url();
    let up = UpPaper::start_with_env(&["--paper"], &[("ANCHORMQ_BROKER", &url)]).await;
    up.verify_agrees().await;
    let env = up.env();

    // the subscriber: a persistent session, read line by line as it prints
    let client_id = format!("restarts-sub-{persistence}");
    let mut sub = command(
        &[
            "sub",
            "--as",
            "1112",
            "--key",
            &up.key("1112"),
            "-t",
            "hsu/0001/#",
            "--json",
            "-c",
            "-i",
            &client_id,
        ],
        &env,
    );
    sub.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut sub = sub.spawn().expect("sub starts");
    let mut err_lines = tokio::io::BufReader::new(sub.stderr.take().expect("stderr")).lines();
    assert!(
        await_line(&mut err_lines, "subscribed to", Duration::from_secs(30)).await,
        "sub got ready"
    );
    // everything it says, kept for the failure message; each line also goes to `err_rx`
    let (err_tx, mut err_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stderr_task = tokio::spawn(async move {
        let mut all = String::new();
        while let Ok(Some(line)) = err_lines.next_line().await {
            all.push_str(&line);
            all.push('\n');
            let _ = err_tx.send(line);
        }
        all
    });
    let (line_tx, mut line_rx) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    let mut out_lines = tokio::io::BufReader::new(sub.stdout.take().expect("stdout")).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = out_lines.next_line().await {
            if let Ok(value) = serde_json::from_str(&line)
                && line_tx.send(value).is_err()
            {
                return;
            }
        }
    });

    // the publisher: one line per message, the broker restarted three times on the way
    let mut publisher = line_publisher(&up.key("1111"), &env);
    let mut stdin = publisher.stdin.take().expect("stdin");
    let mut outcome = Outcome {
        payloads: Vec::new(),
        reported_missing: 0,
        stderr: String::new(),
    };
    for n in 1..=MESSAGES {
        stdin
            .write_all(format!("{n}\n").as_bytes())
            .await
            .expect("write");
        if n % CHUNK == 0 && n < MESSAGES {
            stdin.flush().await.expect("flush");
            // the broker goes away mid-chunk: once ten of this chunk's messages got through
            let flowing = n - CHUNK + 10;
            while outcome.payloads.last().is_none_or(|last| *last < flowing) {
                match tokio::time::timeout(Duration::from_secs(30), line_rx.recv()).await {
                    Ok(Some(value)) => outcome.take(value),
                    _ => panic!(
                        "message {flowing} did not arrive; got {:?}",
                        outcome.payloads.last()
                    ),
                }
            }
            if persistence {
                mosquitto
                    .restart()
                    .await
                    .expect("restart (SIGTERM, state saved)");
            } else {
                mosquitto.kill().await.expect("SIGKILL");
                mosquitto.start().await.expect("start empty");
                // Messages published before the subscriber is subscribed again are lost, and a
                // loss is revealed by a later message: the next chunk waits for the
                // subscriber's word that it receives again.
                let restored = tokio::time::timeout(Duration::from_secs(30), async {
                    while let Some(line) = err_rx.recv().await {
                        if line.contains("subscription(s) restored") {
                            return true;
                        }
                    }
                    false
                })
                .await;
                assert!(
                    matches!(restored, Ok(true)),
                    "sub said it receives again after the restart"
                );
            }
        }
    }
    drop(stdin);
    let published = tokio::time::timeout(Duration::from_secs(120), publisher.wait_with_output())
        .await
        .expect("pub finishes")
        .expect("pub output");
    assert!(
        published.status.success(),
        "pub failed: {}",
        String::from_utf8_lossy(&published.stderr)
    );
    // read until the last message arrives (or nothing more comes)
    while outcome.payloads.last() != Some(&MESSAGES) {
        match tokio::time::timeout(Duration::from_secs(30), line_rx.recv()).await {
            Ok(Some(value)) => outcome.take(value),
            _ => break,
        }
    }
    let pid = sub.id().expect("pid").to_string();
    let _ = tokio::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await;
    let _ = tokio::time::timeout(Duration::from_secs(30), sub.wait()).await;
    while let Ok(value) = line_rx.try_recv() {
        outcome.take(value);
    }
    outcome.stderr = tokio::time::timeout(Duration::from_secs(10), stderr_task)
        .await
        .map(Result::unwrap_or_default)
        .unwrap_or_default();
    let _ = up.interrupt().await;
    outcome
}

#[tokio::test(flavor = "multi_thread")]
async fn with_persistence_three_broker_restarts_lose_and_double_nothing() {
    let outcome = stream_through_restarts(true).await;
    let expected: Vec<u64> = (1..=MESSAGES).collect();
    assert_eq!(
        outcome.payloads, expected,
        "every message once, in order; sub said:\n{}",
        outcome.stderr
    );
    assert_eq!(outcome.reported_missing, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_persistence_every_lost_message_is_reported() {
    let outcome = stream_through_restarts(false).await;
    let mut seen = outcome.payloads.clone();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), outcome.payloads.len(), "no duplicate");
    assert_eq!(
        outcome.payloads.last(),
        Some(&MESSAGES),
        "the stream ends; sub said:\n{}",
        outcome.stderr
    );
    let lost = MESSAGES - outcome.payloads.len() as u64;
    assert_eq!(
        outcome.reported_missing, lost,
        "{lost} lost, {} reported; sub said:\n{}",
        outcome.reported_missing, outcome.stderr
    );
    if lost > 0 {
        assert!(
            outcome.stderr.contains("missing: seq"),
            "{}",
            outcome.stderr
        );
    }
    eprintln!("lost {lost} of {MESSAGES} with SIGKILL and no persistence, all reported");
}
