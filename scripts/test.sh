#!/usr/bin/env bash
# The project's whole check, as CI runs it: toolchain, contract format and tests, Rust format, lints, tests.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

step() { echo "==> $*" >&2; }

# A fresh clone builds once: incremental state would only take disk (gigabytes of it).
if [[ -n "${CI:-}" ]]; then export CARGO_INCREMENTAL=0; fi

step "forge fmt --check"
(cd contracts && forge fmt --check)
step "forge test"
(cd contracts && forge test)
step "forge snapshot --check (gas of the GasTest and GroupSizeGasTest contracts)"
(cd contracts && forge snapshot --mc Gas --check)
step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo doc --no-deps (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
step "cargo test"
cargo test --workspace --locked
