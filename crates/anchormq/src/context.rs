//! Resolves the global options (flags > environment > config file > defaults) into the things
//! commands use: the RPC, the registry deployment, the operator account, the broker, the bridge key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::providers::{Provider, ProviderBuilder};
use anchormq_bridge::BridgeSettings;
use anchormq_chain::{Address, Deployment, PrivateKeySigner, RegistryClient};
use anchormq_core::{NodePublicKey, NodeSecretKey, Registry, Trust, redact_url};
use anchormq_mqtt::{BrokerConfig, Credentials};
use eyre::{WrapErr, bail, eyre};
use serde::Deserialize;

use crate::cli::Globals;

/// Default RPC when none is given (a local Anvil).
pub const DEFAULT_RPC: &str = "http://127.0.0.1:8545";
/// Default broker when none is given.
pub const DEFAULT_BROKER: &str = "mqtt://127.0.0.1:1883";
/// How long to wait for the RPC to answer the first question.
const RPC_TIMEOUT: Duration = Duration::from_secs(15);

/// The `--config` file: the global options, plus the bridge's own table. No private keys here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    rpc: Option<String>,
    registry: Option<String>,
    chain_id: Option<u64>,
    deploy_block: Option<u64>,
    deployment: Option<PathBuf>,
    broker: Option<String>,
    broker_ca: Option<PathBuf>,
    username: Option<String>,
    password: Option<String>,
    bridge_key: Option<String>,
    keystore: Option<PathBuf>,
    trust_groups: Option<Vec<String>>,
    trust_admins: Option<Vec<String>>,
    /// Settings of `anchormq bridge` (same fields as its TOML file).
    #[serde(default)]
    bridge: Option<BridgeSettings>,
}

impl FileConfig {
    fn load(path: &Path) -> eyre::Result<Self> {
        let text = std::fs::read_to_string(path)
            .wrap_err_with(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            eyre!(
                "config file {}: {}",
                path.display(),
                e.to_string().replace('\n', " ")
            )
        })
    }
}

/// The resolved global options.
#[derive(Clone)]
pub struct Context {
    globals: Globals,
    bridge_file: Option<BridgeSettings>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The bridge table may hold a broker URL with a password: only say whether it is there.
        f.debug_struct("Context")
            .field("globals", &self.globals)
            .field("bridge_file", &self.bridge_file.is_some())
            .finish()
    }
}

impl Context {
    /// Reads the config file, if any, under the flags and environment.
    pub fn new(mut globals: Globals) -> eyre::Result<Self> {
        let file = match &globals.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let g = &mut globals;
        g.rpc = g.rpc.take().or(file.rpc);
        if g.deployment.is_none() && g.registry.is_none() {
            g.registry = file.registry;
            g.deployment = file.deployment;
        }
        g.deploy_block = g.deploy_block.or(file.deploy_block);
        g.chain_id = g.chain_id.or(file.chain_id);
        g.broker = g.broker.take().or(file.broker);
        g.broker_ca = g.broker_ca.take().or(file.broker_ca);
        g.username = g.username.take().or(file.username);
        g.password = g.password.take().or(file.password);
        g.bridge_key = g.bridge_key.take().or(file.bridge_key);
        if g.private_key.is_none() {
            g.keystore = g.keystore.take().or(file.keystore);
        }
        if g.trust_group.is_empty() {
            g.trust_group = parse_file_list("trust_groups", file.trust_groups)?;
        }
        if g.trust_admin.is_empty() {
            g.trust_admin = parse_file_list("trust_admins", file.trust_admins)?;
        }
        Ok(Self {
            globals,
            bridge_file: file.bridge,
        })
    }

    /// The global options after merging the config file.
    pub fn globals(&self) -> &Globals {
        &self.globals
    }

    /// The `[bridge]` table of the config file.
    pub fn bridge_file(&self) -> Option<&BridgeSettings> {
        self.bridge_file.as_ref()
    }

    /// The groups `pub` and `sub` accept.
    pub fn trust(&self) -> Trust {
        Trust::new(
            self.globals.trust_group.iter().copied(),
            self.globals.trust_admin.iter().map(|a| a.0.0),
        )
    }

    /// The RPC URL.
    pub fn rpc_url(&self) -> &str {
        self.globals.rpc.as_deref().unwrap_or(DEFAULT_RPC)
    }

