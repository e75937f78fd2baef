//! `anchormq demo`: the paper's experiment (four nodes, two groups) on a real local chain, broker and
//! bridge, plus what the paper did not show: removal, replay and tampering. Every outcome is checked;
//! the exit code says whether all held.

use std::time::{Duration, Instant};

use anchormq_agent::{Agent, AgentConfig, PublishOptions, QoS, Received, Subscription};
use anchormq_chain::{RegistryClient, RegistryEvent, TxOutcome};
use anchormq_core::{GroupId, NodeId};
use anchormq_mqtt::{Link, LinkEvent, Message};
use clap::Args;
use eyre::{WrapErr, eyre};
use tokio::sync::mpsc;

use crate::ChecksFailed;
use crate::commands::audit::history;
use crate::commands::stack::{LocalStack, StackOptions};
use crate::context::Context;
use crate::output::{hex_preview, print_table};

/// How long any one expected thing may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// `demo`.
#[derive(Debug, Args)]
pub struct DemoCommand {}

impl DemoCommand {
    /// Runs the four steps; fails with exit code 3 when an outcome was not the expected one.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        let started = Instant::now();
        let external = match &context.globals().broker {
            Some(_) => Some(context.broker_config("anchormq-demo")?),
            None => None,
        };
        let stack = LocalStack::start(StackOptions {
            paper: true,
            broker: external,
            ..StackOptions::default()
        })
        .await?;
        let result = run(&stack).await;
        let stopped = stack.stop().await;
        let checks = result?;
        stopped?;
        let failed = checks.failed();
        println!();
        if failed == 0 {
            println!(
                "all {} checks passed in {:.1} s",
                checks.total,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        } else {
            Err(ChecksFailed(format!(
                "{failed} of {} checks failed (see [FAIL] lines above)",
                checks.total
            ))
            .into())
        }
    }
}

#[derive(Debug, Default)]
struct Checks {
    total: usize,
    passed: usize,
}

impl Checks {
    fn check(&mut self, ok: bool, what: impl AsRef<str>) -> bool {
        self.total += 1;
        if ok {
            self.passed += 1;
        }
        println!("  [{}] {}", if ok { "ok" } else { "FAIL" }, what.as_ref());
        ok
    }

    fn failed(&self) -> usize {
        self.total - self.passed
    }
}

struct Node {
    id: NodeId,
    agent: Agent,
    sub: Subscription,
}

/// A plain MQTT client on the application topics: sees what the broker (or anyone on it) sees.
struct Eavesdropper {
    link: Link,
    events: mpsc::Receiver<LinkEvent>,
}

impl Eavesdropper {
    async fn next_on(&mut self, topic: &str) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(LinkEvent::Message(m))) if m.topic == topic => return Some(m),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

async fn next_on(sub: &mut Subscription, topic: &str) -> Option<Received> {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, sub.recv()).await {
            Ok(Some(item)) => {
                let on = match &item {
                    Received::Message(m) => &m.topic,
                    Received::Unreadable(u) => &u.topic,
                };
                if on == topic {
                    return Some(item);
                }
            }
            Ok(None) | Err(_) => return None,
        }
    }
}

fn label(id: &str) -> eyre::Result<GroupId> {
    GroupId::from_label(id).map_err(|e| eyre!("group ID {id}: {e}"))
}

async fn reads(checks: &mut Checks, node: &mut Node, topic: &str, expected: &[u8]) {
    match next_on(&mut node.sub, topic).await {
        Some(Received::Message(m)) => {
            checks.check(
                m.payload == expected,
                format!(
                    "{} reads {:?} (from {}, {} epoch {})",
                    node.id,
                    String::from_utf8_lossy(&m.payload),
                    m.sender,
                    m.group,
                    m.epoch
                ),
            );
        }
        Some(Received::Unreadable(u)) => {
            checks.check(
                false,
                format!("{} should read it but cannot: {}", node.id, u.reason),
            );
        }
        None => {
            checks.check(
                false,
                format!(
                    "{} received nothing on {topic} within {STEP_TIMEOUT:?}",
                    node.id
                ),
            );
        }
    }
}

async fn cannot_read(checks: &mut Checks, node: &mut Node, topic: &str) {
    match next_on(&mut node.sub, topic).await {
        Some(Received::Unreadable(u)) => {
            checks.check(true, format!("{} cannot read it: {}", node.id, u.reason));
        }
        Some(Received::Message(m)) => {
            checks.check(
                false,
                format!(
                    "{} read {:?} but must not",
                    node.id,
                    String::from_utf8_lossy(&m.payload)
                ),
            );
        }
        None => {
            checks.check(
                false,
                format!(
                    "{} got nothing on {topic} within {STEP_TIMEOUT:?} (expected an unreadable message)",
                    node.id
                ),
            );
        }
    }
}

