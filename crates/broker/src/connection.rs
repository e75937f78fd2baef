//! One client connection: the CONNECT handshake, then a reader that applies packets to the
//! shared state and a writer that sends the session's queue, until one of them ends, the
//! client's id is taken over or the broker shuts down.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes;
use rumqttc::mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, Packet, Publish};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::session::Outgoing;
use crate::state::{Attached, Step, Violation};
use crate::topic::valid_topic;

/// Bytes asked of the socket per read, at least.
const READ_CHUNK: usize = 16 << 10;
/// Publishes the writer takes from the queue per write, in payload bytes (about).
const WRITE_BATCH: usize = 256 << 10;
/// Packets applied per hold of the state lock, at most.
const PACKETS_PER_LOCK: usize = 256;
/// A write buffer grown past this by a large message is given back after the write.
const KEEP_WRITE_BUFFER: usize = 1 << 20;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("client sent DISCONNECT")]
    Disconnect,
    #[error("client closed the connection")]
    Eof,
    #[error("no CONNECT within {0:?}")]
    ConnectTimeout(Duration),
    #[error("first packet is not a CONNECT")]
    NotConnect,
    #[error("CONNECT refused: {0:?}")]
    Refused(ConnectReturnCode),
    #[error("no packet within 1.5 times the keep-alive ({0:?})")]
    KeepAlive(Duration),
    #[error("malformed or oversized packet: {0}")]
    Malformed(mqttbytes::Error),
    #[error("{0}")]
    Violation(#[from] Violation),
    #[error("broker shutting down")]
    Shutdown,
    #[error("socket: {0}")]
    Io(#[from] io::Error),
}

impl Closed {
    /// A will is published when the connection ends without DISCONNECT (§3.1.2.5), here also
    /// when another connection takes the client id over, but not when the broker stops.
    fn publishes_will(&self) -> bool {
        !matches!(self, Self::Disconnect | Self::Shutdown)
    }
}

/// Serves one accepted connection to its end.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    match run(stream, &shared, &shutdown).await {
        Ok((client_id, closed)) => {
            tracing::debug!(%peer, %client_id, reason = %closed, "connection closed");
        }
        Err(closed) => tracing::debug!(%peer, reason = %closed, "connection closed before CONNACK"),
    }
}

