//! An in-process rumqttd broker on a loopback port.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

use crate::free_port;
use crate::probe::{Probe, probe};

/// How many free ports to try when another process takes the picked one first.
const BIND_ATTEMPTS: usize = 5;

/// Starting the embedded broker failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// No free loopback port could be found.
    #[error("cannot find a free loopback port for the embedded broker: {0}")]
    NoPort(#[source] std::io::Error),
    /// The broker thread could not be created.
    #[error("cannot spawn the embedded broker thread: {0}")]
    Thread(#[source] std::io::Error),
    /// rumqttd did not answer an MQTT CONNECT on any port tried.
    #[error(
        "embedded rumqttd broker did not come up (last port tried {last_port}, {attempts} attempts, {timeout:?} each)"
    )]
    NotReady {
        /// The last port tried.
        last_port: u16,
        /// How many ports were tried.
        attempts: usize,
        /// The readiness limit per attempt.
        timeout: Duration,
    },
}

/// Broker limits. The defaults suit benchmarks: 4 MiB payloads, many connections, and QoS 0
/// subscribers that get every retained message.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// Largest accepted packet payload, in bytes.
    pub max_payload_size: usize,
    /// Incoming packets rumqttd reads from one connection's socket per batch before handing them
    /// to the router (rumqttd 0.20 passes `ConnectionSettings::max_inflight_count` to its network
    /// reader as that batch length). It does not set the outgoing QoS 1/2 window, which rumqttd
    /// fixes at 100 (see [`EmbeddedBroker`]).
    pub max_inflight_count: usize,
    /// Concurrent connections.
    pub max_connections: usize,
    /// Bytes per commit-log segment of a topic (must exceed `max_payload_size`).
    pub max_segment_size: usize,
    /// Segments kept per topic before the oldest is dropped. Memory per busy topic is bounded by
    /// `max_segment_size * max_segment_count`.
    pub max_segment_count: usize,
    /// Messages the router reads for one QoS 0 subscription per round. rumqttd 0.20 also uses it
    /// as the cap on the retained messages a new QoS 0 subscription receives: it reads them all
    /// once, keeps this many and drops the rest (`forward_device_data` in rumqttd's
    /// `router/routing.rs`). So it must exceed the number of retained topics under any filter.
    /// QoS 1/2 subscriptions ignore it (see [`EmbeddedBroker`]).
    pub max_outgoing_packet_count: u64,
    /// How long a new connection may take to send CONNECT.
    pub connection_timeout: Duration,
    /// How long each start attempt may take to answer an MQTT CONNECT.
    pub startup_timeout: Duration,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            max_payload_size: 4 << 20,
            max_inflight_count: 1000,
            max_connections: 10_000,
            max_segment_size: 64 << 20,
            max_segment_count: 4,
            // Retained notes: one topic per node, per group and per note chunk. 1,000 cut
            // QoS 0 subscribers off at 1,000 notes; 100,000 leaves room for large test
            // registries while a round stays bounded.
            max_outgoing_packet_count: 100_000,
            connection_timeout: Duration::from_secs(60),
            startup_timeout: Duration::from_secs(10),
        }
    }
}

/// An rumqttd broker (MQTT 3.1.1, plain TCP) running in background threads of this process,
/// on 127.0.0.1.
///
/// It keeps retained messages and delivers them to later subscribers, with a limit that no
/// setting lifts: a new QoS 1 or 2 subscription receives at most 100 of the retained messages
/// that match it (fewer if other messages to that client are unacknowledged) and never the rest.
/// rumqttd 0.20 sends retained messages once, when a subscription is new, and truncates them to
/// the free slots of the client's outgoing window (`forward_device_data` in
/// `router/routing.rs`), whose size is the constant `MAX_INFLIGHT = 100` (`router/iobufs.rs`).
/// A QoS 0 subscription gets up to [`BrokerSettings::max_outgoing_packet_count`] of them. Live
/// publishes to existing subscribers are not limited. See `tests/retained.rs`.
///
/// rumqttd 0.20 has no way to stop a started broker: it runs until the process exits,
/// and dropping this handle does not stop it. Tests that restart a broker use
/// the test kit's Mosquitto.
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
}

impl EmbeddedBroker {
    /// Starts a broker with [`BrokerSettings::default`].
    pub async fn start() -> Result<Self, BrokerError> {
        Self::start_with(BrokerSettings::default()).await
    }

    /// Starts a broker on a free loopback port and waits until it answers an MQTT CONNECT.
    pub async fn start_with(settings: BrokerSettings) -> Result<Self, BrokerError> {
        let mut last_port = 0;
        for _ in 0..BIND_ATTEMPTS {
            // rumqttd binds the configured address itself and does not report a port bound
            // from 0, so pick one and retry if someone takes it first.
            let port = free_port().map_err(BrokerError::NoPort)?;
            last_port = port;
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let config = broker_config(&settings, addr);
            let thread = std::thread::Builder::new()
                .name(format!("rumqttd-{port}"))
                .spawn(move || {
                    // Blocks for the broker's life; returns only if its listener failed.
                    let mut broker = Broker::new(config);
                    if let Err(e) = broker.start() {
                        tracing::error!(error = %e, port, "embedded rumqttd broker stopped");
                    }
                })
                .map_err(BrokerError::Thread)?;
            if await_broker(addr, &thread, settings.startup_timeout).await {
                tracing::debug!(%addr, "embedded rumqttd broker ready");
                return Ok(Self { addr });
            }
        }
        Err(BrokerError::NotReady {
            last_port,
            attempts: BIND_ATTEMPTS,
            timeout: settings.startup_timeout,
        })
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    /// The broker's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The broker's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// True once the broker answers CONNACK while its thread still runs (a thread that ended lost
/// the bind, so whatever answers on the port is not ours).
async fn await_broker(
    addr: SocketAddr,
    thread: &std::thread::JoinHandle<()>,
    limit: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if thread.is_finished() {
            return false;
        }
        if probe(addr, Duration::from_secs(2)).await == Probe::Connack(0) {
            return !thread.is_finished();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn broker_config(settings: &BrokerSettings, listen: SocketAddr) -> Config {
    let connections = ConnectionSettings {
        connection_timeout_ms: u16::try_from(settings.connection_timeout.as_millis())
            .unwrap_or(u16::MAX),
        max_payload_size: settings.max_payload_size,
        max_inflight_count: settings.max_inflight_count,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: format!("anchormq-v4-{}", listen.port()),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections,
    };
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: settings.max_connections,
            max_outgoing_packet_count: settings.max_outgoing_packet_count,
            max_segment_size: settings.max_segment_size.max(settings.max_payload_size * 2),
            max_segment_count: settings.max_segment_count,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Config::default()
    }
}
