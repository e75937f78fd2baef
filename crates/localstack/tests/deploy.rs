//! Deploying the real KeyRegistry (the bytecode built into anchormq-chain) to a real Anvil, open
//! and closed, and starting Anvil from the built-in paper fixture.

use anchormq_localstack::{
    Anvil, AnvilRpc, DEV_ACCOUNTS, DeployError, PaperFixture, deploy_registry,
    deploy_registry_with_operator, parse_quantity,
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
        Some(deployment.address.to_string().to_lowercase())
    );
}

#[tokio::test]
async fn a_closed_registry_reports_its_operator() {
    let anvil = Anvil::spawn().await.expect("anvil");
    let operator = DEV_ACCOUNTS[3].address;
    let deployment =
        deploy_registry_with_operator(&anvil, DEV_ACCOUNTS[0].private_key(), Some(operator))
            .await
            .expect("deploy succeeds");
    let client = anchormq_chain::RegistryClient::connect(&anvil.http_url(), deployment, None)
        .await
        .expect("client");
    assert_eq!(
        client.operator().await.expect("operator"),
        Some(operator.parse().expect("address"))
    );
}

#[tokio::test]
async fn bad_key_fails_without_showing_it_and_sends_nothing() {
    let anvil = Anvil::spawn().await.expect("anvil");
    // 31 bytes: not a secp256k1 key
    let key = format!("0x{}", "5a".repeat(31));
    let err = deploy_registry(&anvil, &key).await.expect_err("bad key");
    assert!(matches!(err, DeployError::Key), "{err:?}");
    assert!(!err.to_string().contains(&key[2..]), "key echoed: {err}");
    assert_eq!(
        anvil.block_number().await.expect("head"),
        0,
        "nothing was sent"
    );
}

#[tokio::test]
async fn the_built_in_paper_fixture_starts_anvil_with_the_registry_in_place() {
    let fixture = PaperFixture::embedded().expect("fixture parses");
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
