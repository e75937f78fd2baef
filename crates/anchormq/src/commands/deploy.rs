//! `anchormq deploy`: deploys a KeyRegistry from the bytecode built into this binary and writes
//! the deployment file the other commands read.

use std::path::PathBuf;

use anchormq_chain::{Address, deploy_registry};
use clap::Args;
use eyre::WrapErr;

use crate::context::Context;

/// `deploy`.
#[derive(Debug, Args)]
pub struct DeployCommand {
    /// Deploy a closed registry operated by this account: only the registrars it names (with
    /// `anchormq registrar add`) may register nodes and create groups. Default: an open registry.
    #[arg(long, value_name = "ADDRESS")]
    pub operator: Option<Address>,
    /// Where to write the deployment file. Default: `deployments/<chainId>.json`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

impl DeployCommand {
    /// Sends the deployment from the operator account, checks the new registry, writes the file.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        let signer = context.signer()?;
        let deployment = deploy_registry(context.rpc_url(), signer, self.operator)
            .await
            .wrap_err("deploying the registry")?;
        let path = self
            .out
            .unwrap_or_else(|| PathBuf::from(format!("deployments/{}.json", deployment.chain_id)));
        deployment
            .save(&path)
            .wrap_err("recording the deployment")?;
        let kind = match self.operator {
            Some(operator) => format!("a closed registry operated by {operator}"),
            None => "an open registry".to_owned(),
        };
        println!(
            "deployed {kind} at {} on chain {} (block {})",
            deployment.address, deployment.chain_id, deployment.deploy_block
        );
        if let Some(tx) = deployment.tx_hash {
            println!("tx {tx}");
        }
        println!("wrote {}", path.display());
        Ok(())
    }
}
