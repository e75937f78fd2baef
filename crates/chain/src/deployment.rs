//! The deployment file written by `scripts/deploy.sh`: where the registry lives and where its history starts.

use std::path::Path;

use alloy::primitives::{Address, B256};
use serde::{Deserialize, Serialize};

/// A registry deployment: `deployments/<chainId>.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// Chain the registry is deployed on.
    pub chain_id: u64,
    /// Registry address.
    pub address: Address,
    /// Block of the deployment transaction: no registry event is older.
    pub deploy_block: u64,
    /// Hash of the deployment transaction.
    #[serde(default)]
    pub tx_hash: Option<B256>,
}

/// Why a deployment file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeploymentError {
    /// The file could not be read.
    #[error("cannot read deployment file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file could not be written.
    #[error("cannot write deployment file {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a deployment record.
    #[error(
        "deployment file {path} is not valid (expected chainId, address, deployBlock): {source}"
    )]
    Parse {
        /// The file.
        path: String,
        /// The JSON error.
        source: serde_json::Error,
    },
}

impl Deployment {
    /// Reads a deployment file.
    pub fn load(path: &Path) -> Result<Self, DeploymentError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| DeploymentError::Read {
            path: shown.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| DeploymentError::Parse {
            path: shown,
            source,
        })
    }

    /// Writes the deployment file (creating its folder), through a temporary file and a rename so
    /// a crash never leaves half a file.
    pub fn save(&self, path: &Path) -> Result<(), DeploymentError> {
        let shown = path.display().to_string();
        let fail = |source| DeploymentError::Write {
            path: shown.clone(),
            source,
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(fail)?;
        let mut json = serde_json::to_string_pretty(self).map_err(|e| fail(e.into()))?;
        json.push('\n');
        let temp = dir.join(format!(
            ".{}.tmp",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("deployment")
        ));
        std::fs::write(&temp, json).map_err(fail)?;
        std::fs::rename(&temp, path).map_err(fail)
    }
}
