//! The paper's fixture: nodes 1111-1114 and groups hsu0001 = {1111, 1112}, hsu0002 = {1113,
//! 1114} on a chain whose Anvil state is compiled into this crate (`anvil-fixtures/`), so `anchormq
//! up --paper` and `anchormq demo` work from an installed binary.
//!
//! TEST ONLY: every private key in it is public.

use std::path::{Path, PathBuf};

use anchormq_chain::Deployment;
use serde::{Deserialize, Serialize};

const PAPER_JSON: &str = include_str!("../../../anvil-fixtures/paper.json");
const PAPER_STATE_JSON: &str = include_str!("../../../anvil-fixtures/paper-state.json");

/// The fixture could not be read or materialised.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FixtureError {
    /// A fixture file could not be read or written.
    #[error("fixture file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A fixture file is not valid JSON of the expected shape.
    #[error("fixture file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The JSON error (names the field).
        #[source]
        source: serde_json::Error,
    },
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

/// A node in the fixture.
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

/// A group in the fixture.
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

/// `anvil-fixtures/paper.json`. Unknown fields are ignored and optional ones default, so the
/// file can grow without breaking readers.
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
    /// The folder the fixture's state file is in (not part of the file).
    #[serde(skip)]
    pub source_dir: PathBuf,
}

impl PaperFixture {
    /// The fixture compiled into this crate. Its Anvil state is written once to the system's
    /// temp folder under a name derived from its content, so [`PaperFixture::state_path`] names
    /// a file Anvil can load.
    pub fn embedded() -> Result<Self, FixtureError> {
        let mut fixture: Self =
            serde_json::from_str(PAPER_JSON).map_err(|source| FixtureError::Parse {
                path: PathBuf::from("anvil-fixtures/paper.json (built in)"),
                source,
            })?;
        let dir = std::env::temp_dir().join(format!(
            "anchormq-paper-fixture-{:016x}",
            fingerprint(PAPER_STATE_JSON)
        ));
        let state = dir.join("paper-state.json");
        if std::fs::read_to_string(&state).ok().as_deref() != Some(PAPER_STATE_JSON) {
            let io = |source| FixtureError::Io {
                path: state.clone(),
                source,
            };
            std::fs::create_dir_all(&dir).map_err(io)?;
            // write and rename: a concurrent reader never sees half a file
            let temp = dir.join(format!("paper-state.json.{}.tmp", std::process::id()));
            std::fs::write(&temp, PAPER_STATE_JSON).map_err(io)?;
            std::fs::rename(&temp, &state).map_err(io)?;
        }
        fixture.state_file = Some("paper-state.json".to_owned());
        fixture.source_dir = dir;
        Ok(fixture)
    }

    /// Reads a fixture file (for a fixture other than the built-in one).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, FixtureError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| FixtureError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut fixture: Self =
            serde_json::from_slice(&bytes).map_err(|source| FixtureError::Parse {
                path: path.to_owned(),
                source,
            })?;
        fixture.source_dir = path.parent().map(Path::to_owned).unwrap_or_default();
        Ok(fixture)
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

/// FNV-1a: a stable name for the state's content (not a security property).
fn fingerprint(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_fixture_is_the_paper_and_its_state_is_on_disk() {
        let fixture = PaperFixture::embedded().expect("embedded fixture");
        let ids: Vec<&str> = fixture.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["1111", "1112", "1113", "1114"]);
        assert_eq!(
            fixture.group("hsu0001").map(|g| g.members.clone()),
            Some(vec!["1111".to_owned(), "1112".to_owned()])
        );
        let state = fixture.state_path().expect("state file");
        assert_eq!(
            std::fs::read_to_string(state).expect("written"),
            PAPER_STATE_JSON
        );
        assert!(!format!("{fixture:?}").contains("ac0974bec"), "keys hidden");
    }
}
