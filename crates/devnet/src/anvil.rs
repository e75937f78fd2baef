//! A real Foundry Anvil node on a loopback port.

use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::providers::{Provider, ProviderBuilder};

use crate::paths::{find_binary, toolchain_candidates};
use crate::process::{LoggedChild, STOP_GRACE, log_since, log_tail, work_dir};

/// Anvil's default chain ID.
pub const DEFAULT_CHAIN_ID: u64 = 31337;

/// One of Anvil's funded, unlocked dev accounts (mnemonic "test test ... junk").
///
/// These keys are public knowledge and hold value only on local chains; `Debug` still leaves
/// the key out so it never lands in logs by habit.
#[derive(Clone, Copy)]
pub struct DevAccount {
    /// Checksummed address.
    pub address: &'static str,
    private_key: &'static str,
}

impl DevAccount {
    /// The 0x-prefixed hex private key.
    pub fn private_key(&self) -> &'static str {
        self.private_key
    }
}

impl std::fmt::Debug for DevAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevAccount")
            .field("address", &self.address)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

macro_rules! dev {
    ($address:literal, $key:literal) => {
        DevAccount {
            address: $address,
            private_key: $key,
        }
    };
}

/// Anvil's ten default accounts, in its order (each funded with 10000 ETH).
pub const DEV_ACCOUNTS: [DevAccount; 10] = [
    dev!(
        "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
        "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
    ),
    dev!(
        "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
        "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
    ),
    dev!(
        "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
        "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"
    ),
    dev!(
        "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
        "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"
    ),
    dev!(
        "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
        "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a"
    ),
    dev!(
        "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc",
        "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba"
    ),
    dev!(
        "0x976EA74026E726554dB657fA54763abd0C3a0aa9",
        "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e"
    ),
    dev!(
        "0x14dC79964da2C08b23698B3D3cc7Ca32193d9955",
        "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356"
    ),
    dev!(
        "0x23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f",
        "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97"
    ),
    dev!(
        "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720",
        "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6"
    ),
];

