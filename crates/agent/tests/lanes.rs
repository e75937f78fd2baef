//! Several senders streaming to one reader at once: the reader opens their streams in lanes
//! (signatures checked side by side) and still delivers every message once, each sender's in
//! order.

mod common;

use std::collections::HashMap;

use anchormq_agent::{PublishOptions, Received};
use anchormq_core::OpenError;
use common::{RawClient, Stack, group, next, node};

const PER_SENDER: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_senders_at_once_arrive_whole_and_in_order() {
    let stack = Stack::start().await;
    let hsu0001 = group("hsu0001");
    stack
        .admin
        .add_members(hsu0001, &[node("1113")])
        .await
        .expect("1113 joins");
    let epoch = stack.admin.group(hsu0001).await.expect("group").epoch;

    let mut config = stack.config("1112", stack.fixture_key("1112"));
    config.open_lanes = 2;
    config.subscription_buffer = 2 * PER_SENDER;
    let reader = stack.agent_with(config).await;
    let senders = [stack.agent("1111").await, stack.agent("1113").await];
    for agent in senders.iter().chain([&reader]) {
        agent.wait_for_epoch(hsu0001, epoch).await.expect("epoch");
    }
    let mut sub = reader.subscribe(&["hsu/0001/#"]).await.expect("subscribe");

    let mut sending = Vec::new();
    for (agent, topic) in senders.iter().zip(["hsu/0001/a", "hsu/0001/b"]) {
        // each message signed alone: the reader's costliest case
        let publisher = agent
            .publisher(topic, PublishOptions::default())
            .await
            .expect("publisher");
        sending.push(tokio::spawn(async move {
            for n in 0..PER_SENDER {
                publisher
                    .send(n.to_string().as_bytes())
                    .await
                    .expect("send");
            }
        }));
    }
    for task in sending {
        task.await.expect("sender");
    }

    let mut seen: HashMap<String, Vec<usize>> = HashMap::new();
    for _ in 0..2 * PER_SENDER {
        match next(&mut sub).await {
            Received::Message(m) => {
                assert_eq!(m.missing, None, "nothing skipped");
                let n = String::from_utf8(m.payload)
                    .expect("utf-8")
                    .parse()
                    .expect("n");
                seen.entry(m.sender.to_string()).or_default().push(n);
            }
            Received::Unreadable(u) => panic!("unreadable: {u}"),
        }
    }
    let in_order: Vec<usize> = (0..PER_SENDER).collect();
    for sender in ["1111", "1113"] {
        assert_eq!(
            seen.get(&node(sender).to_string()),
            Some(&in_order),
            "{sender}'s messages once and in order"
        );
    }
    let stats = reader.stats();
    assert_eq!(stats.opened, 2 * PER_SENDER as u64);
    assert!(
        stats.laned > 0,
        "with two streams queuing, some messages were opened in lanes: {stats:?}"
    );
}

/// Anyone may publish under the group's topics: a flood of well-formed envelopes of streams
/// nobody announced (each held, then given up) must not stall the reader or its lanes, and a
/// genuine message sent after it still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unannounced_envelopes_stalls_nothing() {
    const FLOOD: usize = 3_000;
    let stack = Stack::start().await;
    let mut config = stack.config("1112", stack.fixture_key("1112"));
    config.open_lanes = 2;
    config.hold_max_messages = 64;
    let reader = stack.agent_with(config).await;
    let writer = stack.agent("1111").await;
    let mut sub = reader.subscribe(&["hsu/0001/#"]).await.expect("subscribe");
    let raw = RawClient::subscribed(stack.raw_options("flood"), "flood/none").await;
    for n in 0..FLOOD {
        // kind 2 (signed), a stream tag nobody announced, sequence, tag and signature bytes
        let mut envelope = vec![2u8];
        envelope.extend_from_slice(&(n as u64).to_be_bytes());
        envelope.extend_from_slice(&[0x5a; 8 + 16 + 64]);
        raw.publish("hsu/0001/flood", envelope).await;
    }
    writer
        .publish("hsu/0001/genuine", b"still here", PublishOptions::default())
        .await
        .expect("publish");
    let mut refused = 0;
    loop {
        match next(&mut sub).await {
            Received::Message(m) => {
                assert_eq!(m.payload, b"still here");
                break;
            }
            Received::Unreadable(u) => {
                // held for a note that never comes, then given up to make room
                assert!(
                    matches!(u.reason, OpenError::UnknownStream { .. }),
                    "{}",
                    u.reason
                );
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "the flood was held and given up, not opened");
}
