//! A real Mosquitto broker process on a loopback port.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::probe::{Probe, probe};
use anchormq_devnet::free_port;
use anchormq_devnet::paths::find_binary;
use anchormq_devnet::process::{LoggedChild, STOP_GRACE, log_since, log_tail, work_dir};

use crate::tls::TlsFiles;

/// How many free ports the first start tries when another process takes the picked one.
const BIND_ATTEMPTS: usize = 5;

/// Starting, stopping or configuring Mosquitto failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MosquittoError {
    /// No mosquitto (or mosquitto_passwd) executable was found.
    #[error(
        "{binary} not found (tried {tried}): run scripts/bootstrap.sh or apt-get install mosquitto mosquitto-clients"
    )]
    NotFound {
        /// Which binary.
        binary: &'static str,
        /// The paths that were tried.
        tried: String,
    },
    /// Writing the config, password file or log failed.
    #[error("cannot prepare mosquitto files in {dir}: {source}")]
    Files {
        /// The broker's temp dir.
        dir: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `mosquitto_passwd` failed to hash the password file.
    #[error("mosquitto_passwd ({binary}) failed with {status}: {stderr}")]
    Passwd {
        /// The mosquitto_passwd executable.
        binary: PathBuf,
        /// How it exited.
        status: std::process::ExitStatus,
        /// What it printed.
        stderr: String,
    },
    /// The process could not be spawned.
    #[error("cannot start mosquitto at {binary}: {source}")]
    Spawn {
        /// The mosquitto executable.
        binary: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Mosquitto exited before it was ready (bad config, port in use).
    #[error(
        "mosquitto ({binary}) on port {port} exited with {status} before it was ready; its log:\n{log}"
    )]
    Exited {
        /// The mosquitto executable.
        binary: PathBuf,
        /// The port it was given.
        port: u16,
        /// How it exited.
        status: std::process::ExitStatus,
        /// The end of its output.
        log: String,
    },
    /// Mosquitto did not answer an MQTT CONNECT in time.
    #[error("mosquitto on port {port} did not become ready within {timeout:?}; its log:\n{log}")]
    NotReady {
        /// The port.
        port: u16,
        /// The limit that passed.
        timeout: Duration,
        /// The end of its output.
        log: String,
    },
    /// The CA file of the TLS listener cannot be used to check that the broker is up.
    #[error("cannot check mosquitto's TLS listener with the CA in {ca}: {reason}")]
    TlsCa {
        /// The CA file.
        ca: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Stopping the process failed.
    #[error("cannot stop mosquitto on port {port}: {source}")]
    Stop {
        /// The port.
        port: u16,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A username and password the broker requires. `Debug` hides the password.
#[derive(Clone)]
pub struct Credentials {
    /// The MQTT username.
    pub username: String,
    /// The MQTT password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How to run Mosquitto. Build with [`Mosquitto::builder`].
#[derive(Debug, Clone)]
pub struct MosquittoBuilder {
    persistence: bool,
    autosave_interval: Option<u32>,
    autosave_on_changes: bool,
    credentials: Option<Credentials>,
    tls: Option<TlsFiles>,
    max_queued_messages: u32,
    max_inflight_messages: u32,
    max_packet_size: u32,
    extra_config: Vec<String>,
    binary: Option<PathBuf>,
    startup_timeout: Duration,
}

impl Default for MosquittoBuilder {
    fn default() -> Self {
        Self {
            persistence: false,
            autosave_interval: None,
            autosave_on_changes: false,
            credentials: None,
            tls: None,
            // Mosquitto's defaults (1000 queued, 20 in flight) drop QoS 1 floods.
            max_queued_messages: 1_000_000,
            max_inflight_messages: 0,
            max_packet_size: 16 << 20,
            extra_config: Vec::new(),
            binary: None,
            startup_timeout: Duration::from_secs(15),
        }
    }
}

impl MosquittoBuilder {
    /// Keep retained messages and sessions in `mosquitto.db` in the broker's temp dir
    /// (written on graceful stop, and per the autosave options).
    pub fn persistence(mut self, enabled: bool) -> Self {
        self.persistence = enabled;
        self
    }

    /// Save the database every `seconds` (or, with [`Self::autosave_on_changes`], every that
    /// many changes). Needs persistence.
    pub fn autosave_interval(mut self, value: u32) -> Self {
        self.autosave_interval = Some(value);
        self
    }

    /// Interpret the autosave interval as a count of changes instead of seconds.
    pub fn autosave_on_changes(mut self, enabled: bool) -> Self {
        self.autosave_on_changes = enabled;
        self
    }

    /// Require this username and password (anonymous clients get CONNACK "not authorised").
    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some(Credentials {
            username: username.into(),
            password: password.into(),
        });
        self
    }

    /// Listen with TLS only (`mqtts://`), presenting `files.cert` and `files.key`. Readiness is
    /// then an MQTT CONNECT over TLS that trusts `files.ca`, so it also proves the certificate
    /// chain works.
    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }

    /// QoS 1/2 messages queued per client beyond those in flight (0 = no limit).
    pub fn max_queued_messages(mut self, count: u32) -> Self {
        self.max_queued_messages = count;
        self
    }

    /// QoS 1/2 messages in flight per client (0 = no limit).
    pub fn max_inflight_messages(mut self, count: u32) -> Self {
        self.max_inflight_messages = count;
        self
    }

    /// Largest MQTT packet accepted, in bytes.
    pub fn max_packet_size(mut self, bytes: u32) -> Self {
        self.max_packet_size = bytes;
        self
    }

    /// An extra line for the generated config file.
    pub fn config_line(mut self, line: impl Into<String>) -> Self {
        self.extra_config.push(line.into());
        self
    }

    /// Use this mosquitto executable instead of the lookup (`ANCHORMQ_MOSQUITTO`,
    /// `/usr/sbin/mosquitto`, `PATH`).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// How long to wait for readiness (default 15 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Writes the config and starts the broker on a free loopback port.
    pub async fn spawn(self) -> Result<Mosquitto, MosquittoError> {
        let binary = match &self.binary {
            Some(path) => path.clone(),
            None => {
                let lookup = find_binary(
                    "mosquitto",
                    "ANCHORMQ_MOSQUITTO",
                    &[PathBuf::from("/usr/sbin/mosquitto")],
                );
                lookup
                    .found
                    .clone()
                    .ok_or_else(|| MosquittoError::NotFound {
                        binary: "mosquitto",
                        tried: lookup.describe(),
                    })?
            }
        };
        let (dir, log_path) =
            work_dir("anchormq-mosquitto-").map_err(|source| MosquittoError::Files {
                dir: std::env::temp_dir(),
                source,
            })?;
        let mut broker = Mosquitto {
            config: self,
            binary,
            port: 0,
            conf_path: dir.path().join("mosquitto.conf"),
            log_path,
            dir,
            child: None,
        };
        broker.write_password_file().await?;

        let mut last_error = None;
        for _ in 0..BIND_ATTEMPTS {
            broker.port = free_port().map_err(|source| MosquittoError::Files {
                dir: broker.dir.path().to_owned(),
                source,
            })?;
            match broker.start().await {
                Ok(()) => return Ok(broker),
                // Lost the port to another process between picking and binding: pick again.
                Err(e @ MosquittoError::Exited { .. }) => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or(MosquittoError::NotReady {
            port: broker.port,
            timeout: broker.config.startup_timeout,
            log: broker.log_tail(),
        }))
    }
}

/// A Mosquitto broker process on 127.0.0.1 with its own temp dir (config, log, password file,
/// persistence). Killed when dropped.
#[derive(Debug)]
pub struct Mosquitto {
    // First, so the process is killed before its temp dir is removed.
    child: Option<LoggedChild>,
    config: MosquittoBuilder,
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    conf_path: PathBuf,
    log_path: PathBuf,
}

impl Mosquitto {
    /// Options for a new broker.
    pub fn builder() -> MosquittoBuilder {
        MosquittoBuilder::default()
    }

    /// A broker with default options: anonymous, no persistence, large queues.
    pub async fn spawn() -> Result<Self, MosquittoError> {
        Self::builder().spawn().await
    }

    /// `mqtt://127.0.0.1:PORT`, or `mqtts://127.0.0.1:PORT` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.config.tls.is_some() {
            "mqtts"
        } else {
            "mqtt"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The certificate files of the TLS listener, if it has one.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.config.tls.as_ref()
    }

    /// The port, stable across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The credentials the broker requires, if any.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.config.credentials.as_ref()
    }

    /// The persistence database file (present only with persistence, after a save).
    pub fn persistence_file(&self) -> PathBuf {
        self.dir.path().join("mosquitto.db")
    }

    /// The generated config file.
    pub fn config_path(&self) -> &Path {
        &self.conf_path
    }

    /// The log file holding the broker's output of every run.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last lines of the broker's output.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path, 0)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.exited().is_none())
    }

    /// Graceful stop (SIGTERM): with persistence, Mosquitto saves its database on the way out.
    pub async fn stop(&mut self) -> Result<(), MosquittoError> {
        if let Some(mut child) = self.child.take() {
            child
                .stop(STOP_GRACE)
                .await
                .map_err(|source| MosquittoError::Stop {
                    port: self.port,
                    source,
                })?;
        }
        Ok(())
    }

    /// SIGKILL, like a crash: changes since the last autosave are lost.
    pub async fn kill(&mut self) -> Result<(), MosquittoError> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.map_err(|source| MosquittoError::Stop {
                port: self.port,
                source,
            })?;
        }
        Ok(())
    }

    /// Graceful stop, then start on the same port with the same config.
    pub async fn restart(&mut self) -> Result<(), MosquittoError> {
        self.stop().await?;
        self.start().await
    }

    /// Deletes the persistence database so the next start begins empty. Call while stopped.
    pub fn clear_persistence(&self) -> std::io::Result<()> {
        match std::fs::remove_file(self.persistence_file()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Starts the broker (again) on its port. No-op when running.
    pub async fn start(&mut self) -> Result<(), MosquittoError> {
        if self.is_running() {
            return Ok(());
        }
        let files_error = |source| MosquittoError::Files {
            dir: self.dir.path().to_owned(),
            source,
        };
        let running_as_root = std::fs::metadata(self.dir.path())
            .map_err(files_error)?
            .uid()
            == 0;
        let text = self.config_text(running_as_root);
        std::fs::write(&self.conf_path, text).map_err(|source| MosquittoError::Files {
            dir: self.dir.path().to_owned(),
            source,
        })?;
        let conf = self.conf_path.display().to_string();
        let args = ["-c", conf.as_str()];
        let mut child =
            LoggedChild::spawn(&self.binary, args, &args.join(" "), &self.log_path, |_| {})
                .map_err(|source| MosquittoError::Spawn {
                    binary: self.binary.clone(),
                    source,
                })?;
        match self.await_ready(&mut child).await {
            Ok(()) => {
                self.child = Some(child);
                Ok(())
            }
            Err(e) => {
                let _ = child.kill().await;
                Err(e)
            }
        }
    }

    async fn await_ready(&self, child: &mut LoggedChild) -> Result<(), MosquittoError> {
        let deadline = tokio::time::Instant::now() + self.config.startup_timeout;
        let addr = self.addr();
        let tls = match &self.config.tls {
            Some(files) => Some(probe_tls_config(&files.ca)?),
            None => None,
        };
        loop {
            if let Some(status) = child.exited() {
                return Err(MosquittoError::Exited {
                    binary: self.binary.clone(),
                    port: self.port,
                    status,
                    log: log_tail(&self.log_path, child.log_start),
                });
            }
            // "running" is logged after the listener is open; checking it rules out another
            // process answering on a port we failed to bind.
            let log = log_since(&self.log_path, child.log_start);
            if log.contains(" running")
                && self.answers(addr, tls.as_ref()).await
                && child.exited().is_none()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(MosquittoError::NotReady {
                    port: self.port,
                    timeout: self.config.startup_timeout,
                    log: log_tail(&self.log_path, child.log_start),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the broker answers an MQTT CONNECT, over TLS when it listens with TLS.
    async fn answers(&self, addr: SocketAddr, tls: Option<&Arc<rustls::ClientConfig>>) -> bool {
        let limit = Duration::from_secs(2);
        match tls {
            Some(tls) => probe_tls(self.port, tls.clone(), limit).await,
            None => matches!(probe(addr, limit).await, Probe::Connack(_)),
        }
    }

    fn config_text(&self, running_as_root: bool) -> String {
        let c = &self.config;
        let mut text = String::new();
        let _ = writeln!(text, "# generated by anchormq-localstack");
        let _ = writeln!(text, "listener {} 127.0.0.1", self.port);
        if let Some(files) = &c.tls {
            let _ = writeln!(text, "cafile {}", files.ca.display());
            let _ = writeln!(text, "certfile {}", files.cert.display());
            let _ = writeln!(text, "keyfile {}", files.key.display());
        }
        if running_as_root {
            // Otherwise mosquitto drops to user "mosquitto", which cannot read this temp dir.
            let _ = writeln!(text, "user root");
        }
        match &c.credentials {
            Some(_) => {
                let _ = writeln!(text, "allow_anonymous false");
                let _ = writeln!(text, "password_file {}", self.password_path().display());
            }
            None => {
                let _ = writeln!(text, "allow_anonymous true");
            }
        }
        let _ = writeln!(text, "max_queued_messages {}", c.max_queued_messages);
        let _ = writeln!(text, "max_inflight_messages {}", c.max_inflight_messages);
        let _ = writeln!(text, "max_packet_size {}", c.max_packet_size);
        if c.persistence {
            let _ = writeln!(text, "persistence true");
            let _ = writeln!(text, "persistence_location {}/", self.dir.path().display());
            let _ = writeln!(text, "persistence_file mosquitto.db");
            if let Some(interval) = c.autosave_interval {
                let _ = writeln!(text, "autosave_interval {interval}");
            }
            let _ = writeln!(text, "autosave_on_changes {}", c.autosave_on_changes);
        } else {
            let _ = writeln!(text, "persistence false");
        }
        // stderr is unbuffered; stdout to a file would hold back the "running" line.
        let _ = writeln!(text, "log_dest stderr");
        let _ = writeln!(text, "log_type error");
        let _ = writeln!(text, "log_type warning");
        let _ = writeln!(text, "log_type notice");
        let _ = writeln!(text, "log_type information");
        let _ = writeln!(text, "connection_messages true");
        for line in &c.extra_config {
            let _ = writeln!(text, "{line}");
        }
        text
    }

    fn password_path(&self) -> PathBuf {
        self.dir.path().join("passwords")
    }

    /// Writes `user:password` and lets mosquitto_passwd hash it in place (`-U`), so the
    /// password never appears on a command line.
    async fn write_password_file(&self) -> Result<(), MosquittoError> {
        let Some(credentials) = &self.config.credentials else {
            return Ok(());
        };
        let lookup = find_binary(
            "mosquitto_passwd",
            "ANCHORMQ_MOSQUITTO_PASSWD",
            &[PathBuf::from("/usr/bin/mosquitto_passwd")],
        );
        let passwd = lookup
            .found
            .clone()
            .ok_or_else(|| MosquittoError::NotFound {
                binary: "mosquitto_passwd",
                tried: lookup.describe(),
            })?;
        let path = self.password_path();
        let line = format!("{}:{}\n", credentials.username, credentials.password);
        std::fs::write(&path, line).map_err(|source| MosquittoError::Files {
            dir: self.dir.path().to_owned(),
            source,
        })?;
        let output = tokio::process::Command::new(&passwd)
            .arg("-U")
            .arg(&path)
            .output()
            .await
            .map_err(|source| MosquittoError::Spawn {
                binary: passwd.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(MosquittoError::Passwd {
                binary: passwd,
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        Ok(())
    }
}

/// A rustls client trusting only `ca` (ring named explicitly: the build holds two providers).
fn probe_tls_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, MosquittoError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let fail = |reason: String| MosquittoError::TlsCa {
        ca: ca.to_owned(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| fail(e.to_string()))? {
        roots
            .add(cert.map_err(|e| fail(e.to_string()))?)
            .map_err(|e| fail(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// An MQTT CONNECT over TLS to 127.0.0.1:`port`: true when the broker answers with any CONNACK
/// (accepted, or "not authorised" for this anonymous probe when a password is required).
async fn probe_tls(port: u16, tls: Arc<rustls::ClientConfig>, limit: Duration) -> bool {
    use rumqttc::{ConnectionError, Event, Packet};
    let mut options = rumqttc::MqttOptions::new("anchormq-probe", "127.0.0.1", port);
    options.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(
        tls,
    )));
    let (_client, mut eventloop) = rumqttc::AsyncClient::new(options, 1);
    matches!(
        tokio::time::timeout(limit, eventloop.poll()).await,
        Ok(Ok(Event::Incoming(Packet::ConnAck(_))) | Err(ConnectionError::ConnectionRefused(_)))
    )
}
