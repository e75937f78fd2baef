//! MQTT-level readiness: a CONNECT that gets a CONNACK proves the broker on a port is up and
//! speaks MQTT, not merely that something accepts TCP there.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// MQTT 3.1.1 CONNECT, clean session, keep-alive 60 s, client id "anchormq-probe".
const CONNECT: &[u8] = &[
    0x10, 26, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 14, b'a', b'n', b'c', b'h', b'o',
    b'r', b'm', b'q', b'-', b'p', b'r', b'o', b'b', b'e',
];
const DISCONNECT: &[u8] = &[0xE0, 0];

/// What a probe learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// Nothing accepted the connection or it failed mid-way.
    Down,
    /// The broker answered CONNACK with this return code (0 = accepted, 5 = not authorised).
    Connack(u8),
}

/// Connects to `addr`, sends CONNECT and reads the CONNACK, all within `limit`.
pub(crate) async fn probe(addr: SocketAddr, limit: Duration) -> Probe {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(CONNECT).await.ok()?;
        let mut connack = [0u8; 4];
        stream.read_exact(&mut connack).await.ok()?;
        if connack[0] != 0x20 || connack[1] != 2 {
            return None;
        }
        let _ = stream.write_all(DISCONNECT).await;
        Some(connack[3])
    };
    match tokio::time::timeout(limit, exchange).await {
        Ok(Some(code)) => Probe::Connack(code),
        _ => Probe::Down,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_packet_length_matches_its_header() {
        assert_eq!(usize::from(CONNECT[1]), CONNECT.len() - 2);
    }
}
