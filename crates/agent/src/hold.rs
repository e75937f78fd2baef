//! Messages that cannot be opened *yet*: the note they need may still be on its way (subscriptions
//! to different topics are not ordered). Bounded in count and time.

use std::collections::VecDeque;
use std::time::Duration;

use anchormq_core::{GroupId, NodeId, OpenError, SenderIssue, StreamId, StreamTag};
use bytes::Bytes;
use tokio::time::Instant;

/// Whether a later note can make this error go away.
pub(crate) fn worth_holding(error: &OpenError) -> bool {
    matches!(
        error,
        OpenError::MissingSenderKey { .. }
            | OpenError::UnknownStream { .. }
            | OpenError::EpochAhead { .. }
            | OpenError::UnknownGroup { .. }
            | OpenError::UnknownSender {
                reason: SenderIssue::NoNodeNote,
                ..
            }
    )
}

/// Whether a message held for `error` waits for a sender-key note: `Some` with the group when
/// the error names it.
pub(crate) fn awaits_sender_key(error: &OpenError) -> Option<Option<GroupId>> {
    match error {
        OpenError::MissingSenderKey { group, .. } => Some(Some(*group)),
        OpenError::UnknownStream { .. } => Some(None),
        _ => None,
    }
}

/// Refusals for want of membership in the groups held: final once every group note is in, but
/// not while they are still arriving.
pub(crate) fn refuses_membership(error: &OpenError) -> bool {
    matches!(
        error,
        OpenError::NotMember { .. }
            | OpenError::NotMemberOfAny { .. }
            | OpenError::UntrustedGroup { .. }
            | OpenError::NotReader { .. }
    )
}

/// A note that arrived and what it can unblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fix {
    /// A group note changed (also releases sender-key notes the opener parked for it).
    Group(GroupId),
    /// A node note changed (the sender's, or this node's own, which parked notes may wait for).
    Node(NodeId),
    /// Every group note is in (after this agent subscribed to all of them): the group that claims
    /// a topic is known, or none does.
    Groups,
    /// A sender-key note was accepted (its key unwrapped, or its stream noted as not for us).
    SenderKey {
        /// Its stream.
        stream: StreamId,
        /// The tag its envelopes carry.
        tag: StreamTag,
    },
}

