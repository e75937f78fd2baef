//! Arguments: the global options every command shares, and one subcommand struct per command.

use std::path::PathBuf;

use anchormq_chain::Address;
use anchormq_core::GroupId;
use clap::{Args, Parser, Subcommand};

use crate::commands;
use crate::context::Context;

/// End-to-end encryption for MQTT fleets, with keys and memberships anchored on a KeyRegistry contract.
#[derive(Debug, Parser)]
#[command(name = "anchormq", version, about, propagate_version = true)]
pub struct Cli {
    /// Options shared by every command.
    #[command(flatten)]
    pub globals: Globals,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the chain, the registry and the broker are, and who signs transactions.
///
/// Each option can also come from its environment variable or from the `--config` TOML file
/// (same names, `snake_case`); flags win over the environment, which wins over the file.
#[derive(Clone, Default, Args)]
#[command(next_help_heading = "Global options")]
pub struct Globals {
    /// TOML file with defaults for these options (and a `[bridge]` table for `anchormq bridge`).
    #[arg(long, global = true, env = "ANCHORMQ_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Ethereum JSON-RPC URL (http(s):// or ws(s)://). Default http://127.0.0.1:8545.
    #[arg(long, global = true, env = "ANCHORMQ_RPC", value_name = "URL")]
    pub rpc: Option<String>,
    /// KeyRegistry address (instead of a deployment file).
    #[arg(long, global = true, env = "ANCHORMQ_REGISTRY", value_name = "ADDRESS")]
    pub registry: Option<String>,
    /// Chain ID of the registry, with --registry (asked from the RPC when not given).
    #[arg(long, global = true, env = "ANCHORMQ_CHAIN_ID", value_name = "ID")]
    pub chain_id: Option<u64>,
    /// First block of the registry's history, with --registry (default 0).
    #[arg(
        long,
        global = true,
        env = "ANCHORMQ_DEPLOY_BLOCK",
        value_name = "BLOCK"
    )]
    pub deploy_block: Option<u64>,
    /// Deployment file written by scripts/deploy.sh. Default: `deployments/<chainId>.json`.
    #[arg(
        long,
        global = true,
        env = "ANCHORMQ_DEPLOYMENT",
        value_name = "FILE",
        conflicts_with = "registry"
    )]
    pub deployment: Option<PathBuf>,
    /// MQTT broker, mqtt://host:port or mqtts://host:port. Default mqtt://127.0.0.1:1883.
    #[arg(long, global = true, env = "ANCHORMQ_BROKER", value_name = "URL")]
    pub broker: Option<String>,
    /// PEM file of the CA that signed the broker's certificate (mqtts://).
    #[arg(long, global = true, env = "ANCHORMQ_BROKER_CA", value_name = "FILE")]
    pub broker_ca: Option<PathBuf>,
    /// Broker username.
    #[arg(long, global = true, env = "ANCHORMQ_BROKER_USERNAME")]
    pub username: Option<String>,
    /// Broker password.
    #[arg(
        long,
        global = true,
        env = "ANCHORMQ_BROKER_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// Public key of the bridge whose notes to trust (33-byte compressed, hex).
    #[arg(
        long,
        global = true,
        env = "ANCHORMQ_BRIDGE_KEY",
        value_name = "PUBKEY_HEX"
    )]
    pub bridge_key: Option<String>,
    /// Operator account's private key (hex), for transactions.
    #[arg(
        long,
        global = true,
        env = "ANCHORMQ_PRIVATE_KEY",
        hide_env_values = true,
        value_name = "HEX",
        conflicts_with = "keystore"
    )]
    pub private_key: Option<String>,
    /// Operator account's encrypted JSON keystore; password from ANCHORMQ_KEYSTORE_PASSWORD or a prompt.
    #[arg(long, global = true, env = "ANCHORMQ_KEYSTORE", value_name = "FILE")]
    pub keystore: Option<PathBuf>,
    /// `pub`/`sub`: accept only these groups (repeat, or comma-separate). With no --trust-group
    /// and no --trust-admin, every group this node is a member of is accepted.
    #[arg(
        long,
        global = true,
        env = "ANCHORMQ_TRUST_GROUPS",
        value_name = "GROUP",
        value_delimiter = ','
    )]
    pub trust_group: Vec<GroupId>,
    /// `pub`/`sub`: accept the groups administered by these accounts (repeat, or comma-separate).
    #[arg(
        long,
        global = true,
        env = "ANCHORMQ_TRUST_ADMINS",
        value_name = "ADDRESS",
        value_delimiter = ','
    )]
    pub trust_admin: Vec<Address>,
}

