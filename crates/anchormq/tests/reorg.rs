//! Reorgs under long-running agents, as a user runs them: `anchormq up --paper`, one `pub -l` that
//! never restarts, and two `sub`s that never restart: 1112 (a member of hsu0001 throughout) and
//! 1113, which the chain adds to hsu0001. `anvil_reorg` of depth 1, 2 and 3 takes each addition
//! back, and a last one puts it in again from inside the new blocks. Once the bridge has followed
//! a reorg (`verify` agrees with the chain), both agents use the canonical membership within 2 s:
//! 1112 reads everything sent after that, 1113 nothing.

use std::process::Stdio;
use std::time::Duration;

use alloy::sol_types::SolCall;
use anchormq_chain::bindings::IKeyRegistry;
use anchormq_core::{GroupId, NodeId};
use anchormq_localstack::{DEV_ACCOUNTS, JsonRpcClient};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

mod common;
use common::{UpPaper, anchormq, command, stderr, stdout};

/// How soon after the bridge follows a reorg the agents must act on it.
const FOLLOW_BOUND: Duration = Duration::from_secs(2);

/// A running `anchormq sub --json` on hsu/0001/#: the payloads it printed, as they come.
struct Reader {
    id: &'static str,
    payloads: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    _child: tokio::process::Child,
}

impl Reader {
    async fn start(up: &UpPaper, id: &'static str) -> Self {
        let mut sub = command(
            &[
                "sub",
                "--as",
                id,
                "--key",
                &up.key(id),
                "-t",
                "hsu/0001/#",
                "--json",
            ],
            &up.env(),
        );
        sub.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = sub.spawn().expect("sub starts");
        let mut err = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
        assert!(
            common::await_line(&mut err, "subscribed to", Duration::from_secs(30)).await,
            "sub {id} got ready"
        );
        tokio::spawn(async move { while let Ok(Some(_)) = err.next_line().await {} });
        let (tx, payloads) = mpsc::unbounded_channel();
        let mut out = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                let value: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
                let payload = value["payload"].as_str().unwrap_or_default().to_owned();
                if tx.send(payload).is_err() {
                    return;
                }
            }
        });
        Self {
            id,
            payloads,
            seen: Vec::new(),
            _child: child,
        }
    }

    /// Takes what arrived until `done` says enough, or `limit` passes (false).
    async fn read_until(&mut self, limit: Duration, done: impl Fn(&[String]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while !done(&self.seen) {
            match tokio::time::timeout_at(deadline, self.payloads.recv()).await {
                Ok(Some(payload)) => self.seen.push(payload),
                _ => return false,
            }
        }
        true
    }

    /// Everything printed so far.
    fn drain(&mut self) -> &[String] {
        while let Ok(payload) = self.payloads.try_recv() {
            self.seen.push(payload);
        }
        &self.seen
    }
}

/// A running `anchormq pub -l -q 1` on hsu/0001/stream, fed line by line.
struct Publisher {
    stdin: tokio::process::ChildStdin,
    _child: tokio::process::Child,
}

impl Publisher {
    fn start(up: &UpPaper) -> Self {
        let mut publisher = command(
            &[
                "pub",
                "--as",
                "1111",
                "--key",
                &up.key("1111"),
                "-t",
                "hsu/0001/stream",
                "-l",
                "-q",
                "1",
            ],
            &up.env(),
        );
        publisher
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = publisher.spawn().expect("pub starts");
        Self {
            stdin: child.stdin.take().expect("stdin"),
            _child: child,
        }
    }

    async fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("pub takes a line");
    }

    /// Sends `prefix-0`, `prefix-1`, … until `reader` has read one of them.
    async fn send_until_read(&mut self, reader: &mut Reader, prefix: &str) {
        let tag = format!("{prefix}-");
        for i in 0..300 {
            self.send(&format!("{tag}{i}")).await;
            if reader
                .read_until(Duration::from_millis(100), |seen| {
                    seen.iter().any(|p| p.starts_with(&tag))
                })
                .await
            {
                return;
            }
        }
        panic!("{} read none of {tag}* in 30 s", reader.id);
    }
}