    /// Asks the RPC for its chain ID (with a timeout, so an unreachable RPC fails in seconds).
    pub async fn chain_id(&self) -> eyre::Result<u64> {
        let url = self.rpc_url();
        let shown = redact_url(url);
        let ask = async {
            let provider = ProviderBuilder::new().connect(url).await?;
            provider.get_chain_id().await
        };
        match tokio::time::timeout(RPC_TIMEOUT, ask).await {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(error)) => Err(eyre!("cannot reach the RPC at {shown} (--rpc): {error}")),
            Err(_) => Err(eyre!(
                "the RPC at {shown} (--rpc) did not answer within {} s",
                RPC_TIMEOUT.as_secs()
            )),
        }
    }

    /// The registry: `--deployment FILE`, `--registry ADDRESS`, or `deployments/<chainId>.json`.
    pub async fn deployment(&self) -> eyre::Result<Deployment> {
        if let Some(path) = &self.globals.deployment {
            return Deployment::load(path).wrap_err("--deployment");
        }
        if let Some(address) = &self.globals.registry {
            let address: Address = address.trim().parse().map_err(|e| {
                eyre!("--registry {address:?} is not a 20-byte 0x-hex address: {e}")
            })?;
            let chain_id = match self.globals.chain_id {
                Some(id) => id,
                None => self.chain_id().await?,
            };
            return Ok(Deployment {
                chain_id,
                address,
                deploy_block: self.globals.deploy_block.unwrap_or(0),
                tx_hash: None,
            });
        }
        let chain_id = self.chain_id().await?;
        let path = PathBuf::from(format!("deployments/{chain_id}.json"));
        if !path.exists() {
            bail!(
                "no registry given: pass --registry ADDRESS or --deployment FILE \
                 (the default, {}, does not exist)",
                path.display()
            );
        }
        Deployment::load(&path).wrap_err("default deployment file")
    }

    /// The operator account, if a private key or keystore was given.
    pub fn operator(&self) -> eyre::Result<Option<PrivateKeySigner>> {
        if let Some(hex_key) = &self.globals.private_key {
            let signer: PrivateKeySigner = hex_key.trim().parse().map_err(|_| {
                eyre!("--private-key (ANCHORMQ_PRIVATE_KEY) is not a 32-byte hex private key")
            })?;
            return Ok(Some(signer));
        }
        if let Some(path) = &self.globals.keystore {
            let password = match std::env::var("ANCHORMQ_KEYSTORE_PASSWORD") {
                Ok(password) => password,
                Err(_) => rpassword::prompt_password(format!(
                    "password for keystore {}: ",
                    path.display()
                ))
                .wrap_err("cannot read the keystore password (set ANCHORMQ_KEYSTORE_PASSWORD)")?,
            };
            let signer = PrivateKeySigner::decrypt_keystore(path, password)
                .map_err(|e| eyre!("cannot open keystore {} (--keystore): {e}", path.display()))?;
            return Ok(Some(signer));
        }
        Ok(None)
    }

    /// A registry client that can only read.
    pub async fn reader(&self) -> eyre::Result<RegistryClient> {
        let deployment = self.deployment().await?;
        RegistryClient::connect(self.rpc_url(), deployment, None)
            .await
            .wrap_err("cannot use the registry")
    }

    /// The operator account, required: the command sends a transaction.
    pub fn signer(&self) -> eyre::Result<PrivateKeySigner> {
        self.operator()?.ok_or_else(|| {
            eyre!(
                "this command sends a transaction: give the operator account with --private-key \
                 (or ANCHORMQ_PRIVATE_KEY) or --keystore FILE"
            )
        })
    }

    /// A registry client that sends transactions from the operator account.
    pub async fn writer(&self) -> eyre::Result<RegistryClient> {
        let signer = self.signer()?;
        let deployment = self.deployment().await?;
        RegistryClient::connect(self.rpc_url(), deployment, Some(signer))
            .await
            .wrap_err("cannot use the registry")
    }

    /// The broker URL.
    pub fn broker_url(&self) -> &str {
        self.globals.broker.as_deref().unwrap_or(DEFAULT_BROKER)
    }

    /// Broker connection settings for `client_id`, with credentials and CA applied.
    pub fn broker_config(&self, client_id: impl Into<String>) -> eyre::Result<BrokerConfig> {
        let mut config =
            BrokerConfig::from_url(self.broker_url(), client_id).wrap_err("--broker")?;
        if let Some(username) = &self.globals.username {
            config.credentials = Some(Credentials {
                username: username.clone(),
                password: self.globals.password.clone().unwrap_or_default(),
            });
        } else if self.globals.password.is_some() && config.credentials.is_none() {
            bail!("--password (ANCHORMQ_BROKER_PASSWORD) was given without --username");
        }
        config.ca_file = self.globals.broker_ca.clone();
        Ok(config)
    }

    /// The trusted bridge public key (`--bridge-key`).
    pub fn bridge_public_key(&self) -> eyre::Result<NodePublicKey> {
        let text = self.globals.bridge_key.as_deref().ok_or_else(|| {
            eyre!(
                "give the bridge's public key with --bridge-key PUBKEY_HEX (or ANCHORMQ_BRIDGE_KEY)"
            )
        })?;
        parse_public_key(text).wrap_err("--bridge-key")
    }
}