impl std::fmt::Debug for Globals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |set: bool| if set { Some("<redacted>") } else { None };
        f.debug_struct("Globals")
            .field("config", &self.config)
            .field("rpc", &self.rpc.as_deref().map(anchormq_core::redact_url))
            .field("registry", &self.registry)
            .field("chain_id", &self.chain_id)
            .field("deploy_block", &self.deploy_block)
            .field("deployment", &self.deployment)
            .field(
                "broker",
                &self.broker.as_deref().map(anchormq_core::redact_url),
            )
            .field("broker_ca", &self.broker_ca)
            .field("username", &self.username)
            .field("password", &redacted(self.password.is_some()))
            .field("bridge_key", &self.bridge_key)
            .field("private_key", &redacted(self.private_key.is_some()))
            .field("keystore", &self.keystore)
            .field("trust_group", &self.trust_group)
            .field("trust_admin", &self.trust_admin)
            .finish()
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Deploy a KeyRegistry (built into this binary) and write its deployment file.
    Deploy(commands::deploy::DeployCommand),
    /// Node keys and their registration on chain.
    #[command(subcommand)]
    Node(commands::node::NodeCommand),
    /// Groups and their members on chain.
    #[command(subcommand)]
    Group(commands::group::GroupCommand),
    /// Registrars of a closed registry (its operator only).
    #[command(subcommand)]
    Registrar(commands::registrar::RegistrarCommand),
    /// Run the bridge: mirror the registry as signed, retained MQTT key notes.
    Bridge(commands::bridge::BridgeCommand),
    /// History of keys and memberships, read from the chain's logs.
    Audit(commands::audit::AuditCommand),
    /// Compare the key notes on the broker with the chain; list every difference.
    Verify(commands::verify::VerifyCommand),
    /// Encrypt a message for a group and publish it (like mosquitto_pub).
    Pub(commands::pubsub::PubCommand),
    /// Subscribe and print decrypted messages (like mosquitto_sub).
    Sub(commands::pubsub::SubCommand),
    /// Run a local stack (Anvil, registry, broker, bridge) for trying things by hand.
    Up(commands::up::UpCommand),
    /// Run the paper's experiment end to end and check every outcome.
    Demo(commands::demo::DemoCommand),
    /// Measure encrypted against plain MQTT pub/sub through one broker.
    #[command(hide = true)]
    Bench(commands::bench::BenchCommand),
}

impl Command {
    /// Log level when ANCHORMQ_LOG is not set: long-running services say what they do.
    pub fn default_log_level(&self) -> &'static str {
        match self {
            Self::Bridge(_) | Self::Up(_) => "info",
            _ => "warn",
        }
    }
}

impl Cli {
    /// Runs the chosen command.
    pub async fn execute(self) -> eyre::Result<()> {
        let context = Context::new(self.globals)?;
        match self.command {
            Command::Deploy(command) => command.execute(&context).await,
            Command::Node(command) => command.execute(&context).await,
            Command::Group(command) => command.execute(&context).await,
            Command::Registrar(command) => command.execute(&context).await,
            Command::Bridge(command) => command.execute(&context).await,
            Command::Audit(command) => command.execute(&context).await,
            Command::Verify(command) => command.execute(&context).await,
            Command::Pub(command) => command.execute(&context).await,
            Command::Sub(command) => command.execute(&context).await,
            Command::Up(command) => command.execute(&context).await,
            Command::Demo(command) => command.execute(&context).await,
            Command::Bench(command) => command.execute(&context).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_secrets() {
        let cli = Cli::try_parse_from([
            "anchormq",
            "--private-key",
            "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
            "--password",
            "hunter2",
            "--broker",
            "mqtt://user:brokersecret@127.0.0.1:1883",
            "audit",
        ])
        .expect("parses");
        let shown = format!("{cli:?}");
        for secret in ["ac0974bec39a", "hunter2", "brokersecret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("<redacted>"));
    }
}
