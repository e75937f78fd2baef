//! A clustered MQTT broker on loopback: Aedes nodes (Node.js processes running
//! `scripts/cluster/aedes-node.js`) that share retained messages, sessions and message fan-out
//! through one `redis-server`, so a client of any node sees what clients of the others publish.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::probe::{Probe, probe};
use anchormq_devnet::free_port;
use anchormq_devnet::paths::find_binary;
use anchormq_devnet::process::{LoggedChild, log_since, log_tail, work_dir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::paths::repo_root;

/// How many free ports Redis tries when another process takes the picked one.
const BIND_ATTEMPTS: usize = 5;

/// How long each process may take to become ready.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// What an Aedes node prints once it listens, followed by its port.
const LISTENING: &str = "listening on 127.0.0.1:";

/// Starting the cluster failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// No redis-server or node executable was found.
    #[error("{binary} not found (tried {tried}): run scripts/bootstrap.sh")]
    NotFound {
        /// Which binary.
        binary: &'static str,
        /// The paths that were tried.
        tried: String,
    },
    /// The node script or its npm packages are missing.
    #[error(
        "{path} is missing: run scripts/bootstrap.sh (it installs aedes into .toolchain/cluster)"
    )]
    Script {
        /// The missing file or folder.
        path: PathBuf,
    },
    /// A temp dir or log could not be made.
    #[error("cannot prepare files for the cluster: {0}")]
    Files(#[source] std::io::Error),
    /// A process could not be spawned.
    #[error("cannot start {binary}: {source}")]
    Spawn {
        /// The executable.
        binary: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A process exited before it was ready.
    #[error("{what} exited with {status} before it was ready; its log:\n{log}")]
    Exited {
        /// Which process ("redis-server on port 1234", "aedes node b").
        what: String,
        /// How it exited.
        status: std::process::ExitStatus,
        /// The end of its output.
        log: String,
    },
    /// A process did not become ready in time.
    #[error("{what} did not become ready within {timeout:?}; its log:\n{log}")]
    NotReady {
        /// Which process.
        what: String,
        /// The limit that passed.
        timeout: Duration,
        /// The end of its output.
        log: String,
    },
}

/// A `redis-server` without persistence on a loopback port, killed when dropped.
#[derive(Debug)]
pub struct Redis {
    // First, so the process is killed before its temp dir is removed.
    _child: LoggedChild,
    port: u16,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// Starts `redis-server` (`ANCHORMQ_REDIS_SERVER`, `PATH`, `/usr/bin/redis-server`) on a free
    /// loopback port, saving nothing, with its own temp dir.
    pub async fn spawn() -> Result<Self, ClusterError> {
        let binary = locate(
            "redis-server",
            "ANCHORMQ_REDIS_SERVER",
            &[PathBuf::from("/usr/bin/redis-server")],
        )?;
        let (dir, log_path) = work_dir("anchormq-redis-").map_err(ClusterError::Files)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port().map_err(ClusterError::Files)?;
            let port_text = port.to_string();
            let dir_text = dir.path().display().to_string();
            let args = [
                "--port",
                &port_text,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir_text,
            ];
            let mut child = spawn_logged(&binary, &args, &log_path)?;
            let what = format!("redis-server on port {port}");
            let ready = await_ready(&what, &mut child, &log_path, |log| async move {
                (log.contains("Ready to accept connections") && pings(port).await).then_some(())
            })
            .await;
            match ready {
                Ok(()) => {
                    return Ok(Self {
                        _child: child,
                        port,
                        log_path,
                        _dir: dir,
                    });
                }
                // Lost the port to another process between picking and binding: pick again.
                Err(ClusterError::Exited { .. }) if attempt < BIND_ATTEMPTS => {}
                Err(e) => {
                    let _ = child.kill().await;
                    return Err(e);
                }
            }
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The last lines of its output.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path, 0)
    }
}

/// One Aedes process of an [`AedesCluster`], killed when dropped.
#[derive(Debug)]
pub struct AedesNode {
    // First, so the process is killed before its temp dir is removed.
    _child: LoggedChild,
    id: String,
    port: u16,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl AedesNode {
    /// The broker ID the node announces to the others ("a", "b", ...).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The MQTT port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The node's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The log file holding the node's output.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last lines of its output.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path, 0)
    }
}

/// Aedes nodes sharing one Redis: one MQTT broker reachable on several ports. Every process is
/// killed when this is dropped (the nodes before Redis).
#[derive(Debug)]
pub struct AedesCluster {
    nodes: Vec<AedesNode>,
    redis: Redis,
}

