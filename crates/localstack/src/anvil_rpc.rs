//! Raw JSON-RPC on an [`Anvil`] node, for tests: Anvil's own methods (`anvil_reorg`,
//! `evm_mine`, …) and plain transfers between its unlocked dev accounts.

use std::time::Duration;

use anchormq_devnet::{Anvil, DevAccount};
use serde_json::{Value, json};

use crate::rpc::{JsonRpcClient, RpcError, parse_quantity};
use crate::wait::{WaitTimeout, await_value};

/// A raw JSON-RPC call on Anvil failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnvilRpcError {
    /// The call failed.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// A transaction was not mined in time.
    #[error(transparent)]
    Wait(#[from] WaitTimeout),
}

/// Raw JSON-RPC on a test's Anvil node.
#[allow(async_fn_in_trait)]
pub trait AnvilRpc {
    /// A JSON-RPC client for the node's HTTP endpoint.
    fn rpc(&self) -> Result<JsonRpcClient, RpcError>;

    /// The current block number.
    async fn block_number(&self) -> Result<u64, AnvilRpcError> {
        let rpc = self.rpc()?;
        let value = rpc.call("eth_blockNumber", json!([])).await?;
        parse_quantity(&value).ok_or_else(|| {
            AnvilRpcError::Rpc(RpcError::InvalidResponse {
                url: rpc.url().to_owned(),
                reason: format!("eth_blockNumber returned {value}"),
            })
        })
    }

    /// Waits until `tx_hash` is mined and returns its receipt. Anvil answers
    /// `eth_sendTransaction` before the block is mined, even with instant mining.
    async fn wait_for_receipt(
        &self,
        tx_hash: &str,
        timeout: Duration,
    ) -> Result<Value, AnvilRpcError> {
        let rpc = self.rpc()?;
        let what = format!("receipt of {tx_hash}");
        Ok(await_value(&what, timeout, Duration::from_millis(10), || {
            let rpc = rpc.clone();
            async move {
                rpc.call("eth_getTransactionReceipt", json!([tx_hash]))
                    .await
                    .ok()
                    .filter(|receipt| !receipt.is_null())
            }
        })
        .await?)
    }

    /// Sends `value_wei` from one unlocked dev account to an address and waits for the receipt;
    /// returns the transaction hash.
    async fn send_value(
        &self,
        from: &DevAccount,
        to: &str,
        value_wei: u128,
    ) -> Result<String, AnvilRpcError> {
        let rpc = self.rpc()?;
        let hash = rpc
            .call(
                "eth_sendTransaction",
                json!([{"from": from.address, "to": to, "value": format!("{value_wei:#x}")}]),
            )
            .await?;
        let hash = hash.as_str().map(str::to_owned).ok_or_else(|| {
            AnvilRpcError::Rpc(RpcError::InvalidResponse {
                url: rpc.url().to_owned(),
                reason: format!("eth_sendTransaction returned {hash}"),
            })
        })?;
        self.wait_for_receipt(&hash, Duration::from_secs(30))
            .await?;
        Ok(hash)
    }
}

impl AnvilRpc for Anvil {
    fn rpc(&self) -> Result<JsonRpcClient, RpcError> {
        JsonRpcClient::new(&self.http_url())
    }
}
