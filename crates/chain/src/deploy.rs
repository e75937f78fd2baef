//! Deploying the KeyRegistry from the bytecode built into this crate, so that the `anchormq`
//! binary deploys anywhere without Foundry or a source checkout.

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, Bytes};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;

use crate::client::{RECEIPT_TIMEOUT, RegistryClient, connect_provider};
use crate::deployment::Deployment;
use crate::error::ChainError;

/// The registry's creation bytecode, hex: `contracts/artifacts/KeyRegistry.bin`, which a forge
/// test keeps equal to what the Solidity source compiles to.
const CREATION_CODE_HEX: &str = include_str!("../../../contracts/artifacts/KeyRegistry.bin");

/// The registry's creation code followed by its constructor argument (the operator of a closed
/// registry, or zero for an open one).
pub fn creation_code(operator: Option<Address>) -> Bytes {
    // Checked by the unit test below and, against the source, by the forge artifact test.
    let mut code = alloy::primitives::hex::decode(CREATION_CODE_HEX.trim()).unwrap_or_default();
    let mut word = [0u8; 32];
    word[12..].copy_from_slice(operator.unwrap_or(Address::ZERO).as_slice());
    code.extend_from_slice(&word);
    code.into()
}

/// Deploys a registry from `signer`'s account, waits for the receipt, and checks that the new
/// contract answers as a KeyRegistry with the requested operator.
pub async fn deploy_registry(
    url: &str,
    signer: PrivateKeySigner,
    operator: Option<Address>,
) -> Result<Deployment, ChainError> {
    let provider = connect_provider(url, Some(signer.clone())).await?;
    let chain_id = provider
        .get_chain_id()
        .await
        .map_err(|source| ChainError::Rpc {
            call: "eth_chainId",
            source,
        })?;
    let request = TransactionRequest::default()
        .with_from(signer.address())
        .with_deploy_code(creation_code(operator));
    let pending = provider
        .send_transaction(request)
        .await
        .map_err(|source| ChainError::Rpc {
            call: "eth_sendRawTransaction (deploy)",
            source,
        })?;
    let receipt = pending
        .with_timeout(Some(RECEIPT_TIMEOUT))
        .get_receipt()
        .await
        .map_err(|source| ChainError::Receipt {
            call: "deploy",
            source: Box::new(source),
        })?;
    if !receipt.status() {
        return Err(ChainError::Failed {
            tx_hash: receipt.transaction_hash,
        });
    }
    let address = receipt.contract_address.ok_or(ChainError::Failed {
        tx_hash: receipt.transaction_hash,
    })?;
    let deployment = Deployment {
        chain_id,
        address,
        deploy_block: receipt.block_number.unwrap_or_default(),
        tx_hash: Some(receipt.transaction_hash),
    };
    let client = RegistryClient::connect(url, deployment, None).await?;
    let actual = client.operator().await?;
    if actual != operator {
        return Err(ChainError::NotARegistry {
            address,
            reason: format!("its operator is {actual:?}, expected {operator:?}"),
        });
    }
    Ok(deployment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_bytecode_is_creation_code_with_the_operator_appended() {
        let open = creation_code(None);
        assert!(open.len() > 10_000, "the artifact decodes");
        assert_eq!(&open[..2], &[0x60, 0x80], "solc creation code");
        let operator = Address::repeat_byte(0xab);
        let closed = creation_code(Some(operator));
        assert_eq!(&closed[closed.len() - 20..], operator.as_slice());
        assert_eq!(open[..open.len() - 32], closed[..closed.len() - 32]);
    }
}
