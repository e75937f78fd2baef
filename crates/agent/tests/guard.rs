//! The edge guard on real parts (Anvil, the bridge, an embedded broker): a publisher with a guard,
//! a member that reads, and a plain MQTT client that sees what reaches the broker. Only readings
//! the guard lets pass are sealed and published; suppressed and refused ones never leave the node.

mod common;

use std::collections::BTreeMap;

use anchormq_agent::{
    AgentError, Guard, GuardRule, Outcome, PublishOptions, Received, Refusal, Refused,
};
use anchormq_core::Envelope;
use common::{RawClient, Stack, next};

const TEMPERATURE: &str = "hsu/0001/temperature";

/// What the guard should do with a reading.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Sent,
    Suppressed,
    Refused(fn(&Refusal) -> bool),
}

fn refused(outcome: Result<Outcome, AgentError>) -> Refused {
    match outcome {
        Err(AgentError::Refused(refused)) => refused,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_readings_the_guard_passes_reach_the_broker() {
    let stack = Stack::start().await;
    let mut config = stack.config("1111", stack.fixture_key("1111"));
    config.guard = Guard::new(vec![GuardRule {
        min: Some(-20.0),
        max: Some(60.0),
        max_step: Some(5.0),
        deadband: Some(0.25),
        ..GuardRule::for_topic("hsu/+/temperature")
    }])
    .expect("valid rules");
    let a1111 = stack.agent_with(config).await;
    let a1112 = stack.agent("1112").await;
    let mut sub = a1112.subscribe(&["hsu/0001/#"]).await.expect("subscribe");
    let mut raw = RawClient::subscribed(stack.raw_options("broker-view"), "hsu/0001/#").await;

    let publisher = a1111
        .publisher(TEMPERATURE, PublishOptions::default())
        .await
        .expect("publisher");
    let readings: [(&str, Expect); 8] = [
        ("21.0", Expect::Sent),
        // 0.125 from the last sent: within the deadband
        ("21.125", Expect::Suppressed),
        (
            "85.0",
            Expect::Refused(|r| matches!(r, Refusal::AboveMax { .. })),
        ),
        // 0.5 from the last sent, a step of 0.375 from the previous accepted (suppressed) one
        ("21.5", Expect::Sent),
        ("warm", Expect::Refused(|r| *r == Refusal::NotANumber)),
        // a step of 5.5
        (
            "27.0",
            Expect::Refused(|r| matches!(r, Refusal::StepTooLarge { .. })),
        ),
        ("21.625", Expect::Suppressed),
        ("23.0", Expect::Sent),
    ];
    let mut sent = Vec::new();
    for (reading, expect) in readings {
        let outcome = publisher.send(reading.as_bytes()).await;
        match (expect, outcome) {
            (Expect::Sent, Ok(Outcome::Sent(published))) => sent.push((TEMPERATURE, published.seq)),
            (Expect::Suppressed, Ok(Outcome::Suppressed(suppressed))) => {
                assert_eq!(suppressed.deadband, 0.25);
                assert_eq!(suppressed.rule, "hsu/+/temperature");
            }
            (Expect::Refused(reason), Err(AgentError::Refused(refused))) => {
                assert!(reason(&refused.reason), "{reading}: {refused}");
                assert_eq!(refused.topic, TEMPERATURE);
            }
            (expect, outcome) => panic!("{reading}: expected {expect:?}, got {outcome:?}"),
        }
    }
    // a topic no rule guards passes untouched, numbers or not
    let door = a1111
        .publish("hsu/0001/door", b"open", PublishOptions::default())
        .await
        .expect("unguarded publish")
        .published()
        .expect("not suppressed");
    sent.push(("hsu/0001/door", door.seq));

    // the member reads exactly the readings that passed, in order, each topic on its own
    let mut read: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for _ in 0..sent.len() {
        match next(&mut sub).await {
            Received::Message(m) => read
                .entry(m.topic)
                .or_default()
                .push(String::from_utf8(m.payload).expect("utf-8")),
            Received::Unreadable(u) => panic!("unexpected: {u}"),
        }
    }
    assert_eq!(read[TEMPERATURE], ["21.0", "21.5", "23.0"]);
    assert_eq!(read["hsu/0001/door"], ["open"]);
    // the broker saw those four envelopes and no others: the sealer's sequence numbers have no
    // gaps, so nothing refused or suppressed was ever sealed
    let mut seen = Vec::new();
    for _ in 0..sent.len() {
        let (topic, envelope) = raw.next().await;
        let envelope = Envelope::decode(&envelope).expect("an envelope");
        seen.push((topic, envelope.seq));
    }
    seen.sort_by_key(|(_, seq)| *seq);
    let sent: Vec<(String, u64)> = sent.iter().map(|(t, s)| ((*t).to_owned(), *s)).collect();
    assert_eq!(seen, sent);
    let first = sent[0].1;
    assert_eq!(
        sent.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
        (first..first + 4).collect::<Vec<_>>()
    );

    // the error names the reading, the topic, the check and the rule
    let refusal = refused(
        a1111
            .publish(TEMPERATURE, b"85.0", PublishOptions::default())
            .await,
    );
    assert_eq!(
        refusal.to_string(),
        "reading 85.0 on hsu/0001/temperature refused: above max 60 (rule for 'hsu/+/temperature')"
    );

    // publish_many skips what is suppressed and stops at the first refusal
    let error = a1111
        .publish_many(
            TEMPERATURE,
            ["23.125", "24.0", "99", "24.5"],
            PublishOptions::default(),
        )
        .await
        .expect_err("99 is refused");
    assert!(
        matches!(&error, AgentError::Refused(r) if r.reading == "99"),
        "{error:?}"
    );
    a1111
        .publish(TEMPERATURE, b"25.0", PublishOptions::default())
        .await
        .expect("publish");
    for expected in ["24.0", "25.0"] {
        match next(&mut sub).await {
            Received::Message(m) => {
                assert_eq!(
                    (m.topic.as_str(), &m.payload[..]),
                    (TEMPERATURE, expected.as_bytes())
                );
            }
            Received::Unreadable(u) => panic!("unexpected: {u}"),
        }
    }

    let stats = a1111.stats();
    assert_eq!(
        (stats.published, stats.suppressed, stats.refused),
        (6, 3, 5)
    );
    assert_eq!(a1112.stats().unreadable, 0);
}
