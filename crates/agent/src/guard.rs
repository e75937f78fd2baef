//! The edge guard: the agent's own check of sensor readings before they are sealed, as in the
//! published design (§2.3). A reading outside its allowed range, or one that jumps further from
//! the previous accepted reading than a sensor can, is refused; a reading that moved no more than
//! a deadband from the last one sent is suppressed (report by exception) unless a heartbeat is due.
//!
//! This is local policy, not wire format: receivers neither know nor check it, and a node that
//! wants to send anything can. It keeps a faulty sensor from flooding a group with implausible
//! values, and cuts fixed-cycle reporting down to the changes.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use anchormq_core::TopicError;
use anchormq_core::topic_matches;
use anchormq_core::topics::validate_topic_filter;

/// One rule: which topics it guards and what it checks there. Every check is optional; a rule
/// with none still refuses payloads that are not numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardRule {
    /// MQTT topic filter of the topics this rule guards.
    pub topic: String,
    /// Smallest allowed reading.
    pub min: Option<f64>,
    /// Largest allowed reading.
    pub max: Option<f64>,
    /// Largest allowed change from the previous accepted reading on the same topic.
    pub max_step: Option<f64>,
    /// A reading is sent only when it differs from the last one sent by more than this...
    pub deadband: Option<f64>,
    /// ...or when this long has passed since the last send (with a deadband only).
    pub heartbeat: Option<Duration>,
}

impl GuardRule {
    /// A rule for the topics matching `filter` that checks nothing yet but that readings are
    /// numbers; set the fields to add checks.
    pub fn for_topic(filter: impl Into<String>) -> Self {
        Self {
            topic: filter.into(),
            min: None,
            max: None,
            max_step: None,
            deadband: None,
            heartbeat: None,
        }
    }

    fn validate(&self, index: usize) -> Result<(), GuardRuleError> {
        validate_topic_filter(&self.topic).map_err(|source| GuardRuleError::InvalidTopic {
            index,
            topic: self.topic.clone(),
            source,
        })?;
        let numbers = [
            ("min", self.min),
            ("max", self.max),
            ("max_step", self.max_step),
            ("deadband", self.deadband),
        ];
        for (field, value) in numbers {
            let Some(value) = value else { continue };
            if !value.is_finite() {
                return Err(GuardRuleError::NotFinite {
                    index,
                    topic: self.topic.clone(),
                    field,
                    value,
                });
            }
            if matches!(field, "max_step" | "deadband") && value < 0.0 {
                return Err(GuardRuleError::Negative {
                    index,
                    topic: self.topic.clone(),
                    field,
                    value,
                });
            }
        }
        if let (Some(min), Some(max)) = (self.min, self.max)
            && min > max
        {
            return Err(GuardRuleError::MinAboveMax {
                index,
                topic: self.topic.clone(),
                min,
                max,
            });
        }
        Ok(())
    }
}

/// A rule that cannot be used. `index` counts the rules from 1, in the order given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GuardRuleError {
    /// The rule's topic is not a valid MQTT topic filter.
    #[error("rule {index}: topic {topic:?} is not a valid MQTT topic filter: {source}")]
    InvalidTopic {
        /// The rule's position, from 1.
        index: usize,
        /// Its topic filter.
        topic: String,
        /// What is wrong with it.
        source: TopicError,
    },
    /// A limit is infinite or not a number.
    #[error("rule {index} ({topic:?}): {field} must be a finite number, not {value}")]
    NotFinite {
        /// The rule's position, from 1.
        index: usize,
        /// Its topic filter.
        topic: String,
        /// The field: `min`, `max`, `max_step` or `deadband`.
        field: &'static str,
        /// The value given.
        value: f64,
    },
    /// `max_step` or `deadband` is negative.
    #[error("rule {index} ({topic:?}): {field} {value} is negative")]
    Negative {
        /// The rule's position, from 1.
        index: usize,
        /// Its topic filter.
        topic: String,
        /// The field: `max_step` or `deadband`.
        field: &'static str,
        /// The value given.
        value: f64,
    },
    /// `min` is above `max`: no reading could pass.
    #[error("rule {index} ({topic:?}): min {min} is above max {max}")]
    MinAboveMax {
        /// The rule's position, from 1.
        index: usize,
        /// Its topic filter.
        topic: String,
        /// The minimum given.
        min: f64,
        /// The maximum given.
        max: f64,
    },
}