/// The handshake, then the session until the connection ends. Returns the client id and why
/// it ended, or an error for a connection that never got a session.
async fn run(
    mut stream: TcpStream,
    shared: &Shared,
    shutdown: &CancellationToken,
) -> Result<(Arc<str>, Closed), Closed> {
    let settings = &shared.settings;
    let mut buffer = BytesMut::with_capacity(READ_CHUNK);
    let handshake = tokio::time::timeout(
        settings.connect_timeout,
        read_connect(&mut stream, &mut buffer, settings.max_packet_size),
    );
    let connect = tokio::select! {
        read = handshake => read.map_err(|_| Closed::ConnectTimeout(settings.connect_timeout))??,
        () = shutdown.cancelled() => return Err(Closed::Shutdown),
    };
    if let Some(will) = &connect.last_will
        && !valid_topic(&will.topic)
    {
        return Err(Closed::Violation(Violation::PublishTopic));
    }
    let wake = Arc::new(Notify::new());
    let close = shutdown.child_token();
    let connected = shared.lock().connect(&connect, wake.clone(), close.clone());
    let attached = match connected {
        Ok(attached) => attached,
        Err(code) => {
            refuse(&mut stream, code).await;
            return Err(Closed::Refused(code));
        }
    };
    tracing::debug!(client_id = %attached.client_id, clean = connect.clean_session, "connected");
    // §3.1.2.10: a client silent for one and a half keep-alive periods is gone.
    let keep_alive = (connect.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    let (reader, writer) = stream.into_split();
    let closed = tokio::select! {
        closed = read_loop(reader, buffer, shared, &attached, keep_alive) => closed,
        closed = write_loop(writer, shared, &attached, &wake) => closed,
        () = close.cancelled() => if shutdown.is_cancelled() {
            Closed::Shutdown
        } else {
            Closed::Violation(Violation::TakenOver)
        },
    };
    let mut state = shared.lock();
    state.disconnect(&attached);
    if closed.publishes_will()
        && let Some(will) = connect.last_will
    {
        state.publish_will(will);
    }
    drop(state);
    Ok((attached.client_id, closed))
}

/// Reads the first packet, which must be a CONNECT of MQTT 3.1.1. A CONNECT of another protocol
/// level is answered with CONNACK 1 (§3.1.2.2) before the connection closes.
async fn read_connect(
    stream: &mut TcpStream,
    buffer: &mut BytesMut,
    max_packet_size: usize,
) -> Result<Connect, Closed> {
    loop {
        if let Some(level) = connect_protocol_level(buffer)?
            && level != 4
        {
            refuse(stream, ConnectReturnCode::RefusedProtocolVersion).await;
            return Err(Closed::Refused(ConnectReturnCode::RefusedProtocolVersion));
        }
        match Packet::read(buffer, max_packet_size) {
            Ok(Packet::Connect(connect)) => return Ok(connect),
            Ok(_) => return Err(Closed::NotConnect),
            Err(mqttbytes::Error::InsufficientBytes(missing)) => {
                read_more(stream, buffer, missing).await?;
            }
            Err(error) => return Err(Closed::Malformed(error)),
        }
    }
}

/// The protocol level of the CONNECT at the start of `buffer`, once its variable header has
/// arrived (read by hand: the codec refuses levels it does not know before saying which).
fn connect_protocol_level(buffer: &[u8]) -> Result<Option<u8>, Closed> {
    let Some(&first) = buffer.first() else {
        return Ok(None);
    };
    if first >> 4 != 1 {
        return Err(Closed::NotConnect);
    }
    // Remaining length: up to four bytes of seven bits each.
    let mut at = 1;
    loop {
        let Some(byte) = buffer.get(at) else {
            return Ok(None);
        };
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if at > 4 {
            return Err(Closed::Malformed(
                mqttbytes::Error::MalformedRemainingLength,
            ));
        }
    }
    // Protocol name (length-prefixed: "MQTT", or "MQIsdp" for 3.1), then the level.
    let (Some(&high), Some(&low)) = (buffer.get(at), buffer.get(at + 1)) else {
        return Ok(None);
    };
    let name_len = usize::from(u16::from_be_bytes([high, low]));
    Ok(buffer.get(at + 2 + name_len).copied())
}

/// Answers a refused CONNECT with its return code; the connection closes next.
async fn refuse(stream: &mut TcpStream, code: ConnectReturnCode) {
    let mut out = BytesMut::new();
    if ConnAck::new(code, false).write(&mut out).is_ok() {
        let _ = stream.write_all(&out).await;
    }
}

/// Reads at least once more from the socket, making room for `missing` bytes of a packet.
async fn read_more(
    stream: &mut (impl AsyncRead + Unpin),
    buffer: &mut BytesMut,
    missing: usize,
) -> Result<(), Closed> {
    buffer.reserve(missing.max(READ_CHUNK));
    match stream.read_buf(buffer).await? {
        0 => Err(Closed::Eof),
        _ => Ok(()),
    }
}

/// Parses what arrived and applies it under one lock per read, until the client disconnects,
/// breaks the protocol, falls silent or goes away.
async fn read_loop(
    mut reader: OwnedReadHalf,
    mut buffer: BytesMut,
    shared: &Shared,
    attached: &Attached,
    keep_alive: Option<Duration>,
) -> Closed {
    let max_packet_size = shared.settings.max_packet_size;
    let mut packets = Vec::new();
    loop {
        let mut missing = 0;
        let mut malformed = None;
        loop {
            match Packet::read(&mut buffer, max_packet_size) {
                Ok(packet) => packets.push(packet),
                Err(mqttbytes::Error::InsufficientBytes(n)) => {
                    missing = n;
                    break;
                }
                Err(error) => {
                    malformed = Some(error);
                    break;
                }
            }
        }
        let mut parsed = packets.drain(..);
        while parsed.len() > 0 {
            // Short holds: a read of many small packets does not keep other clients waiting.
            let mut state = shared.lock();
            for packet in parsed.by_ref().take(PACKETS_PER_LOCK) {
                match state.handle(attached, packet) {
                    Ok(Step::Continue) => {}
                    Ok(Step::Disconnect) => return Closed::Disconnect,
                    Err(violation) => return Closed::Violation(violation),
                }
            }
        }
        drop(parsed);
        if let Some(error) = malformed {
            return Closed::Malformed(error);
        }
        let read = read_more(&mut reader, &mut buffer, missing);
        let result = match keep_alive {
            Some(limit) => match tokio::time::timeout(limit, read).await {
                Ok(result) => result,
                Err(_) => return Closed::KeepAlive(limit),
            },
            None => read.await,
        };
        if let Err(closed) = result {
            return closed;
        }
    }
}

/// Sends what the session has for the client whenever it is woken: replies first, then
/// publishes in queue order, each batch in one write.
async fn write_loop(
    mut writer: OwnedWriteHalf,
    shared: &Shared,
    attached: &Attached,
    wake: &Notify,
) -> Closed {
    let mut out = BytesMut::with_capacity(WRITE_BATCH);
    let mut batch = Vec::new();
    loop {
        wake.notified().await;
        loop {
            if !shared
                .lock()
                .take_batch(attached, WRITE_BATCH, &mut out, &mut batch)
            {
                return Closed::Violation(Violation::TakenOver);
            }
            if out.is_empty() && batch.is_empty() {
                break;
            }
            for outgoing in batch.drain(..) {
                encode(outgoing, &mut out, &attached.client_id);
            }
            if let Err(error) = writer.write_all(&out).await {
                return Closed::Io(error);
            }
            out.clear();
            if out.capacity() > KEEP_WRITE_BUFFER {
                out = BytesMut::with_capacity(WRITE_BATCH);
            }
        }
    }
}

fn encode(outgoing: Outgoing, out: &mut BytesMut, client_id: &str) {
    let Outgoing { message, pkid, dup } = outgoing;
    let publish = Publish {
        dup,
        qos: message.qos,
        retain: message.retain,
        topic: message.topic.to_string(),
        pkid,
        payload: message.payload,
    };
    if let Err(error) = publish.write(out) {
        // Only a payload beyond MQTT's 256 MiB limit can fail, and none is accepted.
        tracing::error!(%client_id, %error, "cannot encode a publish; not sent");
    }
}
