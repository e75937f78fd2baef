#!/usr/bin/env bash
# Runs the paper's experiment end to end on a local Anvil (paper fixture), an in-process broker and
# the in-process bridge, and checks every outcome. Extra arguments go to `anchormq demo`
# (e.g. --broker mqtt://127.0.0.1:1883 for an external broker).
#
# Builds the dev profile: workspace dependencies are optimised there too (Cargo.toml), so the demo runs
# in about a second either way, and the build is shared with `cargo test`. From scratch on the 2-core
# dev machine: dev 10 min 20 s, release 11 min 27 s (both while other builds ran).
# ANCHORMQ_PROFILE=release to change.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

profile="${ANCHORMQ_PROFILE:-dev}"
echo "==> cargo build --profile $profile -p anchormq" >&2
cargo build --quiet --profile "$profile" -p anchormq
target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
case "$profile" in dev) dir=debug ;; *) dir="$profile" ;; esac
exec "$target_dir/$dir/anchormq" demo "$@"
