//! CLI behaviour, checked by running the built `anchormq` binary against a real Anvil and real
//! brokers (the embedded broker in this process, Mosquitto as a child process).
//!
//! The multi-component scenarios that need no binary (late joiner, broker restart, 100 nodes) live
//! in the workspace's `tests/` package; these live here because only this package's tests get
//! `CARGO_BIN_EXE_anchormq`.

use std::process::Output;
use std::time::Duration;

use anchormq_localstack::{
    Anvil, DEV_ACCOUNTS, EmbeddedBroker, Mosquitto, await_condition, deploy_registry, free_port,
};
use tokio::process::Command;

mod common;
use common::{
    BIN, Sub, UpPaper, anchormq, assert_one_line_error, await_line, paper_anvil, stderr, stdout,
};

fn check_demo_output(output: &Output) {
    let out = stdout(output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "demo failed:\n{out}\n{}",
        stderr(output)
    );
    for line in [
        "[ok] 1112 reads \"step 1: line 1 temperature 21.5 C\"",
        "[ok] 1113 cannot read it: node 1113 is not a member of hsu0001 (epoch 2)",
        "[ok] 1113 reads \"step 2: line 1 temperature 21.7 C\"",
        "[ok] 1113 reads \"step 3: line 2 pressure 1.2 bar\"",
        "[ok] 1111 cannot read it: node 1111 is not a member of hsu0002 (epoch 2)",
        "[ok] 1112 cannot read it: node 1112 is not a member of hsu0001 (epoch 4)",
        "[ok] 1113 rejects the replay",
        "all 13 checks passed",
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }
    assert!(!out.contains("[FAIL]"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_passes_on_the_embedded_broker() {
    let output = anchormq(&["demo"], &[]).await;
    check_demo_output(&output);
    assert!(stdout(&output).contains("(embedded)"));
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_passes_on_mosquitto_twice() {
    let mosquitto = Mosquitto::spawn().await.expect("mosquitto");
    let url = mosquitto.url();
    check_demo_output(&anchormq(&["demo", "--broker", &url], &[]).await);
    // A second run on the same broker finds the first run's retained notes (same registry
    // address, another bridge key) and must not be confused by them.
    let output = anchormq(&["demo", "--broker", &url], &[]).await;
    check_demo_output(&output);
    assert!(stdout(&output).contains("(external)"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_flags_and_config_name_the_field() {
    let output = anchormq(&["node", "show", "--idd", "1111"], &[]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--idd"), "{}", stderr(&output));

    let output = anchormq(
        &["sub", "--as", "1112", "--key", "k", "-t", "a/#", "-q", "2"],
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("QoS 2 is not supported"));

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("anchormq.toml");
    std::fs::write(
        &config,
        "rpc = \"http://127.0.0.1:1\"\nbrokr = \"mqtt://x\"\n",
    )
    .expect("write");
    let output = anchormq(&["--config", config.to_str().expect("utf-8"), "audit"], &[]).await;
    assert_one_line_error(&output, 1, "brokr");

    // The bridge's table in the same file is checked field by field too.
    std::fs::write(&config, "[bridge]\nconfirmation = 3\n").expect("write");
    let output = anchormq(
        &["--config", config.to_str().expect("utf-8"), "bridge"],
        &[],
    )
    .await;
    assert_one_line_error(&output, 1, "confirmation");
    let output = anchormq(
        &[
            "--registry",
            "0x5FbDB2315678afecb367f032d93F642f64180aa3",
            "--chain-id",
            "31337",
            "bridge",
        ],
        &[],
    )
    .await;
    assert_one_line_error(&output, 1, "missing setting `key_file`");

    let output = anchormq(&["--registry", "0x1234", "--chain-id", "1", "audit"], &[]).await;
    assert_one_line_error(&output, 1, "--registry");
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_rpc_is_one_clear_line() {
    let port = free_port().expect("port");
    let rpc = format!("http://127.0.0.1:{port}");
    let output = anchormq(
        &[
            "--rpc",
            &rpc,
            "--registry",
            "0x5FbDB2315678afecb367f032d93F642f64180aa3",
            "node",
            "show",
            "--id",
            "1111",
        ],
        &[],
    )
    .await;
    assert_one_line_error(&output, 1, "cannot reach the RPC at");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_registry_address_is_refused() {
    let (anvil, _fixture) = paper_anvil().await;
    let output = anchormq(
        &[
            "--rpc",
            &anvil.http_url(),
            "--registry",
            "0x000000000000000000000000000000000000dEaD",
            "node",
            "show",
            "--id",
            "1111",
        ],
        &[],
    )
    .await;
    assert_one_line_error(
        &output,
        1,
        "no contract at 0x000000000000000000000000000000000000dEaD",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keygen_writes_mode_0600_and_refuses_to_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.key");
    let path_str = path.to_str().expect("utf-8");
    let output = anchormq(&["node", "keygen", "--out", path_str], &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let public = stdout(&output).trim().to_owned();
    assert!(public.starts_with("0x") && public.len() == 68, "{public}");
    let mode = std::fs::metadata(&path)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let content = std::fs::read(&path).expect("read");
    let key = anchormq_core::NodeSecretKey::from_key_file(&content).expect("key file format");
    assert_eq!(key.public_key().to_string(), public);

    let output = anchormq(&["node", "keygen", "--out", path_str], &[]).await;
    assert_one_line_error(&output, 1, "already exists; refusing to overwrite");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        content,
        "key unchanged"
    );
    assert!(!stderr(&output).contains(&hex::encode(&key.to_bytes()[..])));

    // A key other users can read is refused before it is used, as ssh refuses one.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let output = anchormq(
        &["node", "register", "--id", "1111", "--key", path_str],
        &[("ANCHORMQ_PRIVATE_KEY", DEV_ACCOUNTS[0].private_key())],
    )
    .await;
    assert_one_line_error(&output, 1, "is accessible by other users (mode 0644)");
    assert!(stderr(&output).contains("chmod 600"), "{}", stderr(&output));
}

/// Node and group commands on a fresh registry, `audit --format json`, then the bridge (as the
/// binary), `pub`/`sub --json`, and `verify` before and after notes on the broker are deleted or forged.
#[tokio::test(flavor = "multi_thread")]
async fn registry_commands_bridge_pubsub_audit_and_verify() {
    let anvil = Anvil::spawn().await.expect("anvil");
    let deployment = deploy_registry(&anvil, DEV_ACCOUNTS[0].private_key())
        .await
        .expect("deploy");
    let broker = EmbeddedBroker::start().await.expect("broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name).to_str().expect("utf-8").to_owned();
    let rpc = anvil.http_url();
    let broker_url = broker.url();
    let registry = deployment.address.to_string();
    let env: Vec<(&str, &str)> = vec![
        ("ANCHORMQ_RPC", &rpc),
        ("ANCHORMQ_REGISTRY", &registry),
        ("ANCHORMQ_BROKER", &broker_url),
        ("ANCHORMQ_PRIVATE_KEY", DEV_ACCOUNTS[0].private_key()),
    ];
    let run = |args: Vec<String>, env: Vec<(&'static str, String)>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        anchormq(&args, &env).await
    };
    let owned_env: Vec<(&'static str, String)> =
        env.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    let ok = |output: &Output| {
        assert_eq!(output.status.code(), Some(0), "{}", stderr(output));
        stdout(output)
    };
    let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

    for (id, file) in [("1111", "a.key"), ("1112", "b.key"), ("1113", "c.key")] {
        ok(&run(
            args(&["node", "keygen", "--out", &path(file)]),
            owned_env.clone(),
        )
        .await);
        let out = ok(&run(
            args(&["node", "register", "--id", id, "--key", &path(file)]),
            owned_env.clone(),
        )
        .await);
        assert!(out.contains(&format!("registered node {id}")), "{out}");
        assert!(out.contains("tx 0x") && out.contains("(block "), "{out}");
    }
    // Registering again is refused with the registry's reason.
    let output = run(
        args(&["node", "register", "--id", "1111", "--key", &path("a.key")]),
        owned_env.clone(),
    )
    .await;
    assert_one_line_error(&output, 1, "node 1111 is already registered");
    ok(&run(
        args(&[
            "group",
            "create",
            "--id",
            "line1",
            "--topic",
            "factory/line1/#",
        ]),
        owned_env.clone(),
    )
    .await);
    for node in ["1111", "1112"] {
        let out = ok(&run(
            args(&["group", "add", "--id", "line1", "--node", node]),
            owned_env.clone(),
        )
        .await);
        assert!(
            out.contains(&format!("added node {node} to group line1")),
            "{out}"
        );
    }
    let out = ok(&run(
        args(&["group", "show", "--id", "line1", "--json"]),
        owned_env.clone(),
    )
    .await);
    let group: serde_json::Value = serde_json::from_str(&out).expect("group JSON");
    assert_eq!(group["epoch"], 2);
    assert_eq!(group["topicFilter"], "factory/line1/#");
    assert_eq!(group["members"], serde_json::json!(["1111", "1112"]));
    let out = ok(&run(
        args(&["node", "show", "--id", "1111", "--json"]),
        owned_env.clone(),
    )
    .await);
    let node: serde_json::Value = serde_json::from_str(&out).expect("node JSON");
    assert_eq!(node["status"], "active");
    assert_eq!(node["keyVersion"], 1);
    assert_eq!(node["groups"], serde_json::json!(["line1"]));
    // Rotate 1112's key; its group's epoch moves on.
    ok(&run(
        args(&["node", "keygen", "--out", &path("b2.key")]),
        owned_env.clone(),
    )
    .await);
    ok(&run(
        args(&["node", "rotate", "--id", "1112", "--key", &path("b2.key")]),
        owned_env.clone(),
    )
    .await);

    let out = ok(&run(args(&["audit", "--format", "json"]), owned_env.clone()).await);
    let entries: Vec<serde_json::Value> = serde_json::from_str(&out).expect("audit JSON");
    let events: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap_or_default(),
                e["node"]
                    .as_str()
                    .or(e["group"].as_str())
                    .unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        events,
        vec![
            ("NodeRegistered", "1111"),
            ("NodeRegistered", "1112"),
            ("NodeRegistered", "1113"),
            ("GroupCreated", "line1"),
            ("MemberAdded", "1111"),
            ("MemberAdded", "1112"),
            ("NodeKeyRotated", "1112"),
        ]
    );
    assert!(entries.iter().all(|e| {
        e["actor"]
            .as_str()
            .is_some_and(|a| a.eq_ignore_ascii_case(DEV_ACCOUNTS[0].address))
    }));
    let out = ok(&run(
        args(&["audit", "--node", "1113", "--format", "csv"]),
        owned_env.clone(),
    )
    .await);
    assert_eq!(out.lines().count(), 2, "{out}");

    // Roles: 1112 becomes a reader only (it still reads 1111 below); `group show` and the audit say
    // so, and the bridge below mirrors it (`verify` compares its notes with the chain).
    ok(&run(
        args(&[
            "group", "roles", "--id", "line1", "--node", "1112", "--role", "read",
        ]),
        owned_env.clone(),
    )
    .await);
    let out = ok(&run(
        args(&["group", "show", "--id", "line1", "--json"]),
        owned_env.clone(),
    )
    .await);
    let group: serde_json::Value = serde_json::from_str(&out).expect("group JSON");
    assert_eq!(group["epoch"], 3);
    assert_eq!(group["roles"], serde_json::json!({"1112": "read"}));
    let out = ok(&run(
        args(&["audit", "--group", "line1", "--format", "json"]),
        owned_env.clone(),
    )
    .await);
    assert!(
        out.contains("node 1112 in group line1 now read (epoch 3)"),
        "{out}"
    );

    // The bridge, as the binary, on this registry and broker.
    ok(&run(
        args(&["node", "keygen", "--out", &path("bridge.key")]),
        owned_env.clone(),
    )
    .await);
    let bridge_public = anchormq_core::NodeSecretKey::from_key_file(
        &std::fs::read(path("bridge.key")).expect("bridge key"),
    )
    .expect("bridge key")
    .public_key()
    .to_string();
    let spawn_bridge = || {
        let mut bridge = Command::new(BIN);
        bridge
            .args([
                "bridge",
                "--key",
                &path("bridge.key"),
                "--checkpoint",
                &path("bridge.ckpt"),
            ])
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        bridge
    };
    let mut bridge = spawn_bridge().spawn().expect("bridge starts");
    let mut verify_env = owned_env.clone();
    verify_env.push(("ANCHORMQ_BRIDGE_KEY", bridge_public.clone()));
    await_condition(
        "verify to find broker and chain in agreement",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let verify_env = verify_env.clone();
            async move {
                run(args(&["verify", "--quiet-ms", "300"]), verify_env)
                    .await
                    .status
                    .success()
            }
        },
    )
    .await
    .expect("verify agrees once the bridge mirrored the chain");
    let out = ok(&run(args(&["verify", "--quiet-ms", "300"]), verify_env.clone()).await);
    assert!(
        out.contains("broker and chain agree: 3 node notes, 1 group notes"),
        "{out}"
    );

    // pub/sub through the binary: 1112 (rotated key) subscribes with --json, 1111 publishes.
    let mut sub = Command::new(BIN);
    sub.args([
        "sub",
        "--as",
        "1112",
        "--key",
        &path("b2.key"),
        "-t",
        "factory/line1/#",
        "-C",
        "2",
        "--json",
        "-W",
        "60",
    ])
    .envs(verify_env.iter().map(|(k, v)| (*k, v.as_str())))
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true);
    let mut sub = sub.spawn().expect("sub starts");
    let sub_stderr = sub.stderr.take().expect("stderr");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(sub_stderr));
    assert!(
        await_line(&mut lines, "subscribed to", Duration::from_secs(30)).await,
        "sub did not get ready"
    );
    let out = ok(&run(
        args(&[
            "pub",
            "--as",
            "1111",
            "--key",
            &path("a.key"),
            "-t",
            "factory/line1/temp",
            "-m",
            "21.5",
            "-q",
            "1",
        ]),
        verify_env.clone(),
    )
    .await);
    assert!(out.is_empty(), "{out}");
    // 1113 is no member: its message to the group's topic is refused before sending.
    let output = run(
        args(&[
            "pub",
            "--as",
            "1113",
            "--key",
            &path("c.key"),
            "-t",
            "factory/line1/temp",
            "-m",
            "x",
            "--wait",
            "1",
        ]),
        verify_env.clone(),
    )
    .await;
    assert_one_line_error(&output, 1, "node 1113 is not a member of line1");
    let mut stdin_pub = Command::new(BIN);
    stdin_pub
        .args([
            "pub",
            "--as",
            "1111",
            "--key",
            &path("a.key"),
            "-t",
            "factory/line1/hum",
            "-l",
            "-q",
            "1",
        ])
        .envs(verify_env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut stdin_pub = stdin_pub.spawn().expect("pub -l starts");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = stdin_pub.stdin.take().expect("stdin");
        stdin.write_all(b"40 %\n").await.expect("write");
    }
    assert!(stdin_pub.wait().await.expect("pub -l").success());
    let output = tokio::time::timeout(Duration::from_secs(60), sub.wait_with_output())
        .await
        .expect("sub finished")
        .expect("sub output");
    assert_eq!(output.status.code(), Some(0));
    let messages: Vec<serde_json::Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(messages.len(), 2, "{}", stdout(&output));
    assert_eq!(messages[0]["topic"], "factory/line1/temp");
    assert_eq!(messages[0]["payload"], "21.5");
    assert_eq!(messages[0]["sender"], "1111");
    assert_eq!(messages[0]["group"], "line1");
    // two adds and a role change; 1112's rotation changed its key version in the note, not the epoch
    assert_eq!(messages[0]["epoch"], 3);
    assert_eq!(messages[1]["payload"], "40 %");

    // With the bridge stopped (it would repair them), delete one retained note and forge another:
    // verify reports both (exit 3). A restarted bridge puts them back.
    bridge.start_kill().expect("stop bridge");
    let _ = bridge.wait().await;
    let prefix = format!(
        "anchormq/v1/{}/{}",
        deployment.chain_id,
        registry.to_lowercase()
    );
    let mut tamper = rumqttc::MqttOptions::new("tamper", "127.0.0.1", broker.port());
    tamper.set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(tamper, 16);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    client
        .publish(
            format!("{prefix}/node/1113/0"),
            rumqttc::QoS::AtLeastOnce,
            true,
            Vec::<u8>::new(),
        )
        .await
        .expect("delete note");
    client
        .publish(
            format!("{prefix}/group/line1/0"),
            rumqttc::QoS::AtLeastOnce,
            true,
            vec![1u8, 2, 3],
        )
        .await
        .expect("forge note");
    // 2 MiB of garbage under the prefix: larger than any note, it once made every client drop
    // its connection at each reconnect
    client
        .publish(
            format!("{prefix}/node/zzzz/0"),
            rumqttc::QoS::AtLeastOnce,
            true,
            vec![7u8; 2 << 20],
        )
        .await
        .expect("oversized garbage");
    let missing = await_condition(
        "verify to see the deleted and forged notes",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let verify_env = verify_env.clone();
            async move {
                let out = run(args(&["verify", "--quiet-ms", "300"]), verify_env).await;
                out.status.code() == Some(3)
                    && stdout(&out).contains("missing  node 1113")
                    && stdout(&out).contains("forged   group/line1")
                    && stdout(&out).contains("node/zzzz")
            }
        },
    )
    .await;
    assert!(
        missing.is_ok(),
        "verify did not report the deleted and forged notes"
    );
    let output = run(
        args(&["verify", "--quiet-ms", "300", "--json"]),
        verify_env.clone(),
    )
    .await;
    assert_eq!(output.status.code(), Some(3));
    for line in stdout(&output).lines() {
        let _: serde_json::Value = serde_json::from_str(line).expect("verify --json lines parse");
    }
    assert!(stderr(&output).contains("difference(s) between the broker's notes and the chain"));

    let mut bridge = spawn_bridge().spawn().expect("bridge restarts");
    await_condition(
        "the restarted bridge to repair the notes",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let verify_env = verify_env.clone();
            async move {
                run(args(&["verify", "--quiet-ms", "300"]), verify_env)
                    .await
                    .status
                    .success()
            }
        },
    )
    .await
    .expect("verify agrees again after the bridge's repair");
    bridge.start_kill().expect("stop bridge");
    let _ = bridge.wait().await;
}

/// `up --paper` prints working settings; commands pasted from them work; Ctrl-C stops it cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn up_prints_working_settings_and_stops_on_sigint() {
    let up = UpPaper::start().await;
    let keys: Vec<&str> = up.exports.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "ANCHORMQ_RPC",
            "ANCHORMQ_BROKER",
            "ANCHORMQ_REGISTRY",
            "ANCHORMQ_CHAIN_ID",
            "ANCHORMQ_BRIDGE_KEY",
            "ANCHORMQ_PRIVATE_KEY"
        ]
    );
    let output = anchormq(&["group", "show", "--id", "hsu0002", "--json"], &up.env()).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let group: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    assert_eq!(group["members"], serde_json::json!(["1113", "1114"]));
    up.verify_agrees().await;
    assert_eq!(up.interrupt().await.code(), Some(0));
}

/// `kill -9` of `up` takes its Anvil down with it (the parent-death signal), and the next `up`
/// removes the folder of keys the killed one could not clean up.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_up_leaves_no_anvil_and_the_next_removes_its_keys() {
    let mut up = UpPaper::start().await;
    let rpc = up
        .exports
        .iter()
        .find(|(k, _)| k == "ANCHORMQ_RPC")
        .map(|(_, v)| v.trim_start_matches("http://").to_owned())
        .expect("up exports its RPC URL");
    let stack_dir = std::path::PathBuf::from(up.key("1111"))
        .parent()
        .expect("key folder")
        .to_owned();
    assert!(stack_dir.join("1111.key").is_file());
    let pid = up.child.id().expect("pid").to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .await
        .expect("kill runs");
    assert!(killed.success());
    // reaped, as a shell would: a zombie still counts as running
    up.child.wait().await.expect("up reaped");
    await_condition(
        "the killed up's Anvil to stop",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            let rpc = rpc.clone();
            async move { tokio::net::TcpStream::connect(rpc).await.is_err() }
        },
    )
    .await
    .expect("Anvil stops with its parent");
    assert!(stack_dir.exists(), "a SIGKILLed process cannot clean up");
    let next = UpPaper::start().await;
    assert!(
        !stack_dir.exists(),
        "the next up removed {}",
        stack_dir.display()
    );
    assert_eq!(next.interrupt().await.code(), Some(0));
}

/// The epoch and members of group `fleet`, from `group show --json`.
async fn fleet(env: &[(&str, &str)]) -> (u64, serde_json::Value) {
    let out = anchormq(&["group", "show", "--id", "fleet", "--json"], env).await;
    let group: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    (
        group["epoch"].as_u64().expect("epoch"),
        group["members"].clone(),
    )
}

/// Onboarding a fleet: `node register --csv` (key files here, or proofs from `node prove` where the
/// keys are) sends `registerNodes` in batches; `group add` with many nodes (flags and a file) sends
/// `addMembers` in batches, one epoch bump each, and `group remove` likewise; the bridge mirrors every batch (verify agrees);
/// a failed batch says which nodes the earlier ones already added.
#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_is_registered_added_and_removed_in_batches() {
    let up = UpPaper::start_with(&[]).await;
    let env = up.env();
    let dir = tempfile::tempdir().expect("tempdir");
    let ok = |output: Output| {
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        stdout(&output)
    };
    // register: four from key files here, three from proofs made where their keys are
    let mut csv = String::from("# id,key_file or id,public_key,proof\n");
    for i in 1..=7 {
        let id = format!("n{i:02}");
        let key = dir.path().join(format!("{id}.key"));
        let key = key.to_str().expect("utf-8");
        ok(anchormq(&["node", "keygen", "--out", key], &env).await);
        if i <= 4 {
            csv.push_str(&format!("{id},{id}.key\n"));
        } else {
            let owner = DEV_ACCOUNTS[0].address;
            let line = ok(anchormq(
                &["node", "prove", "--id", &id, "--key", key, "--owner", owner],
                &env,
            )
            .await);
            csv.push_str(&line);
        }
    }
    let csv_path = dir.path().join("fleet.csv");
    std::fs::write(&csv_path, csv).expect("write");
    let csv_path = csv_path.to_str().expect("utf-8");
    let out = ok(anchormq(
        &["node", "register", "--csv", csv_path, "--batch", "3"],
        &env,
    )
    .await);
    assert!(out.contains("3 node(s) registered (3 of 7)"), "{out}");
    assert!(out.contains("1 node(s) registered (7 of 7)"), "{out}");
    // 110 more, so that the embedded broker holds more node notes (117) than some brokers send a new
    // QoS 1 subscription (rumqttd 0.20: 100): `verify` must still see them all
    let mut more = String::new();
    for i in 0..110u8 {
        let id = format!("x{i:02}");
        let key = anchormq_core::NodeSecretKey::from_bytes(&[i + 1; 32]).expect("key");
        let path = dir.path().join(format!("{id}.key"));
        std::fs::write(&path, key.to_key_file()).expect("write");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        more.push_str(&format!("{id},{id}.key\n"));
    }
    let more_path = dir.path().join("more.csv");
    std::fs::write(&more_path, more).expect("write");
    ok(anchormq(
        &[
            "node",
            "register",
            "--csv",
            more_path.to_str().expect("utf-8"),
        ],
        &env,
    )
    .await);
    let out = ok(anchormq(&["node", "show", "--id", "n06", "--json"], &env).await);
    let node: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        node["owner"].as_str().map(str::to_lowercase),
        Some(DEV_ACCOUNTS[0].address.to_lowercase())
    );
    // registering the same fleet again: the first batch is refused, nothing after it is sent
    let again = anchormq(
        &["node", "register", "--csv", csv_path, "--batch", "3"],
        &env,
    )
    .await;
    assert_one_line_error(&again, 1, "nodes 1-7 of 7 were not registered");
    ok(anchormq(
        &["group", "create", "--id", "fleet", "--topic", "fleet/#"],
        &env,
    )
    .await);
    let (start, _) = fleet(&env).await;

    let file = dir.path().join("fleet.txt");
    std::fs::write(
        &file,
        "# the first five\nn01\nn02\n\nn03  # line three\nn04\nn05\nn01\n",
    )
    .expect("write");
    let out = ok(anchormq(
        &[
            "group",
            "add",
            "--id",
            "fleet",
            "--nodes-file",
            file.to_str().expect("utf-8"),
            "--node",
            "n06",
            "--batch",
            "2",
        ],
        &env,
    )
    .await);
    assert_eq!(
        out.matches("2 node(s) added to group fleet (epoch").count(),
        3,
        "{out}"
    );
    assert!(out.contains("(6 of 6)"), "{out}");
    let (after_add, members) = fleet(&env).await;
    assert_eq!(after_add, start + 3, "one epoch bump per batch");
    assert_eq!(members.as_array().map(Vec::len), Some(6), "{members}");
    up.verify_agrees().await;

    let out = ok(anchormq(
        &[
            "group", "remove", "--id", "fleet", "--node", "n01", "--node", "n02", "--node", "n03",
        ],
        &env,
    )
    .await);
    assert!(
        out.contains("3 node(s) removed from group fleet (epoch"),
        "{out}"
    );
    let (after_remove, members) = fleet(&env).await;
    assert_eq!(after_remove, after_add + 1, "one epoch bump for the batch");
    assert_eq!(members, serde_json::json!(["n04", "n05", "n06"]));

    let out = anchormq(
        &[
            "group", "add", "--id", "fleet", "--node", "n07", "--node", "nope", "--batch", "1",
        ],
        &env,
    )
    .await;
    assert_one_line_error(
        &out,
        1,
        "nodes 2-2 of 2 were not added to group fleet (the first 1 were)",
    );
    assert!(
        stderr(&out).contains("node nope is not registered"),
        "{}",
        stderr(&out)
    );
    let out = anchormq(
        &[
            "group",
            "add",
            "--id",
            "fleet",
            "--node",
            "n01",
            "--node",
            "n02",
            "--expect-key",
            "02",
        ],
        &env,
    )
    .await;
    assert_one_line_error(&out, 1, "--expect-key checks one node; 2 were given");
    up.verify_agrees().await;
}

