//! The agent over a link that breaks: messages queued during an outage arrive once and in order,
//! and a subscriber that reconnects is subscribed again.

mod common;

use std::time::Duration;

use anchormq_agent::{AgentConfig, PublishOptions, Received};
use anchormq_localstack::{TcpCutProxy, await_condition};
use common::{Stack, WAIT, group, next};

fn through(stack: &Stack, label: &str, proxy: &TcpCutProxy) -> AgentConfig {
    stack.config_on(&format!("mqtt://127.0.0.1:{}", proxy.port()), label)
}

fn payload(item: Received) -> Vec<u8> {
    match item {
        Received::Message(m) => m.payload,
        Received::Unreadable(u) => panic!("expected a message, got {u}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_survive_outages_and_subscriptions_come_back() {
    let stack = Stack::start().await;
    let publisher_proxy = TcpCutProxy::start(stack.broker.addr())
        .await
        .expect("proxy");
    let subscriber_proxy = TcpCutProxy::start(stack.broker.addr())
        .await
        .expect("proxy");
    let a1111 = stack
        .agent_with(through(&stack, "1111", &publisher_proxy))
        .await;
    let a1112 = stack
        .agent_with(through(&stack, "1112", &subscriber_proxy))
        .await;
    let mut sub = a1112.subscribe(&["hsu/0001/#"]).await.expect("subscribe");
    let publisher = a1111
        .publisher("hsu/0001/seq", PublishOptions::default())
        .await
        .expect("publisher");
    assert_eq!(publisher.group(), group("hsu0001"));
    publisher.send(b"before").await.expect("send");
    assert_eq!(payload(next(&mut sub).await), b"before");

    // the publisher loses the broker; what it sends meanwhile is kept and delivered after
    publisher_proxy.pause().await;
    publisher_proxy.cut_all();
    let sending = tokio::spawn({
        let publisher = publisher.clone();
        async move {
            for i in 0..20 {
                publisher
                    .send(format!("during {i}").as_bytes())
                    .await
                    .expect("send during the outage");
            }
        }
    });
    publisher_proxy.resume().await.expect("resume");
    for i in 0..20 {
        assert_eq!(
            payload(next(&mut sub).await),
            format!("during {i}").as_bytes()
        );
    }
    tokio::time::timeout(WAIT, sending)
        .await
        .expect("sending finished")
        .expect("sending task");
    assert!(a1111.stats().connects >= 2);
    assert_eq!(a1111.stats().published, 21);

    // the subscriber's connection is cut: it reconnects and subscribes again
    let connects = a1112.stats().connects;
    subscriber_proxy.cut_all();
    await_condition(
        "the subscriber reconnects",
        WAIT,
        Duration::from_millis(20),
        || async { a1112.stats().connects > connects },
    )
    .await
    .expect("reconnected");
    // retained, so it arrives whether the resubscription is processed before or after it
    a1111
        .publish(
            "hsu/0001/state",
            b"after reconnect",
            PublishOptions {
                retain: true,
                ..PublishOptions::default()
            },
        )
        .await
        .expect("publish");
    assert_eq!(payload(next(&mut sub).await), b"after reconnect");
    assert_eq!(a1112.stats().unreadable, 0);
}

/// After an outage every QoS 1 message is delivered, but the link can keep one of them in its
/// outbox without a PUBACK (traced: the message re-sent with a new packet ID after the new session
/// is never acknowledged, while an unmapped packet ID is), so `flush` times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_completes_after_an_outage() {
    let stack = Stack::start().await;
    let proxy = TcpCutProxy::start(stack.broker.addr())
        .await
        .expect("proxy");
    let a1111 = stack.agent_with(through(&stack, "1111", &proxy)).await;
    let a1112 = stack.agent("1112").await;
    let mut sub = a1112.subscribe(&["hsu/0001/#"]).await.expect("subscribe");
    let publisher = a1111
        .publisher("hsu/0001/seq", PublishOptions::default())
        .await
        .expect("publisher");
    publisher.send(b"before").await.expect("send");
    assert_eq!(payload(next(&mut sub).await), b"before");
    proxy.pause().await;
    proxy.cut_all();
    let sending = tokio::spawn({
        let publisher = publisher.clone();
        async move {
            for i in 0..20 {
                publisher
                    .send(format!("during {i}").as_bytes())
                    .await
                    .expect("send during the outage");
            }
        }
    });
    proxy.resume().await.expect("resume");
    for i in 0..20 {
        assert_eq!(
            payload(next(&mut sub).await),
            format!("during {i}").as_bytes()
        );
    }
    tokio::time::timeout(WAIT, sending)
        .await
        .expect("sending finished")
        .expect("sending task");
    a1111.flush().await.expect("every message acknowledged");
}
