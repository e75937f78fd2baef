//! Bounded waits end in errors that say what was missing.

mod common;

use std::time::Duration;

use anchormq_agent::{AgentError, PublishOptions};
use anchormq_core::NodeSecretKey;
use common::{Stack, group, node};
use rand_core::OsRng;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_end_in_errors_naming_what_is_missing() {
    let stack = Stack::start().await;

    // notes signed by another key are refused: the group note never "arrives"
    let mut config = stack.config("1111", stack.fixture_key("1111"));
    config.bridge_key = NodeSecretKey::generate(&mut OsRng).public_key();
    config.wait_timeout = Duration::from_millis(1500);
    let untrusting = stack.agent_with(config).await;
    let error = untrusting
        .publish(
            "hsu/0001/x",
            b"x",
            PublishOptions {
                group: Some(group("hsu0001")),
                ..PublishOptions::default()
            },
        )
        .await
        .expect_err("no trusted group note");
    assert!(matches!(error, AgentError::NoGroupNote { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.starts_with("no group note for hsu0001 after 1.5s: is the bridge running"),
        "{text}"
    );
    assert!(text.contains(&stack.broker.url()), "{text}");
    assert!(untrusting.stats().notes_refused > 0);

    let mut config = stack.config("1111", stack.fixture_key("1111"));
    config.wait_timeout = Duration::from_millis(1500);
    let agent = stack.agent_with(config).await;
    assert_eq!(
        agent.wait_for_group(group("hsu0002")).await.expect("note"),
        2
    );
    // a topic no group claims, after the notes are in
    let error = agent
        .publish("plant/7/temp", b"x", PublishOptions::default())
        .await
        .expect_err("no group");
    let text = error.to_string();
    assert!(
        matches!(error, AgentError::NoGroupForTopic { .. }),
        "{error:?}"
    );
    assert!(text.contains(r#"hsu0001 "hsu/0001/#""#), "{text}");
    assert!(text.contains(r#"hsu0002 "hsu/0002/#""#), "{text}");
    // a group this node is not in
    let error = agent
        .publish("hsu/0002/x", b"x", PublishOptions::default())
        .await
        .expect_err("not a member");
    assert!(
        matches!(error, AgentError::NotMember { node: n, epoch: 2, .. } if n == node("1111")),
        "{error:?}"
    );
    // the topic must be inside the named group's filter
    let error = agent
        .publish(
            "hsu/0002/x",
            b"x",
            PublishOptions {
                group: Some(group("hsu0001")),
                ..PublishOptions::default()
            },
        )
        .await
        .expect_err("outside the filter");
    assert!(
        error.to_string().contains("outside hsu0001's topic filter"),
        "{error}"
    );
    // bad topics and the note prefix
    let error = agent
        .publish("hsu/+/x", b"x", PublishOptions::default())
        .await
        .expect_err("wildcard");
    assert!(
        matches!(error, AgentError::InvalidTopic { .. }),
        "{error:?}"
    );
    let reserved = agent.topics().events();
    let error = agent
        .publish(&reserved, b"x", PublishOptions::default())
        .await
        .expect_err("reserved");
    assert!(
        matches!(error, AgentError::ReservedTopic { .. }),
        "{error:?}"
    );
    let error = agent.subscribe(&["a/#/b"]).await.expect_err("bad filter");
    assert!(
        matches!(error, AgentError::InvalidTopic { .. }),
        "{error:?}"
    );

    // a key that is not the node's on-chain key
    let mut config = stack.config("1111", NodeSecretKey::generate(&mut OsRng));
    config.wait_timeout = Duration::from_millis(1500);
    let impostor = stack.agent_with(config).await;
    let error = impostor
        .publish("hsu/0001/x", b"x", PublishOptions::default())
        .await
        .expect_err("wrong key");
    assert!(
        matches!(error, AgentError::WrongNodeKey { key_version: 1, .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("use the node's current key file")
    );
}
