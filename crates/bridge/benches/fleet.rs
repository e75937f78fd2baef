//! Bridge cold start on a large registry, as a user sees it: `target/release/anchormq bridge` run as
//! its own process against a real Anvil and a real Mosquitto (`FLEET_BROKER=embedded`: the
//! embedded broker of `anchormq up`).
//!
//! 1. Generates a registry of `FLEET_NODES` nodes (default 100,000; keys and proofs of possession
//!    made in-process, `registerNodes` 250 a transaction) and `FLEET_GROUPS` groups (default 1,000),
//!    group `g` with the 50 nodes `g*50..g*50+50` (modulo the node count), one `addMembers` each.
//! 2. Starts the bridge on a fresh checkpoint and times it until its mirrored block reaches the head
//!    of the generated chain and it has applied every registry event (the mirrored block moves only
//!    once the broker acknowledged that batch's notes): "cold start to a complete, acknowledged
//!    mirror". Peak RSS is the process's `VmHWM`.
//! 3. Stops it with SIGTERM, starts it again on the same checkpoint and times it until it has
//!    compared the broker's notes with its own (`broker_syncs_total >= 1`): "restart with a complete
//!    broker"; `notes_restored_total` should be 0.
//!
//! 4. With the restarted bridge running, two agents as processes: `anchormq sub` as n000001 until
//!    it has subscribed, `anchormq pub -q 1` as n000000 (a member of g0000 and g0001) until it exits,
//!    and until the `sub` prints the message.
//!
//! `FLEET_STACK=up` runs what a user of the default stack runs instead: `anchormq up` as a process
//! (its Anvil, embedded broker and bridge), the registry generated on its chain, `anchormq verify`
//! until it agrees with the chain, then the same two agents on its broker.
//!
//! Needs the release binary: `cargo build --release -p anchormq` first (or `FLEET_ANCHORMQ=path`).
//! Run: `cargo bench -p anchormq-bridge --bench fleet` (prints a Markdown table; try
//! `FLEET_NODES=2000 FLEET_GROUPS=20` first). `FLEET_LOG_DIR=dir` keeps the bridge's logs there.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::contract::SolCallBuilder;
use alloy::network::Ethereum;
use alloy::providers::{PendingTransactionBuilder, Provider};
use alloy::sol_types::SolCall;
use anchormq_chain::bindings::IKeyRegistry;
use anchormq_chain::{B256, Deployment, NodeRegistration, RegistryClient, SigningKey};
use anchormq_core::{GroupId, NodeId};
use anchormq_localstack::{
    Anvil, AnvilRpc, DEV_ACCOUNTS, EmbeddedBroker, JsonRpcClient, Mosquitto, RegistryStack,
    free_port, parse_quantity,
};
use serde_json::json;

/// Nodes a `registerNodes` transaction (about 15.5 M gas, under Anvil's 30 M block limit).
const REGISTER_BATCH: usize = 250;
/// Members of each group, added in one `addMembers` transaction.
const GROUP_SIZE: usize = 50;
/// How often the bridge's metrics are read.
const POLL: Duration = Duration::from_millis(50);
/// Generation transactions mined in one block.
const TXS_PER_BLOCK: usize = 40;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// The release binary: `FLEET_ANCHORMQ`, else `$CARGO_TARGET_DIR/release/anchormq`, else the
/// workspace's `target/release/anchormq`.
fn anchormq_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FLEET_ANCHORMQ") {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    target.join("release/anchormq")
}

/// The bridge's Prometheus text, parsed; `None` while it does not answer.
fn scrape(port: u16) -> Option<HashMap<String, u64>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    Some(
        body.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (name, value) = line.split_once(' ')?;
                Some((name.to_owned(), value.trim().parse().ok()?))
            })
            .collect(),
    )
}

fn metric(metrics: &HashMap<String, u64>, name: &str) -> u64 {
    metrics
        .get(&format!("anchormq_bridge_{name}"))
        .copied()
        .unwrap_or(0)
}

/// The peak resident set of process `pid`, in MB (`VmHWM`).
fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The bridge as its own process.
struct BridgeProcess {
    child: Child,
    metrics_port: u16,
    stderr: PathBuf,
}

