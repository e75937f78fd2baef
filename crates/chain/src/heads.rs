//! A `newHeads` subscription on a WebSocket connection of its own, whose socket acknowledges every
//! notification at once.
//!
//! Heads only wake the stream; `eth_getLogs` stays the source of events. Through alloy's WebSocket
//! transport, the notifications of a burst (one block every ~8 ms on Anvil 1.7.1) arrived in
//! clumps up to ~40 ms late: the node holds a small frame while its previous one is unacknowledged
//! (Nagle), and a connection that only receives acknowledges late (delayed ACK). This connection
//! re-arms TCP_QUICKACK after every read, so the node never waits for our acknowledgement.

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

/// How long the node may take to confirm the subscription.
const SUBSCRIBE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the subscription could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeadsError {
    #[error("WebSocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("the node refused eth_subscribe newHeads: {0}")]
    Refused(String),
    #[error("the node closed the connection before confirming the subscription")]
    Closed,
    #[error("the node did not confirm the subscription within {SUBSCRIBE_LIMIT:?}")]
    Timeout,
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// A live subscription; dropping it closes the connection.
#[derive(Debug)]
pub(crate) struct Heads {
    wakes: mpsc::Receiver<()>,
    reader: JoinHandle<()>,
}

impl Drop for Heads {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

impl Heads {
    /// Connects to `url` (ws:// or wss://) and subscribes to `newHeads`.
    pub(crate) async fn subscribe(url: &str) -> Result<Self, HeadsError> {
        let (mut socket, _) =
            tokio_tungstenite::connect_async_tls_with_config(url, None, true, Some(connector()?))
                .await?;
        let request = r#"{"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads"]}"#;
        socket.send(Message::text(request)).await?;
        tokio::time::timeout(SUBSCRIBE_LIMIT, confirmed(&mut socket))
            .await
            .map_err(|_| HeadsError::Timeout)??;
        // One pending wake is enough: the stream reads up to the newest head when it wakes.
        let (wake, wakes) = mpsc::channel(1);
        let reader = tokio::spawn(read_heads(socket, wake));
        Ok(Self { wakes, reader })
    }

    /// The next head, or `None` once the connection ended.
    pub(crate) async fn next(&mut self) -> Option<()> {
        self.wakes.recv().await
    }
}

/// rustls with the ring provider named here rather than taken from the process (the build holds two
/// providers, and rustls refuses to guess between them), trusting the system's roots.
fn connector() -> Result<Connector, HeadsError> {
    let mut roots = RootCertStore::empty();
    // Roots that do not parse are skipped; with none, a wss:// endpoint fails its handshake and
    // the stream polls instead.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Connector::Rustls(Arc::new(config)))
}

/// Waits for the answer to the subscription request.
async fn confirmed(socket: &mut Socket) -> Result<(), HeadsError> {
    while let Some(message) = socket.next().await {
        quick_ack(socket);
        let Message::Text(text) = message? else {
            continue;
        };
        let Ok(reply) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if reply.get("id") != Some(&serde_json::Value::from(1)) {
            continue;
        }
        if let Some(error) = reply.get("error") {
            return Err(HeadsError::Refused(error.to_string()));
        }
        return Ok(());
    }
    Err(HeadsError::Closed)
}

async fn read_heads(mut socket: Socket, wake: mpsc::Sender<()>) {
    while let Some(message) = socket.next().await {
        quick_ack(&socket);
        match message {
            Ok(Message::Text(text)) if text.contains("\"eth_subscription\"") => {
                // Full: a wake is already pending.
                let _ = wake.try_send(());
            }
            Ok(Message::Close(_)) | Err(_) => break,
            // pings are answered by the WebSocket layer on the next read
            Ok(_) => {}
        }
    }
    tracing::debug!(target: "anchormq::chain", "newHeads connection ended");
}

/// Linux leaves quick-ACK mode on its own, so it is set again after every read.
fn quick_ack(socket: &Socket) {
    let tcp = match socket.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp,
        MaybeTlsStream::Rustls(tls) => tls.get_ref().0,
        _ => return,
    };
    #[cfg(target_os = "linux")]
    let _ = socket2::SockRef::from(tcp).set_tcp_quickack(true);
    #[cfg(not(target_os = "linux"))]
    let _ = tcp;
}

#[cfg(test)]
mod tests {
    /// Built without a process-wide rustls provider: with two in the build, rustls would panic.
    #[test]
    fn the_tls_connector_names_its_provider() {
        assert!(rustls::crypto::CryptoProvider::get_default().is_none());
        super::connector().expect("connector");
    }
}