/// Starting, restarting or stopping Anvil failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnvilError {
    /// No anvil executable was found.
    #[error(
        "anvil not found (tried {tried}): install Foundry's anvil (for example `npm install -g @foundry-rs/anvil`) and put it on PATH, or set ANCHORMQ_ANVIL to its path"
    )]
    NotFound {
        /// The paths that were tried.
        tried: String,
    },
    /// The work dir, log file or process could not be created.
    #[error("cannot start anvil at {binary}: {source}")]
    Spawn {
        /// The anvil executable.
        binary: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Anvil exited before it answered JSON-RPC (bad flag, port taken, unreadable state file).
    #[error("anvil ({binary}) exited with {status} before it was ready; its log:\n{log}")]
    Exited {
        /// The anvil executable.
        binary: PathBuf,
        /// How it exited.
        status: std::process::ExitStatus,
        /// The end of its output.
        log: String,
    },
    /// Anvil did not print its port or answer `eth_chainId` in time.
    #[error("anvil did not become ready on port {port:?} within {timeout:?}; its log:\n{log}")]
    NotReady {
        /// The port, if known by then.
        port: Option<u16>,
        /// The limit that passed.
        timeout: Duration,
        /// The end of its output.
        log: String,
    },
    /// Anvil answered `eth_chainId` with another chain ID than requested.
    #[error("anvil on port {port} reports chain id {actual}, expected {expected}")]
    ChainIdMismatch {
        /// The port.
        port: u16,
        /// The configured chain ID.
        expected: u64,
        /// What it answered.
        actual: u64,
    },
    /// Stopping the process failed.
    #[error("cannot stop anvil on port {port}: {source}")]
    Stop {
        /// The port.
        port: u16,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// How to run Anvil. Build with [`Anvil::builder`].
#[derive(Debug, Clone)]
pub struct AnvilBuilder {
    chain_id: u64,
    block_time: Option<Duration>,
    no_mining: bool,
    load_state: Option<PathBuf>,
    state_file: Option<PathBuf>,
    state_interval: Option<u64>,
    binary: Option<PathBuf>,
    extra_args: Vec<String>,
    startup_timeout: Duration,
}

impl Default for AnvilBuilder {
    fn default() -> Self {
        Self {
            chain_id: DEFAULT_CHAIN_ID,
            block_time: None,
            no_mining: false,
            load_state: None,
            state_file: None,
            state_interval: None,
            binary: None,
            extra_args: Vec::new(),
            startup_timeout: Duration::from_secs(30),
        }
    }
}

impl AnvilBuilder {
    /// Chain ID (default 31337).
    pub fn chain_id(mut self, chain_id: u64) -> Self {
        self.chain_id = chain_id;
        self
    }

    /// Mine a block every `interval` (`--block-time`, fractions of a second allowed). Default: a
    /// block per transaction, instantly.
    pub fn block_time(mut self, interval: Duration) -> Self {
        self.block_time = Some(interval);
        self
    }

    /// Do not mine at all until `evm_mine` / `anvil_mine` is called (`--no-mining`).
    pub fn no_mining(mut self) -> Self {
        self.no_mining = true;
        self
    }

    /// Start from a state snapshot (`--load-state`), e.g. a fixture from `anvil-fixtures/`.
    /// The file is only read; restarts continue from this node's own dump.
    pub fn load_state(mut self, path: impl Into<PathBuf>) -> Self {
        self.load_state = Some(path.into());
        self
    }

    /// Where the node dumps its state on a graceful stop and reloads it on restart
    /// (`--state`). Default: `state.json` in the node's temp dir. Set it to keep the state
    /// after the node is dropped; if the file exists, the first start loads it.
    pub fn state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.state_file = Some(path.into());
        self
    }

    /// Also dump the state every `seconds` (`--state-interval`), so a killed node restarts with
    /// recent state.
    pub fn state_interval(mut self, seconds: u64) -> Self {
        self.state_interval = Some(seconds);
        self
    }

    /// Use this anvil executable instead of the lookup (`ANCHORMQ_ANVIL`, `PATH`, then a
    /// checkout's `.toolchain/bin/anvil` above the current directory or the executable).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Extra command-line arguments, passed last.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// How long to wait for readiness (default 30 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Starts the node on a free loopback port and waits until it answers `eth_chainId`.
    pub async fn spawn(self) -> Result<Anvil, AnvilError> {
        let binary = match &self.binary {
            Some(path) => path.clone(),
            None => {
                let lookup = find_binary("anvil", "ANCHORMQ_ANVIL", &toolchain_candidates("anvil"));
                lookup.found.clone().ok_or_else(|| AnvilError::NotFound {
                    tried: lookup.describe(),
                })?
            }
        };
        let (dir, log_path) = work_dir("anchormq-anvil-").map_err(|source| AnvilError::Spawn {
            binary: binary.clone(),
            source,
        })?;
        let state_path = self
            .state_file
            .clone()
            .unwrap_or_else(|| dir.path().join("state.json"));
        let mut anvil = Anvil {
            config: self,
            binary,
            port: 0,
            dir,
            log_path,
            state_path,
            child: None,
        };
        anvil.start().await?;
        Ok(anvil)
    }
}

/// A running Anvil node on 127.0.0.1. Killed when dropped.
#[derive(Debug)]
pub struct Anvil {
    // First, so the process is killed before its temp dir is removed.
    child: Option<LoggedChild>,
    config: AnvilBuilder,
    binary: PathBuf,
    /// 0 until the first start has bound a port; then fixed for restarts.
    port: u16,
    dir: tempfile::TempDir,
    log_path: PathBuf,
    state_path: PathBuf,
}

impl Anvil {
    /// Options for a new node.
    pub fn builder() -> AnvilBuilder {
        AnvilBuilder::default()
    }

    /// A node with default options (chain 31337, instant mining).
    pub async fn spawn() -> Result<Self, AnvilError> {
        Self::builder().spawn().await
    }

    /// `http://127.0.0.1:PORT`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `ws://127.0.0.1:PORT` (Anvil serves WebSocket on the same port).
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`, e.g. as the target of a TCP proxy.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, self.port))
    }

    /// The loopback port, stable across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The configured chain ID.
    pub fn chain_id(&self) -> u64 {
        self.config.chain_id
    }

    /// Anvil's default dev accounts (funded and unlocked on this node).
    pub fn dev_accounts(&self) -> &'static [DevAccount] {
        &DEV_ACCOUNTS
    }

    /// The file the node dumps its state to on a graceful stop.
    pub fn state_path(&self) -> &Path {
        &self.state_path
    }

    /// The log file holding the node's output of every run.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last lines of the node's output, to print when a test fails.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path, 0)
    }

    /// The node's temp dir (log and default state file).
    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.exited().is_none())
    }

    /// Graceful stop (SIGTERM): Anvil dumps its state to [`Anvil::state_path`] on the way out.
    pub async fn stop(&mut self) -> Result<(), AnvilError> {
        if let Some(mut child) = self.child.take() {
            child
                .stop(STOP_GRACE)
                .await
                .map_err(|source| AnvilError::Stop {
                    port: self.port,
                    source,
                })?;
        }
        Ok(())
    }

    /// SIGKILL, like a crash: no state dump (unless [`AnvilBuilder::state_interval`] wrote one).
    pub async fn kill(&mut self) -> Result<(), AnvilError> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.map_err(|source| AnvilError::Stop {
                port: self.port,
                source,
            })?;
        }
        Ok(())
    }

    /// Stops the node gracefully and starts it again on the same port from its dumped state.
    pub async fn restart(&mut self) -> Result<(), AnvilError> {
        self.stop().await?;
        self.start().await
    }

    /// Starts the node again after [`Anvil::stop`] or [`Anvil::kill`], on the same port, from
    /// the last dumped state (or the initial state if none was dumped). No-op when running.
    pub async fn start(&mut self) -> Result<(), AnvilError> {
        if self.is_running() {
            return Ok(());
        }
        let mut args: Vec<String> = vec![
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            self.port.to_string(),
            "--chain-id".into(),
            self.config.chain_id.to_string(),
        ];
        if self.state_path.exists() {
            args.extend(["--state".into(), self.state_path.display().to_string()]);
        } else {
            if let Some(initial) = &self.config.load_state {
                args.extend(["--load-state".into(), initial.display().to_string()]);
            }
            args.extend(["--dump-state".into(), self.state_path.display().to_string()]);
        }
        if let Some(interval) = self.config.block_time {
            args.extend(["--block-time".into(), interval.as_secs_f64().to_string()]);
        }
        if self.config.no_mining {
            args.push("--no-mining".into());
        }
        if let Some(seconds) = self.config.state_interval {
            args.extend(["--state-interval".into(), seconds.to_string()]);
        }
        args.extend(self.config.extra_args.iter().cloned());

        let shown = args.join(" ");
        let mut child = LoggedChild::spawn(&self.binary, &args, &shown, &self.log_path, |_| {})
            .map_err(|source| AnvilError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        let ready = self.await_ready(&mut child).await;
        match ready {
            Ok(port) => {
                self.port = port;
                self.child = Some(child);
                Ok(())
            }
            Err(e) => {
                let _ = child.kill().await;
                Err(e)
            }
        }
    }

    async fn await_ready(&self, child: &mut LoggedChild) -> Result<u16, AnvilError> {
        let deadline = tokio::time::Instant::now() + self.config.startup_timeout;
        let mut port = (self.port != 0).then_some(self.port);
        loop {
            if let Some(status) = child.exited() {
                return Err(AnvilError::Exited {
                    binary: self.binary.clone(),
                    status,
                    log: log_tail(&self.log_path, child.log_start),
                });
            }
            if port.is_none() {
                port = listening_port(&log_since(&self.log_path, child.log_start));
            }
            if let Some(port) = port
                && let Some(actual) = chain_id_at(port).await
            {
                if actual != self.config.chain_id {
                    return Err(AnvilError::ChainIdMismatch {
                        port,
                        expected: self.config.chain_id,
                        actual,
                    });
                }
                return Ok(port);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(AnvilError::NotReady {
                    port,
                    timeout: self.config.startup_timeout,
                    log: log_tail(&self.log_path, child.log_start),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Stops the node gracefully (dumping its state) and waits for it.
    pub async fn shutdown(mut self) -> Result<(), AnvilError> {
        self.stop().await
    }
}

/// The chain ID the node on `port` answers, if it answers.
async fn chain_id_at(port: u16) -> Option<u64> {
    let provider = ProviderBuilder::new()
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .ok()?;
    provider.get_chain_id().await.ok()
}

/// The port from Anvil's "Listening on 127.0.0.1:PORT" line.
fn listening_port(log: &str) -> Option<u16> {
    log.lines()
        .find_map(|line| line.trim().strip_prefix("Listening on "))
        .and_then(|addr| addr.rsplit(':').next())
        .and_then(|port| port.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_is_read_from_the_listening_line() {
        let log = "Genesis Number\n==\n\n0\n\nListening on 127.0.0.1:43085\n";
        assert_eq!(listening_port(log), Some(43085));
        assert_eq!(listening_port("Listening on nowhere"), None);
        assert_eq!(listening_port("Private Keys\n"), None);
    }

    #[test]
    fn dev_account_debug_hides_the_key() {
        let shown = format!("{:?}", DEV_ACCOUNTS[0]);
        assert!(shown.contains("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"));
        assert!(!shown.contains("ac0974bec"));
    }
}