impl BridgeProcess {
    fn spawn(binary: &Path, args: &[String], log_dir: &Path, name: &str) -> Self {
        let metrics_port = free_port().expect("free port");
        let stderr = log_dir.join(format!("{name}.stderr.log"));
        let stdout = log_dir.join(format!("{name}.stdout.log"));
        let mut command = anchormq(binary);
        let child = command
            .args(args)
            .arg("--metrics")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout log"))
            .stderr(std::fs::File::create(&stderr).expect("stderr log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        Self {
            child,
            metrics_port,
            stderr,
        }
    }

    /// Polls the metrics until `done` holds; panics when the bridge exits or `timeout` passes.
    async fn wait_for(
        &mut self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&HashMap<String, u64>) -> bool,
    ) -> HashMap<String, u64> {
        let started = Instant::now();
        let mut last = HashMap::new();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "the bridge exited with {status} before {what}; its log:\n{}",
                    tail(&self.stderr, 30)
                );
            }
            if let Some(metrics) = scrape(self.metrics_port) {
                if done(&metrics) {
                    return metrics;
                }
                last = metrics;
            }
            if started.elapsed() > timeout {
                panic!(
                    "no {what} within {timeout:?}; last metrics {last:?}; the bridge's log:\n{}",
                    tail(&self.stderr, 30)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 30 s).
    fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return format!("{status} after {:.1} s", started.elapsed().as_secs_f64());
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return "killed: no exit within 30 s of SIGTERM".to_owned();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The WARN and ERROR lines of a log, printed to stderr.
fn report_warnings(path: &Path, name: &str) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let flagged: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("WARN") || line.contains("ERROR"))
        .collect();
    eprintln!(
        "{name}: {} WARN/ERROR lines in {}",
        flagged.len(),
        path.display()
    );
    for line in flagged.iter().take(20) {
        eprintln!("  {line}");
    }
}

