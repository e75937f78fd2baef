//! One client's session: its subscriptions, the single ordered queue of what the broker sends it,
//! and its outgoing QoS 1 window.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::QoS;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Identifies one network connection; never reused.
pub(crate) type ConnectionId = u64;

/// A message on its way to one client. Topic and payload are shared by every copy of a routed
/// message; QoS and the retain flag are this client's.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub(crate) topic: Arc<str>,
    pub(crate) payload: Bytes,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
}

/// A PUBLISH for the writer to encode: the message, its packet id (0 at QoS 0) and whether it is
/// a resend.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) message: Message,
    pub(crate) pkid: u16,
    pub(crate) dup: bool,
}

/// The connection a session is attached to: how to wake its writer and how to close it when a
/// new connection takes the client id over.
#[derive(Debug)]
pub(crate) struct Attachment {
    pub(crate) id: ConnectionId,
    pub(crate) wake: Arc<Notify>,
    pub(crate) close: CancellationToken,
}

/// The queue limits a session applies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// QoS 1 messages sent and not yet acknowledged.
    pub(crate) max_inflight: usize,
    /// Messages waiting to be sent.
    pub(crate) max_queued: usize,
}

#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) client_id: Arc<str>,
    /// Clean session: the session ends with its connection.
    pub(crate) clean: bool,
    /// Filter → granted QoS.
    pub(crate) filters: HashMap<Box<str>, QoS>,
    /// Packet ids of QoS 2 publishes received and routed, until their PUBREL.
    pub(crate) incoming_qos2: HashSet<u16>,
    pub(crate) connection: Option<Attachment>,
    /// Acknowledgements and other replies, encoded, sent before the queue.
    control: BytesMut,
    /// Every message for this client, QoS 0 and 1, retained and live, in routing order.
    queue: VecDeque<Message>,
    /// QoS 1 messages sent and not acknowledged, by packet id, and the ids in sending order
    /// (ids acknowledged out of order linger in `sent_order` until they reach its front or it is
    /// compacted).
    inflight: HashMap<u16, Message>,
    sent_order: VecDeque<u16>,
    /// The unacknowledged messages must be sent again (with DUP) before anything else: set when
    /// a persistent session gets a new connection.
    resend: bool,
    last_pkid: u16,
    /// Messages dropped in the current overflow episode, if one is going on.
    overflow: Option<u64>,
}

impl Session {
    pub(crate) fn new(client_id: Arc<str>, clean: bool) -> Self {
        Self {
            client_id,
            clean,
            filters: HashMap::new(),
            incoming_qos2: HashSet::new(),
            connection: None,
            control: BytesMut::new(),
            queue: VecDeque::new(),
            inflight: HashMap::new(),
            sent_order: VecDeque::new(),
            resend: false,
            last_pkid: 0,
            overflow: None,
        }
    }

    pub(crate) fn is_attached_to(&self, connection: ConnectionId) -> bool {
        self.connection.as_ref().is_some_and(|c| c.id == connection)
    }

    /// Gives the session a new connection: nothing encoded for an earlier connection is sent,
    /// and every unacknowledged QoS 1 message goes out again first.
    pub(crate) fn attach(&mut self, attachment: Attachment) {
        self.control.clear();
        self.resend = !self.inflight.is_empty();
        self.connection = Some(attachment);
    }

    /// The connection ended. QoS 0 messages are not kept for an offline client (MQTT 3.1.1
    /// §3.1.2.4 leaves it open; what it missed at QoS 0 it was never promised).
    pub(crate) fn detach(&mut self) {
        self.connection = None;
        self.control.clear();
        self.queue.retain(|m| m.qos != QoS::AtMostOnce);
    }

    fn wake(&self) {
        if let Some(connection) = &self.connection {
            connection.wake.notify_one();
        }
    }

    /// Queues an encoded reply (CONNACK, SUBACK, PUBACK, …) for the connection.
    pub(crate) fn reply(
        &mut self,
        encode: impl FnOnce(&mut BytesMut) -> Result<usize, rumqttc::mqttbytes::Error>,
    ) {
        if let Err(error) = encode(&mut self.control) {
            // Replies are a few bytes; a failure is a bug, not input.
            tracing::error!(client_id = %self.client_id, %error, "cannot encode a reply");
        }
        self.wake();
    }

    /// Queues `message` for the client. False when it is dropped because the queue is full
    /// (logged once per overflow episode); QoS 0 messages for an offline client are not kept and
    /// not counted as dropped.
    pub(crate) fn enqueue(&mut self, message: Message, limits: Limits) -> Enqueued {
        if self.connection.is_none() && message.qos == QoS::AtMostOnce {
            return Enqueued::NotKept;
        }
        if self.queue.len() >= limits.max_queued {
            match &mut self.overflow {
                Some(dropped) => *dropped += 1,
                None => {
                    tracing::warn!(
                        client_id = %self.client_id,
                        limit = limits.max_queued,
                        "the client's queue is full: dropping new messages for it until it drains"
                    );
                    self.overflow = Some(1);
                }
            }
            return Enqueued::Dropped;
        }
        self.queue.push_back(message);
        self.wake();
        Enqueued::Queued
    }

