//! Onboarding a fleet on Anvil: device keys and proofs of possession, `registerNodes` batches, then
//! `addMembers` batches into one group. Prints transactions, gas and wall time as a Markdown table.
//!
//! Run: `cargo bench -p anchormq-chain --bench onboard` (10,000 devices; `ONBOARD_NODES=N` for
//! another size). CI runs the same code at 300 devices (`a_fleet_is_onboarded_in_batched_transactions`).

use anchormq_core::GroupId;
use anchormq_localstack::RegistryStack;

#[tokio::main]
async fn main() {
    let nodes: usize = std::env::var("ONBOARD_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let (register_batch, add_batch) = (100, 200);
    let stack = RegistryStack::start().await.expect("stack");
    let group = GroupId::from_label("fleet").expect("label");
    let done = stack
        .onboard(group, nodes, register_batch, add_batch)
        .await
        .expect("onboard");
    let seconds = |d: std::time::Duration| format!("{:.1} s", d.as_secs_f64());
    println!("| step | transactions | gas | gas a device | wall time |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!(
        "| keys and proofs of possession ({nodes}) | – | – | – | {} |",
        seconds(done.prove_time)
    );
    println!(
        "| registerNodes, {register_batch} a transaction | {} | {} | {} | {} |",
        done.register_txs,
        done.register_gas,
        done.register_gas / nodes as u64,
        seconds(done.register_time)
    );
    println!(
        "| addMembers, {add_batch} a transaction | {} | {} | {} | {} |",
        done.add_txs,
        done.add_gas,
        done.add_gas / nodes as u64,
        seconds(done.add_time)
    );
}