#[tokio::main]
async fn main() {
    let nodes = env_usize("FLEET_NODES", 100_000).max(1);
    let groups = env_usize("FLEET_GROUPS", 1_000);
    let timeout = Duration::from_secs(env_usize("FLEET_TIMEOUT_S", 900) as u64);
    let binary = anchormq_binary();
    assert!(
        binary.is_file(),
        "{} is missing: run `cargo build --release -p anchormq` first (or set FLEET_ANCHORMQ)",
        binary.display()
    );

    // Anvil keeps every block's state in memory by default: at 100,000 nodes it grew past 23 GB
    // and was OOM-killed while mining the registrations. The bridge reads logs only, so old states
    // need not be kept; with this flag it still grew ~2.7 GB a minute (9.6 GB at block 273 of
    // 2,400): the default size needs a machine with far more than 24 GB, or another generator.
    let anvil = Anvil::builder()
        .arg("--prune-history")
        .arg("64")
        .spawn()
        .await
        .expect("anvil");
    let stack = RegistryStack::on(anvil).await.expect("stack");
    // FLEET_STACK=up: everything on `anchormq up` as a process instead (its Anvil, embedded broker
    // and bridge); the bench's own Anvil above is then not used
    if std::env::var("FLEET_STACK").is_ok_and(|s| s == "up") {
        let log_dir = std::env::var_os("FLEET_LOG_DIR")
            .map_or_else(|| stack.dir.path().to_path_buf(), PathBuf::from);
        std::fs::create_dir_all(&log_dir).expect("log dir");
        let up = Up::start(&binary, &log_dir).await;
        let admin = RegistryClient::connect(
            &up.rpc,
            up.deployment,
            Some(DEV_ACCOUNTS[0].private_key().parse().expect("dev key")),
        )
        .await
        .expect("admin on up's chain");
        let rpc = JsonRpcClient::new(&up.rpc).expect("rpc");
        let generated = generate(&admin, &up.deployment, &rpc, nodes, groups).await;
        on_up(
            &binary,
            up,
            &admin,
            generated,
            stack.dir.path(),
            nodes,
            groups,
        )
        .await;
        return;
    }
    // FLEET_BROKER=embedded: the broker that `anchormq up` runs (here in the bench's process)
    let embedded = std::env::var("FLEET_BROKER").is_ok_and(|b| b == "embedded");
    let (broker_url, _mosquitto) = if embedded {
        let broker = EmbeddedBroker::start().await.expect("embedded broker");
        (broker.url(), None)
    } else {
        let broker = Mosquitto::builder().spawn().await.expect("mosquitto");
        (broker.url(), Some(broker))
    };
    let Generated {
        agent_keys,
        time: generation_time,
        head,
        events,
        size,
    } = generate(
        &stack.admin,
        &stack.deployment,
        &stack.anvil.rpc().expect("rpc"),
        nodes,
        groups,
    )
    .await;

    // the bridge's files
    let log_dir = std::env::var_os("FLEET_LOG_DIR")
        .map_or_else(|| stack.dir.path().to_path_buf(), PathBuf::from);
    std::fs::create_dir_all(&log_dir).expect("log dir");
    let deployment = stack.dir.path().join("deployment.json");
    stack.deployment.save(&deployment).expect("deployment file");
    let key = stack.dir.path().join("bridge.key");
    std::fs::write(&key, stack.bridge_key.to_key_file().as_bytes()).expect("key file");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let checkpoint = stack.dir.path().join("fleet.checkpoint.json");
    let globals = globals(&stack.anvil.http_url(), &deployment, &broker_url);
    let args: Vec<String> = [
        globals.clone(),
        vec![
            "bridge".into(),
            "--key".into(),
            key.display().to_string(),
            "--checkpoint".into(),
            checkpoint.display().to_string(),
            "--poll-interval-ms".into(),
            "50".into(),
        ],
    ]
    .concat();

    // cold start
    let started = Instant::now();
    let mut bridge = BridgeProcess::spawn(&binary, &args, &log_dir, "cold");
    let cold = bridge
        .wait_for(timeout, "complete mirror", |m| {
            metric(m, "mirrored_block") >= head && metric(m, "events_processed_total") >= events
        })
        .await;
    let cold_time = started.elapsed();
    eprintln!(
        "cold start: chain data refused {}, reorgs {}, rpc reconnects {}, broker reconnects {}",
        metric(&cold, "chain_data_refused_total"),
        metric(&cold, "reorgs_total"),
        metric(&cold, "rpc_reconnects_total"),
        metric(&cold, "broker_reconnects_total")
    );
    let cold_rss = peak_rss_mb(bridge.child.id());
    let cold_log = bridge.stderr.clone();
    let stopped = bridge.stop();
    eprintln!("cold bridge stopped: {stopped}");
    report_warnings(&cold_log, "cold start");

    // restart with a complete broker
    let started = Instant::now();
    let mut bridge = BridgeProcess::spawn(&binary, &args, &log_dir, "restart");
    let restart = bridge
        .wait_for(timeout, "broker check", |m| {
            metric(m, "broker_syncs_total") >= 1
        })
        .await;
    let restart_time = started.elapsed();
    let (ready, published, read, chain_notes) = agents(
        &binary,
        &[
            globals,
            vec![
                "--bridge-key".into(),
                stack.bridge_key.public_key().to_string(),
            ],
        ]
        .concat(),
        &agent_keys,
        stack.dir.path(),
    )
    .await;
    let restart_rss = peak_rss_mb(bridge.child.id());
    let restart_log = bridge.stderr.clone();
    let stopped = bridge.stop();
    eprintln!("restarted bridge stopped: {stopped}");
    report_warnings(&restart_log, "restart");

    let seconds = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    println!(
        "agents (processes, bridge running): `sub` as n000001 ready in {}; `pub` as n000000 (2 groups) done in {}, read by the `sub` {} after the `pub` started; the `sub` received {chain_notes} node, group and membership note chunks (the registry holds {})",
        seconds(ready),
        seconds(published),
        seconds(read),
        2 * nodes + groups
    );
    println!();
    println!(
        "| nodes | groups | memberships | generation | events | cold start | notes published | peak RSS | restart to checked | notes restored | restart peak RSS |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {nodes} | {groups} | {} | {} | {} | {} | {} | {cold_rss:.0} MB | {} | {} | {restart_rss:.0} MB |",
        groups * size,
        seconds(generation_time),
        metric(&cold, "events_processed_total"),
        seconds(cold_time),
        metric(&cold, "notes_published_total"),
        seconds(restart_time),
        metric(&restart, "notes_restored_total"),
    );
}

/// What [`generate`] made.
struct Generated {
    /// The keys of the two agents measured at the end: n000000 and n000001.
    agent_keys: Vec<SigningKey>,
    time: Duration,
    head: u64,
    events: u64,
    /// Members a group.
    size: usize,
}

