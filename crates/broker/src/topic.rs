//! Topic names and filters (MQTT 3.1.1 §4.7): what a client may publish to and subscribe with.

/// A topic a PUBLISH (or a will) may name: at least one character, no wildcard, no U+0000.
/// Anything else is a protocol violation and closes the connection (§4.7.3, §1.5.3).
pub(crate) fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// A filter a SUBSCRIBE may carry: non-empty, no U+0000, `+` alone in its level, `#` alone in
/// the last level. An invalid one gets the SUBACK failure code; the connection stays.
pub(crate) fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        match level {
            "+" => {}
            "#" if last => {}
            _ if level.contains(['+', '#']) => return false,
            _ => {}
        }
    }
    true
}

/// True for topics that `+` and `#` in a filter's first level do not reach (§4.7.2): the
/// `$`-prefixed names brokers keep for themselves.
pub(crate) fn reserved_level(level: &str) -> bool {
    level.starts_with('$')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_with_wildcards_or_nothing_are_refused() {
        for ok in ["a", "a/b", "/", "a//b", "$SYS/x", "a b/ü"] {
            assert!(valid_topic(ok), "{ok}");
        }
        for bad in ["", "a/+", "a/#", "a+", "#", "a\0b"] {
            assert!(!valid_topic(bad), "{bad:?}");
        }
    }

    #[test]
    fn filters_follow_the_wildcard_rules() {
        for ok in [
            "#", "+", "a/#", "a/+/b", "+/+", "/#", "a//b", "$SYS/#", "a/+/#",
        ] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in [
            "", "a/#/b", "#/a", "a#", "a/b#", "a+", "a/+b", "++", "##", "a/\0",
        ] {
            assert!(!valid_filter(bad), "{bad:?}");
        }
    }
}