async fn members(up: &UpPaper) -> serde_json::Value {
    let out = anchormq(&["group", "show", "--id", "hsu0001", "--json"], &up.env()).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let group: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    group["members"].clone()
}

fn export<'a>(up: &'a UpPaper, key: &str) -> &'a str {
    up.exports
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("up exports {key}"))
}

/// After the bridge followed the reorg and the bound passed, 20 messages: 1112 reads them all.
async fn after_the_bound(
    publisher: &mut Publisher,
    member: &mut Reader,
    followed: tokio::time::Instant,
    round: &str,
) {
    tokio::time::sleep_until(followed + FOLLOW_BOUND).await;
    for i in 0..20 {
        publisher.send(&format!("after-{round}-{i}")).await;
    }
    let tag = format!("after-{round}-");
    assert!(
        member
            .read_until(Duration::from_secs(30), |seen| {
                seen.iter().filter(|p| p.starts_with(&tag)).count() == 20
            })
            .await,
        "1112 read all 20 messages sent after reorg {round}: {:?}",
        member.drain()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reorgs_do_not_strand_running_agents() {
    let up = UpPaper::start().await;
    up.verify_agrees().await;
    let env = up.env();
    let rpc = JsonRpcClient::new(export(&up, "ANCHORMQ_RPC")).expect("rpc client");
    let mut member = Reader::start(&up, "1112").await;
    let mut joiner = Reader::start(&up, "1113").await;
    let mut publisher = Publisher::start(&up);
    publisher.send_until_read(&mut member, "warm").await;
    assert_eq!(members(&up).await, json!(["1111", "1112"]));

    for depth in 1..=3u64 {
        // 1113 joins on chain and reads the running stream
        let out = anchormq(&["group", "add", "--id", "hsu0001", "--node", "1113"], &env).await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        publisher
            .send_until_read(&mut joiner, &format!("joined-{depth}"))
            .await;
        // bury the addition under depth - 1 blocks, then take the last `depth` blocks back
        for _ in 1..depth {
            rpc.call("evm_mine", json!([])).await.expect("evm_mine");
        }
        rpc.call("anvil_reorg", json!([depth, []]))
            .await
            .expect("anvil_reorg");
        assert_eq!(members(&up).await, json!(["1111", "1112"]), "depth {depth}");
        up.verify_agrees().await;
        let followed = tokio::time::Instant::now();
        after_the_bound(&mut publisher, &mut member, followed, &depth.to_string()).await;
    }

    // a reorg that puts 1113 in: its addition is mined inside the new block
    let call = IKeyRegistry::addMemberCall {
        groupId: (*GroupId::from_label("hsu0001").expect("id").as_bytes()).into(),
        nodeId: (*NodeId::from_label("1113").expect("id").as_bytes()).into(),
    };
    let tx = json!({
        "from": DEV_ACCOUNTS[0].address,
        "to": export(&up, "ANCHORMQ_REGISTRY"),
        "data": format!("0x{}", hex::encode(call.abi_encode())),
    });
    rpc.call("anvil_reorg", json!([1, [[tx, 0]]]))
        .await
        .expect("anvil_reorg with the addition");
    assert_eq!(members(&up).await, json!(["1111", "1112", "1113"]));
    up.verify_agrees().await;
    publisher.send_until_read(&mut joiner, "readded").await;
    publisher
        .send_until_read(&mut member, "readded-member")
        .await;

    // 1113 read nothing sent after it was reorged out, and something in each round it was in
    let seen = joiner.drain().to_vec();
    let leaked: Vec<&String> = seen.iter().filter(|p| p.starts_with("after-")).collect();
    assert!(
        leaked.is_empty(),
        "1113 read after being reorged out: {leaked:?}"
    );
    for depth in 1..=3 {
        let tag = format!("joined-{depth}-");
        assert!(seen.iter().any(|p| p.starts_with(&tag)), "{tag}: {seen:?}");
    }
}