/// Registers `nodes` nodes and `groups` groups of [`GROUP_SIZE`] members on the registry, from the
/// admin's account, many transactions a block.
async fn generate(
    admin: &RegistryClient,
    deployment: &Deployment,
    rpc: &JsonRpcClient,
    nodes: usize,
    groups: usize,
) -> Generated {
    let owner = admin.sender().expect("admin account");
    let generation = Instant::now();
    // the keys of the two agents measured at the end: n000000 and n000001
    let mut agent_keys = Vec::new();
    let fleet: Vec<NodeRegistration> = (0..nodes)
        .map(|i| {
            let node = NodeId::from_label(&format!("n{i:06}")).expect("label");
            let key = SigningKey::random(&mut rand_core::OsRng);
            if i < 2 {
                agent_keys.push(key.clone());
            }
            NodeRegistration::prove(deployment, owner, node, &key).expect("proof")
        })
        .collect();
    eprintln!(
        "{nodes} keys and proofs in {:.1} s",
        generation.elapsed().as_secs_f64()
    );
    // sent one after another with explicit nonces and gas, without waiting for each receipt
    // (Anvil automines each on arrival, in nonce order): waiting for each costs ~0.3 s a transaction
    let registry = IKeyRegistry::new(deployment.address, admin.provider().clone());
    let pending = rpc
        .call("eth_getTransactionCount", json!([owner, "pending"]))
        .await
        .expect("nonce");
    let mut nonce = parse_quantity(&pending).expect("nonce is a quantity");
    // Many transactions a block: Anvil's memory grows with every block it mines at this state size
    // (a block a transaction ran out of 24 GB before 100,000 nodes were registered).
    rpc.call("evm_setAutomine", json!([false]))
        .await
        .expect("automine off");
    rpc.call(
        "evm_setBlockGasLimit",
        json!([format!("{:#x}", 2_000_000_000u64)]),
    )
    .await
    .expect("block gas limit");
    let mut unmined = 0usize;
    let mut mine_now = async |force: bool| {
        unmined += 1;
        if force || unmined >= TXS_PER_BLOCK {
            rpc.call("evm_mine", json!([])).await.expect("mine");
            unmined = 0;
        }
    };
    let mut last = None;
    for (i, batch) in fleet.chunks(REGISTER_BATCH).enumerate() {
        let ids = batch
            .iter()
            .map(|r| B256::from(*r.node.as_bytes()))
            .collect();
        let keys = batch.iter().map(|r| r.public_key.clone()).collect();
        let proofs = batch.iter().map(|r| r.proof.clone()).collect();
        let sent = send(
            registry.registerNodes(ids, keys, proofs),
            &mut nonce,
            25_000_000,
        )
        .await;
        last = Some(sent);
        mine_now(false).await;
        if (i + 1) % 40 == 0 {
            eprintln!(
                "registered {} nodes at {:.1} s",
                (i + 1) * REGISTER_BATCH,
                generation.elapsed().as_secs_f64()
            );
        }
    }
    let size = GROUP_SIZE.min(nodes);
    for g in 0..groups {
        let group = B256::from(
            *GroupId::from_label(&format!("g{g:04}"))
                .expect("label")
                .as_bytes(),
        );
        let _pending = send(
            registry.createGroup(group, format!("fleet/g{g:04}/#")),
            &mut nonce,
            500_000,
        )
        .await;
        mine_now(false).await;
        let members = (0..size)
            .map(|k| B256::from(*fleet[(g * GROUP_SIZE + k) % nodes].node.as_bytes()))
            .collect();
        let sent = send(registry.addMembers(group, members), &mut nonce, 5_000_000).await;
        last = Some(sent);
        mine_now(false).await;
        if (g + 1) % 100 == 0 {
            eprintln!(
                "{} groups at {:.1} s",
                g + 1,
                generation.elapsed().as_secs_f64()
            );
        }
    }
    // n000000 is in g0000 and, with this, in g0001 too: an agent in two groups
    if groups >= 2 && nodes > GROUP_SIZE {
        let group = B256::from(*GroupId::from_label("g0001").expect("label").as_bytes());
        let sent = send(
            registry.addMembers(group, vec![B256::from(*fleet[0].node.as_bytes())]),
            &mut nonce,
            500_000,
        )
        .await;
        last = Some(sent);
    }
    mine_now(true).await;
    rpc.call("evm_setAutomine", json!([true]))
        .await
        .expect("automine on");
    if let Some(last) = last {
        let receipt = last.get_receipt().await.expect("last receipt");
        assert!(receipt.status(), "the last generation transaction reverted");
    }
    let generation_time = generation.elapsed();
    let head = admin.head().await.expect("head");
    let events = admin.events(None, Some(head)).await.expect("events").len() as u64;
    eprintln!(
        "generated in {:.1} s: head block {head}, {events} registry events",
        generation_time.as_secs_f64()
    );
    Generated {
        agent_keys,
        time: generation_time,
        head,
        events,
        size,
    }
}

