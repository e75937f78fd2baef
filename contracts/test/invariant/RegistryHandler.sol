// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {TestBase} from "../utils/TestBase.sol";
import {Vm, vm} from "../utils/Vm.sol";
import {IKeyRegistry} from "../../src/IKeyRegistry.sol";
import {KeyRegistry} from "../../src/KeyRegistry.sol";
import {EventModel} from "./EventModel.sol";

/// Drives random operations against the registry from a small pool of actors, nodes and groups, so that
/// operations collide often. Most calls are valid (right caller, right group list); some use a random caller
/// or list and are expected to revert. Every call's logs go to the EventModel, and only its logs.
contract RegistryHandler is TestBase {
    KeyRegistry public immutable registry;
    EventModel public immutable model;

    bytes32 internal constant NODE_PREFIX = "node";
    bytes32 internal constant GROUP_PREFIX = "group";
    // Small pools make operations collide: with two groups, the handler regularly removes a member that an
    // earlier removal moved (which is how a stale position would show up).
    uint256 public constant NODE_POOL = 6;
    uint256 public constant GROUP_POOL = 2;
    address[3] internal actors = [address(0xA1), address(0xA2), address(0xA3)];

    uint256 public successfulCalls;
    uint256 public revertedCalls;

    constructor(KeyRegistry registry_, EventModel model_) {
        registry = registry_;
        model = model_;
    }

    function nodeId(uint256 index) public pure returns (bytes32) {
        return NODE_PREFIX | bytes32(index + 1);
    }

    function groupId(uint256 index) public pure returns (bytes32) {
        return GROUP_PREFIX | bytes32(index + 1);
    }

    // ------------------------------------------------------------------ operations

    function registerNode(uint256 actorSeed, uint256 nodeSeed, uint256 keySeed) external {
        bytes32 id = _pickNode(nodeSeed, false);
        address owner = _actor(actorSeed);
        (bytes memory publicKey, bytes memory signature) = proof(registry, boundKey(keySeed), id, owner, 1);
        _send(owner, abi.encodeCall(KeyRegistry.registerNode, (id, publicKey, signature)));
    }

    function rotateKey(uint256 nodeSeed, uint256 keySeed, uint256 callerSeed, bool fullList) external {
        bytes32 id = nodeId(nodeSeed % NODE_POOL);
        (address owner, uint32 version) = _ownerAndVersion(id);
        address caller = _mostlyOwner(owner, callerSeed);
        (bytes memory publicKey, bytes memory signature) =
            proof(registry, boundKey(keySeed), id, caller, version + 1);
        bytes32[] memory groups = _groupsOf(id, fullList || callerSeed % 7 != 0);
        _send(caller, abi.encodeCall(KeyRegistry.rotateKey, (id, publicKey, signature, groups)));
    }

    function revokeNode(uint256 nodeSeed, uint256 callerSeed) external {
        // Revocation is rare in practice and final: run it on one call in four so the pool stays alive.
        if (callerSeed % 4 != 0) return;
        bytes32 id = nodeId(nodeSeed % NODE_POOL);
        (address owner,) = _ownerAndVersion(id);
        _send(
            _mostlyOwner(owner, callerSeed >> 8),
            abi.encodeCall(KeyRegistry.revokeNode, (id, _groupsOf(id, true)))
        );
    }

    function transferNodeOwnership(uint256 nodeSeed, uint256 callerSeed, uint256 newOwnerSeed) external {
        bytes32 id = nodeId(nodeSeed % NODE_POOL);
        (address owner,) = _ownerAndVersion(id);
        _send(
            _mostlyOwner(owner, callerSeed),
            abi.encodeCall(KeyRegistry.transferNodeOwnership, (id, _actor(newOwnerSeed)))
        );
    }

    function createGroup(uint256 actorSeed, uint256 groupSeed, string calldata topicFilter) external {
        if (bytes(topicFilter).length > 64) return;
        _send(
            _actor(actorSeed),
            abi.encodeCall(KeyRegistry.createGroup, (_pickNewGroup(groupSeed), topicFilter))
        );
    }

    function transferGroupAdmin(uint256 groupSeed, uint256 callerSeed, uint256 newAdminSeed) external {
        bytes32 id = groupId(groupSeed % GROUP_POOL);
        _send(
            _mostlyAdmin(id, callerSeed),
            abi.encodeCall(KeyRegistry.transferGroupAdmin, (id, _actor(newAdminSeed)))
        );
    }

    function addMember(uint256 groupSeed, uint256 nodeSeed, uint256 callerSeed) external {
        bytes32 id = groupId(groupSeed % GROUP_POOL);
        _send(
            _mostlyAdmin(id, callerSeed),
            abi.encodeCall(KeyRegistry.addMember, (id, _pickMember(id, nodeSeed, false)))
        );
    }

    function removeMember(uint256 groupSeed, uint256 nodeSeed, uint256 callerSeed) external {
        bytes32 id = groupId(groupSeed % GROUP_POOL);
        _send(
            _mostlyAdmin(id, callerSeed),
            abi.encodeCall(KeyRegistry.removeMember, (id, _pickMember(id, nodeSeed, true)))
        );
    }

    function leaveGroup(uint256 groupSeed, uint256 nodeSeed, uint256 callerSeed) external {
        bytes32 id = nodeId(nodeSeed % NODE_POOL);
        (address owner,) = _ownerAndVersion(id);
        _send(
            _mostlyOwner(owner, callerSeed),
            abi.encodeCall(KeyRegistry.leaveGroup, (groupId(groupSeed % GROUP_POOL), id))
        );
    }

    // ------------------------------------------------------------------ plumbing

    /// From a random start, the first node that is registered (or not); the start itself if none is.
    function _pickNode(uint256 seed, bool registered) internal returns (bytes32) {
        for (uint256 i; i < NODE_POOL; ++i) {
            bytes32 id = nodeId((seed + i) % NODE_POOL);
            (address owner,) = _ownerAndVersion(id);
            if ((owner != address(0)) == registered) return id;
        }
        return nodeId(seed % NODE_POOL);
    }

    /// From a random start, the first group ID not yet created.
    function _pickNewGroup(uint256 seed) internal view returns (bytes32) {
        for (uint256 i; i < GROUP_POOL; ++i) {
            bytes32 id = groupId((seed + i) % GROUP_POOL);
            (bool ok,) = address(registry).staticcall(abi.encodeCall(KeyRegistry.getGroup, (id)));
            if (!ok) return id;
        }
        return groupId(seed % GROUP_POOL);
    }

    /// From a random start, the first node that is (or is not) a member of the group.
    function _pickMember(bytes32 group, uint256 seed, bool member) internal view returns (bytes32) {
        for (uint256 i; i < NODE_POOL; ++i) {
            bytes32 id = nodeId((seed + i) % NODE_POOL);
            if (registry.isMember(group, id) == member) return id;
        }
        return nodeId(seed % NODE_POOL);
    }

    /// Sends one call as `caller` and feeds exactly the logs it produced to the model.
    function _send(address caller, bytes memory data) internal {
        vm.recordLogs();
        vm.prank(caller);
        (bool ok,) = address(registry).call(data);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        // forge records logs of reverted frames too; a reverted transaction's logs never reach a chain client.
        if (ok) {
            ++successfulCalls;
            model.ingest(logs);
        } else {
            ++revertedCalls;
        }
    }

    function _actor(uint256 seed) internal view returns (address) {
        return actors[seed % actors.length];
    }

    /// The owner five times in six, else a random actor (possibly the owner too).
    function _mostlyOwner(address owner, uint256 seed) internal view returns (address) {
        return seed % 6 == 0 || owner == address(0) ? _actor(seed / 6) : owner;
    }

    function _mostlyAdmin(bytes32 id, uint256 seed) internal returns (address) {
        (bool ok, bytes memory returned) = address(registry).call(abi.encodeCall(KeyRegistry.getGroup, (id)));
        if (!ok || seed % 6 == 0) return _actor(seed / 6);
        return abi.decode(returned, (IKeyRegistry.Group)).admin;
    }

    function _ownerAndVersion(bytes32 id) internal returns (address owner, uint32 version) {
        (bool ok, bytes memory returned) = address(registry).call(abi.encodeCall(KeyRegistry.getNode, (id)));
        if (!ok) return (address(0), 0);
        IKeyRegistry.Node memory n = abi.decode(returned, (IKeyRegistry.Node));
        return (n.owner, n.keyVersion);
    }

    /// The node's groups in ascending order (the pool's IDs ascend with their index); with `complete` false,
    /// the last one is dropped so the call must fail.
    function _groupsOf(bytes32 id, bool complete) internal view returns (bytes32[] memory list) {
        list = new bytes32[](GROUP_POOL);
        uint256 count;
        for (uint256 g; g < GROUP_POOL; ++g) {
            if (registry.isMember(groupId(g), id)) list[count++] = groupId(g);
        }
        if (!complete && count > 0) --count;
        assembly ("memory-safe") {
            mstore(list, count)
        }
    }
}