impl AedesCluster {
    /// Starts Redis and `nodes` Aedes nodes named "a", "b", ..., each ready for MQTT clients.
    /// Needs `node` (`ANCHORMQ_NODE` or `PATH`) and the packages `scripts/bootstrap.sh` installs
    /// into `.toolchain/cluster`.
    pub async fn spawn(nodes: usize) -> Result<Self, ClusterError> {
        let root = repo_root();
        let script = root.join("scripts/cluster/aedes-node.js");
        let deps = root.join(".toolchain/cluster");
        for path in [&script, &deps.join("node_modules/aedes/package.json")] {
            if !path.is_file() {
                return Err(ClusterError::Script { path: path.clone() });
            }
        }
        let node = locate("node", "ANCHORMQ_NODE", &[])?;
        let redis = Redis::spawn().await?;
        let mut cluster = Self {
            nodes: Vec::with_capacity(nodes),
            redis,
        };
        for index in 0..nodes {
            let id = node_id(index);
            let started = spawn_node(&node, &script, &deps, &id, &cluster.redis.url()).await?;
            cluster.nodes.push(started);
        }
        Ok(cluster)
    }

    /// The nodes, in start order.
    pub fn nodes(&self) -> &[AedesNode] {
        &self.nodes
    }

    /// Node `index` (0 is "a"). Panics when there is no such node.
    pub fn node(&self, index: usize) -> &AedesNode {
        &self.nodes[index]
    }

    /// The Redis the nodes share.
    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// Every node's log tail and Redis', for a failing test's message.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for node in &self.nodes {
            text.push_str(&format!(
                "aedes node {} (port {}) log:\n{}\n",
                node.id,
                node.port,
                node.log_tail()
            ));
        }
        text.push_str(&format!("redis log:\n{}", self.redis.log_tail()));
        text
    }
}

/// "a", "b", ..., "z", then "n26", "n27", ...
fn node_id(index: usize) -> String {
    match u8::try_from(index) {
        Ok(i) if i < 26 => char::from(b'a' + i).to_string(),
        _ => format!("n{index}"),
    }
}

async fn spawn_node(
    node: &Path,
    script: &Path,
    deps: &Path,
    id: &str,
    redis_url: &str,
) -> Result<AedesNode, ClusterError> {
    let (dir, log_path) = work_dir("anchormq-aedes-").map_err(ClusterError::Files)?;
    let script_text = script.display().to_string();
    let deps_text = deps.display().to_string();
    let args = [
        script_text.as_str(),
        "--redis",
        redis_url,
        "--port",
        "0",
        "--id",
        id,
        "--deps",
        &deps_text,
    ];
    let mut child = spawn_logged(node, &args, &log_path)?;
    let what = format!("aedes node {id}");
    let ready = await_ready(&what, &mut child, &log_path, |log| async move {
        let port = listening_port(&log)?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        matches!(probe(addr, Duration::from_secs(2)).await, Probe::Connack(0)).then_some(port)
    })
    .await;
    let port = match ready {
        Ok(port) => port,
        Err(e) => {
            let _ = child.kill().await;
            return Err(e);
        }
    };
    Ok(AedesNode {
        _child: child,
        id: id.to_owned(),
        port,
        log_path,
        _dir: dir,
    })
}

/// The port in the node's "listening on 127.0.0.1:PORT" line.
fn listening_port(log: &str) -> Option<u16> {
    let rest = &log[log.find(LISTENING)? + LISTENING.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn spawn_logged(binary: &Path, args: &[&str], log: &Path) -> Result<LoggedChild, ClusterError> {
    LoggedChild::spawn(binary, args, &args.join(" "), log, |_| {}).map_err(|source| {
        ClusterError::Spawn {
            binary: binary.to_owned(),
            source,
        }
    })
}

fn locate(
    name: &'static str,
    env_var: &str,
    candidates: &[PathBuf],
) -> Result<PathBuf, ClusterError> {
    let lookup = find_binary(name, env_var, candidates);
    lookup.found.clone().ok_or_else(|| ClusterError::NotFound {
        binary: name,
        tried: lookup.describe(),
    })
}

/// Polls `ready` with the run's log until it gives a value, the process exits, or the startup
/// time passes.
async fn await_ready<T, F, Fut>(
    what: &str,
    child: &mut LoggedChild,
    log_path: &Path,
    mut ready: F,
) -> Result<T, ClusterError>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Some(status) = child.exited() {
            return Err(ClusterError::Exited {
                what: what.to_owned(),
                status,
                log: log_tail(log_path, child.log_start),
            });
        }
        if let Some(value) = ready(log_since(log_path, child.log_start)).await
            && child.exited().is_none()
        {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ClusterError::NotReady {
                what: what.to_owned(),
                timeout: STARTUP_TIMEOUT,
                log: log_tail(log_path, child.log_start),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether Redis on `port` answers PING with PONG.
async fn pings(port: u16) -> bool {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await.ok()?;
        Some(&reply == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), exchange).await,
        Ok(Some(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_line_gives_the_port() {
        let log = "client x connected\naedes b listening on 127.0.0.1:40123\nclient y connected\n";
        assert_eq!(listening_port(log), Some(40123));
        assert_eq!(listening_port("aedes b listening on 127.0.0.1:"), None);
        assert_eq!(listening_port("starting"), None);
    }

    #[test]
    fn node_ids_are_letters_then_numbers() {
        assert_eq!(
            (node_id(0), node_id(1), node_id(25)),
            ("a".into(), "b".into(), "z".into())
        );
        assert_eq!(node_id(26), "n26");
    }
}