/// The binary without the caller's `ANCHORMQ_*` settings: only the options given count.
fn anchormq(binary: &Path) -> Command {
    let mut command = Command::new(binary);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ANCHORMQ_") {
            command.env_remove(key);
        }
    }
    command
}

/// The CLI's global options for a chain, its registry and a broker.
fn globals(rpc: &str, deployment: &Path, broker: &str) -> Vec<String> {
    vec![
        "--rpc".into(),
        rpc.into(),
        "--deployment".into(),
        deployment.display().to_string(),
        "--broker".into(),
        broker.into(),
    ]
}

/// Sends `call` from the admin with the next nonce and fixed fees, without waiting for it to be
/// mined.
async fn send<P: Provider, C: SolCall>(
    call: SolCallBuilder<P, C>,
    nonce: &mut u64,
    gas: u64,
) -> PendingTransactionBuilder<Ethereum> {
    let sent = call
        .nonce(*nonce)
        .gas(gas)
        .max_fee_per_gas(20_000_000_000)
        .max_priority_fee_per_gas(1)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", C::SIGNATURE));
    *nonce += 1;
    sent
}

/// Two agents as a user runs them, with the bridge running: `anchormq sub` as n000001 (in g0000)
/// until it says it has subscribed, then `anchormq pub -q 1` as n000000 (in g0000 and g0001) until
/// it exits, and until the `sub` prints the message. Returns the three times and the chain notes
/// the `sub` received (from its closing log line).
async fn agents(
    binary: &Path,
    globals: &[String],
    keys: &[SigningKey],
    dir: &Path,
) -> (Duration, Duration, Duration, u64) {
    use tokio::io::AsyncBufReadExt;
    let key_file = |i: usize| {
        let secret: [u8; 32] = keys[i].to_bytes().into();
        let key = anchormq_core::NodeSecretKey::from_bytes(&secret).expect("key");
        let path = dir.join(format!("n{i:06}.key"));
        std::fs::write(&path, key.to_key_file().as_bytes()).expect("key file");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path.display().to_string()
    };
    let (reader_key, writer_key) = (key_file(1), key_file(0));
    let command = |args: &[&str]| {
        let mut command = tokio::process::Command::from(anchormq(binary));
        command.args(globals).args(args).kill_on_drop(true);
        command
    };
    let started = Instant::now();
    let mut sub = command(&[
        "sub",
        "--as",
        "n000001",
        "--key",
        &reader_key,
        "-t",
        "fleet/g0000/#",
        "--json",
        "-C",
        "1",
        // measured, not bounded: the embedded broker is slow to serve a large registry
        "--wait",
        "120",
    ])
    .env("ANCHORMQ_LOG", "info")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("sub starts");
    let mut err = tokio::io::BufReader::new(sub.stderr.take().expect("stderr")).lines();
    let mut out = tokio::io::BufReader::new(sub.stdout.take().expect("stdout")).lines();
    loop {
        match tokio::time::timeout(Duration::from_secs(60), err.next_line()).await {
            Ok(Ok(Some(line))) if line.contains("subscribed to") => break,
            Ok(Ok(Some(_))) => {}
            other => panic!("sub did not get ready: {other:?}"),
        }
    }
    let ready = started.elapsed();
    let started = Instant::now();
    let output = command(&[
        "pub",
        "--as",
        "n000000",
        "--key",
        &writer_key,
        "-t",
        "fleet/g0000/hello",
        "-m",
        "hello",
        "-q",
        "1",
        "--wait",
        "120",
    ])
    .output()
    .await
    .expect("pub runs");
    let published = started.elapsed();
    assert!(
        output.status.success(),
        "pub failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    loop {
        match tokio::time::timeout(Duration::from_secs(60), out.next_line()).await {
            Ok(Ok(Some(line))) if line.contains("hello") => break,
            Ok(Ok(Some(_))) => {}
            other => panic!("sub did not read the message: {other:?}"),
        }
    }
    let read = started.elapsed();
    let chain_notes = loop {
        match tokio::time::timeout(Duration::from_secs(60), err.next_line()).await {
            Ok(Ok(Some(line))) if line.contains("sub done") => {
                break line
                    .split_whitespace()
                    .find_map(|field| field.strip_prefix("chain_notes="))
                    .and_then(|n| n.parse().ok())
                    .expect("chain_notes in the closing line");
            }
            Ok(Ok(Some(_))) => {}
            other => panic!("sub did not finish: {other:?}"),
        }
    };
    (ready, published, read, chain_notes)
}