async fn publish(node: &Node, topic: &str, payload: &[u8]) -> eyre::Result<()> {
    let published = node
        .agent
        .publish(topic, payload, PublishOptions::default())
        .await
        .wrap_err_with(|| format!("{} publishing on {topic}", node.id))?
        .published()
        .ok_or_else(|| eyre!("{} publishing on {topic}: suppressed by a guard", node.id))?;
    node.agent.flush().await?;
    println!(
        "  {} -> {topic}: {:?} (sealed for {} epoch {}, seq {})",
        node.id,
        String::from_utf8_lossy(payload),
        published.group,
        published.epoch,
        published.seq
    );
    Ok(())
}

fn tx_line(what: &str, outcome: &TxOutcome) {
    let epoch = outcome.events.iter().find_map(|e| match e.event {
        RegistryEvent::MemberAdded { epoch, .. } | RegistryEvent::MemberRemoved { epoch, .. } => {
            Some(epoch)
        }
        _ => None,
    });
    println!(
        "  chain: {what}: tx {} in block {}{}",
        outcome.tx_hash,
        outcome.block_number,
        epoch.map_or_else(String::new, |e| format!(", group epoch now {e}"))
    );
}

async fn membership(
    client: &RegistryClient,
    add: bool,
    group: GroupId,
    node: NodeId,
) -> eyre::Result<TxOutcome> {
    let outcome = if add {
        client.add_member(group, node).await
    } else {
        client.remove_member(group, node).await
    };
    outcome.wrap_err_with(|| format!("changing the members of {group}"))
}

