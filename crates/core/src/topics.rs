//! The MQTT topic layout and MQTT topic-filter matching (pure string functions).
//!
//! ```text
//! anchormq/v1/<chainId>/<registry>/node/<nodeId>/<chunk>                    retained node note chunks
//! anchormq/v1/<chainId>/<registry>/group/<groupId>/<chunk>                  retained group note chunks
//! anchormq/v1/<chainId>/<registry>/membership/<nodeId>/<chunk>             retained membership note chunks
//! anchormq/v1/<chainId>/<registry>/senderkey/<groupId>/<senderId>/<chunk>   retained sender-key note chunks
//! anchormq/v1/<chainId>/<registry>/events                                  live feed, not retained
//! anchormq/v1/<chainId>/<registry>/bridge/<nonce>                          a bridge's own marker, not retained
//! ```
//!
//! `<chainId>` is decimal, `<registry>` is `0x` + 40 lowercase hex digits, IDs
//! use [`NodeId::topic_segment`] (label if `[A-Za-z0-9_-]` only, else 0x-hex),
//! `<chunk>` is the decimal chunk index. Application messages are published
//! on the application's own topics, which each group claims with its topic filter.

use crate::error::TopicError;
use crate::ids::{GroupId, NodeId};
use crate::notes::Registry;

/// Builds the anchormq topics of one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    /// Topics for `registry`.
    pub fn new(registry: &Registry) -> Self {
        Self {
            prefix: format!(
                "anchormq/v1/{}/0x{}",
                registry.chain_id,
                hex::encode(registry.address)
            ),
        }
    }

    /// `anchormq/v1/<chainId>/<registry>`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Topic of chunk `chunk` of `node`'s note.
    pub fn node_note(&self, node: &NodeId, chunk: u16) -> String {
        format!("{}/node/{}/{chunk}", self.prefix, node.topic_segment())
    }

    /// Filter for every node note.
    pub fn node_notes_filter(&self) -> String {
        format!("{}/node/#", self.prefix)
    }

    /// Filter for `node`'s note (all its chunks).
    pub fn node_note_filter(&self, node: &NodeId) -> String {
        format!("{}/node/{}/#", self.prefix, node.topic_segment())
    }

    /// Topic of chunk `chunk` of `group`'s note.
    pub fn group_note(&self, group: &GroupId, chunk: u16) -> String {
        format!("{}/group/{}/{chunk}", self.prefix, group.topic_segment())
    }

    /// Filter for every group note.
    pub fn group_notes_filter(&self) -> String {
        format!("{}/group/#", self.prefix)
    }

    /// Filter for `group`'s note (all its chunks).
    pub fn group_note_filter(&self, group: &GroupId) -> String {
        format!("{}/group/{}/#", self.prefix, group.topic_segment())
    }

    /// Topic of chunk `chunk` of `node`'s membership note.
    pub fn membership_note(&self, node: &NodeId, chunk: u16) -> String {
        format!(
            "{}/membership/{}/{chunk}",
            self.prefix,
            node.topic_segment()
        )
    }

    /// Filter for `node`'s membership note (all its chunks).
    pub fn membership_note_filter(&self, node: &NodeId) -> String {
        format!("{}/membership/{}/#", self.prefix, node.topic_segment())
    }

    /// Filter for every membership note.
    pub fn membership_notes_filter(&self) -> String {
        format!("{}/membership/#", self.prefix)
    }

    /// Topic of chunk `chunk` of `sender`'s latest sender-key note for `group`.
    pub fn sender_key(&self, group: &GroupId, sender: &NodeId, chunk: u16) -> String {
        format!(
            "{}/senderkey/{}/{}/{chunk}",
            self.prefix,
            group.topic_segment(),
            sender.topic_segment()
        )
    }

    /// Filter for every sender-key note of `group`.
    pub fn sender_keys_filter(&self, group: &GroupId) -> String {
        format!("{}/senderkey/{}/#", self.prefix, group.topic_segment())
    }

    /// The live, non-retained event feed.
    pub fn events(&self) -> String {
        format!("{}/events", self.prefix)
    }

    /// The topic on which a bridge process sends itself a marker after each connection, to learn
    /// which retained notes the broker holds (not retained; `<nonce>` is the process's own).
    pub fn bridge_sync(&self, nonce: &str) -> String {
        format!("{}/bridge/{nonce}", self.prefix)
    }

    /// What an anchormq topic of this registry names; `None` for any other topic (an
    /// application topic, another registry's). A topic under the prefix that is not one this
    /// layout builds is [`NoteTopic::Unknown`]: something else was published there.
    pub fn parse(&self, topic: &str) -> Option<NoteTopic> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        let chunk = |s: &str| {
            // only the canonical decimal form this layout builds
            s.parse::<u16>().ok().filter(|c| c.to_string() == s)
        };
        let id = |s: &str| s.parse::<NodeId>().ok().filter(|n| n.topic_segment() == s);
        let group = |s: &str| s.parse::<GroupId>().ok().filter(|g| g.topic_segment() == s);
        let parsed = match parts.as_slice() {
            ["events"] => Some(NoteTopic::Events),
            ["node", node, c] => id(node)
                .zip(chunk(c))
                .map(|(node, chunk)| NoteTopic::Node { node, chunk }),
            ["group", g, c] => group(g)
                .zip(chunk(c))
                .map(|(group, chunk)| NoteTopic::Group { group, chunk }),
            ["membership", node, c] => id(node)
                .zip(chunk(c))
                .map(|(node, chunk)| NoteTopic::Membership { node, chunk }),
            ["senderkey", g, sender, c] => match (group(g), id(sender), chunk(c)) {
                (Some(group), Some(sender), Some(chunk)) => Some(NoteTopic::SenderKey {
                    group,
                    sender,
                    chunk,
                }),
                _ => None,
            },
            _ => None,
        };
        Some(parsed.unwrap_or(NoteTopic::Unknown))
    }
}