/// `anchormq up` as a process (`FLEET_STACK=up`): its Anvil, its embedded broker and its bridge,
/// found from what it prints.
struct Up {
    child: tokio::process::Child,
    rpc: String,
    broker: String,
    deployment: Deployment,
    bridge_key: String,
    stderr: PathBuf,
}

impl Up {
    async fn start(binary: &Path, log_dir: &Path) -> Self {
        use tokio::io::AsyncBufReadExt;
        let stderr = log_dir.join("up.stderr.log");
        let mut child = tokio::process::Command::from(anchormq(binary))
            .arg("up")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("up log"))
            .kill_on_drop(true)
            .spawn()
            .expect("up starts");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut fields = HashMap::new();
        while !fields.contains_key("bridge key") {
            let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .expect("up prints its settings")
                .expect("up's stdout")
                .expect("up is still running");
            if let Some((name, value)) = line.trim().split_once(':') {
                fields.insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
        // up goes on printing: keep its pipe drained
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        // "0x… (chain 31337, deploy block 1)"
        let registry = &fields["registry"];
        let number = |after: &str| -> u64 {
            let rest = &registry[registry.find(after).expect(after) + after.len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
                .expect("a number")
        };
        let deployment = Deployment {
            chain_id: number("(chain "),
            address: registry
                .split_whitespace()
                .next()
                .and_then(|a| a.parse().ok())
                .expect("registry address"),
            deploy_block: number("deploy block "),
            tx_hash: None,
        };
        Self {
            child,
            rpc: fields["RPC URL"].clone(),
            broker: fields["broker URL"].clone(),
            deployment,
            bridge_key: fields["bridge key"].clone(),
            stderr,
        }
    }
}

/// With the registry generated on `up`'s chain: how long until `anchormq verify` finds every note
/// on up's broker as the chain says (up's bridge has mirrored it all), up's peak RSS (its bridge,
/// broker and the rest), and the two agents.
async fn on_up(
    binary: &Path,
    mut up: Up,
    admin: &RegistryClient,
    generated: Generated,
    dir: &Path,
    nodes: usize,
    groups: usize,
) {
    let deployment = dir.join("up-deployment.json");
    up.deployment.save(&deployment).expect("deployment file");
    let mut globals = globals(&up.rpc, &deployment, &up.broker);
    globals.extend(["--bridge-key".into(), up.bridge_key.clone()]);
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let output = tokio::process::Command::from(anchormq(binary))
            .args(&globals)
            .args(["verify", "--max-wait", "120"])
            .output()
            .await
            .expect("verify runs");
        if output.status.success() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "verify never agreed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
    let mirrored = started.elapsed();
    let head = admin.head().await.expect("head");
    let (ready, published, read, chain_notes) =
        agents(binary, &globals, &generated.agent_keys, dir).await;
    let rss = up.child.id().map_or(0.0, peak_rss_mb);
    let _ = up.child.start_kill();
    report_warnings(&up.stderr, "up");
    println!(
        "`anchormq up` (its Anvil, embedded broker and bridge) with {nodes} nodes and {groups} groups of {} generated in {:.1} s ({} events, head {head}): `verify` clean {:.2} s after the generation ended ({attempts} run(s)); up's peak RSS {rss:.0} MB; `sub` ready in {:.2} s, `pub` (2 groups) done in {:.2} s, read {:.2} s after the `pub` started; the `sub` received {chain_notes} note chunks",
        generated.size,
        generated.time.as_secs_f64(),
        generated.events,
        mirrored.as_secs_f64(),
        ready.as_secs_f64(),
        published.as_secs_f64(),
        read.as_secs_f64(),
    );
}
