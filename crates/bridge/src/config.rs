//! Bridge settings: a TOML file, overridden by environment and flags, validated once into a
//! [`BridgeConfig`] with errors that name the field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anchormq_chain::{Address, Deployment, Finality, RangeConfig, StreamConfig};
use anchormq_mqtt::BrokerConfig;
use serde::Deserialize;

/// Settings as written by a user; every field optional so that layers can be merged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeSettings {
    /// RPC URL: `ws://`/`wss://` (subscription) or `http://`/`https://` (polling).
    pub rpc: Option<String>,
    /// Further RPC endpoints of the same chain (other providers) that must corroborate every
    /// range read, `http(s)://` or `ws(s)://`.
    pub witnesses: Option<Vec<String>>,
    /// How many endpoints, `rpc` and `witnesses` together, must return the same block hash and
    /// logs for a range (default: a majority of them).
    pub quorum: Option<usize>,
    /// Deployment file written by `anchormq deploy` or `scripts/deploy.sh`.
    pub deployment: Option<PathBuf>,
    /// Registry address, instead of a deployment file (needs `chain_id`).
    pub registry: Option<String>,
    /// Chain ID, with `registry`.
    pub chain_id: Option<u64>,
    /// First block to read, with `registry` (default 0).
    pub deploy_block: Option<u64>,
    /// Broker URL, `mqtt://host:port` or `mqtts://host:port`.
    pub broker: Option<String>,
    /// PEM CA file for `mqtts://`.
    pub broker_ca: Option<PathBuf>,
    /// MQTT client ID (default `anchormq-bridge-<chain>`).
    pub client_id: Option<String>,
    /// The bridge's signing key file (anchormq node key format).
    pub key_file: Option<PathBuf>,
    /// Checkpoint file (default `anchormq-bridge-<chain>.checkpoint.json`).
    pub checkpoint: Option<PathBuf>,
    /// Which blocks are mirrored: `latest` (default), or the node's `safe` or `finalized` block.
    pub finality: Option<Finality>,
    /// Confirmations before an event is mirrored, below that block (default 0).
    pub confirmations: Option<u64>,
    /// Polling interval in milliseconds (default 500).
    pub poll_interval_ms: Option<u64>,
    /// Largest `eth_getLogs` range in blocks (default 50,000).
    pub max_log_range: Option<u64>,
    /// Address for the Prometheus `/metrics` endpoint; none when unset.
    pub metrics: Option<String>,
    /// Publish the non-retained live event feed (default true).
    pub publish_events: Option<bool>,
    /// QoS 1 messages sent to the broker before its acknowledgements (default 1,000). Lower it
    /// for a broker that limits a client's unacknowledged messages.
    pub inflight: Option<u16>,
}

/// A setting that is missing or wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these settings.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key and line).
        message: String,
    },
    /// A required field is missing.
    #[error("missing setting `{field}`: {hint}")]
    Missing {
        /// The field.
        field: &'static str,
        /// How to give it.
        hint: &'static str,
    },
    /// A field has a value that cannot be used.
    #[error("invalid setting `{field}`: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// QoS 1 messages in flight to the broker by default.
const DEFAULT_INFLIGHT: u16 = 1_000;

/// Validated bridge configuration.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// RPC URL.
    pub rpc_url: String,
    /// Further endpoints that corroborate every read (the quorum is in `stream`).
    pub witness_urls: Vec<String>,
    /// The registry.
    pub deployment: Deployment,
    /// The broker.
    pub broker: BrokerConfig,
    /// Bridge signing key file.
    pub key_file: PathBuf,
    /// Checkpoint file.
    pub checkpoint: PathBuf,
    /// Event stream settings.
    pub stream: StreamConfig,
    /// Where to serve `/metrics`, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Publish the live event feed.
    pub publish_events: bool,
}

impl BridgeSettings {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Fields set in `over` replace those here.
    pub fn merge(self, over: Self) -> Self {
        Self {
            rpc: over.rpc.or(self.rpc),
            witnesses: over.witnesses.or(self.witnesses),
            quorum: over.quorum.or(self.quorum),
            deployment: over.deployment.or(self.deployment),
            registry: over.registry.or(self.registry),
            chain_id: over.chain_id.or(self.chain_id),
            deploy_block: over.deploy_block.or(self.deploy_block),
            broker: over.broker.or(self.broker),
            broker_ca: over.broker_ca.or(self.broker_ca),
            client_id: over.client_id.or(self.client_id),
            key_file: over.key_file.or(self.key_file),
            checkpoint: over.checkpoint.or(self.checkpoint),
            finality: over.finality.or(self.finality),
            confirmations: over.confirmations.or(self.confirmations),
            poll_interval_ms: over.poll_interval_ms.or(self.poll_interval_ms),
            max_log_range: over.max_log_range.or(self.max_log_range),
            metrics: over.metrics.or(self.metrics),
            publish_events: over.publish_events.or(self.publish_events),
            inflight: over.inflight.or(self.inflight),
        }
    }