/// An anchormq topic, as [`Topics::parse`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoteTopic {
    /// Chunk `chunk` of a node note.
    Node {
        /// The node.
        node: NodeId,
        /// Chunk index.
        chunk: u16,
    },
    /// Chunk `chunk` of a group note.
    Group {
        /// The group.
        group: GroupId,
        /// Chunk index.
        chunk: u16,
    },
    /// Chunk `chunk` of a node's membership note.
    Membership {
        /// The node.
        node: NodeId,
        /// Chunk index.
        chunk: u16,
    },
    /// Chunk `chunk` of a sender's sender-key note for a group.
    SenderKey {
        /// The group.
        group: GroupId,
        /// The sending node.
        sender: NodeId,
        /// Chunk index.
        chunk: u16,
    },
    /// The live event feed.
    Events,
    /// Under the registry's prefix, but not a topic of the layout.
    Unknown,
}

fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() || s.len() > 65535 {
        return Err(TopicError::Length);
    }
    if s.contains('\0') {
        return Err(TopicError::Nul);
    }
    Ok(())
}

/// Checks an MQTT topic name (what a message is published on): no wildcards.
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    check_common(topic)?;
    if topic.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks an MQTT topic filter: `+` fills a whole level, `#` a whole last level.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let ok = match *level {
            "#" => i + 1 == levels.len(),
            "+" => true,
            l => !l.contains(['+', '#']),
        };
        if !ok {
            return Err(TopicError::BadWildcard);
        }
    }
    Ok(())
}