/// A stranger's attack campaign against a running `anchormq up --paper`: invalid topic filters,
/// forced memberships, groups over the paper's topics, ID squatting and griefing of the owner's
/// nodes and groups. The bridge keeps running, `verify` stays clean, and the paper's outcomes
/// (1111 -> hsu0001 read by 1112, not by 1113) are unchanged, through the CLI as a user runs it.
#[tokio::test(flavor = "multi_thread")]
async fn a_strangers_attack_campaign_changes_no_paper_outcome() {
    use anchormq_chain::bindings::IKeyRegistry::IKeyRegistryErrors as E;
    use anchormq_chain::{Deployment, PrivateKeySigner, RegistryClient};

    let mut up = UpPaper::start().await;
    up.verify_agrees().await;
    let exports = up.exports.clone();
    let env: Vec<(&str, &str)> = exports
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let value = |key: &str| {
        env.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| (*v).to_owned())
            .expect(key)
    };
    let attacker_key = DEV_ACCOUNTS[7].private_key();
    let mut attacker_env: Vec<(&str, &str)> = env
        .iter()
        .copied()
        .filter(|(k, _)| *k != "ANCHORMQ_PRIVATE_KEY")
        .collect();
    attacker_env.push(("ANCHORMQ_PRIVATE_KEY", attacker_key));
    let deployment = Deployment {
        chain_id: value("ANCHORMQ_CHAIN_ID").parse().expect("chain id"),
        address: value("ANCHORMQ_REGISTRY").parse().expect("registry"),
        deploy_block: 0,
        tx_hash: None,
    };
    let signer: PrivateKeySigner = attacker_key.parse().expect("key");
    let attacker = RegistryClient::connect(&value("ANCHORMQ_RPC"), deployment, Some(signer))
        .await
        .expect("attacker client");
    let id = |label: &str| anchormq_core::GroupId::from_label(label).expect("id");

    // 1112 reads hsu0001 all through the campaign; 1111 publishes before and after it.
    let reader = Sub::start(
        &[
            "--as",
            "1112",
            "--key",
            &up.key("1112"),
            "-t",
            "hsu/0001/#",
            "-C",
            "2",
            "--json",
            "-W",
            "60",
        ],
        &env,
    )
    .await;
    paper_publish(&up, &env, "before the campaign").await;

    // 1. Topic filters that once stopped the bridge: refused on chain, whoever sends them.
    for filter in ["a+", "#/x", "x\0y", "caf\u{e9}/#"] {
        let error = attacker
            .create_group(id("evil1"), filter)
            .await
            .unwrap_err();
        assert!(
            matches!(error.revert(), Some(E::InvalidTopicFilter(_))),
            "{filter:?}: {error}"
        );
    }
    // 2. Groups over the paper's topics, created and mined.
    for (group, filter) in [("evilall", "#"), ("evil0001", "hsu/0001/#")] {
        let out = anchormq(
            &["group", "create", "--id", group, "--topic", filter],
            &attacker_env,
        )
        .await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    // 3. Forced memberships: the paper's nodes cannot be put in the stranger's groups.
    for node in ["1111", "1112", "1113"] {
        let out = anchormq(
            &["group", "add", "--id", "evil0001", "--node", node],
            &attacker_env,
        )
        .await;
        assert_one_line_error(&out, 1, "has not approved admin");
    }
    // 4. Squatting: the paper's IDs are taken; a fresh one goes to whoever registers first, and
    //    `group add --expect-key` catches it before an operator adds the squatted ID.
    let dir = tempfile::tempdir().expect("tempdir");
    let squat_key = dir.path().join("squat.key");
    let out = anchormq(
        &[
            "node",
            "keygen",
            "--out",
            squat_key.to_str().expect("utf-8"),
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0));
    let out = anchormq(
        &[
            "node",
            "register",
            "--id",
            "1111",
            "--key",
            squat_key.to_str().expect("utf-8"),
        ],
        &attacker_env,
    )
    .await;
    assert_one_line_error(&out, 1, "node 1111 is already registered");
    let out = anchormq(
        &[
            "node",
            "register",
            "--id",
            "1115",
            "--key",
            squat_key.to_str().expect("utf-8"),
        ],
        &attacker_env,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let operator_key = anchormq_core::NodeSecretKey::generate(&mut rand_core::OsRng);
    let out = anchormq(
        &[
            "group",
            "add",
            "--id",
            "hsu0001",
            "--node",
            "1115",
            "--expect-key",
            &operator_key.public_key().to_string(),
        ],
        &env,
    )
    .await;
    assert_one_line_error(&out, 1, "not the expected");
    assert!(
        stdout(&out).contains("node 1115: owner"),
        "{}",
        stdout(&out)
    );
    // the stranger's own node in its own group over hsu/0001/#: allowed, and harmless
    let out = anchormq(
        &["group", "add", "--id", "evil0001", "--node", "1115"],
        &attacker_env,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // 5. Griefing the owner's nodes and groups: every attempt is refused.
    for (args, needle) in [
        (
            vec!["node", "revoke", "--id", "1111"],
            "does not own node 1111",
        ),
        (
            vec![
                "node",
                "transfer",
                "--id",
                "1111",
                "--to",
                DEV_ACCOUNTS[7].address,
            ],
            "does not own node",
        ),
        (
            vec!["group", "remove", "--id", "hsu0001", "--node", "1112"],
            "is not the admin of group hsu0001",
        ),
        (
            vec!["group", "leave", "--id", "hsu0001", "--node", "1112"],
            "does not own node",
        ),
        (
            vec![
                "group",
                "transfer",
                "--id",
                "hsu0001",
                "--to",
                DEV_ACCOUNTS[7].address,
            ],
            "is not the admin of group hsu0001",
        ),
        (
            vec!["group", "accept", "--id", "hsu0001"],
            "was not offered",
        ),
        (vec!["node", "accept", "--id", "1112"], "was not offered"),
    ] {
        let out = anchormq(&args, &attacker_env).await;
        assert_one_line_error(&out, 1, needle);
    }

    // The bridge is still up and mirrors everything, the stranger's groups included.
    assert!(
        up.child.try_wait().expect("wait").is_none(),
        "up is still running"
    );
    up.verify_agrees().await;

    // The paper's outcomes, through pub and sub as a user runs them.
    let outsider = Sub::start(
        &[
            "--as",
            "1113",
            "--key",
            &up.key("1113"),
            "-t",
            "hsu/0001/#",
            "-C",
            "1",
            "-W",
            "10",
        ],
        &env,
    )
    .await;
    // no --group: the stranger's groups on '#' and 'hsu/0001/#' neither capture nor block it
    paper_publish(&up, &env, "after the campaign").await;
    let (code, out, err) = reader.finish().await;
    assert_eq!(code, Some(0), "{err}");
    let messages: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let seen: Vec<_> = messages
        .iter()
        .map(|m| {
            (
                m["group"].as_str(),
                m["sender"].as_str(),
                m["payload"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (Some("hsu0001"), Some("1111"), Some("before the campaign")),
            (Some("hsu0001"), Some("1111"), Some("after the campaign"))
        ]
    );
    let (code, out, err) = outsider.finish().await;
    assert_ne!(code, Some(0));
    assert!(out.is_empty(), "1113 read something: {out}");
    // the stranger's groups cover the topic too: all are named, and 1113 is in none
    assert!(
        err.contains(
            "node 1113 is not a member of any group covering topic \"hsu/0001/temperature\""
        ) && err.contains("hsu0001"),
        "{err}"
    );

    // An agent that trusts only the operator's groups refuses the stranger's group by name.
    let mut trusting = env.clone();
    trusting.push(("ANCHORMQ_TRUST_ADMINS", DEV_ACCOUNTS[0].address));
    let out = anchormq(
        &[
            "pub",
            "--as",
            "1111",
            "--key",
            &up.key("1111"),
            "--group",
            "evil0001",
            "-t",
            "hsu/0001/x",
            "-m",
            "x",
            "--wait",
            "5",
        ],
        &trusting,
    )
    .await;
    assert_one_line_error(&out, 1, "group evil0001 (admin");
    assert!(
        stderr(&out).contains("--trust-group evil0001"),
        "{}",
        stderr(&out)
    );

    assert_eq!(up.interrupt().await.code(), Some(0));
}

/// `up --closed`: only registrars register nodes and create groups; the operator adds registrars
/// with `anchormq registrar add`, and a stranger is refused with an error that says what to do.
#[tokio::test(flavor = "multi_thread")]
async fn a_closed_registry_admits_only_the_operators_registrars() {
    let up = UpPaper::start_with(&["--closed"]).await;
    let operator_env = up.env();
    let mut stranger_env: Vec<(&str, &str)> = operator_env
        .iter()
        .copied()
        .filter(|(k, _)| *k != "ANCHORMQ_PRIVATE_KEY")
        .collect();
    stranger_env.push(("ANCHORMQ_PRIVATE_KEY", DEV_ACCOUNTS[7].private_key()));
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("node.key");
    let key = key.to_str().expect("utf-8");
    assert!(
        anchormq(&["node", "keygen", "--out", key], &[])
            .await
            .status
            .success()
    );

    let out = anchormq(
        &["node", "register", "--id", "2001", "--key", key],
        &stranger_env,
    )
    .await;
    assert_one_line_error(&out, 1, "this registry is closed and account");
    let out = anchormq(
        &["group", "create", "--id", "line9", "--topic", "f/9/#"],
        &stranger_env,
    )
    .await;
    assert_one_line_error(&out, 1, "is not a registrar");
    // only the operator names registrars
    let out = anchormq(
        &["registrar", "add", "--account", DEV_ACCOUNTS[7].address],
        &stranger_env,
    )
    .await;
    assert_one_line_error(&out, 1, "is not the registry's operator");
    let out = anchormq(
        &["registrar", "add", "--account", DEV_ACCOUNTS[7].address],
        &operator_env,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = anchormq(
        &["node", "register", "--id", "2001", "--key", key],
        &stranger_env,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = anchormq(
        &["group", "create", "--id", "line9", "--topic", "f/9/#"],
        &stranger_env,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    up.verify_agrees().await;
    assert_eq!(up.interrupt().await.code(), Some(0));
}

/// `anchormq pub` as the paper's 1111 on hsu/0001/temperature, without --group; must succeed.
async fn paper_publish(up: &UpPaper, env: &[(&str, &str)], message: &str) {
    let key = up.key("1111");
    let out = anchormq(
        &[
            "pub",
            "--as",
            "1111",
            "--key",
            &key,
            "-t",
            "hsu/0001/temperature",
            "-m",
            message,
            "-q",
            "1",
        ],
        env,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// The binary on its own, as `cargo install` leaves it: copied out of the build tree, run from a
/// folder that is no checkout, with only `anvil` (not forge or cast) on PATH. `deploy`, `up` and
/// `demo` work from the bytecode and fixture built into it; without anvil, `up` says what to do.
#[tokio::test(flavor = "multi_thread")]
async fn the_installed_binary_deploys_runs_up_and_the_demo_outside_a_checkout() {
    let lookup = anchormq_devnet::paths::find_binary(
        "anvil",
        "ANCHORMQ_ANVIL",
        &anchormq_devnet::paths::toolchain_candidates("anvil"),
    );
    let anvil_binary = lookup.found.expect("anvil for the test");
    let root = tempfile::tempdir().expect("tempdir");
    let bin = root.path().join("bin");
    let work = root.path().join("work");
    std::fs::create_dir_all(&bin).expect("bin");
    std::fs::create_dir_all(&work).expect("work");
    let installed = bin.join("anchormq");
    std::fs::copy(BIN, &installed).expect("copy the binary");
    std::os::unix::fs::symlink(&anvil_binary, bin.join("anvil")).expect("anvil on PATH");
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let run = |args: &[&str], path: &str| {
        let mut command = Command::new(&installed);
        for (key, _) in std::env::vars() {
            if key.starts_with("ANCHORMQ_") {
                command.env_remove(key);
            }
        }
        command
            .args(args)
            .current_dir(&work)
            .env("PATH", path)
            .kill_on_drop(true);
        command
    };
    let output = |mut command: Command| async move {
        tokio::time::timeout(Duration::from_secs(120), command.output())
            .await
            .expect("finished within 120 s")
            .expect("runs")
    };

    // demo: Anvil from PATH, the built-in fixture, the embedded broker
    let demo = output(run(&["demo"], &path)).await;
    check_demo_output(&demo);

    // deploy to a chain of our own; the deployment file lands where the user stands
    let chain = Anvil::spawn().await.expect("anvil");
    let rpc = chain.http_url();
    let mut deploy = run(&["deploy", "--operator", DEV_ACCOUNTS[1].address], &path);
    deploy
        .env("ANCHORMQ_RPC", &rpc)
        .env("ANCHORMQ_PRIVATE_KEY", DEV_ACCOUNTS[0].private_key());
    let deployed = output(deploy).await;
    assert_eq!(deployed.status.code(), Some(0), "{}", stderr(&deployed));
    assert!(
        stdout(&deployed).contains(&format!(
            "deployed a closed registry operated by {}",
            DEV_ACCOUNTS[1].address
        )),
        "{}",
        stdout(&deployed)
    );
    let file = work.join(format!("deployments/{}.json", chain.chain_id()));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("deployment file"))
            .expect("JSON");
    assert_eq!(json["chainId"], chain.chain_id());
    // the other commands find it by default: the operator's registrar call goes through
    let mut registrar = run(
        &["registrar", "add", "--account", DEV_ACCOUNTS[2].address],
        &path,
    );
    registrar
        .env("ANCHORMQ_RPC", &rpc)
        .env("ANCHORMQ_PRIVATE_KEY", DEV_ACCOUNTS[1].private_key());
    let added = output(registrar).await;
    assert_eq!(added.status.code(), Some(0), "{}", stderr(&added));

    // up: a fresh stack, then Ctrl-C
    let mut up = run(&["up"], &path);
    up.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut up = up.spawn().expect("up starts");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        up.stdout.take().expect("out"),
    ));
    assert!(
        await_line(
            &mut lines,
            "export ANCHORMQ_PRIVATE_KEY=",
            Duration::from_secs(60)
        )
        .await,
        "up printed its settings"
    );
    let pid = up.id().expect("pid").to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .await
            .expect("kill")
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(30), up.wait())
        .await
        .expect("up stops")
        .expect("status");
    assert_eq!(status.code(), Some(0));

    // no anvil anywhere: one line that says what to install
    let missing = output(run(&["up"], "/usr/bin:/bin")).await;
    assert_one_line_error(&missing, 1, "anvil not found");
    assert!(
        stderr(&missing).contains("ANCHORMQ_ANVIL"),
        "{}",
        stderr(&missing)
    );
}

/// Each failure names its real cause: the client's own packet limit, a registry no bridge
/// publishes (wrong chain ID), an unreachable broker, another node's key; `sub -W` without `-C`
/// is a listening time, not a failure.
#[tokio::test(flavor = "multi_thread")]
async fn errors_name_the_real_cause() {
    let up = UpPaper::start().await;
    up.verify_agrees().await;
    let env = up.env();
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![b'x'; 2 * 1024 * 1024]).expect("write");
    let key = up.key("1111");
    let pub_args = |extra: &[&'static str]| {
        let mut args = vec![
            "pub",
            "--as",
            "1111",
            "--key",
            key.as_str(),
            "-t",
            "hsu/0001/x",
        ];
        args.extend_from_slice(extra);
        args
    };

    let big_path = big.to_str().expect("utf-8");
    let mut args = pub_args(&["-f"]);
    args.push(big_path);
    let out = anchormq(&args, &env).await;
    assert_one_line_error(
        &out,
        1,
        "larger than this client's maximum MQTT packet size of 1048576 bytes",
    );

    let mut wrong_chain = env.clone();
    wrong_chain.retain(|(k, _)| *k != "ANCHORMQ_CHAIN_ID");
    wrong_chain.push(("ANCHORMQ_CHAIN_ID", "1"));
    let out = anchormq(&pub_args(&["-m", "x", "--wait", "2"]), &wrong_chain).await;
    assert_one_line_error(&out, 1, "no key notes from");
    assert!(
        stderr(&out).contains("check --chain-id and --registry"),
        "{}",
        stderr(&out)
    );

    let port = free_port().expect("port").to_string();
    let nowhere = format!("mqtt://127.0.0.1:{port}");
    let mut unreachable = env.clone();
    unreachable.retain(|(k, _)| *k != "ANCHORMQ_BROKER");
    unreachable.push(("ANCHORMQ_BROKER", &nowhere));
    let out = anchormq(&pub_args(&["-m", "x", "--wait", "2"]), &unreachable).await;
    assert_one_line_error(&out, 1, "the broker could not be reached");

    let other_key = up.key("1113");
    let out = anchormq(
        &[
            "sub",
            "--as",
            "1112",
            "--key",
            &other_key,
            "-t",
            "hsu/0001/#",
            "--wait",
            "5",
        ],
        &env,
    )
    .await;
    assert_one_line_error(&out, 1, "is not its on-chain key");

    let out = anchormq(
        &[
            "sub",
            "--as",
            "1112",
            "--key",
            &up.key("1112"),
            "-t",
            "hsu/0001/#",
            "-W",
            "1",
        ],
        &env,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(up.interrupt().await.code(), Some(0));
}
