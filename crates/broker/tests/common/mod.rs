//! What the broker's tests share: a broker served on 127.0.0.1:0 in a task, rumqttc clients whose
//! event loop runs in a task of its own, and a raw client that writes exact packets.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use anchormq_broker::{Broker, Settings, Stats};
use bytes::BytesMut;
use rumqttc::{
    AsyncClient, ConnAck, ConnectionError, Event, MqttOptions, Outgoing, Packet, Publish, QoS,
    SubAck,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Upper bound for anything a test waits for.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// A broker serving on a loopback port until dropped or stopped.
pub(crate) struct TestBroker {
    pub(crate) addr: SocketAddr,
    pub(crate) broker: Broker,
    shutdown: CancellationToken,
    served: Option<JoinHandle<()>>,
}

impl TestBroker {
    pub(crate) async fn start() -> Self {
        Self::with(Settings::default()).await
    }

    pub(crate) async fn with(settings: Settings) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let broker = Broker::new(settings).expect("valid settings");
        let shutdown = CancellationToken::new();
        let served = tokio::spawn({
            let broker = broker.clone();
            let shutdown = shutdown.clone();
            async move { broker.serve(listener, shutdown).await }
        });
        Self {
            addr,
            broker,
            shutdown,
            served: Some(served),
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        self.broker.stats()
    }

    /// Cancels the shutdown token and waits for `serve` to return.
    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        let served = self.served.take().expect("served once");
        tokio::time::timeout(WAIT, served)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task");
    }

    /// Waits until the broker's counters satisfy `check`.
    pub(crate) async fn await_stats(&self, what: &str, check: impl Fn(&Stats) -> bool) -> Stats {
        tokio::time::timeout(WAIT, async {
            loop {
                let stats = self.stats();
                if check(&stats) {
                    return stats;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what}: broker stats {:?}", self.stats()))
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Options for a test client: keep-alive 30 s, 8 MiB packets.
pub(crate) fn options(addr: SocketAddr, id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(8 << 20, 8 << 20);
    options
}

/// A rumqttc client; its event loop runs in a task that forwards every event and stops at the
/// first error (so a closed connection stays closed) or after sending DISCONNECT.
pub(crate) struct Client {
    pub(crate) client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
    /// Publishes that arrived while the test waited for something else.
    early: VecDeque<Publish>,
    task: JoinHandle<()>,
}

impl Client {
    /// Connects with [`options`] and waits for the CONNACK.
    pub(crate) async fn connect(addr: SocketAddr, id: &str) -> (Self, ConnAck) {
        Self::connect_with(options(addr, id)).await
    }

    pub(crate) async fn connect_with(options: MqttOptions) -> (Self, ConnAck) {
        let mut client = Self::start(options);
        let connack = client
            .next_incoming(|packet| match packet {
                Packet::ConnAck(connack) => Some(connack),
                _ => None,
            })
            .await;
        (client, connack)
    }

    /// Starts the event loop without waiting for anything.
    pub(crate) fn start(options: MqttOptions) -> Self {
        let (client, mut event_loop) = AsyncClient::new(options, 10_000);
        let (sender, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let event = event_loop.poll().await;
                let last = matches!(event, Err(_) | Ok(Event::Outgoing(Outgoing::Disconnect)));
                if sender.send(event).is_err() || last {
                    return;
                }
            }
        });
        Self {
            client,
            events,
            early: VecDeque::new(),
            task,
        }
    }

    /// The next event, or the connection's error.
    pub(crate) async fn next_event(&mut self) -> Option<Result<Event, ConnectionError>> {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("an event within the time limit")
    }

    /// Waits for the first incoming packet `pick` accepts, keeping publishes that come first.
    pub(crate) async fn next_incoming<T>(
        &mut self,
        mut pick: impl FnMut(Packet) -> Option<T>,
    ) -> T {
        loop {
            match self.next_event().await {
                Some(Ok(Event::Incoming(packet))) => {
                    let publish = match &packet {
                        Packet::Publish(publish) => Some(publish.clone()),
                        _ => None,
                    };
                    if let Some(found) = pick(packet) {
                        return found;
                    }
                    if let Some(publish) = publish {
                        self.early.push_back(publish);
                    }
                }
                Some(Ok(Event::Outgoing(_))) => {}
                Some(Err(error)) => panic!("connection failed: {error}"),
                None => panic!("event loop ended"),
            }
        }
    }

    /// The next PUBLISH from the broker.
    pub(crate) async fn next_publish(&mut self) -> Publish {
        if let Some(publish) = self.early.pop_front() {
            return publish;
        }
        self.next_incoming(|packet| match packet {
            Packet::Publish(publish) => Some(publish),
            _ => None,
        })
        .await
    }

    /// The next `n` publishes.
    pub(crate) async fn publishes(&mut self, n: usize) -> Vec<Publish> {
        let mut all = Vec::with_capacity(n);
        for _ in 0..n {
            all.push(self.next_publish().await);
        }
        all
    }

    /// Subscribes and waits for the SUBACK.
    pub(crate) async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubAck {
        self.client
            .subscribe(filter, qos)
            .await
            .expect("queue subscribe");
        self.next_incoming(|packet| match packet {
            Packet::SubAck(ack) => Some(ack),
            _ => None,
        })
        .await
    }

    /// Publishes and, at QoS 1 and 2, waits for the broker's PUBACK or PUBCOMP (it routes
    /// before acknowledging).
    pub(crate) async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .expect("queue publish");
        match qos {
            QoS::AtMostOnce => {
                self.next_outgoing(|o| matches!(o, Outgoing::Publish(_)))
                    .await
            }
            QoS::AtLeastOnce => {
                self.next_incoming(|p| matches!(p, Packet::PubAck(_)).then_some(()))
                    .await
            }
            QoS::ExactlyOnce => {
                self.next_incoming(|p| matches!(p, Packet::PubComp(_)).then_some(()))
                    .await
            }
        }
    }

    /// Waits until the event loop has written a packet `pick` accepts.
    pub(crate) async fn next_outgoing(&mut self, pick: impl Fn(&Outgoing) -> bool) {
        loop {
            match self.next_event().await {
                Some(Ok(Event::Outgoing(outgoing))) if pick(&outgoing) => return,
                Some(Ok(Event::Incoming(Packet::Publish(publish)))) => {
                    self.early.push_back(publish);
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => panic!("connection failed: {error}"),
                None => panic!("event loop ended"),
            }
        }
    }

    /// Waits until the connection fails (the broker closed it), skipping other events.
    pub(crate) async fn closed(&mut self) -> ConnectionError {
        loop {
            match self.next_event().await {
                Some(Err(error)) => return error,
                Some(Ok(_)) => {}
                None => panic!("event loop ended without an error"),
            }
        }
    }

    /// Sends DISCONNECT and waits until it is written.
    pub(crate) async fn disconnect(mut self) {
        self.client.disconnect().await.expect("queue disconnect");
        self.next_outgoing(|o| matches!(o, Outgoing::Disconnect))
            .await;
    }

    /// Drops the connection without DISCONNECT, as a crashed client would.
    pub(crate) async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// True if nothing arrives within `quiet`.
    pub(crate) async fn nothing_within(&mut self, quiet: Duration) -> bool {
        if !self.early.is_empty() {
            return false;
        }
        tokio::time::timeout(quiet, async {
            loop {
                match self.events.recv().await {
                    Some(Ok(Event::Incoming(Packet::Publish(_)))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await
        .is_err()
    }
}

/// A client that writes exact packets and reads what comes back, for what rumqttc will not send
/// (other protocol levels, wildcard topics, resent QoS 2 publishes) or hides (CONNACK codes).
pub(crate) struct Raw {
    stream: TcpStream,
    buffer: BytesMut,
}

impl Raw {
    pub(crate) async fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("tcp connect");
        Self {
            stream,
            buffer: BytesMut::new(),
        }
    }

    /// Opens a connection, sends `connect` and returns the CONNACK.
    pub(crate) async fn connect(addr: SocketAddr, connect: rumqttc::Connect) -> (Self, ConnAck) {
        let mut raw = Self::open(addr).await;
        raw.send(Packet::Connect(connect)).await;
        match raw.recv().await {
            Some(Packet::ConnAck(connack)) => (raw, connack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub(crate) async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out, usize::MAX).expect("encode");
        self.send_bytes(&out).await;
    }

    pub(crate) async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next packet, or None once the broker closed the connection.
    pub(crate) async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(WAIT, async {
            loop {
                match Packet::read(&mut self.buffer, 16 << 20) {
                    Ok(packet) => return Some(packet),
                    Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(error) => panic!("broker sent a malformed packet: {error}"),
                }
                match self.stream.read_buf(&mut self.buffer).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("a packet or the end of the connection within the time limit")
    }

    /// Reads until the broker closes the connection; returns what came before.
    pub(crate) async fn until_closed(&mut self) -> Vec<Packet> {
        let mut packets = Vec::new();
        while let Some(packet) = self.recv().await {
            packets.push(packet);
        }
        packets
    }
}

/// A CONNECT for the raw client.
pub(crate) fn raw_connect(id: &str, clean_session: bool) -> rumqttc::Connect {
    let mut connect = rumqttc::Connect::new(id);
    connect.clean_session = clean_session;
    connect.keep_alive = 30;
    connect
}
