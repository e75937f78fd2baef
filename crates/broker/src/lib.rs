//! A small in-memory MQTT 3.1.1 broker over plain TCP, for anchormq's local stack (`anchormq up`
//! and `demo`, and tests): the bridge's retained key notes must reach every agent whatever the
//! size of the fleet.
//!
//! What it is built around:
//! - retained messages and subscriptions live in topic tries, so a new subscription costs what it
//!   matches (not the number of retained topics) and a publish costs its topic's depth (not the
//!   number of filters);
//! - every retained message matching a new subscription is sent, at QoS 0 and 1 alike;
//! - all a client is sent (QoS 0 and 1, retained and live) leaves through one queue, in the order
//!   the broker routed it, with a bounded QoS 1 window and a bounded queue;
//! - persistent sessions (clean session 0) keep subscriptions and QoS 1 messages while the
//!   client is away, for the broker's life;
//! - the caller owns the listener and the shutdown signal.
//!
//! What it is not: a production broker. No TLS, no authentication (username and password are
//! ignored: it listens on loopback for one developer), no persistence across restarts, no MQTT 5,
//! QoS 2 accepted from publishers but granted as QoS 1 to subscribers.

mod connection;
mod session;
mod state;
mod topic;
mod trie;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::session::Limits;
use crate::state::State;

/// Limits of a broker. [`Settings::default`] suits a fleet on one machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Largest packet a client may send (its remaining length), in bytes; a larger one closes
    /// the connection before it is read. Default 4 MiB.
    pub max_packet_size: usize,
    /// Open TCP connections; more are closed as soon as they are accepted. Default 10,000.
    pub max_connections: usize,
    /// QoS 1 messages sent to one client and not yet acknowledged; what follows them in the
    /// client's queue waits for a PUBACK. 1 to 65,534 (packet ids are 16 bits). Default 1,000.
    pub max_inflight: u16,
    /// Messages waiting in one client's queue. When it is full, new messages for that client are
    /// dropped and counted, with one warning per episode. Default 1,000,000.
    pub max_queued_messages: usize,
    /// How long a new connection may take to send CONNECT. Default 10 s.
    pub connect_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_packet_size: 4 << 20,
            max_connections: 10_000,
            max_inflight: 1_000,
            max_queued_messages: 1_000_000,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl Settings {
    fn validate(&self) -> Result<(), BrokerError> {
        let invalid = |field, requirement| Err(BrokerError::Setting { field, requirement });
        if self.max_packet_size == 0 {
            return invalid("max_packet_size", "at least 1");
        }
        if self.max_connections == 0 {
            return invalid("max_connections", "at least 1");
        }
        if !(1..=65_534).contains(&self.max_inflight) {
            return invalid("max_inflight", "from 1 to 65,534");
        }
        if self.max_queued_messages == 0 {
            return invalid("max_queued_messages", "at least 1");
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout", "more than zero");
        }
        Ok(())
    }
}

/// Starting a broker failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// A setting is out of its range.
    #[error("broker setting `{field}` must be {requirement}")]
    Setting {
        /// The field of [`Settings`].
        field: &'static str,
        /// Its valid range.
        requirement: &'static str,
    },
}

/// A snapshot of the broker's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Open TCP connections (including those that have not sent CONNECT yet).
    pub connections: usize,
    /// Sessions: connected clients and persistent sessions of absent ones.
    pub sessions: usize,
    /// Topics holding a retained message.
    pub retained: usize,
    /// Messages dropped because a client's queue was full, since the start.
    pub dropped: u64,
}

/// A broker: its state, and the settings it was made with. Cheap to clone; every clone is the
/// same broker. [`Broker::serve`] runs it on a listener.
#[derive(Debug, Clone)]
pub struct Broker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    settings: Settings,
    state: Mutex<State>,
    connections: AtomicUsize,
    /// New connections are being closed for [`Settings::max_connections`].
    at_limit: AtomicBool,
}

impl Shared {
    /// The state. A panic while it was held (a bug) leaves it usable rather than taking every
    /// other connection down with it.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs a broker with `settings` on `listener` until `shutdown` is cancelled: then it stops
/// accepting, closes every connection and returns. Fails only on invalid settings.
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    shutdown: CancellationToken,
) -> Result<(), BrokerError> {
    Broker::new(settings)?.serve(listener, shutdown).await;
    Ok(())
}

impl Broker {
    /// A broker with no sessions and no retained messages.
    pub fn new(settings: Settings) -> Result<Self, BrokerError> {
        settings.validate()?;
        let limits = Limits {
            max_inflight: usize::from(settings.max_inflight),
            max_queued: settings.max_queued_messages,
        };
        Ok(Self {
            shared: Arc::new(Shared {
                settings,
                state: Mutex::new(State::new(limits)),
                connections: AtomicUsize::new(0),
                at_limit: AtomicBool::new(false),
            }),
        })
    }

    /// Accepts connections on `listener` until `shutdown` is cancelled, then closes them all
    /// and returns once their tasks have ended. Accepted sockets get TCP_NODELAY (the writer
    /// already batches). Sessions and retained messages stay in the broker, so serving again
    /// resumes them.
    pub async fn serve(&self, listener: TcpListener, shutdown: CancellationToken) {
        let mut connections = JoinSet::new();
        let mut backoff = ACCEPT_BACKOFF_MIN;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(ended) = connections.join_next(), if !connections.is_empty() => {
                    if let Err(error) = ended && error.is_panic() {
                        tracing::error!(%error, "a connection task panicked");
                    }
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        backoff = ACCEPT_BACKOFF_MIN;
                        self.accept(stream, peer, &mut connections, &shutdown);
                    }
                    Err(error) => {
                        // Out of file descriptors and the like: wait, then accept again.
                        tracing::warn!(%error, retry_in = ?backoff, "cannot accept a connection");
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    }
                },
            }
        }
        drop(listener);
        while connections.join_next().await.is_some() {}
    }

    fn accept(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        connections: &mut JoinSet<()>,
        shutdown: &CancellationToken,
    ) {
        let limit = self.shared.settings.max_connections;
        if self.shared.connections.load(Ordering::Relaxed) >= limit {
            // One warning per episode: a fleet over the limit would otherwise flood the log.
            if !self.shared.at_limit.swap(true, Ordering::Relaxed) {
                tracing::warn!(%peer, limit, "connection limit reached: closing new connections");
            }
            return;
        }
        self.shared.at_limit.store(false, Ordering::Relaxed);
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
        let counted = Counted::new(self.shared.clone());
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            connection::serve(stream, peer, counted.0.clone(), shutdown).await;
            drop(counted);
        });
    }

    /// The broker's counters now.
    pub fn stats(&self) -> Stats {
        let state = self.shared.lock();
        Stats {
            connections: self.shared.connections.load(Ordering::Relaxed),
            sessions: state.sessions(),
            retained: state.retained(),
            dropped: state.dropped(),
        }
    }

    /// The settings the broker was made with.
    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }
}

const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Counts a connection for [`Settings::max_connections`] while it lives.
struct Counted(Arc<Shared>);

impl Counted {
    fn new(shared: Arc<Shared>) -> Self {
        shared.connections.fetch_add(1, Ordering::Relaxed);
        Self(shared)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}