/// Whether `fix` may let a message held for `error` open now, so that a burst of notes does not
/// re-verify every held message each time.
pub(crate) fn fixable_by(error: &OpenError, fix: &Fix, me: &NodeId) -> bool {
    match (fix, error) {
        (
            Fix::Group(g),
            OpenError::MissingSenderKey { group, .. }
            | OpenError::EpochAhead { group, .. }
            | OpenError::UnknownGroup { group }
            | OpenError::UnknownSender { group, .. },
        ) => g == group,
        (Fix::Node(n), _) if n == me => true,
        (Fix::Groups, error) => {
            matches!(error, OpenError::UnknownStream { .. }) || refuses_membership(error)
        }
        // a group note may show this node is not a member after all: refuse now, not at timeout
        (Fix::Group(_), OpenError::UnknownStream { .. }) => true,
        (Fix::SenderKey { tag, .. }, OpenError::UnknownStream { tag: wanted, .. }) => tag == wanted,
        // a node note releases the sender-key notes the opener parked for it (agents follow
        // members' node notes only once a group note names them, so this is common)
        (Fix::Node(_), OpenError::UnknownStream { .. }) => true,
        (
            Fix::Node(n),
            OpenError::MissingSenderKey { sender, .. } | OpenError::UnknownSender { sender, .. },
        ) => n == sender,
        (
            Fix::SenderKey { stream, .. },
            OpenError::MissingSenderKey {
                sender,
                group,
                epoch,
            },
        ) => stream.sender == *sender && stream.group == *group && stream.epoch == *epoch,
        _ => false,
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub(crate) topic: String,
    pub(crate) payload: Bytes,
    pub(crate) retain: bool,
    pub(crate) error: OpenError,
    pub(crate) until: Instant,
}

/// First in, first out; the oldest is given up first.
#[derive(Debug)]
pub(crate) struct HoldQueue {
    items: VecDeque<Held>,
    max: usize,
    timeout: Duration,
}

impl HoldQueue {
    pub(crate) fn new(max: usize, timeout: Duration) -> Self {
        Self {
            items: VecDeque::new(),
            max,
            timeout,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Holds a message; returns the one given up to make room, if the queue was full.
    pub(crate) fn hold(
        &mut self,
        topic: String,
        payload: Bytes,
        retain: bool,
        error: OpenError,
        now: Instant,
    ) -> Option<Held> {
        let until = now + self.timeout;
        let held = Held {
            topic,
            payload,
            retain,
            error,
            until,
        };
        if self.max == 0 {
            return Some(held);
        }
        let evicted = if self.items.len() >= self.max {
            self.items.pop_front()
        } else {
            None
        };
        self.items.push_back(held);
        evicted
    }

    /// Puts back messages that still cannot be opened, in deadline (= arrival) order.
    pub(crate) fn put_back(&mut self, items: Vec<Held>) {
        for item in items {
            let at = self.items.partition_point(|h| h.until <= item.until);
            self.items.insert(at, item);
        }
    }

    /// The held messages `fix` may unblock, in arrival order; the rest stay.
    pub(crate) fn take_fixable(&mut self, fix: &Fix, me: &NodeId) -> Vec<Held> {
        let (ready, rest): (VecDeque<Held>, VecDeque<Held>) = std::mem::take(&mut self.items)
            .into_iter()
            .partition(|h| fixable_by(&h.error, fix, me));
        self.items = rest;
        ready.into()
    }

    /// The messages whose time is up.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<Held> {
        let mut out = Vec::new();
        while self.items.front().is_some_and(|h| h.until <= now) {
            if let Some(h) = self.items.pop_front() {
                out.push(h);
            }
        }
        out
    }

    /// The held messages that wait for a sender-key note: their topics, with the group when the
    /// error names it.
    pub(crate) fn awaiting_sender_keys(&self) -> impl Iterator<Item = (&str, Option<GroupId>)> {
        self.items
            .iter()
            .filter_map(|h| awaits_sender_key(&h.error).map(|group| (h.topic.as_str(), group)))
    }

    /// When the oldest held message expires.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.items.front().map(|h| h.until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anchormq_core::{GroupId, NodeId};

    fn missing() -> OpenError {
        OpenError::MissingSenderKey {
            sender: NodeId::from_label("1111").expect("id"),
            group: GroupId::from_label("g").expect("id"),
            epoch: 1,
        }
    }

    #[test]
    fn only_errors_a_note_can_fix_are_held() {
        let group = GroupId::from_label("g").expect("id");
        let node = NodeId::from_label("n").expect("id");
        assert!(worth_holding(&missing()));
        assert!(worth_holding(&OpenError::UnknownGroup { group }));
        assert!(worth_holding(&OpenError::UnknownSender {
            sender: node,
            group,
            epoch: 1,
            reason: SenderIssue::NoNodeNote
        }));
        assert!(!worth_holding(&OpenError::UnknownSender {
            sender: node,
            group,
            epoch: 1,
            reason: SenderIssue::Revoked
        }));
        assert!(!worth_holding(&OpenError::NotMember {
            node,
            group,
            epoch: 1
        }));
        assert!(!worth_holding(&OpenError::BadSignature {
            sender: node,
            group
        }));
    }

    #[test]
    fn full_queue_gives_up_the_oldest_and_expiry_is_in_order() {
        let start = Instant::now();
        let mut queue = HoldQueue::new(2, Duration::from_secs(5));
        for (i, topic) in ["a", "b"].into_iter().enumerate() {
            let at = start + Duration::from_secs(i as u64);
            assert!(
                queue
                    .hold(topic.into(), Bytes::new(), false, missing(), at)
                    .is_none()
            );
        }
        let evicted = queue.hold(
            "c".into(),
            Bytes::new(),
            false,
            missing(),
            start + Duration::from_secs(2),
        );
        assert_eq!(evicted.map(|h| h.topic), Some("a".to_owned()));
        assert_eq!(queue.next_deadline(), Some(start + Duration::from_secs(6)));
        assert!(queue.expired(start + Duration::from_secs(5)).is_empty());
        let gone: Vec<_> = queue
            .expired(start + Duration::from_secs(6))
            .into_iter()
            .map(|h| h.topic)
            .collect();
        assert_eq!(gone, ["b"]);
        let me = NodeId::from_label("me").expect("id");
        let group = GroupId::from_label("g").expect("id");
        let other = GroupId::from_label("other").expect("id");
        assert!(queue.take_fixable(&Fix::Group(other), &me).is_empty());
        let rest = queue.take_fixable(&Fix::Group(group), &me);
        assert_eq!(rest.len(), 1);
        assert_eq!(queue.len(), 0);
        queue.put_back(rest);
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn a_note_retries_only_the_messages_it_may_unblock() {
        let me = NodeId::from_label("me").expect("id");
        let sender = NodeId::from_label("1111").expect("id");
        let stranger = NodeId::from_label("9999").expect("id");
        let group = GroupId::from_label("g").expect("id");
        let stream = |epoch| StreamId {
            group,
            sender,
            epoch,
        };
        let key = |epoch, tag| Fix::SenderKey {
            stream: stream(epoch),
            tag: StreamTag([tag; 8]),
        };
        let error = missing();
        assert!(fixable_by(&error, &key(1, 1), &me));
        assert!(!fixable_by(&error, &key(2, 1), &me));
        assert!(fixable_by(&error, &Fix::Group(group), &me));
        assert!(fixable_by(&error, &Fix::Node(sender), &me));
        assert!(fixable_by(&error, &Fix::Node(me), &me));
        assert!(!fixable_by(&error, &Fix::Node(stranger), &me));
        let unknown_group = OpenError::UnknownGroup { group };
        assert!(!fixable_by(&unknown_group, &key(1, 1), &me));
        assert!(!fixable_by(&unknown_group, &Fix::Node(sender), &me));
        let unannounced = OpenError::UnknownStream {
            tag: StreamTag([1; 8]),
            topic: "g/t".into(),
        };
        assert!(fixable_by(&unannounced, &key(1, 1), &me));
        assert!(fixable_by(&unannounced, &key(7, 1), &me));
        assert!(!fixable_by(&unannounced, &key(1, 2), &me));
        assert!(fixable_by(&unannounced, &Fix::Group(group), &me));
        // the sender's note may release its parked sender-key note
        assert!(fixable_by(&unannounced, &Fix::Node(sender), &me));
        // every group note in: the unannounced and the refused-for-membership are judged again
        let not_member = OpenError::NotMember {
            node: me,
            group,
            epoch: 1,
        };
        assert!(fixable_by(&unannounced, &Fix::Groups, &me));
        assert!(fixable_by(&not_member, &Fix::Groups, &me));
        assert!(!fixable_by(&not_member, &Fix::Group(group), &me));
        assert!(!fixable_by(&error, &Fix::Groups, &me));
    }

    #[test]
    fn put_back_keeps_arrival_order() {
        let start = Instant::now();
        let mut queue = HoldQueue::new(8, Duration::from_secs(5));
        for (i, topic) in ["a", "b", "c"].into_iter().enumerate() {
            let at = start + Duration::from_secs(i as u64);
            queue.hold(topic.into(), Bytes::new(), false, missing(), at);
        }
        let me = NodeId::from_label("me").expect("id");
        let mut all = queue.take_fixable(&Fix::Node(me), &me);
        let b = all.remove(1);
        queue.put_back(vec![b]);
        queue.put_back(all);
        let order: Vec<_> = queue
            .expired(start + Duration::from_secs(60))
            .into_iter()
            .map(|h| h.topic)
            .collect();
        assert_eq!(order, ["a", "b", "c"]);
    }

    #[test]
    fn zero_capacity_holds_nothing() {
        let mut queue = HoldQueue::new(0, Duration::from_secs(1));
        let now = Instant::now();
        assert!(
            queue
                .hold("t".into(), Bytes::new(), false, missing(), now)
                .is_some()
        );
        assert_eq!(queue.len(), 0);
    }
}