/// MQTT 3.1.1/5 matching of a topic name against a topic filter. Invalid
/// filters or names never match. As in MQTT, a filter starting with a wildcard
/// does not match topics starting with `$`.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if validate_topic_filter(filter).is_err() || validate_topic_name(topic).is_err() {
        return false;
    }
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_back_every_topic_the_layout_builds() {
        let t = Topics::new(&Registry {
            chain_id: 1,
            address: [0xcd; 20],
        });
        let g = GroupId::from_label("hsu0001").expect("ok");
        let odd = GroupId::from_label("a b").expect("ok");
        let n = NodeId::from_label("1111").expect("ok");
        for (topic, parsed) in [
            (t.node_note(&n, 3), NoteTopic::Node { node: n, chunk: 3 }),
            (
                t.group_note(&odd, 0),
                NoteTopic::Group {
                    group: odd,
                    chunk: 0,
                },
            ),
            (
                t.sender_key(&g, &n, 7),
                NoteTopic::SenderKey {
                    group: g,
                    sender: n,
                    chunk: 7,
                },
            ),
            (
                t.membership_note(&n, 2),
                NoteTopic::Membership { node: n, chunk: 2 },
            ),
            (t.events(), NoteTopic::Events),
        ] {
            assert_eq!(t.parse(&topic), Some(parsed), "{topic}");
        }
        let prefix = t.prefix();
        for unknown in [
            format!("{prefix}/node/zzzz"),
            format!("{prefix}/node/1111/01"),
            format!("{prefix}/node/1111/70000"),
            // the hex form of an ID the layout writes as a label
            format!("{prefix}/group/{}/0", g.to_hex()),
            format!("{prefix}/membership/1111"),
            format!("{prefix}/membership/1111/0/1"),
            format!("{prefix}/membership/{}/0", n.to_hex()),
            format!("{prefix}/other"),
            format!("{prefix}/"),
        ] {
            assert_eq!(t.parse(&unknown), Some(NoteTopic::Unknown), "{unknown}");
        }
        assert_eq!(t.parse("hsu/0001/temp"), None);
        assert_eq!(t.parse(&format!("{prefix}x/node/1111/0")), None);
    }

    #[test]
    fn layout() {
        let t = Topics::new(&Registry {
            chain_id: 31337,
            address: [0xab; 20],
        });
        let g = GroupId::from_label("hsu0001").expect("ok");
        let n = NodeId::from_label("1111").expect("ok");
        let reg = format!("0x{}", "ab".repeat(20));
        assert_eq!(
            t.node_note(&n, 0),
            format!("anchormq/v1/31337/{reg}/node/1111/0")
        );
        assert_eq!(
            t.group_note(&g, 3),
            format!("anchormq/v1/31337/{reg}/group/hsu0001/3")
        );
        assert_eq!(
            t.sender_key(&g, &n, 1),
            format!("anchormq/v1/31337/{reg}/senderkey/hsu0001/1111/1")
        );
        assert_eq!(t.events(), format!("anchormq/v1/31337/{reg}/events"));
        assert!(topic_matches(&t.node_notes_filter(), &t.node_note(&n, 0)));
        assert!(topic_matches(&t.node_note_filter(&n), &t.node_note(&n, 3)));
        let other = NodeId::from_label("other").expect("id");
        assert!(!topic_matches(
            &t.node_note_filter(&n),
            &t.node_note(&other, 0)
        ));
        assert!(topic_matches(
            &t.sender_keys_filter(&g),
            &t.sender_key(&g, &n, 7)
        ));
        assert!(!topic_matches(&t.group_notes_filter(), &t.node_note(&n, 0)));
        assert_eq!(
            t.group_note_filter(&g),
            format!("anchormq/v1/31337/{reg}/group/hsu0001/#")
        );
        assert!(topic_matches(
            &t.group_note_filter(&g),
            &t.group_note(&g, 2)
        ));
        let other_group = GroupId::from_label("hsu0002").expect("id");
        assert!(!topic_matches(
            &t.group_note_filter(&g),
            &t.group_note(&other_group, 0)
        ));
        assert_eq!(
            t.membership_note(&n, 1),
            format!("anchormq/v1/31337/{reg}/membership/1111/1")
        );
        assert_eq!(
            t.membership_note_filter(&n),
            format!("anchormq/v1/31337/{reg}/membership/1111/#")
        );
        assert_eq!(
            t.membership_notes_filter(),
            format!("anchormq/v1/31337/{reg}/membership/#")
        );
        assert!(topic_matches(
            &t.membership_note_filter(&n),
            &t.membership_note(&n, 0)
        ));
        assert!(!topic_matches(
            &t.membership_note_filter(&n),
            &t.membership_note(&other, 0)
        ));
        assert!(topic_matches(
            &t.membership_notes_filter(),
            &t.membership_note(&other, 4)
        ));
        // the node-note filters do not pick up membership notes, nor the other way round
        assert!(!topic_matches(
            &t.node_notes_filter(),
            &t.membership_note(&n, 0)
        ));
        assert!(!topic_matches(
            &t.membership_notes_filter(),
            &t.node_note(&n, 0)
        ));
    }

    #[test]
    fn mqtt_matching_rules() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("#", "a/b", true),
            ("+/+", "/x", true),
            ("+", "", false),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("a/b#", "a/b#", false),
            ("a/#/b", "a/x/b", false),
            ("hsu0001/#", "hsu0001/sensor/temp", true),
            ("hsu0001/#", "hsu0002/sensor/temp", false),
            ("a/+/c", "a//c", true),
            ("a", "a/", false),
        ];
        for (f, t, want) in cases {
            assert_eq!(topic_matches(f, t), want, "filter {f:?} topic {t:?}");
        }
    }

    #[test]
    fn validation() {
        assert_eq!(validate_topic_filter("a/b+"), Err(TopicError::BadWildcard));
        assert_eq!(validate_topic_filter(""), Err(TopicError::Length));
        assert_eq!(validate_topic_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a\0"), Err(TopicError::Nul));
        assert!(validate_topic_filter("+/#").is_ok());
    }
}
