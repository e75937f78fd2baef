//! The broker's whole state behind one lock: sessions, the subscription trie and the retained
//! trie. Every packet a connection reads is applied here, so what one client is sent is queued in
//! the order the broker routed it, and a new subscription's retained messages are queued in the
//! same step that makes it live (nothing published meanwhile is missed or put before them).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, LastWill, Packet, PingResp, PubAck, PubComp, PubRec,
    Publish, SubAck, Subscribe, SubscribeReasonCode, UnsubAck, Unsubscribe,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::session::{Attachment, ConnectionId, Enqueued, Limits, Message, Outgoing, Session};
use crate::topic::{valid_filter, valid_topic};
use crate::trie::{Retained, RetainedTrie, SessionId, SubscriptionTrie};

/// A connection's hold on its session, given by [`State::connect`].
#[derive(Debug)]
pub(crate) struct Attached {
    pub(crate) session: SessionId,
    pub(crate) connection: ConnectionId,
    pub(crate) client_id: Arc<str>,
}

/// What the connection does after a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Continue,
    /// The client sent DISCONNECT.
    Disconnect,
}

/// A packet that ends the connection (MQTT 3.1.1 §4.8: the server closes it on a protocol
/// violation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Violation {
    #[error("PUBLISH to an empty topic or one with a wildcard")]
    PublishTopic,
    #[error("a second CONNECT")]
    SecondConnect,
    #[error("a packet only a server sends")]
    ServerPacket,
    #[error("another connection took the client id over")]
    TakenOver,
}

#[derive(Debug)]
pub(crate) struct State {
    limits: Limits,
    sessions: HashMap<SessionId, Session>,
    clients: HashMap<Arc<str>, SessionId>,
    subscriptions: SubscriptionTrie,
    retained: RetainedTrie,
    last_session: SessionId,
    last_connection: ConnectionId,
    last_generated_id: u64,
    /// Messages dropped on full queues since the start.
    dropped: u64,
    /// Scratch for routing.
    matched: Vec<(SessionId, QoS)>,
}

fn min_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) { a } else { b }
}

