//! Topic tries: the retained messages keyed by topic, and the subscriptions keyed by filter, one
//! trie level per topic level.
//!
//! Both exist for cost. A new subscription walks the retained trie along its filter, so
//! `fleet/node/<id>/#` touches that node's subtree and nothing else however many other topics are
//! retained; a publish walks the subscription trie along its topic, so its cost follows the
//! topic's depth and the matches, not the number of filters held by the fleet.
//!
//! Nothing here recurses on the depth of a topic: a hostile topic of 30,000 empty levels must not
//! overflow a stack, so walks keep their own stacks and nodes are dropped level by level.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use rumqttc::mqttbytes::QoS;

use crate::topic::reserved_level;

/// Identifies a session in the broker's state; never reused.
pub(crate) type SessionId = u64;

/// Levels beyond which a child set moves from a vector to a hash map.
const FEW: usize = 8;

/// The children of one node, by level. Most nodes of a fleet's topic tree have a single child
/// (`…/node/<id>/0`), so small sets are vectors of exactly their size and only wide levels pay for
/// a hash map.
#[derive(Debug)]
enum Children<N> {
    Few(Vec<(Box<str>, N)>),
    Many(HashMap<Box<str>, N>),
}

impl<N> Default for Children<N> {
    fn default() -> Self {
        Self::Few(Vec::new())
    }
}

impl<N> Children<N> {
    fn len(&self) -> usize {
        match self {
            Self::Few(few) => few.len(),
            Self::Many(many) => many.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, level: &str) -> Option<&N> {
        match self {
            Self::Few(few) => few.iter().find(|(k, _)| &**k == level).map(|(_, n)| n),
            Self::Many(many) => many.get(level),
        }
    }

    fn get_mut(&mut self, level: &str) -> Option<&mut N> {
        match self {
            Self::Few(few) => few.iter_mut().find(|(k, _)| &**k == level).map(|(_, n)| n),
            Self::Many(many) => many.get_mut(level),
        }
    }

    fn get_or_default(&mut self, level: &str) -> &mut N
    where
        N: Default,
    {
        if let Self::Few(few) = self
            && few.len() >= FEW
            && !few.iter().any(|(k, _)| &**k == level)
        {
            let many = std::mem::take(few).into_iter().collect();
            *self = Self::Many(many);
        }
        match self {
            Self::Few(few) => {
                let i = match few.iter().position(|(k, _)| &**k == level) {
                    Some(i) => i,
                    None => {
                        few.reserve_exact(1);
                        few.push((level.into(), N::default()));
                        few.len() - 1
                    }
                };
                &mut few[i].1
            }
            Self::Many(many) => many.entry(level.into()).or_default(),
        }
    }

    fn remove(&mut self, level: &str) -> Option<N> {
        match self {
            Self::Few(few) => {
                let i = few.iter().position(|(k, _)| &**k == level)?;
                let (_, node) = few.swap_remove(i);
                few.shrink_to_fit();
                Some(node)
            }
            Self::Many(many) => many.remove(level),
        }
    }

    fn iter(&self) -> Box<dyn Iterator<Item = (&str, &N)> + '_> {
        match self {
            Self::Few(few) => Box::new(few.iter().map(|(k, n)| (&**k, n))),
            Self::Many(many) => Box::new(many.iter().map(|(k, n)| (&**k, n))),
        }
    }

    /// Moves every child into `out` (for dropping a subtree without recursion).
    fn drain_into(&mut self, out: &mut Vec<N>) {
        match std::mem::take(self) {
            Self::Few(few) => out.extend(few.into_iter().map(|(_, n)| n)),
            Self::Many(many) => out.extend(many.into_values()),
        }
    }
}

/// What a node holds for the path that ends at it. An empty one lets the node be pruned once it
/// has no children either.
trait Held: Default {
    fn is_empty(&self) -> bool;
}

/// One level of a trie: its children and what it holds. The root stands for the whole trie.
#[derive(Debug, Default)]
struct Node<V> {
    children: Children<Node<V>>,
    value: V,
}

