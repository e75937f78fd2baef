//! `anchormq bridge`: runs `anchormq-bridge` with settings layered from the config file's `[bridge]`
//! table, the global options, the environment and these flags, until SIGINT or SIGTERM.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anchormq_bridge::{BridgeSettings, Metrics};
use anchormq_mqtt::Credentials;
use clap::Args;
use eyre::WrapErr;
use tokio_util::sync::CancellationToken;

use crate::context::Context;

/// `bridge`.
#[derive(Debug, Args)]
pub struct BridgeCommand {
    /// The bridge's signing key file (anchormq node key format; `anchormq node keygen` makes one).
    #[arg(long, env = "ANCHORMQ_BRIDGE_SIGNING_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Checkpoint file (default `anchormq-bridge-<chainId>.checkpoint.json`).
    #[arg(long, env = "ANCHORMQ_CHECKPOINT", value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Mirror up to the head (`latest`, default), or only blocks the RPC node tags `safe` or
    /// `finalized` (public chains: no reorg can take a finalized block back).
    #[arg(long, env = "ANCHORMQ_FINALITY", value_name = "latest|safe|finalized")]
    pub finality: Option<anchormq_chain::Finality>,
    /// Blocks to wait before mirroring an event, below that block (default 0).
    #[arg(long, env = "ANCHORMQ_CONFIRMATIONS", value_name = "N")]
    pub confirmations: Option<u64>,
    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9464.
    #[arg(long, env = "ANCHORMQ_METRICS", value_name = "ADDR")]
    pub metrics: Option<String>,
    /// MQTT client ID (default `anchormq-bridge-<chainId>`).
    #[arg(long, env = "ANCHORMQ_BRIDGE_CLIENT_ID")]
    pub client_id: Option<String>,
    /// How often to look for new blocks, in milliseconds (default 500); over ws(s) also the
    /// longest wait for a new head.
    #[arg(long, value_name = "MS")]
    pub poll_interval_ms: Option<u64>,
    /// Largest eth_getLogs block range (default 50000).
    #[arg(long, value_name = "BLOCKS")]
    pub max_log_range: Option<u64>,
    /// A further RPC endpoint of the same chain (another provider) that must corroborate every
    /// range the bridge reads; repeat for more (env: comma-separated).
    #[arg(
        long = "witness",
        env = "ANCHORMQ_WITNESSES",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub witnesses: Vec<String>,
    /// How many endpoints, --rpc and the witnesses together, must return the same block hash
    /// and logs before a range is mirrored (default: a majority).
    #[arg(long, env = "ANCHORMQ_QUORUM", value_name = "N")]
    pub quorum: Option<usize>,
    /// QoS 1 notes sent to the broker ahead of its acknowledgements (default 1000); lower it for
    /// a broker that limits a client's unacknowledged messages.
    #[arg(long, value_name = "N")]
    pub inflight: Option<u16>,
}

impl BridgeCommand {
    /// Layers the settings, then runs the bridge until a signal.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        let settings = self.settings(context).await?;
        let mut config = settings.resolve().wrap_err("bridge settings")?;
        apply_credentials(context, &mut config);
        crate::context::check_private(&config.key_file).wrap_err("bridge settings")?;
        let key = anchormq_bridge::load_key(&config.key_file).wrap_err("bridge settings")?;
        eprintln!(
            "bridge public key {} (give it to agents as --bridge-key)",
            key.public_key()
        );
        let shutdown = super::shutdown_on_signal();
        let metrics = Arc::new(Metrics::default());
        if let Some(address) = config.metrics {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .wrap_err_with(|| format!("cannot listen for metrics on {address} (--metrics)"))?;
            eprintln!(
                "metrics on http://{}/metrics",
                listener.local_addr().unwrap_or(address)
            );
            tokio::spawn(anchormq_bridge::serve_metrics(
                listener,
                metrics.clone(),
                shutdown.clone(),
            ));
        }
        if std::io::stdout().is_terminal() {
            tokio::spawn(draw_progress(metrics.clone(), shutdown.clone()));
        }
        anchormq_bridge::run(config, key, metrics, shutdown)
            .await
            .wrap_err("the bridge stopped")
    }

    async fn settings(&self, context: &Context) -> eyre::Result<BridgeSettings> {
        let file = context.bridge_file().cloned().unwrap_or_default();
        let globals = context.globals();
        let mut from_globals = BridgeSettings {
            rpc: Some(context.rpc_url().to_owned()),
            broker: Some(context.broker_url().to_owned()),
            broker_ca: globals.broker_ca.clone(),
            ..BridgeSettings::default()
        };
        if let Some(path) = &globals.deployment {
            from_globals.deployment = Some(path.clone());
        } else if globals.registry.is_some()
            || (file.deployment.is_none() && file.registry.is_none())
        {
            let deployment = context.deployment().await?;
            from_globals.registry = Some(deployment.address.to_string());
            from_globals.chain_id = Some(deployment.chain_id);
            from_globals.deploy_block = Some(deployment.deploy_block);
        }
        let flags = BridgeSettings {
            key_file: self.key.clone(),
            checkpoint: self.checkpoint.clone(),
            finality: self.finality,
            confirmations: self.confirmations,
            metrics: self.metrics.clone(),
            client_id: self.client_id.clone(),
            poll_interval_ms: self.poll_interval_ms,
            max_log_range: self.max_log_range,
            witnesses: (!self.witnesses.is_empty()).then(|| self.witnesses.clone()),
            quorum: self.quorum,
            inflight: self.inflight,
            ..BridgeSettings::default()
        };
        // A file table naming the registry must not be combined with a registry from the globals.
        let file = if from_globals.deployment.is_some() || from_globals.registry.is_some() {
            BridgeSettings {
                deployment: None,
                registry: None,
                ..file
            }
        } else {
            file
        };
        Ok(file.merge(from_globals).merge(flags))
    }
}

/// While the bridge backfills more than a thousand blocks, a progress bar drawn from its metrics
/// (mirrored block against chain head); cleared once it has caught up.
async fn draw_progress(metrics: Arc<Metrics>, shutdown: CancellationToken) {
    use std::sync::atomic::Ordering;
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let head = metrics.chain_head.load(Ordering::Relaxed);
        let mirrored = metrics.mirrored_block.load(Ordering::Relaxed);
        let behind = head.saturating_sub(mirrored);
        match &bar {
            Some(b) if behind == 0 => {
                b.finish_and_clear();
                bar = None;
            }
            Some(b) => {
                b.set_length(head);
                b.set_position(mirrored);
            }
            None if behind > 1_000 => {
                let b =
                    indicatif::ProgressBar::new(head).with_message("backfilling registry events");
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} {bar:40} block {pos}/{len} ({per_sec}, eta {eta})",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                b.set_position(mirrored);
                bar = Some(b);
            }
            None => {}
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}

/// `--username/--password` apply to the bridge's broker connection too.
pub fn apply_credentials(context: &Context, config: &mut anchormq_bridge::BridgeConfig) {
    if let Some(username) = &context.globals().username {
        config.broker.credentials = Some(Credentials {
            username: username.clone(),
            password: context.globals().password.clone().unwrap_or_default(),
        });
    }
}
