#!/usr/bin/env bash
# Installs the project's pinned toolchain into git-ignored folders, idempotently:
#   forge, anvil, cast (npm @foundry-rs/*) and solc (npm solc behind a shim) -> .toolchain/bin
#   aedes, aedes-persistence-redis, mqemitter-redis (npm, for the clustered-broker test) -> .toolchain/cluster
#   mosquitto and redis-server (Debian) when missing.
# Prints the line `export PATH=...` that puts .toolchain/bin first when run with --print-path.
# Every other script sources scripts/lib.sh, which calls this first.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
toolchain="$root/scripts/toolchain"
bin="$root/.toolchain/bin"

die() { echo "bootstrap: $*" >&2; exit 1; }

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is missing: $2"
}

need node "install Node.js 20 or newer (aedes needs 20; Debian: apt-get install nodejs npm)"
need npm "install npm (Debian: apt-get install npm)"
need cargo "install a Rust toolchain (rustup) with cargo, rustfmt and clippy"

# npm packages, pinned by package-lock.json; reinstalled only when the lock file changes.
stamp="$toolchain/node_modules/.anchormq-lock.sha256"
want="$(sha256sum "$toolchain/package-lock.json" | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "bootstrap: installing forge, anvil, cast and solc from npm (pinned)" >&2
  (cd "$toolchain" && npm ci --no-audit --no-fund --loglevel=error) >&2 \
    || die "npm ci failed in scripts/toolchain (is the npm registry reachable?)"
  echo "$want" >"$stamp"
fi

# A clustered broker (Aedes nodes sharing Redis) for crates/agent/tests/cluster.rs, pinned by
# scripts/cluster/package-lock.json and installed beside the other tools, not in the source tree.
cluster="$root/.toolchain/cluster"
stamp="$cluster/node_modules/.anchormq-lock.sha256"
want="$(sha256sum "$root/scripts/cluster/package-lock.json" | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "bootstrap: installing aedes, aedes-persistence-redis and mqemitter-redis from npm (pinned)" >&2
  mkdir -p "$cluster"
  cp "$root/scripts/cluster/package.json" "$root/scripts/cluster/package-lock.json" "$cluster/"
  (cd "$cluster" && npm ci --no-audit --no-fund --loglevel=error) >&2 \
    || die "npm ci failed in .toolchain/cluster (is the npm registry reachable?)"
  echo "$want" >"$stamp"
fi

mkdir -p "$bin"
for tool in forge anvil cast; do
  target="$toolchain/node_modules/@foundry-rs/$tool-linux-amd64/bin/$tool"
  [[ -x "$target" ]] || die "$tool binary missing at $target (only Linux x86-64 is supported)"
  ln -sfn "$target" "$bin/$tool"
done
ln -sfn "$toolchain/solc.cjs" "$bin/solc"

# Mosquitto is used by the end-to-end tests and benchmarks as the second, real broker; redis-server
# (Redis 7.0 in Debian 12) holds the shared state of the clustered broker's Aedes nodes.
apt_packages=()
if ! command -v mosquitto >/dev/null 2>&1 && [[ ! -x /usr/sbin/mosquitto ]]; then
  apt_packages+=(mosquitto mosquitto-clients)
fi
if ! command -v redis-server >/dev/null 2>&1 && [[ ! -x /usr/bin/redis-server ]]; then
  apt_packages+=(redis-server)
fi
if [[ ${#apt_packages[@]} -gt 0 ]]; then
  need apt-get "install ${apt_packages[*]} (Mosquitto 2.0, Redis 7) with your package manager"
  echo "bootstrap: installing ${apt_packages[*]} from Debian" >&2
  if [[ "$(id -u)" -eq 0 ]]; then sudo=""; else need sudo "run as root or install sudo"; sudo="sudo"; fi
  $sudo apt-get update -qq >&2 || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${apt_packages[@]}" >&2 \
    || die "apt-get install ${apt_packages[*]} failed"
fi

if [[ "${1:-}" == "--print-path" ]]; then
  echo "export PATH=\"$bin:/usr/sbin:\$PATH\""
fi
