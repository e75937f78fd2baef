//! The in-process MQTT broker of `up` and `demo`: anchormq's own (`anchormq-broker`) on a
//! loopback port, on a thread of its own.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

/// The broker's limits (packet size, connections, QoS 1 window, per-client queue).
pub use anchormq_broker::Settings as BrokerSettings;

/// Starting the embedded broker failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// A setting is out of its range.
    #[error(transparent)]
    Settings(#[from] anchormq_broker::BrokerError),
    /// No loopback port could be bound.
    #[error("cannot listen on a loopback port for the embedded broker: {0}")]
    Bind(#[source] std::io::Error),
    /// The broker's runtime or thread could not be created.
    #[error("cannot start the embedded broker's thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// An MQTT 3.1.1 broker (plain TCP, in memory) running in this process on 127.0.0.1, on a thread
/// with its own tokio runtime: callers on a current-thread runtime (most `#[tokio::test]`s)
/// cannot starve it, and it outlives the runtime that started it.
///
/// A new subscription receives every retained message that matches it, at QoS 0 and 1 alike,
/// at a cost that follows its matches, not the number of retained topics; everything a client
/// is sent leaves in the order the broker routed it. See `anchormq-broker` and
/// `tests/retained.rs`.
///
/// Clones share one broker. Dropping the handles leaves it running until the process exits;
/// [`EmbeddedBroker::stop`] closes its connections and frees its port.
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shutdown: CancellationToken,
    /// Cancelled by the broker thread once `serve` has returned.
    stopped: CancellationToken,
}

impl EmbeddedBroker {
    /// Starts a broker with [`BrokerSettings::default`].
    pub async fn start() -> Result<Self, BrokerError> {
        Self::start_with(BrokerSettings::default()).await
    }

    /// Starts a broker on a free loopback port. It accepts connections once this returns (the
    /// port is bound before).
    pub async fn start_with(settings: BrokerSettings) -> Result<Self, BrokerError> {
        let broker = anchormq_broker::Broker::new(settings)?;
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| {
                listener.set_nonblocking(true)?;
                Ok(listener)
            })
            .map_err(BrokerError::Bind)?;
        let addr = listener.local_addr().map_err(BrokerError::Bind)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BrokerError::Thread)?;
        let shutdown = CancellationToken::new();
        let stopped = CancellationToken::new();
        std::thread::Builder::new()
            .name(format!("mqtt-broker-{}", addr.port()))
            .spawn({
                let shutdown = shutdown.clone();
                let stopped = stopped.clone();
                move || {
                    runtime.block_on(async {
                        match tokio::net::TcpListener::from_std(listener) {
                            Ok(listener) => broker.serve(listener, shutdown).await,
                            Err(error) => {
                                tracing::error!(%error, %addr, "embedded broker cannot listen");
                            }
                        }
                    });
                    stopped.cancel();
                }
            })
            .map_err(BrokerError::Thread)?;
        tracing::debug!(%addr, "embedded broker listening");
        Ok(Self {
            addr,
            inner: Arc::new(Inner { shutdown, stopped }),
        })
    }

    /// Stops the broker: it stops accepting, closes every connection (their clients see the
    /// connection end) and forgets its sessions and retained messages. Returns once it has
    /// stopped. Every clone sees it stopped.
    pub async fn stop(&self) {
        self.inner.shutdown.cancel();
        self.inner.stopped.cancelled().await;
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
