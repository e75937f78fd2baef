//! The broker link as deployed: `mqtts://` with a CA file and a username and password, through the
//! built `anchormq` binary, against a real Mosquitto with a TLS listener (certificates made at run
//! time) and a real Anvil holding the paper's fixture.
//!
//! The failures a user meets first with such a broker, a CA that did not sign its certificate and a
//! wrong password, must each end the command at once with one line naming the broker and the
//! cause, and never show the password.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use anchormq_localstack::{Anvil, Mosquitto, PaperFixture, TlsFiles, await_condition};

mod common;
use common::{Sub, anchormq, bridge_key, command, paper_anvil, paper_key_file, stderr, stdout};

const USERNAME: &str = "fleet";
const PASSWORD: &str = "tls-test-pa55word";
const WRONG_PASSWORD: &str = "not-the-pa55word";
/// `--wait` and `--max-wait` of the failing commands: a failure found by timing out takes this long.
const PATIENCE: &str = "30";
/// A failure the link reports itself must come well before [`PATIENCE`] runs out.
const PROMPT: Duration = Duration::from_secs(15);

/// The chain settings every command here shares.
fn chain_env(anvil: &Anvil, fixture: &PaperFixture) -> Vec<(&'static str, String)> {
    let deployment = &fixture.deployment;
    vec![
        ("ANCHORMQ_RPC", anvil.http_url()),
        ("ANCHORMQ_REGISTRY", deployment.address.to_string()),
        ("ANCHORMQ_CHAIN_ID", deployment.chain_id.to_string()),
        ("ANCHORMQ_DEPLOY_BLOCK", deployment.deploy_block.to_string()),
    ]
}

fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A TLS Mosquitto that requires [`USERNAME`] and [`PASSWORD`], with its certificates in `dir`.
async fn tls_broker(dir: &Path) -> (Mosquitto, TlsFiles) {
    let files = TlsFiles::generate(dir, "broker").expect("certificates");
    let broker = Mosquitto::builder()
        .tls(files.clone())
        .credentials(USERNAME, PASSWORD)
        .spawn()
        .await
        .expect("mosquitto with TLS");
    (broker, files)
}

/// The bridge mirrors the paper's registry to a TLS broker that requires a password (flags on its
/// command line), `verify` finds broker and chain in agreement, and 1111's message on hsu0001
/// reaches 1112 (password from `ANCHORMQ_BROKER_PASSWORD`), all over `mqtts://`.
#[tokio::test(flavor = "multi_thread")]
async fn bridge_verify_pub_and_sub_work_over_mqtts_with_a_password() {
    let (anvil, fixture) = paper_anvil().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, files) = tls_broker(dir.path()).await;
    let url = broker.url();
    assert!(url.starts_with("mqtts://127.0.0.1:"), "{url}");
    let ca = files.ca.to_str().expect("utf-8").to_owned();
    let (bridge_key_path, bridge_public) = bridge_key(dir.path()).await;
    let chain = chain_env(&anvil, &fixture);

    let checkpoint = dir.path().join("bridge.ckpt");
    let mut bridge = command(
        &[
            "--broker",
            &url,
            "--broker-ca",
            &ca,
            "--username",
            USERNAME,
            "--password",
            PASSWORD,
            "bridge",
            "--key",
            &bridge_key_path,
            "--checkpoint",
            checkpoint.to_str().expect("utf-8"),
        ],
        &borrowed(&chain),
    );
    let bridge = bridge
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bridge starts");

    let mut env = chain.clone();
    env.extend([
        ("ANCHORMQ_BROKER", url.clone()),
        ("ANCHORMQ_BROKER_CA", ca.clone()),
        ("ANCHORMQ_BROKER_USERNAME", USERNAME.to_owned()),
        ("ANCHORMQ_BROKER_PASSWORD", PASSWORD.to_owned()),
        ("ANCHORMQ_BRIDGE_KEY", bridge_public),
    ]);
    await_condition(
        "verify to find the TLS broker's notes in agreement with the chain",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let env = env.clone();
            async move {
                anchormq(&["verify", "--quiet-ms", "300"], &borrowed(&env))
                    .await
                    .status
                    .success()
            }
        },
    )
    .await
    .expect("the bridge mirrors the paper's registry over mqtts");
    let verified = anchormq(&["verify", "--quiet-ms", "300"], &borrowed(&env)).await;
    assert_eq!(verified.status.code(), Some(0), "{}", stderr(&verified));
    assert!(
        stdout(&verified).contains("broker and chain agree: 4 node notes, 2 group notes"),
        "{}",
        stdout(&verified)
    );

    let key_1111 = paper_key_file(&fixture, "1111", dir.path());
    let key_1112 = paper_key_file(&fixture, "1112", dir.path());
    let sub = Sub::start(
        &[
            "--as",
            "1112",
            "--key",
            &key_1112,
            "-t",
            "hsu/0001/#",
            "-C",
            "1",
            "-v",
            "-W",
            "60",
        ],
        &borrowed(&env),
    )
    .await;
    let published = anchormq(
        &[
            "pub",
            "--as",
            "1111",
            "--key",
            &key_1111,
            "-t",
            "hsu/0001/temperature",
            "-m",
            "21.5 C over mqtts",
            "-q",
            "1",
        ],
        &borrowed(&env),
    )
    .await;
    assert_eq!(published.status.code(), Some(0), "{}", stderr(&published));
    let (code, out, err) = sub.finish().await;
    assert_eq!(code, Some(0), "sub failed: {err}");
    assert_eq!(
        out.trim(),
        "hsu/0001/temperature 21.5 C over mqtts",
        "{err}"
    );

    let mut bridge = bridge;
    bridge.start_kill().expect("stop the bridge");
    let bridge_output = bridge.wait_with_output().await.expect("bridge output");
    for (what, text) in [
        ("verify", stdout(&verified) + &stderr(&verified)),
        ("pub", stdout(&published) + &stderr(&published)),
        ("sub", out + &err),
        ("bridge", stdout(&bridge_output) + &stderr(&bridge_output)),
    ] {
        assert!(!text.contains(PASSWORD), "{what} printed the password");
        assert!(!text.contains(" WARN "), "{what} warned: {text}");
    }
}