    /// Checks every field and builds the configuration.
    pub fn resolve(self) -> Result<BridgeConfig, ConfigError> {
        let rpc_url = self.rpc.ok_or(ConfigError::Missing {
            field: "rpc",
            hint: "give --rpc URL or `rpc = \"ws://…\"`",
        })?;
        let witness_urls = self.witnesses.unwrap_or_default();
        for (field, url) in std::iter::once(("rpc", &rpc_url))
            .chain(witness_urls.iter().map(|url| ("witnesses", url)))
        {
            if !["http://", "https://", "ws://", "wss://"]
                .iter()
                .any(|s| url.starts_with(s))
            {
                return Err(ConfigError::Invalid {
                    field,
                    reason: format!(
                        "expected an http(s):// or ws(s):// URL, not {}",
                        anchormq_core::redact_url(url)
                    ),
                });
            }
        }
        let endpoints = 1 + witness_urls.len();
        let quorum = self.quorum.unwrap_or(endpoints / 2 + 1);
        if quorum == 0 || quorum > endpoints {
            return Err(ConfigError::Invalid {
                field: "quorum",
                reason: format!(
                    "{quorum} is not between 1 and the {endpoints} RPC endpoint(s) given"
                ),
            });
        }
        let deployment = match (self.deployment, self.registry) {
            (Some(path), None) => Deployment::load(&path).map_err(|e| ConfigError::Invalid {
                field: "deployment",
                reason: e.to_string(),
            })?,
            (None, Some(address)) => Deployment {
                chain_id: self.chain_id.ok_or(ConfigError::Missing {
                    field: "chain_id",
                    hint: "a registry address needs the chain ID it lives on",
                })?,
                address: address
                    .parse::<Address>()
                    .map_err(|e| ConfigError::Invalid {
                        field: "registry",
                        reason: format!("not a 20-byte 0x-hex address: {e}"),
                    })?,
                deploy_block: self.deploy_block.unwrap_or(0),
                tx_hash: None,
            },
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    field: "registry",
                    reason: "give either a deployment file or a registry address, not both".into(),
                });
            }
            (None, None) => {
                return Err(ConfigError::Missing {
                    field: "deployment",
                    hint: "give --deployment FILE (deployments/<chainId>.json) or --registry ADDRESS with --chain-id",
                });
            }
        };
        let broker_url = self.broker.ok_or(ConfigError::Missing {
            field: "broker",
            hint: "give --broker mqtt://host:port",
        })?;
        let client_id = self
            .client_id
            .unwrap_or_else(|| format!("anchormq-bridge-{}", deployment.chain_id));
        let mut broker =
            BrokerConfig::from_url(&broker_url, client_id).map_err(|e| ConfigError::Invalid {
                field: "broker",
                reason: e.to_string(),
            })?;
        broker.ca_file = self.broker_ca;
        // A backfill publishes a note per subject; waiting for an acknowledgement every 100
        // messages made the broker's round trips the bound (about 4,000 events/s, not 17,000).
        broker.inflight = match self.inflight.unwrap_or(DEFAULT_INFLIGHT) {
            0 => {
                return Err(ConfigError::Invalid {
                    field: "inflight",
                    reason: "must be at least 1".into(),
                });
            }
            n => n,
        };
        let key_file = self.key_file.ok_or(ConfigError::Missing {
            field: "key_file",
            hint: "give --key FILE with the bridge's signing key (anchormq node keygen makes one)",
        })?;
        let checkpoint = self.checkpoint.unwrap_or_else(|| {
            PathBuf::from(format!(
                "anchormq-bridge-{}.checkpoint.json",
                deployment.chain_id
            ))
        });
        let poll_interval = Duration::from_millis(self.poll_interval_ms.unwrap_or(500));
        if poll_interval.is_zero() {
            return Err(ConfigError::Invalid {
                field: "poll_interval_ms",
                reason: "must be at least 1".into(),
            });
        }
        let max_range = self.max_log_range.unwrap_or(50_000);
        if max_range == 0 {
            return Err(ConfigError::Invalid {
                field: "max_log_range",
                reason: "must be at least 1".into(),
            });
        }
        let metrics = self
            .metrics
            .map(|address| {
                address
                    .parse::<SocketAddr>()
                    .map_err(|e| ConfigError::Invalid {
                        field: "metrics",
                        reason: format!("{address:?} is not host:port ({e})"),
                    })
            })
            .transpose()?;
        let stream = StreamConfig {
            finality: self.finality.unwrap_or_default(),
            confirmations: self.confirmations.unwrap_or(0),
            poll_interval,
            ranges: RangeConfig {
                initial: max_range.min(2_000),
                max: max_range,
                ..RangeConfig::default()
            },
            quorum,
            ..StreamConfig::default()
        };
        Ok(BridgeConfig {
            rpc_url,
            witness_urls,
            deployment,
            broker,
            key_file,
            checkpoint,
            stream,
            metrics,
            publish_events: self.publish_events.unwrap_or(true),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> BridgeSettings {
        BridgeSettings {
            rpc: Some("http://127.0.0.1:8545".into()),
            registry: Some("0x5FbDB2315678afecb367f032d93F642f64180aa3".into()),
            chain_id: Some(31337),
            broker: Some("mqtt://127.0.0.1:1883".into()),
            key_file: Some("bridge.key".into()),
            ..BridgeSettings::default()
        }
    }

    #[test]
    fn minimal_settings_resolve_with_defaults() {
        let config = minimal().resolve().unwrap();
        assert_eq!(config.deployment.chain_id, 31337);
        assert_eq!(
            config.checkpoint,
            PathBuf::from("anchormq-bridge-31337.checkpoint.json")
        );
        assert_eq!(config.stream.confirmations, 0);
        assert!(config.publish_events);
    }

    #[test]
    fn later_layers_override_earlier_ones() {
        let file = BridgeSettings {
            confirmations: Some(3),
            poll_interval_ms: Some(100),
            ..minimal()
        };
        let flags = BridgeSettings {
            confirmations: Some(5),
            ..BridgeSettings::default()
        };
        let config = file.merge(flags).resolve().unwrap();
        assert_eq!(config.stream.confirmations, 5);
        assert_eq!(config.stream.poll_interval, Duration::from_millis(100));
    }

    #[test]
    fn the_default_quorum_is_a_majority_of_the_endpoints() {
        let quorum = |witnesses: usize| {
            BridgeSettings {
                witnesses: Some((0..witnesses).map(|i| format!("https://w{i}")).collect()),
                ..minimal()
            }
            .resolve()
            .unwrap()
            .stream
            .quorum
        };
        assert_eq!([quorum(0), quorum(1), quorum(2), quorum(3)], [1, 2, 2, 3]);
    }

    #[test]
    fn errors_name_the_field() {
        let cases: Vec<(BridgeSettings, &str)> = vec![
            (
                BridgeSettings {
                    rpc: None,
                    ..minimal()
                },
                "`rpc`",
            ),
            (
                BridgeSettings {
                    rpc: Some("ftp://x".into()),
                    ..minimal()
                },
                "`rpc`",
            ),
            (
                BridgeSettings {
                    witnesses: Some(vec!["http://a".into(), "ftp://b".into()]),
                    ..minimal()
                },
                "`witnesses`",
            ),
            (
                BridgeSettings {
                    witnesses: Some(vec!["http://a".into()]),
                    quorum: Some(3),
                    ..minimal()
                },
                "`quorum`",
            ),
            (
                BridgeSettings {
                    registry: Some("0x12".into()),
                    ..minimal()
                },
                "`registry`",
            ),
            (
                BridgeSettings {
                    chain_id: None,
                    ..minimal()
                },
                "`chain_id`",
            ),
            (
                BridgeSettings {
                    broker: Some("tcp://x".into()),
                    ..minimal()
                },
                "`broker`",
            ),
            (
                BridgeSettings {
                    key_file: None,
                    ..minimal()
                },
                "`key_file`",
            ),
            (
                BridgeSettings {
                    metrics: Some("nowhere".into()),
                    ..minimal()
                },
                "`metrics`",
            ),
            (
                BridgeSettings {
                    poll_interval_ms: Some(0),
                    ..minimal()
                },
                "`poll_interval_ms`",
            ),
            (
                BridgeSettings {
                    deployment: Some("/nonexistent/31337.json".into()),
                    ..minimal()
                },
                "`registry`",
            ),
            (
                BridgeSettings {
                    deployment: Some("/nonexistent/31337.json".into()),
                    registry: None,
                    ..minimal()
                },
                "`deployment`",
            ),
        ];
        for (settings, field) in cases {
            let message = settings.resolve().unwrap_err().to_string();
            assert!(message.contains(field), "{message:?} should name {field}");
        }
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bridge.toml");
        std::fs::write(&path, "rpc = \"http://x\"\nconfirmation = 3\n").unwrap();
        let message = BridgeSettings::from_file(&path).unwrap_err().to_string();
        assert!(message.contains("confirmation"), "{message}");
    }

    #[test]
    fn finality_is_read_from_the_file_and_a_wrong_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bridge.toml");
        std::fs::write(&path, "rpc = \"http://x\"\nfinality = \"finalized\"\n").unwrap();
        let settings = BridgeSettings::from_file(&path).unwrap();
        assert_eq!(settings.finality, Some(Finality::Finalized));
        assert_eq!(
            minimal().resolve().unwrap().stream.finality,
            Finality::Latest
        );
        std::fs::write(&path, "rpc = \"http://x\"\nfinality = \"final\"\n").unwrap();
        let message = BridgeSettings::from_file(&path).unwrap_err().to_string();
        assert!(message.contains("final"), "{message}");
    }
}