async fn run(stack: &LocalStack) -> eyre::Result<Checks> {
    let mut checks = Checks::default();
    println!("anchormq demo: the paper's four nodes and two groups, end to end");
    println!(
        "  chain:    {} (Anvil, chain {}, paper fixture)",
        stack.anvil.http_url(),
        stack.deployment.chain_id
    );
    println!("  registry: {}", stack.deployment.address);
    println!(
        "  broker:   {} ({})",
        stack.broker.display_url(),
        if stack.embedded_broker {
            "embedded"
        } else {
            "external"
        }
    );
    println!(
        "  bridge:   in-process, key {}",
        stack.bridge_key.public_key()
    );
    let hsu1 = label("hsu0001")?;
    let hsu2 = label("hsu0002")?;
    let shutdown = stack.shutdown.child_token();
    let mut nodes = Vec::new();
    for id in ["1111", "1112", "1113", "1114"] {
        let (node, key) = stack.fixture_node(id)?;
        let mut config = AgentConfig::new(
            stack.broker_for(&format!("demo-{id}-{}", std::process::id())),
            stack.registry(),
            stack.bridge_key.public_key(),
            node,
            key,
        );
        config.wait_timeout = STEP_TIMEOUT;
        config.hold_timeout = Duration::from_secs(2);
        let agent = Agent::start(config, shutdown.clone())
            .await
            .wrap_err_with(|| format!("starting the agent of node {id}"))?;
        let sub = agent
            .subscribe(&["hsu/#"])
            .await
            .wrap_err_with(|| format!("node {id} subscribing"))?;
        nodes.push(Node {
            id: node,
            agent,
            sub,
        });
    }
    for node in &nodes {
        for group in [hsu1, hsu2] {
            node.agent
                .wait_for_group(group)
                .await
                .wrap_err("waiting for the bridge's notes")?;
        }
    }
    let (link, mut events) = Link::start(
        &stack.broker_for(&format!("demo-eavesdropper-{}", std::process::id())),
        shutdown.clone(),
    )?;
    link.subscribe("hsu/#", QoS::AtLeastOnce).await?;
    let acked = tokio::time::timeout(STEP_TIMEOUT, async {
        while let Some(event) = events.recv().await {
            if event == LinkEvent::Subscribed {
                return true;
            }
        }
        false
    })
    .await;
    if !matches!(acked, Ok(true)) {
        return Err(eyre!("the eavesdropper could not subscribe"));
    }
    let mut spy = Eavesdropper { link, events };
    let [n1111, n1112, n1113, n1114] = &mut nodes[..] else {
        return Err(eyre!("four nodes expected"));
    };

    println!();
    println!("Step 1: 1111 publishes to hsu0001 (members 1111, 1112); 1112 and 1113 listen");
    let topic = "hsu/0001/temperature";
    let text = b"step 1: line 1 temperature 21.5 C";
    publish(n1111, topic, text).await?;
    reads(&mut checks, n1112, topic, text).await;
    cannot_read(&mut checks, n1113, topic).await;
    match spy.next_on(topic).await {
        Some(m) => {
            let leaks = m.payload.windows(text.len()).any(|w| w == text);
            checks.check(
                !leaks,
                format!(
                    "eavesdropper sees only ciphertext: {}",
                    hex_preview(&m.payload, 24)
                ),
            );
        }
        None => {
            checks.check(false, "eavesdropper saw nothing");
        }
    }

    println!();
    println!("Step 2: the admin adds 1113 to hsu0001 on chain; 1111 publishes again");
    let client = stack.operator_client().await?;
    let outcome = membership(&client, true, hsu1, n1113.id).await?;
    tx_line("addMember(hsu0001, 1113)", &outcome);
    for node in [&*n1111, &*n1113] {
        node.agent.wait_for_epoch(hsu1, 3).await?;
    }
    let text = b"step 2: line 1 temperature 21.7 C";
    publish(n1111, topic, text).await?;
    reads(&mut checks, n1113, topic, text).await;
    reads(&mut checks, n1112, topic, text).await;
    // The eavesdropper's copy of this one is not needed; step 4's is.
    let _ = spy.next_on(topic).await;

    println!();
    println!("Step 3: 1114 publishes to hsu0002 (members 1113, 1114)");
    let topic3 = "hsu/0002/pressure";
    let text = b"step 3: line 2 pressure 1.2 bar";
    publish(n1114, topic3, text).await?;
    reads(&mut checks, n1113, topic3, text).await;
    cannot_read(&mut checks, n1111, topic3).await;
    cannot_read(&mut checks, n1112, topic3).await;

    println!();
    println!("Step 4 (beyond the paper): 1112 is removed from hsu0001; replay and tampering");
    let outcome = membership(&client, false, hsu1, n1112.id).await?;
    tx_line("removeMember(hsu0001, 1112)", &outcome);
    for node in [&*n1111, &*n1112, &*n1113] {
        node.agent.wait_for_epoch(hsu1, 4).await?;
    }
    let text = b"step 4: line 1 temperature 22.0 C";
    publish(n1111, topic, text).await?;
    reads(&mut checks, n1113, topic, text).await;
    cannot_read(&mut checks, n1112, topic).await;
    let captured = spy.next_on(topic).await.map(|m| m.payload);
    let Some(captured) = captured else {
        checks.check(false, "eavesdropper captured no step 4 message");
        return Ok(checks);
    };
    let duplicates_before = n1113.agent.stats().duplicates;
    spy.link
        .publish_confirmed(topic, captured.clone(), false)
        .await?;
    println!("  eavesdropper replays the captured step 4 ciphertext");
    let replay_rejected = replay_outcome(n1113, topic, duplicates_before).await;
    checks.check(
        replay_rejected.is_ok(),
        match &replay_rejected {
            Ok(how) => format!("1113 rejects the replay ({how})"),
            Err(how) => format!("1113 accepted the replay: {how}"),
        },
    );
    let mut tampered = captured.to_vec();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x01;
    spy.link.publish_confirmed(topic, tampered, false).await?;
    println!("  eavesdropper publishes the ciphertext with one bit flipped");
    cannot_read(&mut checks, n1113, topic).await;

    println!();
    println!("Audit: the registry's history, read from the chain's logs");
    let entries = history(&client, None, None, |_| true).await?;
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.block.to_string(),
                e.time.clone(),
                format!("{}…", &e.tx[..10]),
                e.event.clone(),
                e.details.clone(),
            ]
        })
        .collect();
    print_table(&["BLOCK", "TIME", "TX", "EVENT", "DETAILS"], &rows);
    let added = entries.iter().any(|e| {
        e.event == "MemberAdded"
            && e.node.as_deref() == Some("1113")
            && e.group.as_deref() == Some("hsu0001")
    });
    let removed = entries.iter().any(|e| {
        e.event == "MemberRemoved"
            && e.node.as_deref() == Some("1112")
            && e.group.as_deref() == Some("hsu0001")
    });
    checks.check(
        added && removed,
        "the audit shows 1113 added to and 1112 removed from hsu0001",
    );
    for node in &nodes {
        node.agent.shutdown();
    }
    Ok(checks)
}

/// Waits for the replayed copy to be dropped as a duplicate or reported as a replay.
async fn replay_outcome(
    node: &mut Node,
    topic: &str,
    duplicates_before: u64,
) -> Result<String, String> {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        if node.agent.stats().duplicates > duplicates_before {
            return Ok("dropped as an already-seen sequence number".into());
        }
        let wait = tokio::time::Instant::now() + Duration::from_millis(50);
        match tokio::time::timeout_at(wait.min(deadline), node.sub.recv()).await {
            Ok(Some(Received::Unreadable(u))) if u.topic == topic => {
                return Ok(u.reason.to_string());
            }
            Ok(Some(Received::Message(m))) if m.topic == topic => {
                return Err(format!(
                    "delivered {:?} again",
                    String::from_utf8_lossy(&m.payload)
                ));
            }
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => return Err("the agent stopped".into()),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "neither dropped nor reported within {STEP_TIMEOUT:?}"
            ));
        }
    }
}