/// Checks a failed run: exit 1 within [`PROMPT`], no warnings, no password, and a last line
/// `error: ...` naming the broker and `cause`.
fn assert_refused(what: &str, output: &Output, took: Duration, url: &str, cause: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(1), "{what}: {err}");
    assert!(took < PROMPT, "{what} took {took:?} to fail: {err}");
    assert!(!err.contains(" WARN "), "{what} warned: {err}");
    for text in [&err, &stdout(output)] {
        assert!(!text.contains(PASSWORD), "{what} printed the password");
        assert!(
            !text.contains(WRONG_PASSWORD),
            "{what} printed the password"
        );
    }
    let last = err.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    assert!(last.starts_with("error: "), "{what}: {err}");
    assert!(
        last.contains(&format!("cannot connect to the MQTT broker {url}: {cause}")),
        "{what}: {cause:?} not in {last:?}"
    );
}

/// A CA that did not sign the broker's certificate, and a wrong password, each stop `sub`, `pub`,
/// `verify` and the bridge at once with one line naming the broker and the cause, instead of
/// retrying until a timeout; the password is never printed.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_ca_or_password_is_one_clear_line_at_once() {
    let (anvil, fixture) = paper_anvil().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, files) = tls_broker(dir.path()).await;
    let url = broker.url();
    let stranger = TlsFiles::generate(dir.path(), "stranger").expect("another CA");
    let (bridge_key_path, bridge_public) = bridge_key(dir.path()).await;
    let key_1111 = paper_key_file(&fixture, "1111", dir.path());
    let key_1112 = paper_key_file(&fixture, "1112", dir.path());
    let right_ca = files.ca.to_str().expect("utf-8").to_owned();
    let wrong_ca = stranger.ca.to_str().expect("utf-8").to_owned();
    let checkpoint = dir.path().join("bridge.ckpt");
    let checkpoint = checkpoint.to_str().expect("utf-8");

    let untrusted = format!(
        "its TLS certificate is not trusted: it is not signed by a trusted CA (trusted: the CA in {wrong_ca})"
    );
    let refused = "not authorised: the broker refused the username and password".to_owned();
    let cases = [
        ("wrong CA", wrong_ca.as_str(), PASSWORD, untrusted),
        ("wrong password", right_ca.as_str(), WRONG_PASSWORD, refused),
    ];
    for (case, ca, password, cause) in cases {
        let mut env = chain_env(&anvil, &fixture);
        env.extend([
            ("ANCHORMQ_BROKER", url.clone()),
            ("ANCHORMQ_BROKER_CA", ca.to_owned()),
            ("ANCHORMQ_BROKER_USERNAME", USERNAME.to_owned()),
            ("ANCHORMQ_BROKER_PASSWORD", password.to_owned()),
            ("ANCHORMQ_BRIDGE_KEY", bridge_public.clone()),
        ]);
        let env = borrowed(&env);
        let runs: [(&str, Vec<&str>); 4] = [
            (
                "sub",
                vec![
                    "sub",
                    "--as",
                    "1112",
                    "--key",
                    &key_1112,
                    "-t",
                    "hsu/0001/#",
                    "--wait",
                    PATIENCE,
                ],
            ),
            (
                "pub",
                vec![
                    "pub",
                    "--as",
                    "1111",
                    "--key",
                    &key_1111,
                    "-t",
                    "hsu/0001/temperature",
                    "-m",
                    "x",
                    "-q",
                    "1",
                    "--wait",
                    PATIENCE,
                ],
            ),
            ("verify", vec!["verify", "--max-wait", PATIENCE]),
            (
                "bridge",
                vec![
                    "bridge",
                    "--key",
                    &bridge_key_path,
                    "--checkpoint",
                    checkpoint,
                ],
            ),
        ];
        for (what, args) in runs {
            let started = Instant::now();
            let output = anchormq(&args, &env).await;
            let what = format!("{what} with a {case}");
            assert_refused(&what, &output, started.elapsed(), &url, &cause);
            if what.starts_with("bridge") {
                // The bridge says who it is and where it starts before it meets the broker.
                continue;
            }
            let lines = stderr(&output)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .count();
            assert_eq!(lines, 1, "{what}: one line expected: {}", stderr(&output));
        }
    }
    // The broker saw the refused password, so the test did reach it.
    assert!(
        broker.log_tail().contains("not authorised"),
        "{}",
        broker.log_tail()
    );
}