impl<V> Drop for Node<V> {
    fn drop(&mut self) {
        let mut below = Vec::new();
        self.children.drain_into(&mut below);
        while let Some(mut node) = below.pop() {
            node.children.drain_into(&mut below);
        }
    }
}

impl<V: Held> Node<V> {
    /// What the node at `path` holds, creating the levels that lead to it.
    fn entry(&mut self, path: &str) -> &mut V {
        let mut node = self;
        for level in path.split('/') {
            node = node.children.get_or_default(level);
        }
        &mut node.value
    }

    /// Calls `take` on what the node at `path` holds and, if it took something, prunes the levels
    /// left holding nothing but the path to it. Returns what `take` returned, false if there is no
    /// such node.
    fn remove(&mut self, path: &str, take: impl FnOnce(&mut V) -> bool) -> bool {
        let levels: Vec<&str> = path.split('/').collect();
        // The first level of the chain of nodes that holds nothing but the path to the taken
        // value: cutting it off its parent removes the emptied node and the levels with it.
        let leaf = levels.len() - 1;
        let mut cut = None;
        let mut node = &mut *self;
        for (i, level) in levels.iter().enumerate() {
            let Some(child) = node.children.get_mut(level) else {
                return false;
            };
            node = child;
            if i == leaf {
                break;
            }
            if node.value.is_empty() && node.children.len() == 1 {
                cut.get_or_insert(i);
            } else {
                cut = None;
            }
        }
        if !take(&mut node.value) {
            return false;
        }
        // The leaf joins the chain only if the taken value was all it held.
        if !(node.value.is_empty() && node.children.is_empty()) {
            return true;
        }
        let cut = cut.unwrap_or(leaf);
        let mut node = self;
        for level in &levels[..cut] {
            node = node.children.get_mut(level).expect("walked above");
        }
        node.children.remove(levels[cut]);
        true
    }
}

/// A retained message as the broker keeps it: its own copy of the payload (a slice of a read
/// buffer would pin the whole buffer for as long as the message is retained).
#[derive(Debug, Clone)]
pub(crate) struct Retained {
    pub(crate) topic: Arc<str>,
    pub(crate) payload: Bytes,
    pub(crate) qos: QoS,
}

impl Held for Option<Box<Retained>> {
    fn is_empty(&self) -> bool {
        self.is_none()
    }
}

/// The last retained message of every topic.
#[derive(Debug, Default)]
pub(crate) struct RetainedTrie {
    root: Node<Option<Box<Retained>>>,
    len: usize,
}

impl RetainedTrie {
    /// How many topics hold a retained message.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Keeps `message` as the retained message of its topic, replacing any earlier one.
    pub(crate) fn insert(&mut self, message: Retained) {
        let slot = self.root.entry(&message.topic);
        if slot.replace(Box::new(message)).is_none() {
            self.len += 1;
        }
    }

