//! Deploying the KeyRegistry contract to an [`Anvil`] node, and reading deployment files.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use tokio::process::Command;
use tokio::sync::Mutex;

use crate::anvil::Anvil;
use crate::paths::repo_root;

/// How long a deploy (including a first compile of the contracts) may take.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(300);

/// One deploy at a time per process: forge shares `contracts/out`, `cache` and `broadcast`.
static DEPLOY_LOCK: Mutex<()> = Mutex::const_new(());

/// Where `deploy_registry` asks `scripts/deploy.sh` to write `<chainId>.json`, so tests never
/// touch the repository's `deployments/`.
pub const DEPLOYMENTS_DIR_ENV: &str = "ANCHORMQ_DEPLOYMENTS_DIR";

/// Deploying or loading a deployment failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeployError {
    /// The deploy script (or a tool it needs) was not found.
    #[error("{tool} not found (tried {tried})")]
    ToolNotFound {
        /// Which tool.
        tool: &'static str,
        /// The paths that were tried.
        tried: String,
    },
    /// A temp dir or file could not be created.
    #[error("cannot prepare the deploy in {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A deploy step exited unsuccessfully.
    #[error("{step} failed with {status}; its output:\n{output}")]
    StepFailed {
        /// The command, without secrets.
        step: String,
        /// How it exited.
        status: std::process::ExitStatus,
        /// The end of its output.
        output: String,
    },
    /// A deploy step took too long and was killed.
    #[error("{step} did not finish within {timeout:?}")]
    StepTimedOut {
        /// The command, without secrets.
        step: String,
        /// The limit that passed.
        timeout: Duration,
    },
    /// The deploy script ran but did not write the expected deployment file.
    #[error(
        "deploy script finished but {path} is missing: scripts/deploy.sh must write <chainId>.json \
         into ${DEPLOYMENTS_DIR_ENV} when it is set; its output:\n{output}"
    )]
    OutputMissing {
        /// The file that was expected.
        path: PathBuf,
        /// The end of the script's output.
        output: String,
    },
    /// A deployment or fixture file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A deployment or fixture file is not valid JSON of the expected shape.
    #[error("invalid deployment JSON in {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The JSON error (names the field).
        #[source]
        source: serde_json::Error,
    },
    /// The deployment is for another chain than the node it was deployed to.
    #[error("deployment in {path} is for chain {found}, expected {expected}")]
    WrongChain {
        /// The file.
        path: PathBuf,
        /// The node's chain ID.
        expected: u64,
        /// The file's chain ID.
        found: u64,
    },
}

/// Where a KeyRegistry lives: the contents of `deployments/<chainId>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// The chain ID.
    #[serde(deserialize_with = "flexible_u64")]
    pub chain_id: u64,
    /// The registry's address, 0x-hex.
    pub address: String,
    /// The block holding the deploy transaction: log scans start here.
    #[serde(deserialize_with = "flexible_u64")]
    pub deploy_block: u64,
    /// The deploy transaction's hash, 0x-hex.
    pub tx_hash: String,
}

impl Deployment {
    /// Reads a deployment JSON file (`deployments/<chainId>.json` or `anvil-fixtures/paper.json`;
    /// extra fields are ignored).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, DeployError> {
        read_json(path.as_ref())
    }
}

/// A 0x-hex private key from a fixture. `Debug` hides it.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct SecretHex(String);

impl SecretHex {
    /// The 0x-hex key.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHex(<redacted>)")
    }
}

/// A node in the paper fixture.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FixtureNode {
    /// The node ID as a string, e.g. "1111".
    pub id: String,
    /// The node ID as bytes32 hex (the string left-aligned, zero-padded).
    #[serde(default)]
    pub node_id: Option<String>,
    /// The node's secp256k1 private key, 0x-hex.
    pub private_key: SecretHex,
    /// The node's 33-byte compressed public key, 0x-hex.
    pub public_key: String,
    /// The Ethereum address of the node key.
    #[serde(default)]
    pub address: Option<String>,
    /// The account that registered the node.
    #[serde(default)]
    pub owner: Option<String>,
    /// The registered key version.
    #[serde(default)]
    pub key_version: Option<u32>,
}

