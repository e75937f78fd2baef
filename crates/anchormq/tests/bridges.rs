//! Bridges in parallel, as an operator runs them: two `anchormq bridge` processes on one Mosquitto,
//! with the same bridge key (the one readers trust) but their own checkpoint files and MQTT client
//! IDs, mirroring the paper's registry on Anvil. Bridge A runs throughout; bridge B is killed with
//! SIGKILL four times during a burst of 2,000 registry transactions (createGroup and addMember, 50
//! to a block, a block every quarter second) and restarted each time on its checkpoint: once while
//! it mirrors a block, once while it compares the broker's notes with its own after connecting
//! (its checkpoint behind A: stale notes against A's later ones), once right after it
//! stored a checkpoint (or while catching up), and once more while it mirrors.
//!
//! Through it all `anchormq pub -l -q 1` (as 1111) sends 300 numbered messages on hsu0001, paced
//! across the burst, and `anchormq sub --json` (as 1112) reads them.
//!
//! Afterwards:
//! - `anchormq verify` is clean (within 120 s): for every node and group the chain has (rebuilt
//!   from the logs), the broker retains a note signed with the bridge key that says what the chain
//!   says (not missing, not stale), and no retained note is forged or extra;
//! - an independent MQTT observer finds every burst group's note with the epoch and members the
//!   burst gave it, and every note it saw verifies;
//! - both checkpoints are past the burst and hold the same state, with every group: B's durable
//!   memory lost nothing to SIGKILL (A's notes on the broker would hide a B that did), and its
//!   checkpoint never went back;
//! - once both have caught up, no note is published for three seconds (no endless republishing);
//! - the subscriber printed 1..=300, each once, in order, and reported nothing missing or unreadable;
//! - bridge A never exited (and stops cleanly when asked), and each B was alive when killed;
//! - the bridges did not fight over the notes on the way: a plain MQTT client subscribed to the
//!   note topics from the start saw no note deleted (the chain only adds, so an empty retained
//!   message on a note topic removes a note readers need), and no more than twice the
//!   publications that mirroring and reconnecting need.