    /// A PUBACK from the client: frees a slot of the window.
    pub(crate) fn acknowledge(&mut self, pkid: u16) {
        if self.inflight.remove(&pkid).is_none() {
            return;
        }
        while self
            .sent_order
            .front()
            .is_some_and(|id| !self.inflight.contains_key(id))
        {
            self.sent_order.pop_front();
        }
        if self.sent_order.len() > 2 * self.inflight.len() + 64 {
            let inflight = &self.inflight;
            self.sent_order.retain(|id| inflight.contains_key(id));
        }
        if !self.queue.is_empty() {
            self.wake();
        }
    }

    /// Moves what may be sent now into `control` (encoded replies) and `out` (publishes, about
    /// `max_bytes` of them): replies first, then resends, then the queue in order until a QoS 1
    /// message finds the window full.
    pub(crate) fn take_batch(
        &mut self,
        limits: Limits,
        max_bytes: usize,
        control: &mut BytesMut,
        out: &mut Vec<Outgoing>,
    ) {
        control.extend_from_slice(&self.control);
        self.control.clear();
        if std::mem::take(&mut self.resend) {
            for pkid in &self.sent_order {
                if let Some(message) = self.inflight.get(pkid) {
                    out.push(Outgoing {
                        message: message.clone(),
                        pkid: *pkid,
                        dup: true,
                    });
                }
            }
        }
        let mut bytes = 0;
        while bytes < max_bytes {
            let Some(next) = self.queue.front() else {
                break;
            };
            let acknowledged = next.qos != QoS::AtMostOnce;
            if acknowledged && self.inflight.len() >= limits.max_inflight {
                break;
            }
            let Some(message) = self.queue.pop_front() else {
                break;
            };
            bytes += message.topic.len() + message.payload.len() + 8;
            let pkid = if acknowledged {
                let pkid = self.next_pkid();
                self.inflight.insert(pkid, message.clone());
                self.sent_order.push_back(pkid);
                pkid
            } else {
                0
            };
            out.push(Outgoing {
                message,
                pkid,
                dup: false,
            });
        }
        if let Some(dropped) = self.overflow
            && self.queue.len() <= limits.max_queued / 2
        {
            tracing::info!(
                client_id = %self.client_id,
                dropped,
                "the client's queue drained to half: taking messages for it again"
            );
            self.overflow = None;
        }
    }

    /// The next packet id not in flight (the window is smaller than the id space, so one is
    /// always free).
    fn next_pkid(&mut self) -> u16 {
        loop {
            self.last_pkid = self.last_pkid.checked_add(1).unwrap_or(1);
            if !self.inflight.contains_key(&self.last_pkid) {
                return self.last_pkid;
            }
        }
    }
}

/// What became of a message offered to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enqueued {
    Queued,
    /// The queue was full.
    Dropped,
    /// A QoS 0 message for an offline client.
    NotKept,
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_inflight: 2,
        max_queued: 4,
    };

    fn message(n: u8, qos: QoS) -> Message {
        Message {
            topic: "t".into(),
            payload: Bytes::from(vec![n]),
            qos,
            retain: false,
        }
    }

    fn attached() -> Session {
        let mut session = Session::new("c".into(), false);
        session.attach(Attachment {
            id: 1,
            wake: Arc::new(Notify::new()),
            close: CancellationToken::new(),
        });
        session
    }

    fn take(session: &mut Session) -> Vec<(u8, u16, bool)> {
        let mut control = BytesMut::new();
        let mut out = Vec::new();
        session.take_batch(LIMITS, usize::MAX, &mut control, &mut out);
        out.iter()
            .map(|o| (o.message.payload[0], o.pkid, o.dup))
            .collect()
    }

    #[test]
    fn a_full_window_holds_back_everything_behind_it_in_order() {
        let mut session = attached();
        for (n, qos) in [
            (0, QoS::AtLeastOnce),
            (1, QoS::AtMostOnce),
            (2, QoS::AtLeastOnce),
            (3, QoS::AtLeastOnce),
        ] {
            assert_eq!(session.enqueue(message(n, qos), LIMITS), Enqueued::Queued);
        }
        assert_eq!(
            take(&mut session),
            [(0, 1, false), (1, 0, false), (2, 2, false)]
        );
        assert_eq!(take(&mut session), [], "window full");
        session.acknowledge(1);
        assert_eq!(take(&mut session), [(3, 3, false)]);
    }

    #[test]
    fn a_full_queue_drops_and_unacknowledged_messages_are_resent_after_reattach() {
        let mut session = attached();
        for n in 0..6 {
            let expected = if n < 4 {
                Enqueued::Queued
            } else {
                Enqueued::Dropped
            };
            assert_eq!(
                session.enqueue(message(n, QoS::AtLeastOnce), LIMITS),
                expected
            );
        }
        assert_eq!(take(&mut session), [(0, 1, false), (1, 2, false)]);
        session.detach();
        assert_eq!(
            session.enqueue(message(9, QoS::AtMostOnce), LIMITS),
            Enqueued::NotKept
        );
        session.attach(Attachment {
            id: 2,
            wake: Arc::new(Notify::new()),
            close: CancellationToken::new(),
        });
        assert_eq!(take(&mut session), [(0, 1, true), (1, 2, true)]);
        session.acknowledge(2);
        session.acknowledge(1);
        assert_eq!(take(&mut session), [(2, 3, false), (3, 4, false)]);
    }
}