/// A group in the paper fixture.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FixtureGroup {
    /// The group ID as a string, e.g. "hsu0001".
    pub id: String,
    /// The group ID as bytes32 hex.
    #[serde(default)]
    pub group_id: Option<String>,
    /// The MQTT topic filter the group encrypts, e.g. "hsu/0001/#".
    #[serde(default)]
    pub topic_filter: String,
    /// The group admin's address.
    #[serde(default)]
    pub admin: Option<String>,
    /// Member node IDs as strings.
    #[serde(default)]
    pub members: Vec<String>,
    /// The group's epoch after the fixture's last change.
    #[serde(default)]
    pub epoch: Option<u64>,
}

/// `anvil-fixtures/paper.json`: the research setup (nodes 1111-1114, groups hsu0001 and
/// hsu0002) registered on a chain whose Anvil state file sits beside it. Unknown fields are
/// ignored and optional ones default, so the file can grow without breaking readers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PaperFixture {
    /// Chain ID, registry address, deploy block and transaction.
    #[serde(flatten)]
    pub deployment: Deployment,
    /// The Anvil state file, relative to the fixture file's folder.
    #[serde(default)]
    pub state_file: Option<String>,
    /// The head block of the fixture chain.
    #[serde(default)]
    pub last_block: Option<u64>,
    /// The account that owns the nodes and administers the groups.
    #[serde(default)]
    pub owner: Option<String>,
    /// That account's private key (an Anvil dev key).
    #[serde(default)]
    pub owner_private_key: Option<SecretHex>,
    /// The registered nodes.
    #[serde(default)]
    pub nodes: Vec<FixtureNode>,
    /// The created groups with their members.
    #[serde(default)]
    pub groups: Vec<FixtureGroup>,
    /// The folder the fixture was loaded from (not part of the file).
    #[serde(skip)]
    pub source_dir: PathBuf,
}

impl PaperFixture {
    /// Reads a fixture file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, DeployError> {
        let path = path.as_ref();
        let mut fixture: Self = read_json(path)?;
        fixture.source_dir = path.parent().map(Path::to_owned).unwrap_or_default();
        Ok(fixture)
    }

    /// `<repo>/anvil-fixtures/paper.json`.
    pub fn default_path() -> PathBuf {
        repo_root().join("anvil-fixtures/paper.json")
    }

    /// The Anvil state file to start from ([`crate::AnvilBuilder::load_state`]), if the fixture
    /// names one.
    pub fn state_path(&self) -> Option<PathBuf> {
        self.state_file
            .as_ref()
            .map(|file| self.source_dir.join(file))
    }

    /// The node with this ID.
    pub fn node(&self, id: &str) -> Option<&FixtureNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The group with this ID.
    pub fn group(&self, id: &str) -> Option<&FixtureGroup> {
        self.groups.iter().find(|g| g.id == id)
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, DeployError> {
    let bytes = std::fs::read(path).map_err(|source| DeployError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| DeployError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// Accepts a JSON number or a decimal / 0x-hex string.
fn flexible_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrString {
        Number(u64),
        Text(String),
    }
    match NumberOrString::deserialize(deserializer)? {
        NumberOrString::Number(n) => Ok(n),
        NumberOrString::Text(s) => match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => s.parse(),
        }
        .map_err(|_| serde::de::Error::custom(format!("expected a block/chain number, got {s:?}"))),
    }
}

/// Deploys a fresh KeyRegistry to `anvil`, sent from `private_key`, and returns where it is.
///
/// Runs `scripts/deploy.sh --rpc-url URL` with the key in `ANCHORMQ_DEPLOYER_KEY` (kept off
/// the process list) and `ANCHORMQ_DEPLOYMENTS_DIR` set to a temp dir. It reads
/// `<chainId>.json` from that dir, or else the deployment JSON the script prints on stdout.
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
    let _one_at_a_time = DEPLOY_LOCK.lock().await;
    let root = repo_root();
    let script = root.join("scripts/deploy.sh");
    if !script.exists() {
        return Err(DeployError::ToolNotFound {
            tool: "scripts/deploy.sh",
            tried: script.display().to_string(),
        });
    }
    let out_dir = tempfile::Builder::new()
        .prefix("anchormq-deploy-")
        .tempdir()
        .map_err(|source| DeployError::Io {
            path: std::env::temp_dir(),
            source,
        })?;
    let url = anvil.http_url();
    let mut command = Command::new("bash");
    command
        .arg(&script)
        .args(["--rpc-url", &url])
        .env("ANCHORMQ_DEPLOYER_KEY", private_key)
        .env(DEPLOYMENTS_DIR_ENV, out_dir.path())
        .env("ANCHORMQ_REGISTRY_OPERATOR", operator.unwrap_or_default())
        .current_dir(&root);
    let shown = format!("{} --rpc-url {url}", script.display());
    let (stdout, output) = run_step(command, &shown).await?;
    let path = out_dir.path().join(format!("{}.json", anvil.chain_id()));
    let deployment = if path.exists() {
        Deployment::load(&path)?
    } else {
        // The script prints the finished deployment JSON as its last stdout output.
        let start = stdout.find('{').ok_or_else(|| DeployError::OutputMissing {
            path: path.clone(),
            output: output.clone(),
        })?;
        serde_json::from_str(&stdout[start..]).map_err(|source| DeployError::Parse {
            path: PathBuf::from(format!("{shown} (stdout)")),
            source,
        })?
    };
    if deployment.chain_id != anvil.chain_id() {
        return Err(DeployError::WrongChain {
            path,
            expected: anvil.chain_id(),
            found: deployment.chain_id,
        });
    }
    Ok(deployment)
}