use std::collections::{BTreeSet, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::sol_types::SolCall;
use anchormq_bridge::Checkpoint;
use anchormq_chain::bindings::IKeyRegistry;
use anchormq_core::{GroupId, NodeId, Topics};
use anchormq_localstack::{
    DEV_ACCOUNTS, JsonRpcClient, Mosquitto, Observer, await_condition, parse_quantity, registry_of,
};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

mod common;
use common::{
    anchormq, bridge_key, command, line_publisher, paper_anvil, paper_key_file, stderr, stdout,
    verify_agrees_within,
};

/// Registry transactions in the burst.
const TRANSACTIONS: usize = 2_000;
/// Transactions mined in each block of the burst.
const PER_BLOCK: usize = 50;
/// From the burst's second block on, every `ADD_EVERY`th transaction of a block adds a member to a
/// burst group created in an earlier block (so notes change, and a lagging bridge holds stale ones).
const ADD_EVERY: usize = 5;
/// Nodes added to burst groups, in this order.
const JOINERS: [&str; 2] = ["1113", "1114"];
/// Time between the burst's blocks.
const BLOCK_PACE: Duration = Duration::from_millis(250);
/// Numbered messages sent on hsu0001 during the burst.
const MESSAGES: u64 = 300;
/// How long no note may be published once both bridges have caught up.
const QUIET: Duration = Duration::from_secs(3);

/// One transaction of the burst.
enum Tx {
    /// createGroup of the burst group with this index, with no topic filter.
    Create(usize),
    /// addMember of a node to the burst group with this index.
    Add(usize, &'static str),
}

/// The burst, block by block, and what each of its groups must look like afterwards.
struct Plan {
    blocks: Vec<Vec<Tx>>,
    /// Label and expected members (in the order added) of each burst group.
    groups: Vec<(String, Vec<&'static str>)>,
}

impl Plan {
    fn new() -> Self {
        let mut groups: Vec<(String, Vec<&'static str>)> = Vec::new();
        let mut blocks = Vec::new();
        // groups that may get their next joiner: (group, joiner index); `later` ones from the next
        // block on, so that an addition never lands in the block that created the group
        let mut ready: VecDeque<(usize, usize)> = VecDeque::new();
        let mut later: Vec<(usize, usize)> = Vec::new();
        for _ in 0..TRANSACTIONS.div_ceil(PER_BLOCK) {
            ready.extend(later.drain(..));
            let mut block = Vec::new();
            for k in 0..PER_BLOCK {
                let add = if k % ADD_EVERY == ADD_EVERY - 1 {
                    ready.pop_front()
                } else {
                    None
                };
                match add {
                    Some((group, joiner)) => {
                        block.push(Tx::Add(group, JOINERS[joiner]));
                        groups[group].1.push(JOINERS[joiner]);
                        if joiner + 1 < JOINERS.len() {
                            later.push((group, joiner + 1));
                        }
                    }
                    None => {
                        let group = groups.len();
                        groups.push((format!("burst{group:04}"), Vec::new()));
                        block.push(Tx::Create(group));
                        later.push((group, 0));
                    }
                }
            }
            blocks.push(block);
        }
        Self { blocks, groups }
    }

    fn transactions(&self) -> usize {
        self.blocks.iter().map(Vec::len).sum()
    }

    fn additions(&self) -> usize {
        self.groups.iter().map(|(_, members)| members.len()).sum()
    }

    fn calldata(&self, tx: &Tx) -> String {
        let group = |index: usize| -> alloy::primitives::FixedBytes<32> {
            let id = GroupId::from_label(&self.groups[index].0).expect("group label");
            (*id.as_bytes()).into()
        };
        let data = match tx {
            Tx::Create(index) => IKeyRegistry::createGroupCall {
                groupId: group(*index),
                topicFilter: String::new(),
            }
            .abi_encode(),
            Tx::Add(index, node) => IKeyRegistry::addMemberCall {
                groupId: group(*index),
                nodeId: (*NodeId::from_label(node).expect("node label").as_bytes()).into(),
            }
            .abi_encode(),
        };
        format!("0x{}", hex::encode(data))
    }
}

/// A running `anchormq bridge` and its stderr lines as they come; every line also goes to the log
/// given to [`Bridge::spawn`] (shared by the incarnations of one bridge, tagged with their names).
struct Bridge {
    name: String,
    child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Bridge {
    fn spawn(
        name: String,
        args: &[&str],
        env: &[(&str, &str)],
        log: &Arc<Mutex<Vec<String>>>,
    ) -> Self {
        let mut bridge = command(args, env);
        bridge.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = bridge.spawn().expect("bridge starts");
        let mut err = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
        let (tx, lines) = mpsc::unbounded_channel();
        let (log, tag) = (log.clone(), name.clone());
        tokio::spawn(async move {
            while let Ok(Some(line)) = err.next_line().await {
                log.lock().expect("log").push(format!("[{tag}] {line}"));
                let _ = tx.send(line);
            }
        });
        Self { name, child, lines }
    }

    /// The next line it says that contains `needle` (and satisfies `accept`), within `limit`.
    async fn line_with(
        &mut self,
        needle: &str,
        limit: Duration,
        accept: impl Fn(&str) -> bool,
    ) -> Option<String> {
        tokio::time::timeout(limit, async {
            while let Some(line) = self.lines.recv().await {
                if line.contains(needle) && accept(&line) {
                    return Some(line);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }

    fn assert_running(&mut self) {
        let status = self.child.try_wait().expect("try_wait");
        assert!(
            status.is_none(),
            "bridge {} exited on its own: {status:?}",
            self.name
        );
    }

    /// SIGKILL (tokio's `start_kill`), and the exit status that proves it.
    async fn sigkill(mut self) {
        self.assert_running();
        self.child.start_kill().expect("SIGKILL");
        let status = self.child.wait().await.expect("exit status");
        assert_eq!(status.signal(), Some(9), "{} ended by SIGKILL", self.name);
    }

    /// SIGTERM, then its exit status.
    async fn terminate(mut self) -> std::process::ExitStatus {
        self.assert_running();
        let pid = self.child.id().expect("pid").to_string();
        let sent = tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill runs");
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the bridge stops after SIGTERM")
            .expect("exit status")
    }
}

/// `key=<number>` in a log line.
fn field(line: &str, key: &str) -> Option<u64> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    line[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

async fn block_number(rpc: &JsonRpcClient) -> u64 {
    let value = rpc
        .call("eth_blockNumber", json!([]))
        .await
        .expect("eth_blockNumber");
    parse_quantity(&value).expect("a block number")
}

/// Waits until the chain has mined block `target`.
async fn await_block(rpc: &JsonRpcClient, target: u64) {
    await_condition(
        &format!("block {target}"),
        Duration::from_secs(120),
        Duration::from_millis(10),
        || async move { block_number(rpc).await >= target },
    )
    .await
    .expect("the burst goes on");
}

/// Sends the burst from dev account 0 (the paper registry's admin and the nodes' owner) with
/// explicit nonces and automining off, mining a block every [`BLOCK_PACE`], and feeds the
/// publisher its share of the numbered messages with each block. Returns the last block mined.
async fn run_burst(
    rpc: JsonRpcClient,
    registry: String,
    plan: Arc<Plan>,
    mut publisher: tokio::process::ChildStdin,
) -> u64 {
    let sender = DEV_ACCOUNTS[0].address;
    rpc.call("evm_setAutomine", json!([false]))
        .await
        .expect("automine off");
    let pending = rpc
        .call("eth_getTransactionCount", json!([sender, "pending"]))
        .await
        .expect("nonce");
    let mut nonce = parse_quantity(&pending).expect("nonce is a quantity");
    let blocks = plan.blocks.len() as u64;
    for (b, block) in plan.blocks.iter().enumerate() {
        let paced = tokio::time::Instant::now() + BLOCK_PACE;
        for tx in block {
            let call = json!([{
                "from": sender,
                "to": registry,
                "data": plan.calldata(tx),
                "nonce": format!("{nonce:#x}"),
                "gas": "0x493e0", // 300,000: no estimate against a pending state
            }]);
            rpc.call("eth_sendTransaction", call)
                .await
                .expect("eth_sendTransaction");
            nonce += 1;
        }
        let b = b as u64;
        for n in b * MESSAGES / blocks + 1..=(b + 1) * MESSAGES / blocks {
            publisher
                .write_all(format!("{n}\n").as_bytes())
                .await
                .expect("pub takes a line");
        }
        publisher.flush().await.expect("flush");
        rpc.call("evm_mine", json!([])).await.expect("evm_mine");
        tokio::time::sleep_until(paced).await;
    }
    rpc.call("evm_setAutomine", json!([true]))
        .await
        .expect("automine on");
    let mined = rpc
        .call("eth_getTransactionCount", json!([sender, "latest"]))
        .await
        .expect("nonce");
    assert_eq!(
        parse_quantity(&mined),
        Some(nonce),
        "every transaction of the burst was mined"
    );
    // end of input: pub sends what it has and exits
    drop(publisher);
    block_number(&rpc).await
}

/// A bridge's checkpoint (where it resumes, the state it holds), once it has stored one.
fn checkpoint(path: &Path, chain_id: u64, registry: &str) -> Option<Checkpoint> {
    Checkpoint::load(path, chain_id, registry).expect("checkpoint readable")
}

#[tokio::test(flavor = "multi_thread")]
async fn two_bridges_one_killed_repeatedly_during_a_burst_lose_and_double_nothing() {
    let started = Instant::now();
    let plan = Arc::new(Plan::new());
    assert_eq!(plan.transactions(), TRANSACTIONS);

    let (anvil, fixture) = paper_anvil().await;
    let mosquitto = Mosquitto::builder().spawn().await.expect("mosquitto");
    let dir = tempfile::tempdir().expect("tempdir");
    let deployment = fixture.deployment;
    let registry_hex = format!("{:#x}", deployment.address);
    let url = mosquitto.url();

    // one bridge key, made by `anchormq node keygen`
    let (key_path, bridge_public_text) = bridge_key(dir.path()).await;
    let bridge_public = anchormq_core::NodePublicKey::from_compressed(
        &hex::decode(bridge_public_text.trim_start_matches("0x")).expect("hex public key"),
    )
    .expect("bridge public key");
    let owned_env = [
        ("ANCHORMQ_RPC", anvil.http_url()),
        ("ANCHORMQ_REGISTRY", deployment.address.to_string()),
        ("ANCHORMQ_CHAIN_ID", deployment.chain_id.to_string()),
        ("ANCHORMQ_DEPLOY_BLOCK", deployment.deploy_block.to_string()),
        ("ANCHORMQ_BROKER", url.clone()),
        ("ANCHORMQ_BRIDGE_KEY", bridge_public_text),
    ];
    let env: Vec<(&str, &str)> = owned_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let rpc = JsonRpcClient::new(&anvil.http_url()).expect("rpc client");

    // plain MQTT clients on the note topics from the start: the kit's observer keeps and verifies
    // the latest notes, the tally counts every publication and deletion
    let observer = Observer::start(&url, registry_of(&deployment), bridge_public);
    let tally = Tally::start(&url, Topics::new(&registry_of(&deployment)).prefix()).await;

    let checkpoint_a: PathBuf = dir.path().join("a.checkpoint.json");
    let checkpoint_b: PathBuf = dir.path().join("b.checkpoint.json");
    let bridge_args = |checkpoint: &Path, client_id: &'static str| -> Vec<String> {
        [
            "bridge",
            "--key",
            &key_path,
            "--checkpoint",
            checkpoint.to_str().expect("utf-8"),
            "--client-id",
            client_id,
            "--poll-interval-ms",
            "100",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    };
    let args_a = bridge_args(&checkpoint_a, "anchormq-bridge-a");
    let args_b = bridge_args(&checkpoint_b, "anchormq-bridge-b");
    let args_a: Vec<&str> = args_a.iter().map(String::as_str).collect();
    let args_b: Vec<&str> = args_b.iter().map(String::as_str).collect();
    let log_a = Arc::new(Mutex::new(Vec::new()));
    let log_b = Arc::new(Mutex::new(Vec::new()));
    let mut bridge_a = Bridge::spawn("A".into(), &args_a, &env, &log_a);
    let mut incarnation = 1;
    let mut bridge_b = Bridge::spawn(format!("B{incarnation}"), &args_b, &env, &log_b);
    let mut from_blocks = Vec::new();
    let starting = bridge_b
        .line_with("bridge starting", Duration::from_secs(30), |_| true)
        .await
        .expect("B starts");
    from_blocks.push(field(&starting, "from_block").expect("from_block"));

    let verify_clean =
        |limit: Duration| verify_agrees_within(&env, limit, Duration::from_millis(500));
    verify_clean(Duration::from_secs(60))
        .await
        .expect("the two bridges mirror the paper's registry");

    // the application: 1112 reads hsu/0001/#, 1111 publishes numbered lines
    let key_1111 = paper_key_file(&fixture, "1111", dir.path());
    let key_1112 = paper_key_file(&fixture, "1112", dir.path());
    let mut sub = command(
        &[
            "sub",
            "--as",
            "1112",
            "--key",
            &key_1112,
            "-t",
            "hsu/0001/#",
            "--json",
        ],
        &env,
    );
    sub.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut sub = sub.spawn().expect("sub starts");
    let mut sub_err = tokio::io::BufReader::new(sub.stderr.take().expect("stderr")).lines();
    assert!(
        common::await_line(&mut sub_err, "subscribed to", Duration::from_secs(30)).await,
        "sub got ready"
    );
    let sub_stderr = tokio::spawn(async move {
        let mut all = String::new();
        while let Ok(Some(line)) = sub_err.next_line().await {
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let (payload_tx, mut payloads) = mpsc::unbounded_channel::<serde_json::Value>();
    let mut sub_out = tokio::io::BufReader::new(sub.stdout.take().expect("stdout")).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = sub_out.next_line().await {
            let value = serde_json::from_str(&line).unwrap_or_else(|_| json!({ "line": line }));
            if payload_tx.send(value).is_err() {
                return;
            }
        }
    });
    let mut publisher = line_publisher(&key_1111, &env);
    let publisher_stdin = publisher.stdin.take().expect("stdin");

    // the burst, in its own task; B is killed on the chain's progress meanwhile
    let first_block = block_number(&rpc).await + 1;
    let last_planned = first_block + plan.blocks.len() as u64 - 1;
    let burst = tokio::spawn(run_burst(
        JsonRpcClient::new(&anvil.http_url()).expect("rpc client"),
        deployment.address.to_string(),
        plan.clone(),
        publisher_stdin,
    ));
    // (head when killed, how)
    let mut kills: Vec<(u64, &str)> = Vec::new();
    for kill in 0..4 {
        let how = match kill {
            0 => {
                await_block(&rpc, first_block + 6).await;
                "while mirroring a block"
            }
            1 => {
                bridge_b
                    .line_with("connected to broker", Duration::from_secs(30), |_| true)
                    .await
                    .expect("the restarted B connects to the broker");
                "while checking the broker's notes after connecting"
            }
            2 => {
                await_block(&rpc, first_block + 20).await;
                // right after it stored a checkpoint, if it says so within a second
                match bridge_b
                    .line_with("mirrored", Duration::from_secs(1), |_| true)
                    .await
                {
                    Some(_) => "right after storing a checkpoint",
                    None => "while catching up",
                }
            }
            _ => {
                await_block(&rpc, first_block + 30).await;
                // an offset, not a wait: half of B's 100 ms poll into the new block
                tokio::time::sleep(Duration::from_millis(50)).await;
                "while mirroring a block"
            }
        };
        bridge_a.assert_running();
        let head = block_number(&rpc).await;
        bridge_b.sigkill().await;
        kills.push((head, how));
        incarnation += 1;
        bridge_b = Bridge::spawn(format!("B{incarnation}"), &args_b, &env, &log_b);
        let starting = bridge_b
            .line_with("bridge starting", Duration::from_secs(30), |_| true)
            .await
            .expect("B restarts on its checkpoint");
        from_blocks.push(field(&starting, "from_block").expect("from_block"));
    }
    let last_block = tokio::time::timeout(Duration::from_secs(120), burst)
        .await
        .expect("the burst ends")
        .expect("the burst task");
    assert_eq!(
        last_block, last_planned,
        "one block per {PER_BLOCK} transactions"
    );
    let burst_time = started.elapsed();
    for (head, how) in &kills {
        assert!(
            *head < last_block,
            "B killed ({how}) at block {head}, in the burst (blocks {first_block}..={last_block})"
        );
    }
    assert!(
        from_blocks.windows(2).all(|w| w[0] <= w[1]),
        "B's checkpoint never goes back: resumed at blocks {from_blocks:?}"
    );
    assert!(
        from_blocks.last() > from_blocks.first(),
        "B's checkpoint moved during the burst: resumed at blocks {from_blocks:?}"
    );

    let published = tokio::time::timeout(Duration::from_secs(120), publisher.wait_with_output())
        .await
        .expect("pub finishes")
        .expect("pub output");
    assert!(
        published.status.success(),
        "pub failed: {}",
        stderr(&published)
    );

    // the broker's notes: `verify` against the chain (every node and group the chain's logs say
    // has a valid note saying the same, none missing, stale, forged or extra), and the observer's
    // against what the burst did to each group
    verify_clean(Duration::from_secs(120))
        .await
        .expect("the notes agree with the chain after the burst");
    let converged = started.elapsed() - burst_time;
    let verified = anchormq(&["verify", "--quiet-ms", "300"], &env).await;
    let groups = plan.groups.len() + 2;
    assert_eq!(verified.status.code(), Some(0), "{}", stdout(&verified));
    assert!(
        stdout(&verified).contains(&format!(
            "broker and chain agree: 4 node notes, {groups} group notes"
        )),
        "{}",
        stdout(&verified)
    );
    let book = observer.book();
    let mut wrong = Vec::new();
    for (label, members) in &plan.groups {
        let id = GroupId::from_label(label).expect("label");
        let expected: BTreeSet<NodeId> = members
            .iter()
            .map(|m| NodeId::from_label(m).expect("node"))
            .collect();
        match book.group(&id) {
            None => wrong.push(format!("{label}: no note")),
            Some(note) => {
                let got: BTreeSet<NodeId> = note.members().iter().map(|m| m.node).collect();
                if note.epoch() != members.len() as u64 || got != expected {
                    wrong.push(format!(
                        "{label}: epoch {} members {got:?}, expected epoch {} members {expected:?}",
                        note.epoch(),
                        members.len()
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} burst groups lack their note or hold a wrong one, e.g. {:?}",
        wrong.len(),
        plan.groups.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert_eq!(book.groups().count(), groups, "groups on the broker");
    assert_eq!(book.nodes().count(), 4, "nodes on the broker");

    // both checkpoints past the burst, with the same state: B's own memory is complete
    await_condition(
        "both checkpoints past the burst",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            let done = [&checkpoint_a, &checkpoint_b].iter().all(|path| {
                checkpoint(path, deployment.chain_id, &registry_hex)
                    .is_some_and(|c| c.stream.next_block > last_block)
            });
            async move { done }
        },
    )
    .await
    .expect("both bridges mirror the whole burst");
    let state = |path: &Path| {
        checkpoint(path, deployment.chain_id, &registry_hex)
            .expect("checkpoint")
            .state()
            .expect("checkpoint state")
    };
    let (state_a, state_b) = (state(&checkpoint_a), state(&checkpoint_b));
    assert_eq!(
        state_a.groups.len(),
        groups,
        "A's checkpoint holds every group"
    );
    assert_eq!(
        state_b.groups.len(),
        groups,
        "B's checkpoint holds every group"
    );
    assert!(
        state_a == state_b,
        "A's and B's checkpoints hold the same state"
    );

    // caught up: no bridge publishes anything any more
    let before = tally.published();
    tokio::time::sleep(QUIET).await;
    let after = tally.published();
    assert_eq!(
        after - before,
        0,
        "notes published in the {QUIET:?} after both bridges caught up: the bridges do not settle"
    );

    // the application read every message once, in order
    let mut seen: Vec<serde_json::Value> = Vec::new();
    let last = MESSAGES.to_string();
    let all_read = tokio::time::timeout(Duration::from_secs(60), async {
        while seen.last().and_then(|v| v["payload"].as_str()) != Some(last.as_str()) {
            match payloads.recv().await {
                Some(value) => seen.push(value),
                None => return false,
            }
        }
        true
    })
    .await
    .unwrap_or(false);
    let pid = sub.id().expect("pid").to_string();
    let _ = tokio::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await;
    let sub_status = tokio::time::timeout(Duration::from_secs(30), sub.wait())
        .await
        .expect("sub stops after SIGINT")
        .expect("sub status");
    while let Some(value) = payloads.recv().await {
        seen.push(value);
    }
    let sub_said = sub_stderr.await.unwrap_or_default();
    let numbers: Vec<u64> = seen
        .iter()
        .filter_map(|v| v["payload"].as_str().and_then(|p| p.parse().ok()))
        .collect();
    let expected: Vec<u64> = (1..=MESSAGES).collect();
    if numbers != expected {
        let mut sorted = numbers.clone();
        sorted.sort_unstable();
        let doubled: Vec<u64> = sorted
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[0])
            .collect();
        let missing: Vec<u64> = expected
            .iter()
            .filter(|n| !numbers.contains(n))
            .copied()
            .collect();
        panic!(
            "the subscriber printed {} messages, not 1..={MESSAGES} once each in order (all read: \
             {all_read}); doubled: {doubled:?}; missing: {missing:?}; sub said:\n{sub_said}",
            numbers.len()
        );
    }
    assert_eq!(
        seen.len(),
        numbers.len(),
        "only numbered messages: {seen:?}"
    );
    assert!(
        seen.iter().all(|v| v.get("missing").is_none()),
        "sub reported missing messages: {sub_said}"
    );
    assert!(
        !sub_said.contains("cannot read"),
        "sub could not read: {sub_said}"
    );
    assert!(sub_status.success(), "sub exit: {sub_status:?}; {sub_said}");

    // A ran throughout and stops cleanly; B's last incarnation too
    let stopped_a = bridge_a.terminate().await;
    let stopped_b = bridge_b.terminate().await;
    let log_a = log_a.lock().expect("log").clone();
    let log_b = log_b.lock().expect("log").clone();
    assert!(
        stopped_a.success(),
        "A stopped with {stopped_a:?}:\n{}",
        log_a.join("\n")
    );
    assert!(
        stopped_b.success(),
        "B stopped with {stopped_b:?}:\n{}",
        log_b.join("\n")
    );

    // what the bridges said, and what a plain MQTT client saw
    let count = |log: &[String], needle: &str| log.iter().filter(|l| l.contains(needle)).count();
    for (name, log) in [("A", &log_a), ("B", &log_b)] {
        eprintln!(
            "bridge {name}: {} lines, {} WARN, {} ERROR, {} broker checks, {} repairs \
             ({} of them clearing a topic)",
            log.len(),
            count(log, " WARN "),
            count(log, "ERROR"),
            count(log, "broker checked"),
            count(log, "repairing retained note"),
            count(log, "clear=true"),
        );
        for line in log
            .iter()
            .filter(|l| l.contains(" WARN ") || l.contains("ERROR"))
            .take(10)
        {
            eprintln!("  {line}");
        }
    }
    // What mirroring needs: each bridge publishes the note of each subject an event changed
    // (at most one per event), and a connection republishes at most all its notes.
    let subjects = (groups + 4) as u64;
    let connections = 1 + incarnation as u64;
    let needed = 2 * (TRANSACTIONS as u64 + subjects) + connections * subjects;
    let cleared = tally.cleared();
    eprintln!(
        "burst: {TRANSACTIONS} transactions ({} createGroup, {} addMember) in blocks \
         {first_block}..={last_block}, sent in {burst_time:?}; B killed at blocks {kills:?}, \
         resumed at blocks {from_blocks:?}; verify clean {converged:?} after the burst; {after} \
         notes published (mirroring needs at most {needed}), {} deleted; {MESSAGES} messages \
         read once each; total {:?}",
        plan.groups.len(),
        plan.additions(),
        cleared.len(),
        started.elapsed()
    );

    // The bridges must not fight: the chain only added nodes and groups, so no note may ever be
    // deleted from the broker (a reader arriving then finds no note), and republishing beyond
    // twice what mirroring needs is the bridges undoing each other's work.
    let clearing = |log: &[String]| -> Vec<String> {
        log.iter()
            .filter(|l| l.contains("clear=true"))
            .take(3)
            .cloned()
            .collect()
    };
    assert!(
        cleared.is_empty(),
        "{} note(s) of nodes and groups the chain has were deleted from the broker (an empty \
         retained message on their topic), e.g. {:?}; A said {:?}; B said {:?}",
        cleared.len(),
        &cleared[..cleared.len().min(3)],
        clearing(&log_a),
        clearing(&log_b)
    );
    assert!(
        after <= 2 * needed,
        "the bridges published {after} notes, more than twice the {needed} that mirroring and \
         reconnecting need: fighting over notes ({} repairs by A, {} by B)",
        count(&log_a, "repairing retained note"),
        count(&log_b, "repairing retained note")
    );
}

/// Note publications as a plain MQTT client subscribed to the registry's note topics sees them,
/// from before the bridges start: how many, and the topics an empty retained message (a deleted
/// note) was published on.
struct Tally {
    published: Arc<AtomicU64>,
    cleared: Arc<Mutex<Vec<String>>>,
    subscribed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Tally {
    async fn start(broker_url: &str, prefix: &str) -> Self {
        use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
        let address = broker_url.trim_start_matches("mqtt://");
        let (host, port) = address.rsplit_once(':').expect("host:port");
        let mut options = MqttOptions::new("bridges-tally", host, port.parse().expect("port"));
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let published = Arc::new(AtomicU64::new(0));
        let cleared = Arc::new(Mutex::new(Vec::new()));
        let subscribed = Arc::new(AtomicU64::new(0));
        let filters = [format!("{prefix}/node/#"), format!("{prefix}/group/#")];
        let (count, clears, acks) = (published.clone(), cleared.clone(), subscribed.clone());
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for filter in &filters {
                            client
                                .try_subscribe(filter.clone(), QoS::AtLeastOnce)
                                .expect("subscribe");
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        acks.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        if publish.payload.is_empty() {
                            clears.lock().expect("lock").push(publish.topic);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        let tally = Self {
            published,
            cleared,
            subscribed,
            task,
        };
        await_condition(
            "the tally to subscribe",
            Duration::from_secs(30),
            Duration::from_millis(20),
            || {
                let ready = tally.subscribed.load(Ordering::Relaxed) >= 2;
                async move { ready }
            },
        )
        .await
        .expect("the tally subscribes");
        tally
    }

    fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    fn cleared(&self) -> Vec<String> {
        self.cleared.lock().expect("lock").clone()
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.task.abort();
    }
}