impl State {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            sessions: HashMap::new(),
            clients: HashMap::new(),
            subscriptions: SubscriptionTrie::default(),
            retained: RetainedTrie::default(),
            last_session: 0,
            last_connection: 0,
            last_generated_id: 0,
            dropped: 0,
            matched: Vec::new(),
        }
    }

    pub(crate) fn sessions(&self) -> usize {
        self.sessions.len()
    }

    pub(crate) fn retained(&self) -> usize {
        self.retained.len()
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Attaches a connection that sent `connect` to its session (a new one, or the persistent
    /// session of its client id) and queues the CONNACK. A connection already holding the client
    /// id is closed: the newest connection wins (§3.1.4). Refused with the CONNACK code to send
    /// when the client id is empty and the session not clean (§3.1.3.1).
    pub(crate) fn connect(
        &mut self,
        connect: &Connect,
        wake: Arc<Notify>,
        close: CancellationToken,
    ) -> Result<Attached, ConnectReturnCode> {
        let client_id: Arc<str> = if connect.client_id.is_empty() {
            if !connect.clean_session {
                return Err(ConnectReturnCode::BadClientId);
            }
            self.generated_client_id()
        } else {
            connect.client_id.as_str().into()
        };
        let mut resumed = None;
        if let Some(&old) = self.clients.get(&client_id)
            && let Some(session) = self.sessions.get_mut(&old)
        {
            if let Some(previous) = &session.connection {
                tracing::debug!(%client_id, "a new connection takes the client id over");
                previous.close.cancel();
                session.detach();
            }
            if connect.clean_session || session.clean {
                self.discard(old);
            } else {
                resumed = Some(old);
            }
        }
        let session_present = resumed.is_some();
        let session_id = match resumed {
            Some(id) => id,
            None => {
                self.last_session += 1;
                let id = self.last_session;
                self.sessions
                    .insert(id, Session::new(client_id.clone(), connect.clean_session));
                self.clients.insert(client_id.clone(), id);
                id
            }
        };
        self.last_connection += 1;
        let connection = self.last_connection;
        let session = self.sessions.get_mut(&session_id).expect("inserted above");
        session.attach(Attachment {
            id: connection,
            wake,
            close,
        });
        session.reply(|out| ConnAck::new(ConnectReturnCode::Success, session_present).write(out));
        Ok(Attached {
            session: session_id,
            connection,
            client_id,
        })
    }

    /// A client id for a client that gave none, unused by any session.
    fn generated_client_id(&mut self) -> Arc<str> {
        loop {
            self.last_generated_id += 1;
            let id: Arc<str> = format!("anchormq-broker-{}", self.last_generated_id).into();
            if !self.clients.contains_key(&id) {
                return id;
            }
        }
    }

    /// The connection ended: a clean session ends with it, a persistent one waits for the
    /// client's next connection. Nothing happens if another connection has taken over.
    pub(crate) fn disconnect(&mut self, attached: &Attached) {
        let Some(session) = self.sessions.get_mut(&attached.session) else {
            return;
        };
        if !session.is_attached_to(attached.connection) {
            return;
        }
        session.detach();
        if session.clean {
            self.discard(attached.session);
        }
    }

    fn discard(&mut self, id: SessionId) {
        let Some(session) = self.sessions.remove(&id) else {
            return;
        };
        for filter in session.filters.keys() {
            self.subscriptions.remove(filter, id);
        }
        if self.clients.get(&session.client_id) == Some(&id) {
            self.clients.remove(&session.client_id);
        }
    }

    /// Applies one packet from the connection that holds `attached`.
    pub(crate) fn handle(
        &mut self,
        attached: &Attached,
        packet: Packet,
    ) -> Result<Step, Violation> {
        let limits = self.limits;
        let session = self
            .sessions
            .get_mut(&attached.session)
            .filter(|s| s.is_attached_to(attached.connection))
            .ok_or(Violation::TakenOver)?;
        match packet {
            Packet::Publish(publish) => {
                if !valid_topic(&publish.topic) {
                    return Err(Violation::PublishTopic);
                }
                let pkid = publish.pkid;
                match publish.qos {
                    QoS::AtMostOnce => self.publish(publish),
                    QoS::AtLeastOnce => {
                        self.publish(publish);
                        self.reply(attached, |out| PubAck::new(pkid).write(out));
                    }
                    QoS::ExactlyOnce => {
                        // Routed on first receipt; a resend before PUBREL is only acknowledged.
                        if session.incoming_qos2.insert(pkid) {
                            self.publish(publish);
                        }
                        self.reply(attached, |out| PubRec::new(pkid).write(out));
                    }
                }
            }
            Packet::PubRel(release) => {
                session.incoming_qos2.remove(&release.pkid);
                session.reply(|out| PubComp::new(release.pkid).write(out));
            }
            Packet::PubAck(ack) => session.acknowledge(ack.pkid),
            // The broker never sends at QoS 2 (it grants at most 1).
            Packet::PubRec(_) | Packet::PubComp(_) => {}
            Packet::Subscribe(subscribe) => self.subscribe(attached.session, subscribe, limits),
            Packet::Unsubscribe(unsubscribe) => self.unsubscribe(attached.session, unsubscribe),
            Packet::PingReq => session.reply(|out| PingResp.write(out)),
            Packet::Disconnect => return Ok(Step::Disconnect),
            Packet::Connect(_) => return Err(Violation::SecondConnect),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                return Err(Violation::ServerPacket);
            }
        }
        Ok(Step::Continue)
    }

    fn reply(
        &mut self,
        attached: &Attached,
        encode: impl FnOnce(&mut BytesMut) -> Result<usize, rumqttc::mqttbytes::Error>,
    ) {
        if let Some(session) = self.sessions.get_mut(&attached.session) {
            session.reply(encode);
        }
    }

    /// Publishes the will of a connection that ended without DISCONNECT.
    pub(crate) fn publish_will(&mut self, will: LastWill) {
        let mut publish = Publish::from_bytes(will.topic, will.qos, will.message);
        publish.retain = will.retain;
        self.publish(publish);
    }

    /// Stores a retained publish (an empty payload deletes) and routes it to the subscribers.
    fn publish(&mut self, publish: Publish) {
        let topic: Arc<str> = publish.topic.into();
        if publish.retain {
            if publish.payload.is_empty() {
                self.retained.remove(&topic);
            } else {
                self.retained.insert(Retained {
                    topic: topic.clone(),
                    payload: Bytes::copy_from_slice(&publish.payload),
                    qos: publish.qos,
                });
            }
        }
        self.route(Message {
            topic,
            payload: publish.payload,
            qos: publish.qos,
            // Live messages go out with RETAIN 0 (§3.3.1.3).
            retain: false,
        });
    }

    /// Queues `message` once for every session with a matching subscription, at the lower of its
    /// QoS and the highest QoS granted among that session's matching filters.
    fn route(&mut self, message: Message) {
        let mut matched = std::mem::take(&mut self.matched);
        matched.clear();
        self.subscriptions.matches(&message.topic, &mut matched);
        matched.sort_unstable_by_key(|(session, qos)| (*session, std::cmp::Reverse(*qos as u8)));
        matched.dedup_by_key(|(session, _)| *session);
        for (id, granted) in &matched {
            let Some(session) = self.sessions.get_mut(id) else {
                continue;
            };
            let copy = Message {
                qos: min_qos(message.qos, *granted),
                ..message.clone()
            };
            if session.enqueue(copy, self.limits) == Enqueued::Dropped {
                self.dropped += 1;
            }
        }
        self.matched = matched;
    }

    fn subscribe(&mut self, id: SessionId, subscribe: Subscribe, limits: Limits) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut granted_filters = Vec::with_capacity(subscribe.filters.len());
        for filter in subscribe.filters {
            if !valid_filter(&filter.path) {
                codes.push(SubscribeReasonCode::Failure);
                continue;
            }
            let granted = min_qos(filter.qos, QoS::AtLeastOnce);
            session.filters.insert(filter.path.as_str().into(), granted);
            self.subscriptions.insert(&filter.path, id, granted);
            codes.push(SubscribeReasonCode::Success(granted));
            granted_filters.push((filter.path, granted));
        }
        session.reply(|out| SubAck::new(subscribe.pkid, codes).write(out));
        // Every matching retained message, also when the filter was already held (§3.3.1.3);
        // the SUBACK above goes out before them.
        let mut dropped = 0;
        for (filter, granted) in granted_filters {
            self.retained.for_each_match(&filter, |retained| {
                let message = Message {
                    topic: retained.topic.clone(),
                    payload: retained.payload.clone(),
                    qos: min_qos(retained.qos, granted),
                    retain: true,
                };
                if session.enqueue(message, limits) == Enqueued::Dropped {
                    dropped += 1;
                }
            });
        }
        self.dropped += dropped;
    }

    fn unsubscribe(&mut self, id: SessionId, unsubscribe: Unsubscribe) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        for filter in &unsubscribe.topics {
            if session.filters.remove(filter.as_str()).is_some() {
                self.subscriptions.remove(filter, id);
            }
        }
        session.reply(|out| UnsubAck::new(unsubscribe.pkid).write(out));
    }

    /// What the writer of `attached` may send now (see [`Session::take_batch`]). False when the
    /// connection no longer holds its session.
    pub(crate) fn take_batch(
        &mut self,
        attached: &Attached,
        max_bytes: usize,
        control: &mut BytesMut,
        out: &mut Vec<Outgoing>,
    ) -> bool {
        let limits = self.limits;
        match self.sessions.get_mut(&attached.session) {
            Some(session) if session.is_attached_to(attached.connection) => {
                session.take_batch(limits, max_bytes, control, out);
                true
            }
            _ => false,
        }
    }
}