/// Runs a command with the toolchain on PATH, in its own process group (so a timeout kills
/// forge's children too), and returns its stdout and its combined output.
async fn run_step(mut command: Command, shown: &str) -> Result<(String, String), DeployError> {
    let toolchain = repo_root().join(".toolchain/bin");
    let path = match std::env::var_os("PATH") {
        Some(path) => {
            let mut dirs = vec![toolchain];
            dirs.extend(std::env::split_paths(&path));
            std::env::join_paths(dirs).unwrap_or(path)
        }
        None => toolchain.into_os_string(),
    };
    command
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = command.spawn().map_err(|source| DeployError::Io {
        path: PathBuf::from(shown),
        source,
    })?;
    let pid = child.id();
    let output = match tokio::time::timeout(DEPLOY_TIMEOUT, child.wait_with_output()).await {
        Ok(result) => result.map_err(|source| DeployError::Io {
            path: PathBuf::from(shown),
            source,
        })?,
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            return Err(DeployError::StepTimedOut {
                step: shown.to_owned(),
                timeout: DEPLOY_TIMEOUT,
            });
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut text = stdout.clone();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        return Err(DeployError::StepFailed {
            step: shown.to_owned(),
            status: output.status,
            output: tail,
        });
    }
    Ok((stdout, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_accepts_numbers_and_hex_strings() {
        let json = r#"{"chainId": 31337, "address": "0xabc", "deployBlock": "0x1f", "txHash": "0xdef", "extra": 1}"#;
        let d: Deployment = serde_json::from_str(json).expect("valid");
        assert_eq!(d.chain_id, 31337);
        assert_eq!(d.deploy_block, 31);
        let bad = r#"{"chainId": "soon", "address": "0xabc", "deployBlock": 1, "txHash": "0xdef"}"#;
        let err = serde_json::from_str::<Deployment>(bad).expect_err("bad chain id");
        assert!(err.to_string().contains("soon"), "{err}");
    }

    #[test]
    fn fixture_reads_nodes_groups_and_hides_keys() {
        let json = r#"{
            "chainId": 31337, "address": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
            "deployBlock": 1, "txHash": "0x01", "stateFile": "paper-state.json",
            "nodes": [{"id": "1111", "nodeId": "0x31", "privateKey": "0x11", "publicKey": "0x02aa"}],
            "groups": [{"id": "hsu0001", "topicFilter": "hsu/0001/#", "members": ["1111", "1112"]}]
        }"#;
        let fixture: PaperFixture = serde_json::from_str(json).expect("valid fixture");
        assert_eq!(fixture.deployment.deploy_block, 1);
        let node = fixture.node("1111").expect("node 1111");
        assert_eq!(node.private_key.expose(), "0x11");
        assert!(!format!("{fixture:?}").contains("0x11\""));
        assert_eq!(fixture.group("hsu0001").map(|g| g.members.len()), Some(2));
        let missing =
            serde_json::from_str::<PaperFixture>(r#"{"chainId": 1}"#).expect_err("no address");
        assert!(missing.to_string().contains("address"), "{missing}");
    }
}