/// Validated guard rules. The first rule whose filter matches a topic applies to it; topics no
/// rule matches pass untouched. The default has no rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Guard {
    rules: Vec<GuardRule>,
}

impl Guard {
    /// Checks every rule; the error names the first bad one and its field.
    pub fn new(rules: Vec<GuardRule>) -> Result<Self, GuardRuleError> {
        for (i, rule) in rules.iter().enumerate() {
            rule.validate(i + 1)?;
        }
        Ok(Self { rules })
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[GuardRule] {
        &self.rules
    }

    /// Whether there are no rules (every topic passes untouched).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule that applies to `topic`: the first whose filter matches it.
    pub fn rule_for(&self, topic: &str) -> Option<&GuardRule> {
        self.rules.iter().find(|r| topic_matches(&r.topic, topic))
    }

    /// Checks one payload for `topic` at time `now` against the rule that applies and what
    /// `memory` holds for the topic. A reading that passes range and step becomes the topic's
    /// previous accepted reading (whether it is then sent or suppressed); the caller records a
    /// send with [`GuardMemory::sent`] once the message is out.
    pub(crate) fn check(
        &self,
        memory: &mut GuardMemory,
        topic: &str,
        payload: &[u8],
        now: Instant,
    ) -> Check {
        let Some(rule) = self.rule_for(topic) else {
            return Check::Unguarded;
        };
        let refuse = |reason| {
            Check::Refused(Refused {
                topic: topic.to_owned(),
                reading: shown(payload),
                reason,
                rule: rule.topic.clone(),
            })
        };
        let Some(value) = parse_reading(payload) else {
            return refuse(Refusal::NotANumber);
        };
        if let Some(min) = rule.min
            && value < min
        {
            return refuse(Refusal::BelowMin { value, min });
        }
        if let Some(max) = rule.max
            && value > max
        {
            return refuse(Refusal::AboveMax { value, max });
        }
        let seen = memory.topics.entry(topic.to_owned()).or_default();
        if let (Some(max_step), Some(previous)) = (rule.max_step, seen.accepted)
            && (value - previous).abs() > max_step
        {
            return refuse(Refusal::StepTooLarge {
                value,
                previous,
                max_step,
            });
        }
        seen.accepted = Some(value);
        if let (Some(deadband), Some((last_sent, at))) = (rule.deadband, seen.sent) {
            let within = (value - last_sent).abs() <= deadband;
            let heartbeat_due = rule
                .heartbeat
                .is_some_and(|every| now.saturating_duration_since(at) >= every);
            if within && !heartbeat_due {
                return Check::Suppressed(Suppressed {
                    topic: topic.to_owned(),
                    value,
                    last_sent,
                    deadband,
                    rule: rule.topic.clone(),
                });
            }
        }
        Check::Send { value }
    }
}

/// A payload as a reading: trimmed UTF-8 text that parses as a finite decimal number.
fn parse_reading(payload: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(payload).ok()?.trim();
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// The payload as the user wrote it, for messages: trimmed text, quoted and shortened when it is
/// not a plain number.
fn shown(payload: &[u8]) -> String {
    const MAX: usize = 32;
    match std::str::from_utf8(payload) {
        Ok(text) if parse_reading(payload).is_some() && text.trim().len() <= MAX => {
            text.trim().to_owned()
        }
        Ok(text) => {
            let text = text.trim();
            if text.chars().count() <= MAX {
                format!("{text:?}")
            } else {
                let head: String = text.chars().take(MAX).collect();
                format!("{head:?}...")
            }
        }
        Err(_) => format!("of {} bytes (not UTF-8)", payload.len()),
    }
}

/// What the guard remembers per topic, for the life of the agent.
#[derive(Debug, Default)]
pub(crate) struct GuardMemory {
    topics: HashMap<String, Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    /// The previous reading that passed range and step.
    accepted: Option<f64>,
    /// The last reading sent, and when.
    sent: Option<(f64, Instant)>,
}

impl GuardMemory {
    /// Records that `value` was sent on `topic` at `at`.
    pub(crate) fn sent(&mut self, topic: &str, value: f64, at: Instant) {
        self.topics.entry(topic.to_owned()).or_default().sent = Some((value, at));
    }
}

/// The guard's verdict on one payload.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Check {
    /// No rule applies: send as is.
    Unguarded,
    /// A reading that passed: send it, then record the send.
    Send {
        /// The reading.
        value: f64,
    },
    /// Within the deadband of the last reading sent: not sent.
    Suppressed(Suppressed),
    /// Refused: not sent.
    Refused(Refused),
}

/// A reading the guard did not send because it moved no more than the deadband from the last
/// reading sent on its topic (and no heartbeat was due). Not an error: report by exception.
#[derive(Debug, Clone, PartialEq)]
pub struct Suppressed {
    /// The topic.
    pub topic: String,
    /// The reading.
    pub value: f64,
    /// The last reading sent on the topic.
    pub last_sent: f64,
    /// The rule's deadband.
    pub deadband: f64,
    /// The filter of the rule that applied.
    pub rule: String,
}

impl fmt::Display for Suppressed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "suppressed: within deadband {} of last sent {}",
            self.deadband, self.last_sent
        )
    }
}

