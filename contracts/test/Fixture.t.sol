// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {TestBase} from "./utils/TestBase.sol";
import {vm} from "./utils/Vm.sol";
import {IKeyRegistry} from "../src/IKeyRegistry.sol";
import {KeyRegistry} from "../src/KeyRegistry.sol";

/// Fails when anvil-fixtures/ no longer matches this source tree: the deployed code in the Anvil state dump and
/// the hash recorded in paper.json must equal the compiled runtime code (KeyRegistry has no immutables, so the
/// code does not depend on the deploy address), and the registry state in the dump, replayed into a local
/// copy, must hold exactly the nodes and groups paper.json describes. Regenerate with scripts/make-fixtures.sh.
contract FixtureTest is TestBase {
    string internal paper;
    string internal state;
    address internal registryAddress;
    string internal accountPath;

    function setUp() public {
        string memory dir = string.concat(vm.projectRoot(), "/../anvil-fixtures/");
        paper = vm.readFile(string.concat(dir, "paper.json"));
        state = vm.readFile(string.concat(dir, vm.parseJsonString(paper, ".stateFile")));
        registryAddress = vm.parseJsonAddress(paper, ".address");
        accountPath = string.concat(".accounts['", vm.toLowercase(vm.toString(registryAddress)), "']");
    }

    function test_Fixture_RuntimeCodeMatchesCompiledContract() public view {
        bytes32 compiled = keccak256(type(KeyRegistry).runtimeCode);
        assertEq(
            vm.parseJsonBytes32(paper, ".runtimeCodeHash"), compiled, "paper.json runtimeCodeHash is stale"
        );
        bytes memory dumped = vm.parseJsonBytes(state, string.concat(accountPath, ".code"));
        assertEq(keccak256(dumped), compiled, "code in the Anvil state dump is stale");
    }

    function test_Fixture_ChainAndDeployment() public view {
        assertEq(vm.parseJsonUint(paper, ".chainId"), 31337, "chain id");
        uint256 deployBlock = vm.parseJsonUint(paper, ".deployBlock");
        assertTrue(deployBlock >= 1 && deployBlock <= vm.parseJsonUint(paper, ".lastBlock"), "deploy block");
        assertEq(
            vm.parseJsonUint(state, ".best_block_number"), vm.parseJsonUint(paper, ".lastBlock"), "last block"
        );
    }

    function test_Fixture_StateHoldsThePaperSetup() public {
        // Copy the dumped registry (code and every storage slot) to its address in this test EVM.
        vm.etch(registryAddress, vm.parseJsonBytes(state, string.concat(accountPath, ".code")));
        string memory storagePath = string.concat(accountPath, ".storage");
        string[] memory slots = vm.parseJsonKeys(state, storagePath);
        for (uint256 i; i < slots.length; ++i) {
            bytes32 value = bytes32(vm.parseJsonUint(state, string.concat(storagePath, "['", slots[i], "']")));
            vm.store(registryAddress, bytes32(vm.parseUint(slots[i])), value);
        }
        IKeyRegistry registry = IKeyRegistry(registryAddress);
        // The paper fixture is an open registry: anyone registers nodes and creates groups.
        assertEq(registry.operator(), address(0), "open registry");
        assertTrue(registry.isRegistrar(address(0xBAD)), "anyone is a registrar");
        address owner = vm.parseJsonAddress(paper, ".owner");
        assertEq(vm.addr(vm.parseJsonUint(paper, ".ownerPrivateKey")), owner, "owner key");

        string[4] memory ids = ["1111", "1112", "1113", "1114"];
        for (uint256 i; i < ids.length; ++i) {
            string memory path = string.concat(".nodes[", vm.toString(i), "]");
            assertEq(vm.parseJsonString(paper, string.concat(path, ".id")), ids[i], "node order");
            bytes32 nodeId = vm.parseJsonBytes32(paper, string.concat(path, ".nodeId"));
            assertEq(nodeId, bytes32(bytes(ids[i])), "node id encoding");
            uint256 privateKey = vm.parseJsonUint(paper, string.concat(path, ".privateKey"));
            assertEq(privateKey, testNodeKey(ids[i]), "key derivation");
            bytes memory publicKey = vm.parseJsonBytes(paper, string.concat(path, ".publicKey"));
            assertEq(publicKey, compressedKey(privateKey), "public key");

            IKeyRegistry.Node memory node = registry.getNode(nodeId);
            assertEq(node.publicKey, publicKey, "registered key");
            assertEq(node.owner, owner, "node owner");
            assertEq(node.keyVersion, 1, "key version");
            assertEq(uint256(node.status), uint256(IKeyRegistry.NodeStatus.Active), "active");
            assertEq(node.pendingOwner, address(0), "no pending owner");
        }

        for (uint256 g; g < 2; ++g) {
            string memory path = string.concat(".groups[", vm.toString(g), "]");
            bytes32 groupId = vm.parseJsonBytes32(paper, string.concat(path, ".groupId"));
            assertEq(
                groupId, bytes32(bytes(vm.parseJsonString(paper, string.concat(path, ".id")))), "group id"
            );
            IKeyRegistry.Group memory group = registry.getGroup(groupId);
            assertEq(group.admin, owner, "admin");
            assertEq(group.pendingAdmin, address(0), "no pending admin");
            assertEq(
                group.topicFilter, vm.parseJsonString(paper, string.concat(path, ".topicFilter")), "filter"
            );
            assertEq(group.epoch, vm.parseJsonUint(paper, string.concat(path, ".epoch")), "epoch");
            string[] memory members = vm.parseJsonStringArray(paper, string.concat(path, ".members"));
            assertEq(group.memberCount, members.length, "member count");
            for (uint256 m; m < members.length; ++m) {
                assertTrue(registry.isMember(groupId, bytes32(bytes(members[m]))), "member");
            }
        }
        bytes32 hsu0001 = "hsu0001";
        assertTrue(registry.isMember(hsu0001, "1111") && registry.isMember(hsu0001, "1112"), "hsu0001");
        assertTrue(registry.isMember("hsu0002", "1113") && registry.isMember("hsu0002", "1114"), "hsu0002");
    }
}
