//! A real Anvil: start, readiness, dev accounts, restart with state, crash without state.

use anchormq_localstack::{
    Anvil, AnvilError, AnvilRpc, DEV_ACCOUNTS, JsonRpcClient, parse_quantity,
};
use serde_json::{Value, json};

const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

async fn quantity(rpc: &JsonRpcClient, method: &str, params: Value) -> u64 {
    let value = rpc.call(method, params).await.expect(method);
    parse_quantity(&value).unwrap_or_else(|| panic!("{method} returned {value}"))
}

#[tokio::test]
async fn anvil_answers_its_configured_chain_id_and_lists_the_dev_accounts() {
    let anvil = Anvil::builder()
        .chain_id(4242)
        .spawn()
        .await
        .expect("anvil starts");
    let rpc = anvil.rpc().expect("client");
    assert_eq!(quantity(&rpc, "eth_chainId", json!([])).await, 4242);
    assert_eq!(anvil.chain_id(), 4242);
    assert_eq!(anvil.http_url(), format!("http://{}", anvil.addr()));
    assert_eq!(anvil.ws_url(), anvil.http_url().replace("http://", "ws://"));

    let accounts = rpc
        .call("eth_accounts", json!([]))
        .await
        .expect("eth_accounts");
    let listed: Vec<String> = accounts
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|a| a.as_str().map(str::to_lowercase))
        .collect();
    let log = std::fs::read_to_string(anvil.log_path()).expect("log");
    for (index, account) in DEV_ACCOUNTS.iter().enumerate() {
        assert_eq!(
            listed[index],
            account.address.to_lowercase(),
            "account {index}"
        );
        // Anvil prints its keys as "(i) 0x..."; ours must be the same ones.
        assert!(
            log.contains(&format!("({index}) {}", account.private_key())),
            "key {index} differs from anvil's output"
        );
    }
}

#[tokio::test]
async fn restart_keeps_port_blocks_and_nonces() {
    let mut anvil = Anvil::spawn().await.expect("anvil starts");
    let rpc = anvil.rpc().expect("client");
    let from = DEV_ACCOUNTS[0].address;
    let to = DEV_ACCOUNTS[1].address;
    let tx = rpc
        .call(
            "eth_sendTransaction",
            json!([{"from": from, "to": to, "value": "0x3039"}]),
        )
        .await
        .expect("dev account 0 is unlocked");
    let tx_hash = tx.as_str().expect("tx hash").to_owned();
    anvil.wait_for_receipt(&tx_hash, WAIT).await.expect("mined");
    assert_eq!(anvil.block_number().await.expect("head"), 1);
    let port = anvil.port();

    anvil.restart().await.expect("restart");
    assert_eq!(anvil.port(), port, "same port after restart");
    let rpc = anvil.rpc().expect("client");
    assert_eq!(
        anvil.block_number().await.expect("head"),
        1,
        "block survived"
    );
    assert_eq!(
        quantity(&rpc, "eth_getTransactionCount", json!([from, "latest"])).await,
        1,
        "nonce survived"
    );
    let receipt = rpc
        .call("eth_getTransactionReceipt", json!([tx_hash]))
        .await
        .expect("receipt");
    assert_eq!(receipt["status"], "0x1", "receipt survived: {receipt}");
    let block = rpc
        .call("eth_getBlockByNumber", json!(["0x1", false]))
        .await
        .expect("block 1");
    assert_eq!(block["transactions"][0].as_str(), Some(tx_hash.as_str()));

    // The chain keeps working after the restart.
    anvil
        .send_value(&DEV_ACCOUNTS[0], to, 1)
        .await
        .expect("send after restart");
    assert_eq!(anvil.block_number().await.expect("head"), 2);
}

#[tokio::test]
async fn killed_anvil_restarts_from_its_last_dump_only() {
    let mut anvil = Anvil::spawn().await.expect("anvil starts");
    let rpc = anvil.rpc().expect("client");
    let to = DEV_ACCOUNTS[3].address;
    anvil
        .send_value(&DEV_ACCOUNTS[2], to, 1)
        .await
        .expect("tx 1");
    anvil
        .restart()
        .await
        .expect("graceful restart dumps block 1");
    anvil
        .send_value(&DEV_ACCOUNTS[2], to, 1)
        .await
        .expect("tx 2");
    assert_eq!(anvil.block_number().await.expect("head"), 2);

    anvil.kill().await.expect("kill");
    assert!(!anvil.is_running());
    assert!(
        rpc.call("eth_blockNumber", json!([])).await.is_err(),
        "killed node still answers"
    );
    anvil.start().await.expect("start after kill");
    assert_eq!(
        anvil.block_number().await.expect("head"),
        1,
        "SIGKILL must lose the block mined after the last dump"
    );
}

#[tokio::test]
async fn bad_flag_reports_the_exit_and_anvil_output() {
    let err = Anvil::builder()
        .arg("--no-such-flag-anchormq")
        .spawn()
        .await
        .expect_err("anvil rejects the flag");
    match &err {
        AnvilError::Exited { log, .. } => assert!(log.contains("no-such-flag-anchormq"), "{log}"),
        other => panic!("expected Exited, got {other:?}"),
    }
}

#[tokio::test]
async fn missing_binary_names_the_path() {
    let err = Anvil::builder()
        .binary("/nonexistent/anvil-anchormq")
        .spawn()
        .await
        .expect_err("no such binary");
    assert!(matches!(err, AnvilError::Spawn { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/anvil-anchormq"),
        "{err}"
    );
}

#[tokio::test]
async fn interval_mining_produces_blocks_without_transactions() {
    let anvil = Anvil::builder()
        .block_time(std::time::Duration::from_millis(100))
        .spawn()
        .await
        .expect("anvil starts");
    anchormq_localstack::await_condition(
        "three interval-mined blocks",
        WAIT,
        std::time::Duration::from_millis(20),
        || async { anvil.block_number().await.is_ok_and(|n| n >= 3) },
    )
    .await
    .expect("blocks mined on the interval");
}