    /// Forgets the retained message of `topic` and the trie levels only it used. True if there
    /// was one.
    pub(crate) fn remove(&mut self, topic: &str) -> bool {
        let removed = self.root.remove(topic, |message| message.take().is_some());
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Calls `found` with every retained message whose topic matches `filter` (a valid filter),
    /// touching only the branches the filter can reach. Returns how many nodes it visited.
    pub(crate) fn for_each_match(&self, filter: &str, mut found: impl FnMut(&Retained)) -> usize {
        let levels: Vec<&str> = filter.split('/').collect();
        // (node, filter levels consumed); with `#` a whole subtree is taken.
        let mut walk = vec![(&self.root, 0)];
        let mut subtree = Vec::new();
        let mut visited = 0;
        while let Some((node, depth)) = walk.pop() {
            visited += 1;
            let Some(level) = levels.get(depth) else {
                if let Some(message) = &node.value {
                    found(message);
                }
                continue;
            };
            let first = depth == 0;
            match *level {
                "#" => {
                    // `a/#` matches `a` itself as well as everything below it.
                    if let Some(message) = &node.value {
                        found(message);
                    }
                    subtree.extend(
                        node.children
                            .iter()
                            .filter(|(name, _)| !(first && reserved_level(name)))
                            .map(|(_, child)| child),
                    );
                }
                "+" => walk.extend(
                    node.children
                        .iter()
                        .filter(|(name, _)| !(first && reserved_level(name)))
                        .map(|(_, child)| (child, depth + 1)),
                ),
                name => {
                    if let Some(child) = node.children.get(name) {
                        walk.push((child, depth + 1));
                    }
                }
            }
        }
        while let Some(node) = subtree.pop() {
            visited += 1;
            if let Some(message) = &node.value {
                found(message);
            }
            subtree.extend(node.children.iter().map(|(_, child)| child));
        }
        visited
    }
}

impl Held for HashMap<SessionId, QoS> {
    fn is_empty(&self) -> bool {
        HashMap::is_empty(self)
    }
}

/// Every session's subscriptions, by filter, with the QoS granted to each.
#[derive(Debug, Default)]
pub(crate) struct SubscriptionTrie {
    root: Node<HashMap<SessionId, QoS>>,
}

impl SubscriptionTrie {
    /// Subscribes `session` to `filter` (a valid filter) at `qos`, replacing the QoS of an
    /// existing subscription to the same filter.
    pub(crate) fn insert(&mut self, filter: &str, session: SessionId, qos: QoS) {
        self.root.entry(filter).insert(session, qos);
    }

    /// Removes the subscription of `session` to `filter` and the levels only it used. True if
    /// there was one.
    pub(crate) fn remove(&mut self, filter: &str, session: SessionId) -> bool {
        self.root
            .remove(filter, |subscribers| subscribers.remove(&session).is_some())
    }

    /// Appends to `out` every (session, granted QoS) whose filter matches `topic` (a valid topic
    /// name). A session with several matching filters appears once per filter.
    pub(crate) fn matches(&self, topic: &str, out: &mut Vec<(SessionId, QoS)>) {
        let levels: Vec<&str> = topic.split('/').collect();
        let reserved = reserved_level(levels[0]);
        let mut walk = vec![(&self.root, 0)];
        while let Some((node, depth)) = walk.pop() {
            // Wildcards in a filter's first level do not reach `$` topics.
            let wildcards = !(depth == 0 && reserved);
            if wildcards {
                // `#` matches the rest of the topic, including nothing (`a/#` matches `a`).
                if let Some(rest) = node.children.get("#") {
                    out.extend(rest.value.iter().map(|(s, q)| (*s, *q)));
                }
            }
            let Some(level) = levels.get(depth) else {
                out.extend(node.value.iter().map(|(s, q)| (*s, *q)));
                continue;
            };
            if wildcards && let Some(any) = node.children.get("+") {
                walk.push((any, depth + 1));
            }
            if let Some(exact) = node.children.get(level) {
                walk.push((exact, depth + 1));
            }
        }
    }

    /// True when no subscription is held (every removal pruned its levels).
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.root.children.is_empty() && self.root.value.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retained(topic: &str) -> Retained {
        Retained {
            topic: topic.into(),
            payload: Bytes::from(topic.to_owned()),
            qos: QoS::AtLeastOnce,
        }
    }

    fn retained_matches(trie: &RetainedTrie, filter: &str) -> Vec<String> {
        let mut found = Vec::new();
        trie.for_each_match(filter, |m| found.push(m.topic.to_string()));
        found.sort();
        found
    }

    fn subscribers(trie: &SubscriptionTrie, topic: &str) -> Vec<(SessionId, QoS)> {
        let mut out = Vec::new();
        trie.matches(topic, &mut out);
        out.sort_by_key(|(s, q)| (*s, *q as u8));
        out
    }

    const TOPICS: &[&str] = &[
        "a", "a/b", "a/b/c", "a/c", "a//c", "/a", "b/b", "$SYS/x", "$SYS/x/y", "a/$x",
    ];

