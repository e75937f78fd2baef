//! Deploying the real KeyRegistry to a real Anvil, and starting Anvil from the paper fixture.

use anchormq_localstack::{
    Anvil, DEV_ACCOUNTS, DeployError, PaperFixture, deploy_registry, parse_quantity,
};
use serde_json::json;

#[tokio::test]
async fn deploy_registry_puts_code_on_chain_and_reports_where() {
    let anvil = Anvil::spawn().await.expect("anvil");
    let deployment = deploy_registry(&anvil, DEV_ACCOUNTS[0].private_key())
        .await
        .expect("deploy succeeds");
    assert_eq!(deployment.chain_id, anvil.chain_id());
    assert!(deployment.deploy_block >= 1);
    let rpc = anvil.rpc().expect("client");
    let code = rpc
        .call("eth_getCode", json!([deployment.address, "latest"]))
        .await
        .expect("getCode");
    assert!(
        code.as_str().is_some_and(|c| c.len() > 100),
        "no contract at {}",
        deployment.address
    );
    let receipt = rpc
        .call("eth_getTransactionReceipt", json!([deployment.tx_hash]))
        .await
        .expect("receipt");
    assert_eq!(receipt["status"], "0x1");
    assert_eq!(
        parse_quantity(&receipt["blockNumber"]),
        Some(deployment.deploy_block)
    );
    assert_eq!(
        receipt["contractAddress"].as_str().map(str::to_lowercase),
        Some(deployment.address.to_lowercase())
    );
}

#[tokio::test]
async fn bad_key_fails_with_the_script_output_but_not_the_key() {
    let anvil = Anvil::spawn().await.expect("anvil");
    // 31 bytes: not a secp256k1 key, so forge refuses it before sending anything.
    let key = format!("0x{}", "5a".repeat(31));
    let err = deploy_registry(&anvil, &key).await.expect_err("bad key");
    let text = err.to_string();
    assert!(matches!(err, DeployError::StepFailed { .. }), "{err:?}");
    assert!(text.contains("deploy.sh"), "{text}");
    assert!(!text.contains(&key[2..]), "key echoed: {text}");
    assert_eq!(
        anvil.block_number().await.expect("head"),
        0,
        "nothing was sent"
    );
}

#[tokio::test]
async fn paper_fixture_starts_anvil_with_the_registry_in_place() {
    let fixture = PaperFixture::load(PaperFixture::default_path()).expect("fixture parses");
    for id in ["1111", "1112", "1113", "1114"] {
        let node = fixture
            .node(id)
            .unwrap_or_else(|| panic!("node {id} missing"));
        assert_eq!(node.public_key.len(), 2 + 66, "node {id} key is 33 bytes");
    }
    let members = |id: &str| fixture.group(id).map(|g| g.members.clone());
    assert_eq!(members("hsu0001"), Some(vec!["1111".into(), "1112".into()]));
    assert_eq!(members("hsu0002"), Some(vec!["1113".into(), "1114".into()]));
    assert!(!format!("{fixture:?}").contains(&DEV_ACCOUNTS[0].private_key()[2..]));

    let state = fixture.state_path().expect("fixture names its state file");
    let anvil = Anvil::builder()
        .chain_id(fixture.deployment.chain_id)
        .load_state(&state)
        .spawn()
        .await
        .expect("anvil loads the fixture state");
    let rpc = anvil.rpc().expect("client");
    let code = rpc
        .call("eth_getCode", json!([fixture.deployment.address, "latest"]))
        .await
        .expect("getCode");
    assert!(
        code.as_str().is_some_and(|c| c.len() > 100),
        "registry missing"
    );
    if let Some(last) = fixture.last_block {
        assert_eq!(anvil.block_number().await.expect("head"), last);
    }
    let receipt = rpc
        .call(
            "eth_getTransactionReceipt",
            json!([fixture.deployment.tx_hash]),
        )
        .await
        .expect("deploy receipt");
    assert_eq!(
        parse_quantity(&receipt["blockNumber"]),
        Some(fixture.deployment.deploy_block)
    );
}
