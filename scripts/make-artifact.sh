#!/usr/bin/env bash
# Writes contracts/artifacts/KeyRegistry.bin: the KeyRegistry creation bytecode (hex, one line) that the
# `anchormq` binary deploys (`anchormq deploy`, `anchormq up`), so that installing anchormq needs no Foundry.
# forge test (contracts/test/Artifact.t.sol) fails when the file no longer matches the Solidity source:
# rerun this script and commit the file after every contract change.
#
# Usage: scripts/make-artifact.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT/contracts"
export FOUNDRY_OUT="$ROOT/contracts/cache/artifact/out"
export FOUNDRY_CACHE_PATH="$ROOT/contracts/cache/artifact/cache"
forge build --quiet src/KeyRegistry.sol
node -e '
const fs = require("fs");
const [input, output] = process.argv.slice(1);
const hex = JSON.parse(fs.readFileSync(input, "utf8")).bytecode.object.replace(/^0x/, "");
if (!/^[0-9a-f]+$/.test(hex)) throw new Error("no bytecode in " + input);
fs.writeFileSync(output, hex + "\n");
' "$FOUNDRY_OUT/KeyRegistry.sol/KeyRegistry.json" "$ROOT/contracts/artifacts/KeyRegistry.bin"
echo "wrote contracts/artifacts/KeyRegistry.bin ($(( $(wc -c < "$ROOT/contracts/artifacts/KeyRegistry.bin") / 2 )) bytes)" >&2
