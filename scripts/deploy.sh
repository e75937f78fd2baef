#!/usr/bin/env bash
# Deploys KeyRegistry and records it in deployments/<chainId>.json (also printed on stdout):
#   {"chainId": N, "address": "0x…", "deployBlock": N, "txHash": "0x…"}
# forge script (contracts/script/Deploy.s.sol) sends the deployment; this wrapper takes address, block and
# transaction hash from the mined receipt in forge's broadcast log (run-latest.json), which a running script
# cannot know yet, and checks that the receipt succeeded and that the code at the address is the compiled
# KeyRegistry.
#
# Usage: scripts/deploy.sh --rpc-url URL --private-key KEY [--operator ADDRESS]
#   --operator ADDRESS      deploys a closed registry operated by ADDRESS: only the registrars it names
#                           (setRegistrar) register nodes and create groups. Without it, or with the zero
#                           address, the registry is open to anyone, for good.
#   ANCHORMQ_REGISTRY_OPERATOR  instead of --operator
#   ANCHORMQ_DEPLOYER_KEY   instead of --private-key (keeps the key out of shell history; forge itself
#                           only takes the key as an argument)
#   ANCHORMQ_DEPLOYMENTS_DIR  where to write <chainId>.json (default: <repo>/deployments)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { echo "usage: scripts/deploy.sh --rpc-url URL --private-key KEY [--operator ADDRESS]" >&2; exit 2; }
die() { echo "deploy: $*" >&2; exit 1; }

rpc_url=""
private_key="${ANCHORMQ_DEPLOYER_KEY:-}"
operator="${ANCHORMQ_REGISTRY_OPERATOR:-}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rpc-url) [[ $# -ge 2 ]] || usage; rpc_url="$2"; shift 2 ;;
    --private-key) [[ $# -ge 2 ]] || usage; private_key="$2"; shift 2 ;;
    --operator) [[ $# -ge 2 ]] || usage; operator="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "deploy: unknown argument: $1" >&2; usage ;;
  esac
done
[[ -n "$rpc_url" ]] || { echo "deploy: --rpc-url is required" >&2; usage; }
[[ -n "$private_key" ]] || { echo "deploy: --private-key (or ANCHORMQ_DEPLOYER_KEY) is required" >&2; usage; }
zero_address=0x0000000000000000000000000000000000000000
if [[ -z "$operator" ]]; then
  operator="$zero_address"
else
  checksummed="$(cast to-check-sum-address "$operator" 2>/dev/null)" || die "--operator is not an address: $operator"
  # A mixed-case address carries an EIP-55 checksum: a typo there fails here instead of handing the registry
  # to an account nobody holds (all-lowercase or all-uppercase addresses carry none).
  hex="${operator#0x}"
  if [[ "$hex" =~ [a-f] && "$hex" =~ [A-F] && "$checksummed" != "$operator" ]]; then
    die "--operator $operator has a wrong EIP-55 checksum (expected $checksummed)"
  fi
  operator="$checksummed"
fi

chain_id="$(cast chain-id --rpc-url "$rpc_url")" || die "cannot reach $rpc_url"
out_dir="${ANCHORMQ_DEPLOYMENTS_DIR:-$ROOT/deployments}"
mkdir -p "$out_dir"
cd "$ROOT/contracts"

# forge script compiles only what the script needs; sharing contracts/out and cache with `forge test` leaves
# the test artifacts missing ("No tests found"). Deploys build into their own (git-ignored, reused) folder,
# and each run gets a private broadcast folder so concurrent deploys never read each other's receipts.
export FOUNDRY_OUT="$ROOT/contracts/cache/deploy/out"
export FOUNDRY_CACHE_PATH="$ROOT/contracts/cache/deploy/cache"
FOUNDRY_BROADCAST="$(mktemp -d)"
export FOUNDRY_BROADCAST
trap 'rm -rf "$FOUNDRY_BROADCAST"' EXIT
ANCHORMQ_REGISTRY_OPERATOR="$operator" ANCHORMQ_SKIP_DEPLOYMENT_FILE=true \
  forge script script/Deploy.s.sol:Deploy --rpc-url "$rpc_url" --private-key "$private_key" --broadcast --quiet >&2 \
  || die "forge script failed"

run_file="$FOUNDRY_BROADCAST/Deploy.s.sol/$chain_id/run-latest.json"
out="$out_dir/$chain_id.json"
[[ -f "$run_file" ]] || die "forge wrote no broadcast log at $run_file"
node - "$run_file" "$out" "$chain_id" <<'JS' || die "could not write $out"
const fs = require('fs');
const [runFile, out, chainId] = process.argv.slice(2);
const run = JSON.parse(fs.readFileSync(runFile, 'utf8'));
const tx = run.transactions.find((t) => t.transactionType === 'CREATE' && t.contractName === 'KeyRegistry');
if (!tx) throw new Error('no KeyRegistry CREATE transaction in the broadcast log');
const receipt = run.receipts.find((r) => r.transactionHash === tx.hash);
if (!receipt) throw new Error(`no receipt for ${tx.hash}`);
if (BigInt(receipt.status) !== 1n) throw new Error(`deploy transaction ${tx.hash} reverted`);
if (receipt.contractAddress.toLowerCase() !== tx.contractAddress.toLowerCase()) {
  throw new Error(`receipt address ${receipt.contractAddress} != script address ${tx.contractAddress}`);
}
const deployment = {
  chainId: Number(chainId),
  address: receipt.contractAddress,
  deployBlock: Number(BigInt(receipt.blockNumber)),
  txHash: tx.hash,
};
fs.writeFileSync(out, JSON.stringify(deployment, null, 2) + '\n');
JS

address="$(cast to-check-sum-address "$(node -p "require('$out').address")")"
node -e 'const fs = require("fs"); const [f, a] = process.argv.slice(1);
  const d = JSON.parse(fs.readFileSync(f, "utf8")); d.address = a;
  fs.writeFileSync(f, JSON.stringify(d, null, 2) + "\n");' "$out" "$address"
deployed="$(cast keccak "$(cast code "$address" --rpc-url "$rpc_url")")"
compiled="$(cast keccak "$(forge inspect KeyRegistry deployedBytecode)")"
[[ "$deployed" == "$compiled" ]] || die "code at $address does not match the compiled KeyRegistry"
# The operator lives in storage (the runtime code is the same for every operator): check it separately.
deployed_operator="$(cast call "$address" "operator()(address)" --rpc-url "$rpc_url")"
[[ "$(cast to-check-sum-address "$deployed_operator")" == "$operator" ]] \
  || die "registry at $address has operator $deployed_operator, expected $operator"
if [[ "$operator" == "$zero_address" ]]; then
  echo "deploy: KeyRegistry at $address on chain $chain_id, open ($out)" >&2
else
  echo "deploy: KeyRegistry at $address on chain $chain_id, closed, operator $operator ($out)" >&2
fi
cat "$out"
