# Sourced by the project's scripts: bootstraps the toolchain and puts it on PATH.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
eval "$("$ROOT/scripts/bootstrap.sh" --print-path)"
export ANCHORMQ_ROOT="$ROOT"