/// A reading the guard refused to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The topic.
    pub topic: String,
    /// The payload as given (trimmed; quoted and shortened when it is not a number).
    pub reading: String,
    /// Which check it failed.
    pub reason: Refusal,
    /// The filter of the rule that applied.
    pub rule: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.reason {
            Refusal::NotANumber => "payload",
            _ => "reading",
        };
        write!(
            f,
            "{what} {} on {} refused: {} (rule for '{}')",
            self.reading, self.topic, self.reason, self.rule
        )
    }
}

impl std::error::Error for Refused {}

/// Why a reading was refused.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Refusal {
    /// The payload is not a decimal number (or not a finite one).
    NotANumber,
    /// Below the rule's `min`.
    BelowMin {
        /// The reading.
        value: f64,
        /// The rule's minimum.
        min: f64,
    },
    /// Above the rule's `max`.
    AboveMax {
        /// The reading.
        value: f64,
        /// The rule's maximum.
        max: f64,
    },
    /// Further from the previous accepted reading than the rule's `max_step`.
    StepTooLarge {
        /// The reading.
        value: f64,
        /// The previous accepted reading on the topic.
        previous: f64,
        /// The rule's largest step.
        max_step: f64,
    },
}

// Every value in a refusal is finite (readings that are not are refused as not a number, limits
// are checked by `Guard::new`), so equality is total.
impl Eq for Refusal {}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotANumber => write!(f, "not a number"),
            Self::BelowMin { min, .. } => write!(f, "below min {min}"),
            Self::AboveMax { max, .. } => write!(f, "above max {max}"),
            Self::StepTooLarge {
                previous, max_step, ..
            } => write!(
                f,
                "more than max_step {max_step} from previous accepted {previous}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(rules: Vec<GuardRule>) -> Guard {
        Guard::new(rules).expect("valid rules")
    }

    fn temperature() -> GuardRule {
        GuardRule {
            min: Some(-20.0),
            max: Some(60.0),
            max_step: Some(5.0),
            ..GuardRule::for_topic("line1/+")
        }
    }

    fn refusal(check: Check) -> Refused {
        match check {
            Check::Refused(refused) => refused,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn range_refuses_below_min_and_above_max_and_names_the_rule() {
        let g = guard(vec![temperature()]);
        let mut m = GuardMemory::default();
        let now = Instant::now();
        let above = refusal(g.check(&mut m, "line1/temp", b"85.0", now));
        assert_eq!(
            above.reason,
            Refusal::AboveMax {
                value: 85.0,
                max: 60.0
            }
        );
        assert_eq!(
            above.to_string(),
            "reading 85.0 on line1/temp refused: above max 60 (rule for 'line1/+')"
        );
        let below = refusal(g.check(&mut m, "line1/temp", b" -20.5\n", now));
        assert_eq!(
            below.to_string(),
            "reading -20.5 on line1/temp refused: below min -20 (rule for 'line1/+')"
        );
        // the limits themselves are allowed
        assert_eq!(
            g.check(&mut m, "line1/temp", b"-20", now),
            Check::Send { value: -20.0 }
        );
        assert_eq!(
            guard(vec![temperature()]).check(&mut GuardMemory::default(), "line1/temp", b"60", now),
            Check::Send { value: 60.0 }
        );
    }

    #[test]
    fn step_is_measured_from_the_previous_accepted_reading() {
        let g = guard(vec![temperature()]);
        let mut m = GuardMemory::default();
        let now = Instant::now();
        assert_eq!(
            g.check(&mut m, "line1/temp", b"20", now),
            Check::Send { value: 20.0 }
        );
        let jump = refusal(g.check(&mut m, "line1/temp", b"26", now));
        assert_eq!(
            jump.to_string(),
            "reading 26 on line1/temp refused: more than max_step 5 from previous accepted 20 (rule for 'line1/+')"
        );
        // refused readings (range or step) do not move the reference
        refusal(g.check(&mut m, "line1/temp", b"85", now));
        refusal(g.check(&mut m, "line1/temp", b"59", now));
        assert_eq!(
            g.check(&mut m, "line1/temp", b"25", now),
            Check::Send { value: 25.0 }
        );
        assert_eq!(
            g.check(&mut m, "line1/temp", b"30", now),
            Check::Send { value: 30.0 }
        );
        // each topic has its own history
        assert_eq!(
            g.check(&mut m, "line1/other", b"-10", now),
            Check::Send { value: -10.0 }
        );
    }

    #[test]
    fn deadband_suppresses_small_moves_from_the_last_sent_reading() {
        let g = guard(vec![GuardRule {
            deadband: Some(0.5),
            ..GuardRule::for_topic("line1/temp")
        }]);
        let mut m = GuardMemory::default();
        let now = Instant::now();
        let mut offer = |text: &[u8]| {
            let check = g.check(&mut m, "line1/temp", text, now);
            if let Check::Send { value } = check {
                m.sent("line1/temp", value, now);
            }
            check
        };
        assert_eq!(offer(b"21.25"), Check::Send { value: 21.25 });
        let quiet = offer(b"21.5");
        assert_eq!(
            quiet,
            Check::Suppressed(Suppressed {
                topic: "line1/temp".into(),
                value: 21.5,
                last_sent: 21.25,
                deadband: 0.5,
                rule: "line1/temp".into(),
            })
        );
        let Check::Suppressed(quiet) = quiet else {
            unreachable!()
        };
        assert_eq!(
            quiet.to_string(),
            "suppressed: within deadband 0.5 of last sent 21.25"
        );
        // exactly the deadband away is still within it; creeping up does not move the reference
        assert!(matches!(offer(b"21.75"), Check::Suppressed(_)));
        assert!(matches!(offer(b"20.75"), Check::Suppressed(_)));
        assert_eq!(offer(b"21.875"), Check::Send { value: 21.875 });
        assert!(matches!(offer(b"21.5"), Check::Suppressed(_)));
    }

    #[test]
    fn a_reading_not_recorded_as_sent_is_not_the_reference() {
        // a send that failed after the check is not recorded: the next reading is sent
        let g = guard(vec![GuardRule {
            deadband: Some(1.0),
            ..GuardRule::for_topic("t")
        }]);
        let mut m = GuardMemory::default();
        let now = Instant::now();
        assert_eq!(g.check(&mut m, "t", b"1", now), Check::Send { value: 1.0 });
        assert_eq!(g.check(&mut m, "t", b"1", now), Check::Send { value: 1.0 });
    }

    #[test]
    fn heartbeat_sends_an_unchanged_reading_once_it_is_due() {
        let g = guard(vec![GuardRule {
            deadband: Some(0.2),
            heartbeat: Some(Duration::from_secs(60)),
            ..GuardRule::for_topic("hsu/0001/temperature")
        }]);
        let mut m = GuardMemory::default();
        let t0 = Instant::now();
        let topic = "hsu/0001/temperature";
        assert_eq!(
            g.check(&mut m, topic, b"21.3", t0),
            Check::Send { value: 21.3 }
        );
        m.sent(topic, 21.3, t0);
        let at = |secs| t0 + Duration::from_secs(secs);
        assert!(matches!(
            g.check(&mut m, topic, b"21.3", at(59)),
            Check::Suppressed(_)
        ));
        assert_eq!(
            g.check(&mut m, topic, b"21.3", at(60)),
            Check::Send { value: 21.3 }
        );
        m.sent(topic, 21.3, at(60));
        // the heartbeat counts from the last send, whatever made it
        assert!(matches!(
            g.check(&mut m, topic, b"21.4", at(119)),
            Check::Suppressed(_)
        ));
        assert_eq!(
            g.check(&mut m, topic, b"21.4", at(120)),
            Check::Send { value: 21.4 }
        );
    }

    #[test]
    fn payloads_that_are_not_numbers_are_refused_on_guarded_topics_only() {
        let g = guard(vec![GuardRule::for_topic("line1/#")]);
        let mut m = GuardMemory::default();
        let now = Instant::now();
        for payload in [&b"warm"[..], b"", b"NaN", b"inf", b"1e400", b"21,5"] {
            let refused = refusal(g.check(&mut m, "line1/temp", payload, now));
            assert_eq!(refused.reason, Refusal::NotANumber, "{payload:?}");
        }
        let warm = refusal(g.check(&mut m, "line1/temp", b" warm \n", now));
        assert_eq!(
            warm.to_string(),
            r#"payload "warm" on line1/temp refused: not a number (rule for 'line1/#')"#
        );
        let binary = refusal(g.check(&mut m, "line1/temp", &[0xff, 0x00], now));
        assert_eq!(binary.reading, "of 2 bytes (not UTF-8)");
        let long = refusal(g.check(&mut m, "line1/temp", &[b'x'; 100], now));
        assert_eq!(long.reading, format!("{:?}...", "x".repeat(32)));
        for number in [&b"21.5"[..], b" +3 ", b"-0.25\r\n", b"1e3", b".5"] {
            assert!(
                matches!(
                    g.check(&mut m, "line1/temp", number, now),
                    Check::Send { .. }
                ),
                "{number:?}"
            );
        }
        assert_eq!(
            g.check(&mut m, "line2/temp", b"warm", now),
            Check::Unguarded
        );
    }

    #[test]
    fn the_first_matching_rule_applies() {
        let g = guard(vec![
            GuardRule {
                max: Some(10.0),
                ..GuardRule::for_topic("line1/pressure")
            },
            GuardRule {
                max: Some(100.0),
                ..GuardRule::for_topic("line1/#")
            },
        ]);
        let mut m = GuardMemory::default();
        let now = Instant::now();
        let refused = refusal(g.check(&mut m, "line1/pressure", b"50", now));
        assert_eq!(refused.rule, "line1/pressure");
        assert_eq!(
            g.check(&mut m, "line1/temp", b"50", now),
            Check::Send { value: 50.0 }
        );
        assert_eq!(
            g.rule_for("line1/temp").map(|r| r.topic.as_str()),
            Some("line1/#")
        );
        assert_eq!(g.rule_for("line2/temp"), None);
    }

    #[test]
    fn bad_rules_are_refused_naming_the_rule_and_the_field() {
        let bad = |rule: GuardRule| {
            Guard::new(vec![GuardRule::for_topic("ok/#"), rule])
                .expect_err("a bad rule")
                .to_string()
        };
        assert_eq!(
            bad(GuardRule {
                min: Some(70.0),
                max: Some(60.0),
                ..GuardRule::for_topic("a/b")
            }),
            r#"rule 2 ("a/b"): min 70 is above max 60"#
        );
        assert_eq!(
            bad(GuardRule {
                max_step: Some(-1.0),
                ..GuardRule::for_topic("a/b")
            }),
            r#"rule 2 ("a/b"): max_step -1 is negative"#
        );
        assert_eq!(
            bad(GuardRule {
                deadband: Some(-0.5),
                ..GuardRule::for_topic("a/b")
            }),
            r#"rule 2 ("a/b"): deadband -0.5 is negative"#
        );
        assert_eq!(
            bad(GuardRule {
                min: Some(f64::NAN),
                ..GuardRule::for_topic("a/b")
            }),
            r#"rule 2 ("a/b"): min must be a finite number, not NaN"#
        );
        assert_eq!(
            bad(GuardRule::for_topic("a/#/b")),
            r#"rule 2: topic "a/#/b" is not a valid MQTT topic filter: misplaced wildcard in topic filter"#
        );
        assert!(Guard::default().is_empty());
        assert!(
            Guard::new(vec![GuardRule {
                min: Some(1.0),
                max: Some(1.0),
                max_step: Some(0.0),
                deadband: Some(0.0),
                ..GuardRule::for_topic("a/+")
            }])
            .is_ok()
        );
    }
}