/// A 33-byte compressed public key in hex, with or without 0x.
pub fn parse_public_key(text: &str) -> eyre::Result<NodePublicKey> {
    let text = text.trim();
    let bytes = hex::decode(text.strip_prefix("0x").unwrap_or(text))
        .map_err(|_| eyre!("{text:?} is not hex"))?;
    NodePublicKey::from_compressed(&bytes)
        .map_err(|e| eyre!("not a 33-byte compressed secp256k1 public key: {e}"))
}

/// The registry as `anchormq-core` names it.
pub fn core_registry(deployment: &Deployment) -> Registry {
    Registry {
        chain_id: deployment.chain_id,
        address: deployment.address.0.0,
    }
}

/// Reads a node key file; errors never contain key material.
pub fn load_node_key(path: &Path) -> eyre::Result<NodeSecretKey> {
    check_private(path)?;
    let content =
        std::fs::read(path).wrap_err_with(|| format!("cannot read key file {}", path.display()))?;
    NodeSecretKey::from_key_file(&content).map_err(|e| {
        eyre!(
            "key file {} is not an anchormq node key: {e}",
            path.display()
        )
    })
}

/// Parses a list from the config file; an error names the key and the entry.
fn parse_file_list<T>(key: &str, items: Option<Vec<String>>) -> eyre::Result<Vec<T>>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    items
        .unwrap_or_default()
        .iter()
        .map(|item| {
            item.parse()
                .map_err(|e| eyre!("config file: {key}: {item:?}: {e}"))
        })
        .collect()
}

/// Refuses a secret key file that other users can read or write, as ssh does: the key may already
/// be compromised, and the user should know before it is used.
pub fn check_private(path: &Path) -> eyre::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .wrap_err_with(|| format!("cannot read key file {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            bail!(
                "key file {} is accessible by other users (mode {:04o}): run `chmod 600 {}`",
                path.display(),
                mode & 0o7777,
                path.display()
            );
        }
    }
    Ok(())
}

/// The node key as the signing key the registry's proof of possession needs.
pub fn signing_key(key: &NodeSecretKey) -> eyre::Result<alloy::signers::k256::ecdsa::SigningKey> {
    let bytes = key.to_bytes();
    alloy::signers::k256::ecdsa::SigningKey::from_slice(&bytes[..])
        .map_err(|_| eyre!("the node key is not a valid secp256k1 secret key"))
}

#[cfg(test)]
mod tests {
    use anchormq_core::GroupId;

    use super::parse_file_list;

    #[test]
    fn config_lists_parse_and_errors_name_key_and_entry() {
        let groups: Vec<GroupId> =
            parse_file_list("trust_groups", Some(vec!["hsu0001".into()])).expect("parses");
        assert_eq!(groups, [GroupId::from_label("hsu0001").expect("id")]);
        let error =
            parse_file_list::<anchormq_chain::Address>("trust_admins", Some(vec!["0xnope".into()]))
                .expect_err("not an address");
        assert!(
            error
                .to_string()
                .starts_with("config file: trust_admins: \"0xnope\""),
            "{error}"
        );
        assert!(
            parse_file_list::<GroupId>("trust_groups", None)
                .expect("empty")
                .is_empty()
        );
    }
}