    /// The matching rules of §4.7, the same for both tries: each case is (filter, topics).
    const CASES: &[(&str, &[&str])] = &[
        (
            "#",
            &["/a", "a", "a/$x", "a/b", "a/b/c", "a/c", "a//c", "b/b"],
        ),
        ("a/#", &["a", "a/$x", "a/b", "a/b/c", "a/c", "a//c"]),
        ("a/b/#", &["a/b", "a/b/c"]),
        ("+", &["a"]),
        ("+/b", &["a/b", "b/b"]),
        ("a/+", &["a/$x", "a/b", "a/c"]),
        ("a/+/c", &["a//c", "a/b/c"]),
        ("+/+", &["/a", "a/$x", "a/b", "a/c", "b/b"]),
        (
            "+/#",
            &["/a", "a", "a/$x", "a/b", "a/b/c", "a/c", "a//c", "b/b"],
        ),
        ("/+", &["/a"]),
        ("$SYS/#", &["$SYS/x", "$SYS/x/y"]),
        ("$SYS/+", &["$SYS/x"]),
        ("+/x", &[]),
        ("a/b", &["a/b"]),
        ("a/b/c/d", &[]),
    ];

    #[test]
    fn a_filter_finds_the_retained_messages_it_matches() {
        let mut trie = RetainedTrie::default();
        for topic in TOPICS {
            trie.insert(retained(topic));
        }
        assert_eq!(trie.len(), TOPICS.len());
        for (filter, expected) in CASES {
            let mut expected: Vec<String> = expected.iter().map(|t| t.to_string()).collect();
            expected.sort();
            assert_eq!(retained_matches(&trie, filter), expected, "filter {filter}");
        }
    }

    #[test]
    fn a_topic_finds_the_subscriptions_that_match_it() {
        let mut trie = SubscriptionTrie::default();
        for (i, (filter, _)) in CASES.iter().enumerate() {
            trie.insert(filter, i as SessionId, QoS::AtMostOnce);
        }
        for topic in TOPICS {
            let expected: Vec<(SessionId, QoS)> = CASES
                .iter()
                .enumerate()
                .filter(|(_, (_, topics))| topics.contains(topic))
                .map(|(i, _)| (i as SessionId, QoS::AtMostOnce))
                .collect();
            assert_eq!(subscribers(&trie, topic), expected, "topic {topic}");
        }
    }

    #[test]
    fn a_retained_message_is_replaced_and_removed_with_the_levels_only_it_used() {
        let mut trie = RetainedTrie::default();
        trie.insert(retained("a/b/c"));
        trie.insert(retained("a"));
        let mut newer = retained("a/b/c");
        newer.payload = Bytes::from_static(b"newer");
        trie.insert(newer);
        assert_eq!(trie.len(), 2);
        let mut payloads = Vec::new();
        trie.for_each_match("a/b/c", |m| payloads.push(m.payload.clone()));
        assert_eq!(payloads, [Bytes::from_static(b"newer")]);

        assert!(trie.remove("a/b/c"));
        assert!(!trie.remove("a/b/c"), "already gone");
        assert!(!trie.remove("a/b"), "a level without a message");
        assert_eq!(trie.len(), 1);
        assert_eq!(retained_matches(&trie, "#"), ["a"]);
        assert!(trie.root.children.get("a").expect("a").children.is_empty());

        // A message above another: removing the upper one keeps the path to the lower one.
        trie.insert(retained("a/b/c"));
        assert!(trie.remove("a"));
        assert_eq!(retained_matches(&trie, "#"), ["a/b/c"]);
        assert!(trie.remove("a/b/c"));
        assert!(trie.root.children.is_empty());
        assert_eq!(trie.len(), 0);
    }

