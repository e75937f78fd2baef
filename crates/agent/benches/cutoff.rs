//! Removal cut-off with real agents: from sending `removeMember` to the moment every
//! remaining sender of the group seals at the new epoch (so the removed member can read nothing
//! sent after).
//!
//! Stack: Anvil with the paper fixture, the bridge in-process (WebSocket), the embedded broker, one
//! agent per node. hsu0001 = {1111, 1112, 1113, 1114}; 1112, 1113 and 1114 each publish every 2 ms;
//! 1111 reads everything and times, for each remaining sender, the first message at the new epoch;
//! 1113 reads too, and counts what it opens at an epoch it is not a member of. Each round removes
//! 1113, then adds it back and waits until every sender seals for it again.
//!
//! Run: `cargo bench -p anchormq-agent --bench cutoff` (`CUTOFF_ROUNDS=N`, default 20).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anchormq_agent::{PublishOptions, Received, Subscription};
use anchormq_core::NodeId;
use common::{Stack, group, node};

const SENDERS: [&str; 3] = ["1112", "1113", "1114"];
const EVERY: Duration = Duration::from_millis(2);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::var("CUTOFF_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let stack = Stack::start().await;
    let hsu = group("hsu0001");
    for label in ["1113", "1114"] {
        stack
            .admin
            .add_member(hsu, node(label))
            .await
            .expect("add to hsu0001");
    }
    let epoch = stack.admin.group(hsu).await.expect("group").epoch;
    let reader = stack.agent("1111").await;
    reader.wait_for_epoch(hsu, epoch).await.expect("epoch");
    let mut all = reader.subscribe(&["hsu/0001/#"]).await.expect("subscribe");

    // the removed member keeps reading; a subscription must be drained or its agent stalls
    let victim = stack.agent("1113").await;
    let mut victim_sub = victim.subscribe(&["hsu/0001/#"]).await.expect("subscribe");
    let not_member_since = Arc::new(AtomicU64::new(u64::MAX));
    let leaked = Arc::new(AtomicUsize::new(0));
    {
        let (since, leaked) = (not_member_since.clone(), leaked.clone());
        tokio::spawn(async move {
            while let Some(item) = victim_sub.recv().await {
                if let Received::Message(m) = item
                    && m.epoch >= since.load(Ordering::Relaxed)
                    && leaked.fetch_add(1, Ordering::Relaxed) < 5
                {
                    eprintln!(
                        "opened after removal: sender {} epoch {} seq {}",
                        m.sender, m.epoch, m.seq
                    );
                }
            }
        });
    }

    let running = Arc::new(AtomicBool::new(true));
    let mut senders = Vec::new();
    for label in SENDERS {
        let agent = stack.agent(label).await;
        agent.wait_for_epoch(hsu, epoch).await.expect("epoch");
        let running = running.clone();
        senders.push(tokio::spawn(async move {
            let topic = format!("hsu/0001/s{label}");
            let mut n = 0u64;
            while running.load(Ordering::Relaxed) {
                n += 1;
                // the removed sender is refused for a while (not a member): it keeps trying
                let _ = agent
                    .publish(&topic, &n.to_be_bytes(), PublishOptions::default())
                    .await;
                tokio::time::sleep(EVERY).await;
            }
        }));
    }

    let mut cutoffs = Vec::new();
    let mut receipts = Vec::new();
    let mut current = epoch;
    for _ in 0..rounds {
        // The clock starts before the transaction is sent: the bridge (on newHeads) can publish the
        // new group note before the admin client has polled the receipt, so "receipt" would flatter.
        let new_epoch = current + 1;
        not_member_since.store(new_epoch, Ordering::Relaxed);
        let sent = Instant::now();
        let removed = stack
            .admin
            .remove_member(hsu, node("1113"))
            .await
            .expect("remove");
        receipts.push(sent.elapsed());
        assert_eq!(epoch_of(&removed), Some(new_epoch));
        let firsts = first_at_epoch(&mut all, &[node("1112"), node("1114")], new_epoch).await;
        cutoffs.extend(firsts.values().map(|at| at.duration_since(sent)));
        not_member_since.store(u64::MAX, Ordering::Relaxed);
        let added = stack
            .admin
            .add_member(hsu, node("1113"))
            .await
            .expect("add back");
        current = epoch_of(&added).expect("MemberAdded");
        first_at_epoch(&mut all, &SENDERS.map(node), current).await;
    }
    running.store(false, Ordering::Relaxed);
    for s in senders {
        let _ = s.await;
    }
    let ms = |mut v: Vec<Duration>, q: f64| {
        v.sort();
        v[((v.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3
    };
    println!(
        "removal cut-off (removeMember sent -> each remaining sender's first message at the new \
         epoch, as a member receives it), 2 senders x {rounds} removals: p50 {:.1} ms, p99 {:.1} ms, \
         max {:.1} ms; the admin client's receipt took p50 {:.1} ms; messages the removed member \
         opened at an epoch without it: {}",
        ms(cutoffs.clone(), 0.5),
        ms(cutoffs.clone(), 0.99),
        ms(cutoffs, 1.0),
        ms(receipts, 0.5),
        leaked.load(Ordering::Relaxed)
    );
    let _ = (reader, victim);
}

fn epoch_of(outcome: &anchormq_chain::TxOutcome) -> Option<u64> {
    outcome.events.iter().find_map(|e| match e.event {
        anchormq_chain::RegistryEvent::MemberAdded { epoch, .. }
        | anchormq_chain::RegistryEvent::MemberRemoved { epoch, .. } => Some(epoch),
        _ => None,
    })
}

/// When the first message of each of `senders` at `epoch` or later arrived.
async fn first_at_epoch(
    sub: &mut Subscription,
    senders: &[NodeId],
    epoch: u64,
) -> HashMap<NodeId, Instant> {
    let mut firsts = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while firsts.len() < senders.len() {
        assert!(
            Instant::now() < deadline,
            "senders did not reach epoch {epoch} within 30 s"
        );
        if let Ok(Some(Received::Message(m))) =
            tokio::time::timeout(Duration::from_secs(1), sub.recv()).await
            && m.epoch >= epoch
            && senders.contains(&m.sender)
        {
            firsts.entry(m.sender).or_insert_with(Instant::now);
        }
    }
    firsts
}
