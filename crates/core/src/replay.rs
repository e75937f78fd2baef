//! Replay protection: a sliding bitmap per stream (as in IPsec/DTLS) and a
//! bounded, least-recently-used map so the number of tracked streams is capped.

use std::collections::HashMap;
use std::hash::Hash;

/// Width of the window: sequence numbers this far behind the highest seen are
/// still told apart as new or duplicate.
pub const WINDOW: u64 = 128;

/// What the window says about a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// Not seen before.
    Fresh,
    /// Seen before (e.g. QoS 1 redelivery).
    Duplicate,
    /// Older than the window; cannot be told apart from a replay.
    TooOld,
}

/// Sliding replay window over one stream's sequence numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    highest: Option<u64>,
    /// bit i set: `highest - i` was seen
    seen: u128,
}

impl ReplayWindow {
    /// A window that has seen nothing.
    pub const fn new() -> Self {
        Self {
            highest: None,
            seen: 0,
        }
    }

    /// Classifies `seq` without recording it.
    pub fn check(&self, seq: u64) -> ReplayVerdict {
        let Some(top) = self.highest else {
            return ReplayVerdict::Fresh;
        };
        if seq > top {
            return ReplayVerdict::Fresh;
        }
        let behind = top - seq;
        if behind >= WINDOW {
            return ReplayVerdict::TooOld;
        }
        if self.seen & (1u128 << behind) != 0 {
            ReplayVerdict::Duplicate
        } else {
            ReplayVerdict::Fresh
        }
    }

    /// Records `seq` (call only after the message authenticated and `check` said Fresh).
    pub fn record(&mut self, seq: u64) {
        match self.highest {
            None => {
                self.highest = Some(seq);
                self.seen = 1;
            }
            Some(top) if seq > top => {
                let shift = seq - top;
                self.seen = if shift >= WINDOW {
                    0
                } else {
                    self.seen << shift
                };
                self.seen |= 1;
                self.highest = Some(seq);
            }
            Some(top) => {
                let behind = top - seq;
                if behind < WINDOW {
                    self.seen |= 1u128 << behind;
                }
            }
        }
    }
}

/// A map holding at most `capacity` entries; inserting into a full map evicts
/// the least recently used entry.
#[derive(Debug, Clone)]
pub(crate) struct BoundedMap<K, V> {
    map: HashMap<K, (V, u64)>,
    capacity: usize,
    tick: u64,
}

impl<K: Hash + Eq + Clone, V> BoundedMap<K, V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            capacity: capacity.max(1),
            tick: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(key).map(|(v, t)| {
            *t = tick;
            v
        })
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    /// Keeps only the entries that pass `keep`.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.map.retain(|k, (v, _)| keep(k, v));
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        self.map.remove(key).map(|(v, _)| v)
    }

    pub(crate) fn insert(&mut self, key: K, value: V) {
        self.tick += 1;
        if !self.map.contains_key(&key) && self.map.len() >= self.capacity {
            // O(n) only when a new stream arrives at a full table
            if let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| k.clone())
            {
                self.map.remove(&oldest);
            }
        }
        self.map.insert(key, (value, self.tick));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_semantics() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.check(5), ReplayVerdict::Fresh);
        w.record(5);
        assert_eq!(w.check(5), ReplayVerdict::Duplicate);
        assert_eq!(w.check(3), ReplayVerdict::Fresh);
        w.record(3);
        assert_eq!(w.check(3), ReplayVerdict::Duplicate);
        w.record(5 + 127);
        assert_eq!(w.check(5), ReplayVerdict::Duplicate);
        assert_eq!(w.check(4), ReplayVerdict::TooOld);
        assert_eq!(w.check(6), ReplayVerdict::Fresh);
        w.record(u64::MAX);
        assert_eq!(w.check(u64::MAX), ReplayVerdict::Duplicate);
        assert_eq!(w.check(0), ReplayVerdict::TooOld);
    }

    #[test]
    fn bounded_map_evicts_least_recently_used() {
        let mut m = BoundedMap::new(2);
        m.insert(1, "a");
        m.insert(2, "b");
        assert!(m.get_mut(&1).is_some());
        m.insert(3, "c");
        assert!(m.contains(&1) && m.contains(&3) && !m.contains(&2));
        assert_eq!(m.len(), 2);
    }
}