    #[test]
    fn a_filter_walks_only_its_own_branch() {
        let mut trie = RetainedTrie::default();
        for i in 0..2_000 {
            trie.insert(retained(&format!("fleet/node/{i}/0")));
            trie.insert(retained(&format!("fleet/node/{i}/1")));
        }
        assert_eq!(
            retained_matches(&trie, "fleet/node/1234/#"),
            ["fleet/node/1234/0", "fleet/node/1234/1"]
        );
        // root, fleet, node, 1234 and its two leaves: none of the other 1,999 nodes.
        assert_eq!(trie.for_each_match("fleet/node/1234/#", |_| {}), 6);
        assert_eq!(trie.for_each_match("fleet/node/1234/1", |_| {}), 5);
        assert_eq!(trie.for_each_match("fleet/other/#", |_| {}), 2);
        assert_eq!(retained_matches(&trie, "fleet/node/+/1").len(), 2_000);
        assert_eq!(retained_matches(&trie, "fleet/#").len(), 4_000);
    }

    #[test]
    fn one_session_with_several_filters_and_removal() {
        let mut trie = SubscriptionTrie::default();
        trie.insert("a/#", 1, QoS::AtMostOnce);
        trie.insert("a/b", 1, QoS::AtLeastOnce);
        trie.insert("a/b", 2, QoS::AtMostOnce);
        trie.insert("a/b", 2, QoS::AtLeastOnce);
        assert_eq!(
            subscribers(&trie, "a/b"),
            [
                (1, QoS::AtMostOnce),
                (1, QoS::AtLeastOnce),
                (2, QoS::AtLeastOnce)
            ]
        );
        assert!(trie.remove("a/b", 1));
        assert!(!trie.remove("a/b", 1));
        assert!(!trie.remove("a/c", 1));
        assert_eq!(
            subscribers(&trie, "a/b"),
            [(1, QoS::AtMostOnce), (2, QoS::AtLeastOnce)]
        );
        assert!(trie.remove("a/b", 2));
        assert!(trie.remove("a/#", 1));
        assert!(trie.is_empty(), "every level pruned");
    }

    #[test]
    fn a_level_holding_something_stops_the_pruning() {
        // `a` alone leads to `a/b`, which holds a subscription: removing `a/b/c` cuts only `c`.
        let mut trie = SubscriptionTrie::default();
        trie.insert("a/b/c", 1, QoS::AtMostOnce);
        trie.insert("a/b", 2, QoS::AtMostOnce);
        assert!(trie.remove("a/b/c", 1));
        assert_eq!(subscribers(&trie, "a/b"), [(2, QoS::AtMostOnce)]);
        let b = trie
            .root
            .children
            .get("a")
            .and_then(|a| a.children.get("b"));
        assert!(b.expect("a/b kept").children.is_empty());
        assert!(trie.remove("a/b", 2));
        assert!(trie.is_empty());
    }

    #[test]
    fn deep_topics_neither_overflow_the_stack_nor_leak() {
        let deep = "x/".repeat(100_000) + "end";
        let mut retained_trie = RetainedTrie::default();
        retained_trie.insert(retained(&deep));
        assert_eq!(retained_matches(&retained_trie, "#").len(), 1);
        assert!(retained_trie.remove(&deep));
        retained_trie.insert(retained(&deep));
        drop(retained_trie);

        let mut subscriptions = SubscriptionTrie::default();
        subscriptions.insert(&deep, 7, QoS::AtMostOnce);
        assert_eq!(subscribers(&subscriptions, &deep), [(7, QoS::AtMostOnce)]);
        assert!(subscriptions.remove(&deep, 7));
        assert!(subscriptions.is_empty());
        subscriptions.insert(&deep, 7, QoS::AtMostOnce);
        drop(subscriptions);
    }

    #[test]
    fn wide_levels_move_to_a_map_and_keep_their_children() {
        let mut trie = SubscriptionTrie::default();
        for i in 0..100 {
            trie.insert(&format!("w/{i}"), i, QoS::AtMostOnce);
        }
        for i in 0..100 {
            assert_eq!(
                subscribers(&trie, &format!("w/{i}")),
                [(i, QoS::AtMostOnce)]
            );
        }
        for i in 0..100 {
            assert!(trie.remove(&format!("w/{i}"), i));
        }
        assert!(trie.is_empty());
    }
}
