//! Runs `examples/full_flow.rs` as a test, so the documented flow cannot rot.

#[path = "../examples/full_flow.rs"]
mod full_flow;

#[test]
fn the_documented_full_flow_runs() {
    full_flow::main().expect("example flow");
}
