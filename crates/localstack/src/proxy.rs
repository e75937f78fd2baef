//! [`TcpCutProxy`]: a loopback TCP forwarder that can drop every connection on demand.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::rpc::ProxyError;

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    active: AtomicU64,
    cut: AtomicU64,
    upstream_failures: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    target: SocketAddr,
    /// Cancelled by `cut_all`; connections opened after a cut get a fresh token.
    generation: Mutex<CancellationToken>,
    counters: Counters,
}

/// Forwards TCP connections from a loopback port to `target`, and can cut them all at once
/// (to simulate a dropped WebSocket or MQTT connection) or refuse new ones for a while.
///
/// Stops, closing every connection, on [`TcpCutProxy::shutdown`], when its cancellation token
/// is cancelled, or when dropped.
#[derive(Debug)]
pub struct TcpCutProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

impl TcpCutProxy {
    /// Starts forwarding from a free loopback port to `target`.
    pub async fn start(target: SocketAddr) -> Result<Self, ProxyError> {
        Self::start_with_shutdown(target, CancellationToken::new()).await
    }

    /// Like [`TcpCutProxy::start`], also stopping when `shutdown` is cancelled. Stopping the
    /// proxy does not cancel `shutdown`.
    pub async fn start_with_shutdown(
        target: SocketAddr,
        shutdown: CancellationToken,
    ) -> Result<Self, ProxyError> {
        let shutdown = shutdown.child_token();
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(ProxyError::Bind)?;
        let addr = listener.local_addr().map_err(ProxyError::Bind)?;
        let shared = Arc::new(Shared {
            target,
            generation: Mutex::new(shutdown.child_token()),
            counters: Counters::default(),
        });
        let acceptor = tokio::spawn(accept_loop(listener, shared.clone(), shutdown.clone()));
        Ok(Self {
            addr,
            shared,
            shutdown,
            acceptor: Mutex::new(Some(acceptor)),
        })
    }

    /// The proxy's listening address (clients connect here).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Where connections are forwarded.
    pub fn target(&self) -> SocketAddr {
        self.shared.target
    }

    /// Closes every open connection (both sides see EOF); new connections are still accepted.
    /// Returns how many connections were open.
    pub fn cut_all(&self) -> u64 {
        let fresh = self.shutdown.child_token();
        let old = std::mem::replace(&mut *lock(&self.shared.generation), fresh);
        old.cancel();
        self.shared.counters.active.load(Ordering::SeqCst)
    }

    /// Closes the listening socket so new connections are refused (ECONNREFUSED); open
    /// connections stay up. Returns once the port no longer accepts.
    pub async fn pause(&self) {
        let acceptor = lock(&self.acceptor).take();
        if let Some(acceptor) = acceptor {
            acceptor.abort();
            let _ = acceptor.await;
        }
    }

    /// Re-opens the listening socket on the same port after [`TcpCutProxy::pause`]. Fails if
    /// another process took the port meanwhile.
    pub async fn resume(&self) -> Result<(), ProxyError> {
        if lock(&self.acceptor).is_some() || self.shutdown.is_cancelled() {
            return Ok(());
        }
        let rebind = |source| ProxyError::Rebind {
            port: self.addr.port(),
            source,
        };
        let socket = TcpSocket::new_v4().map_err(rebind)?;
        socket.set_reuseaddr(true).map_err(rebind)?;
        socket.bind(self.addr).map_err(rebind)?;
        let listener = socket.listen(1024).map_err(rebind)?;
        let acceptor = tokio::spawn(accept_loop(
            listener,
            self.shared.clone(),
            self.shutdown.clone(),
        ));
        *lock(&self.acceptor) = Some(acceptor);
        Ok(())
    }

    /// Whether new connections are refused.
    pub fn is_paused(&self) -> bool {
        lock(&self.acceptor).is_none()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.counters.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn active(&self) -> u64 {
        self.shared.counters.active.load(Ordering::SeqCst)
    }

    /// Connections closed by `cut_all` or shutdown.
    pub fn cut(&self) -> u64 {
        self.shared.counters.cut.load(Ordering::SeqCst)
    }

    /// Accepted connections dropped because the target refused them.
    pub fn upstream_failures(&self) -> u64 {
        self.shared
            .counters
            .upstream_failures
            .load(Ordering::SeqCst)
    }

    /// Stops accepting and closes every connection.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.pause().await;
    }
}

impl Drop for TcpCutProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(acceptor) = lock(&self.acceptor).take() {
            acceptor.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let client = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(e) => {
                    tracing::warn!(error = %e, "TCP cut proxy: accept failed");
                    continue;
                }
            },
        };
        shared.counters.accepted.fetch_add(1, Ordering::SeqCst);
        let cut = lock(&shared.generation).clone();
        tokio::spawn(forward(client, shared.clone(), cut));
    }
}

/// Decrements the open-connection count however the forwarding task ends.
struct ActiveGuard<'a>(&'a Counters);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn forward(mut client: TcpStream, shared: Arc<Shared>, cut: CancellationToken) {
    shared.counters.active.fetch_add(1, Ordering::SeqCst);
    let _guard = ActiveGuard(&shared.counters);
    let mut upstream = tokio::select! {
        () = cut.cancelled() => {
            shared.counters.cut.fetch_add(1, Ordering::SeqCst);
            return;
        }
        connected = TcpStream::connect(shared.target) => match connected {
            Ok(upstream) => upstream,
            Err(_) => {
                shared.counters.upstream_failures.fetch_add(1, Ordering::SeqCst);
                return;
            }
        },
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    tokio::select! {
        () = cut.cancelled() => {
            shared.counters.cut.fetch_add(1, Ordering::SeqCst);
        }
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
    }
    // Both sockets drop here: each peer reads EOF.
}
