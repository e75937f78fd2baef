//! Several senders streaming to one reader at once: the reader opens their streams in lanes
//! (signatures checked side by side) and still delivers every message once, each sender's in
//! order.

mod common;

use std::collections::HashMap;

use anchormq_agent::{PublishOptions, Received};
use common::{Stack, group, next, node};

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
