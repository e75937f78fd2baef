//! Deploying the KeyRegistry to an [`Anvil`] node, from the bytecode built into
//! `anchormq-chain` (the same path `anchormq deploy` takes).

use anchormq_chain::{Address, ChainError, Deployment, PrivateKeySigner};
use anchormq_devnet::Anvil;

/// Deploying failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeployError {
    /// The deployer key is not a private key (the key itself is never shown).
    #[error("the deployer key is not a 32-byte hex private key")]
    Key,
    /// The operator is not an address.
    #[error("the operator {0:?} is not an address")]
    Operator(String),
    /// The chain refused or the registry did not check out.
    #[error(transparent)]
    Chain(#[from] ChainError),
}

/// Deploys a fresh, open KeyRegistry to `anvil`, sent from `private_key`.
pub async fn deploy_registry(anvil: &Anvil, private_key: &str) -> Result<Deployment, DeployError> {
    deploy_registry_with_operator(anvil, private_key, None).await
}

/// Like [`deploy_registry`], but a closed registry when `operator` is given: only the registrars
/// that operator names may register nodes and create groups.
pub async fn deploy_registry_with_operator(
    anvil: &Anvil,
    private_key: &str,
    operator: Option<&str>,
) -> Result<Deployment, DeployError> {
    let signer: PrivateKeySigner = private_key.parse().map_err(|_| DeployError::Key)?;
    let operator = operator
        .map(|o| {
            o.parse::<Address>()
                .map_err(|_| DeployError::Operator(o.to_owned()))
        })
        .transpose()?;
    Ok(anchormq_chain::deploy_registry(&anvil.http_url(), signer, operator).await?)
}
