#!/usr/bin/env bash
# Fuzzes anchormq-core's decoders with cargo-fuzz (libFuzzer) on the stable toolchain.
#
#   scripts/fuzz.sh TARGET|all [LIBFUZZER_FLAG...]
#
# TARGET is one of the fuzz/ targets (`scripts/fuzz.sh list` names them); `all` runs
# every target, one after another (never two fuzzers at once). Without -runs= or
# -max_total_time= a target runs for -runs=10000000 executions. Examples:
#   nice -n 19 scripts/fuzz.sh envelope                       # 10 million executions
#   nice -n 19 scripts/fuzz.sh chunk -max_total_time=600      # ten minutes
#   nice -n 19 scripts/fuzz.sh all -runs=10000000             # the release campaign
#
# What it does, idempotently:
#   - installs cargo-fuzz (pinned below) into the git-ignored .toolchain/cargo-fuzz;
#     libFuzzer itself comes from libfuzzer-sys, pinned by fuzz/Cargo.lock;
#   - builds with `--sanitizer none` (the only mode stable rustc supports: no
#     -Zsanitizer, so no RUSTC_BOOTSTRAP either), optimised, with debug assertions and
#     overflow checks on;
#   - fuzzes with a scratch corpus fuzz/target/corpus/TARGET (kept between runs) on
#     top of the committed seeds crates/core/tests/corpus/TARGET;
#   - after a clean run, merges (libFuzzer -merge=1 -use_counters=0) into the committed
#     seeds only the scratch inputs that reach new code edges (hit counts are ignored,
#     which keeps the committed corpus small), smallest first, named like the existing
#     seeds (first 16 hex digits of their SHA-256); existing seeds are never removed.
#     FUZZ_MERGE=0 skips this step.
# A crash stops the run with a non-zero exit; the input is in fuzz/artifacts/TARGET/.
# Logs: fuzz/target/logs/TARGET.log (the last run's), ending with libFuzzer's stat:: lines.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.toolchain/cargo-fuzz"
fuzz="$root/fuzz"

die() { echo "fuzz: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is missing: $2"; }

need cargo "install a Rust toolchain (rustup); stable is enough"
need c++ "libfuzzer-sys compiles libFuzzer with a C++ compiler (Debian: apt-get install g++)"

# cargo-fuzz, pinned; reinstalled only when missing or at another version.
if [[ "$("$tools/bin/cargo-fuzz" --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION into .toolchain/cargo-fuzz" >&2
  cargo install --locked --quiet --root "$tools" --version "$CARGO_FUZZ_VERSION" cargo-fuzz >&2 \
    || die "cargo install cargo-fuzz failed (is crates.io reachable?)"
fi
export PATH="$tools/bin:$PATH"

# Release build with debug assertions; no sanitizer, so it builds on stable.
build=(--sanitizer none --release --debug-assertions)

[[ $# -ge 1 ]] || die "usage: scripts/fuzz.sh TARGET|all|list [LIBFUZZER_FLAG...]"
what="$1"
shift
cd "$fuzz"
mapfile -t targets < <(cargo fuzz list)
case "$what" in
  list) printf '%s\n' "${targets[@]}"; exit 0 ;;
  all) run_targets=("${targets[@]}") ;;
  *)
    printf '%s\n' "${targets[@]}" | grep -qx -- "$what" || die "unknown target $what (have: ${targets[*]})"
    run_targets=("$what")
    ;;
esac

flags=("$@")
if ! printf '%s\n' "${flags[@]}" | grep -qE '^-(runs|max_total_time)='; then
  flags+=(-runs=10000000)
fi

# Renames libFuzzer's SHA-1-named files in $1 to the corpus's SHA-256 prefix names.
rename_new_seeds() {
  local dir="$1" f sum
  for f in "$dir"/*; do
    [[ "$(basename "$f")" =~ ^[0-9a-f]{40}$ ]] || continue
    sum="$(sha256sum "$f" | cut -c1-16)"
    if [[ -e "$dir/$sum" ]]; then rm -f "$f"; else mv "$f" "$dir/$sum"; fi
  done
}

mkdir -p target/logs
if [[ "$what" == all ]]; then
  cargo fuzz build "${build[@]}" >&2
else
  cargo fuzz build "${build[@]}" "$what" >&2
fi
for t in "${run_targets[@]}"; do
  seeds="$root/crates/core/tests/corpus/$t"
  work="$fuzz/target/corpus/$t"
  log="$fuzz/target/logs/$t.log"
  mkdir -p "$work" "$seeds"
  echo "fuzz: $t: ${flags[*]} (corpus $work + $seeds, log $log)" >&2
  if ! cargo fuzz run "${build[@]}" "$t" "$work" "$seeds" -- \
    -timeout=10 -print_final_stats=1 "${flags[@]}" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    die "$t: the fuzzer failed or found a crash (input in fuzz/artifacts/$t/, full log $log)"
  fi
  execs="$(grep -m1 '^stat::number_of_executed_units:' "$log" | awk '{print $2}')"
  rate="$(grep -m1 '^stat::average_exec_per_sec:' "$log" | awk '{print $2}')"
  if [[ "${FUZZ_MERGE:-1}" != 0 ]]; then
    before="$(find "$seeds" -type f | wc -l)"
    cargo fuzz run "${build[@]}" "$t" "$seeds" "$work" -- -merge=1 -use_counters=0 >"$log.merge" 2>&1 \
      || { tail -n 20 "$log.merge" >&2; die "$t: merge failed (log $log.merge)"; }
    rename_new_seeds "$seeds"
    after="$(find "$seeds" -type f | wc -l)"
    merged="$((after - before)) new seeds, $after in all, $(cat "$seeds"/* | wc -c) bytes"
  else
    merged="not merged"
  fi
  echo "fuzz: $t: ${execs:-?} executions, ${rate:-?} exec/s, no crash; corpus: $merged" >&2
done
