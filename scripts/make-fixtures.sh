#!/usr/bin/env bash
# Regenerates anvil-fixtures/ (the paper's setup on a local chain) deterministically:
#   1. starts Anvil on a free loopback port (chain id 31337, default mnemonic, fixed block timestamps),
#   2. deploys an open KeyRegistry (operator zero: anyone registers) with scripts/deploy.sh,
#   3. registers nodes 1111..1114 (TEST-ONLY keys: keccak256("anchormq test node <id>")) owned by account 0,
#      creates hsu0001 {1111, 1112} and hsu0002 {1113, 1114} administered by account 0, all with cast send
#      (account 0 owns the nodes it adds, so no admin approval is needed),
#   4. stops Anvil, which dumps its state to anvil-fixtures/paper-state.json,
#   5. writes anvil-fixtures/paper.json (what the Rust side reads).
# Prints the gasUsed of the registerNode and addMember receipts (full transaction gas) on stderr.
#
# Usage: scripts/make-fixtures.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

die() { echo "make-fixtures: $*" >&2; exit 1; }

fixtures="$ROOT/anvil-fixtures"
work="$(mktemp -d)"
anvil_pid=""
cleanup() {
  if [[ -n "$anvil_pid" ]] && kill -0 "$anvil_pid" 2>/dev/null; then kill "$anvil_pid"; wait "$anvil_pid" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Anvil's default mnemonic, account 0: a well-known development key, never for real funds.
owner_key=0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80
owner="$(cast wallet address --private-key "$owner_key")"
genesis_time=1700000000

port="$(node -e 'const s = require("net").createServer(); s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });')"
rpc="http://127.0.0.1:$port"
anvil --host 127.0.0.1 --port "$port" --chain-id 31337 --timestamp "$genesis_time" \
  --dump-state "$work/state.json" --silent &
anvil_pid=$!
for _ in $(seq 100); do
  cast chain-id --rpc-url "$rpc" >/dev/null 2>&1 && break
  kill -0 "$anvil_pid" 2>/dev/null || die "anvil exited during startup"
  sleep 0.1
done
cast chain-id --rpc-url "$rpc" >/dev/null 2>&1 || die "anvil did not answer on $rpc"

# One block per transaction, each one second after the previous: same timestamps on every run.
block_time=$genesis_time
next_block() {
  block_time=$((block_time + 1))
  cast rpc evm_setNextBlockTimestamp "$block_time" --rpc-url "$rpc" >/dev/null
}

next_block
# The deployment record goes to the work dir: the repository's deployments/ is for real chains.
# Open whatever ANCHORMQ_REGISTRY_OPERATOR says in the caller's environment.
ANCHORMQ_DEPLOYMENTS_DIR="$work" "$ROOT/scripts/deploy.sh" --rpc-url "$rpc" --private-key "$owner_key" \
  --operator 0x0000000000000000000000000000000000000000 >"$work/deployment.json"
registry="$(node -p "require('$work/deployment.json').address")"

send() {
  next_block
  cast send "$registry" "$@" --private-key "$owner_key" --rpc-url "$rpc" --json >"$work/receipt.json"
  [[ "$(node -p "require('$work/receipt.json').status")" == "0x1" ]] || die "transaction failed: $1"
  node -p "Number(BigInt(require('$work/receipt.json').gasUsed))"
}

compressed_key() {
  local uncompressed x y parity
  uncompressed="$(cast wallet public-key --raw-private-key "$1")"
  x="${uncompressed:2:64}"
  y="${uncompressed:66:64}"
  parity=$((16#${y: -1} & 1))
  echo "0x0$((2 + parity))$x"
}

nodes_json=""
for id in 1111 1112 1113 1114; do
  key="$(cast keccak "anchormq test node $id")"
  public_key="$(compressed_key "$key")"
  node_id="$(cast format-bytes32-string "$id")"
  digest="$(cast call "$registry" "nodeKeyDigest(bytes32,address,bytes,uint32)(bytes32)" \
    "$node_id" "$owner" "$public_key" 1 --rpc-url "$rpc")"
  signature="$(cast wallet sign --no-hash --private-key "$key" "$digest")"
  gas="$(send "registerNode(bytes32,bytes,bytes)" "$node_id" "$public_key" "$signature")"
  echo "make-fixtures: registerNode $id receipt gasUsed=$gas" >&2
  nodes_json+="${nodes_json:+,}{\"id\":\"$id\",\"nodeId\":\"$node_id\",\"privateKey\":\"$key\",\"publicKey\":\"$public_key\",\"address\":\"$(cast wallet address --private-key "$key")\",\"owner\":\"$owner\",\"keyVersion\":1}"
done

groups_json=""
add_group() {
  local id="$1" filter="$2" group_id gas members_json=""
  shift 2
  group_id="$(cast format-bytes32-string "$id")"
  gas="$(send "createGroup(bytes32,string)" "$group_id" "$filter")"
  echo "make-fixtures: createGroup $id receipt gasUsed=$gas" >&2
  for member in "$@"; do
    gas="$(send "addMember(bytes32,bytes32)" "$group_id" "$(cast format-bytes32-string "$member")")"
    echo "make-fixtures: addMember $id $member receipt gasUsed=$gas" >&2
    members_json+="${members_json:+,}\"$member\""
  done
  groups_json+="${groups_json:+,}{\"id\":\"$id\",\"groupId\":\"$group_id\",\"topicFilter\":\"$filter\",\"admin\":\"$owner\",\"members\":[$members_json],\"epoch\":$#}"
}
add_group hsu0001 "hsu/0001/#" 1111 1112
add_group hsu0002 "hsu/0002/#" 1113 1114

code_hash="$(cast keccak "$(cast code "$registry" --rpc-url "$rpc")")"
last_block="$(cast block-number --rpc-url "$rpc")"

kill "$anvil_pid"
wait "$anvil_pid" || true
anvil_pid=""
[[ -s "$work/state.json" ]] || die "anvil wrote no state dump"

mkdir -p "$fixtures"
# Anvil writes blocks, transactions and accounts in hash-map order; sort them so that regenerating the
# fixture from the same inputs gives the same bytes.
node - "$work/state.json" "$fixtures/paper-state.json" <<'JS'
const fs = require('fs');
const [input, output] = process.argv.slice(2);
const state = JSON.parse(fs.readFileSync(input, 'utf8'));
const num = (hex) => Number(BigInt(hex));
state.blocks?.sort((a, b) => num(a.header.number) - num(b.header.number));
state.transactions?.sort((a, b) => a.block_number - b.block_number
  || String(a.info.transaction_hash).localeCompare(String(b.info.transaction_hash)));
const canonical = (value) => {
  if (Array.isArray(value)) return value.map(canonical);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.keys(value).sort().map((key) => [key, canonical(value[key])]));
  }
  return value;
};
fs.writeFileSync(output, JSON.stringify(canonical(state)) + '\n');
JS
node - "$work/deployment.json" "$fixtures/paper.json" <<JS
const fs = require('fs');
const [deploymentFile, out] = process.argv.slice(2);
const deployment = JSON.parse(fs.readFileSync(deploymentFile, 'utf8'));
const paper = {
  comment: 'TEST ONLY: private keys below are public. Generated by scripts/make-fixtures.sh; see README.md.',
  stateFile: 'paper-state.json',
  chainId: deployment.chainId,
  address: deployment.address,
  deployBlock: deployment.deployBlock,
  txHash: deployment.txHash,
  lastBlock: $last_block,
  runtimeCodeHash: '$code_hash',
  owner: '$owner',
  ownerPrivateKey: '$owner_key',
  nodes: [$nodes_json],
  groups: [$groups_json],
};
fs.writeFileSync(out, JSON.stringify(paper, null, 2) + '\n');
JS
echo "make-fixtures: wrote anvil-fixtures/paper.json and anvil-fixtures/paper-state.json" >&2
