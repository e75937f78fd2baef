// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {TestBase} from "./utils/TestBase.sol";
import {vm, Vm} from "./utils/Vm.sol";
import {IKeyRegistry} from "../src/IKeyRegistry.sol";
import {KeyRegistry} from "../src/KeyRegistry.sol";

/// Onboarding and decommissioning a fleet: `addMembers` and `removeMembers` change many members under
/// one epoch bump (every sender in the group then draws one new key, not one per device), with each
/// node checked exactly as `addMember` and `removeMember` check it, and all or nothing.
contract BatchTest is TestBase {
    KeyRegistry internal registry;

    address internal constant OWNER = address(0xA11CE);
    address internal constant ADMIN = address(0xAD);
    address internal constant STRANGER = address(0xBAD);

    bytes32 internal constant GROUP = "fleet";
    uint256 internal constant FLEET = 20;

    function _node(uint256 i) internal pure returns (bytes32) {
        return bytes32(uint256(0x6e000000) + i) << 224;
    }

    function _nodes(uint256 from, uint256 count) internal pure returns (bytes32[] memory ids) {
        ids = new bytes32[](count);
        for (uint256 i; i < count; ++i) {
            ids[i] = _node(from + i);
        }
    }

    function setUp() public {
        registry = new KeyRegistry(address(0));
        for (uint256 i; i < FLEET; ++i) {
            registerAs(registry, ADMIN, _node(i), 0x1000 + i);
        }
        vm.prank(ADMIN);
        registry.createGroup(GROUP, "fleet/#");
    }

    function _epoch() internal view returns (uint64) {
        return registry.getGroup(GROUP).epoch;
    }

    function test_AddMembers_AddsAllUnderOneEpochWithAnEventEach() public {
        bytes32[] memory ids = _nodes(0, FLEET);
        uint64 before = _epoch();
        vm.recordLogs();
        vm.prank(ADMIN);
        registry.addMembers(GROUP, ids);
        assertEq(_epoch(), before + 1, "one epoch bump");
        assertEq(registry.getGroup(GROUP).memberCount, FLEET, "member count");
        Vm.Log[] memory logs = vm.getRecordedLogs();
        assertEq(logs.length, FLEET, "one MemberAdded per node");
        for (uint256 i; i < FLEET; ++i) {
            assertTrue(registry.isMember(GROUP, ids[i]), "member");
            assertEq(logs[i].topics[0], IKeyRegistry.MemberAdded.selector, "event");
            assertEq(logs[i].topics[2], ids[i], "node, in list order");
            (uint64 epoch, address actor) = abi.decode(logs[i].data, (uint64, address));
            assertEq(epoch, before + 1, "every event carries the new epoch");
            assertEq(actor, ADMIN, "actor");
        }
    }

    function test_RemoveMembers_RemovesAllUnderOneEpochAndKeepsTheRest() public {
        vm.startPrank(ADMIN);
        registry.addMembers(GROUP, _nodes(0, FLEET));
        uint64 before = _epoch();
        // every other node, so swap-and-pop moves the ones that stay
        bytes32[] memory gone = new bytes32[](FLEET / 2);
        for (uint256 i; i < FLEET / 2; ++i) {
            gone[i] = _node(2 * i);
        }
        registry.removeMembers(GROUP, gone);
        vm.stopPrank();
        assertEq(_epoch(), before + 1, "one epoch bump");
        assertEq(registry.getGroup(GROUP).memberCount, FLEET / 2, "member count");
        for (uint256 i; i < FLEET; ++i) {
            assertTrue(registry.isMember(GROUP, _node(i)) == (i % 2 == 1), "membership");
        }
        bytes32[] memory listed = registry.groupMembers(GROUP, 0, FLEET);
        assertEq(listed.length, FLEET / 2, "listed");
        for (uint256 i; i < listed.length; ++i) {
            assertTrue(registry.isMember(GROUP, listed[i]), "listed nodes are members");
        }
    }

    /// One bad node anywhere in the list refuses the whole batch: nothing changes.
    function _expectBatchRefused(bytes32[] memory ids, bytes memory error) internal {
        uint64 before = _epoch();
        uint32 count = registry.getGroup(GROUP).memberCount;
        vm.expectRevert(error);
        vm.prank(ADMIN);
        registry.addMembers(GROUP, ids);
        assertEq(_epoch(), before, "epoch unchanged");
        assertEq(registry.getGroup(GROUP).memberCount, count, "members unchanged");
    }

    function test_RevertWhen_AddMembers_EmptyListed() public {
        _expectBatchRefused(new bytes32[](0), abi.encodeWithSelector(IKeyRegistry.EmptyNodeList.selector));
    }

    function test_RevertWhen_AddMembers_ListsANodeTwice() public {
        bytes32[] memory ids = _nodes(0, 3);
        ids[2] = ids[0];
        _expectBatchRefused(ids, abi.encodeWithSelector(IKeyRegistry.AlreadyMember.selector, GROUP, ids[0]));
    }

    function test_RevertWhen_AddMembers_IncludesANodeWithoutConsent() public {
        registerAs(registry, OWNER, "theirs", 0x2000);
        bytes32[] memory ids = _nodes(0, 3);
        ids[1] = "theirs";
        _expectBatchRefused(
            ids,
            abi.encodeWithSelector(IKeyRegistry.AdminNotApproved.selector, bytes32("theirs"), OWNER, ADMIN)
        );
    }

    function test_RevertWhen_AddMembers_IncludesARevokedOrUnknownNode() public {
        vm.prank(ADMIN);
        registry.revokeNode(_node(1));
        _expectBatchRefused(
            _nodes(0, 3), abi.encodeWithSelector(IKeyRegistry.NodeIsRevoked.selector, _node(1))
        );
        bytes32[] memory ids = _nodes(0, 2);
        ids[1] = "nobody";
        _expectBatchRefused(
            ids, abi.encodeWithSelector(IKeyRegistry.NodeNotFound.selector, bytes32("nobody"))
        );
    }

    function test_RevertWhen_BatchesComeFromAStranger() public {
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotGroupAdmin.selector, GROUP, STRANGER));
        vm.prank(STRANGER);
        registry.addMembers(GROUP, _nodes(0, 2));
        vm.prank(ADMIN);
        registry.addMembers(GROUP, _nodes(0, 2));
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotGroupAdmin.selector, GROUP, STRANGER));
        vm.prank(STRANGER);
        registry.removeMembers(GROUP, _nodes(0, 2));
    }

    function test_RevertWhen_RemoveMembers_EmptyOrNotAMember() public {
        vm.startPrank(ADMIN);
        registry.addMembers(GROUP, _nodes(0, 2));
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.EmptyNodeList.selector));
        registry.removeMembers(GROUP, new bytes32[](0));
        // the second listing of node 0 is no longer a member: the whole batch is refused
        bytes32[] memory ids = _nodes(0, 2);
        ids[1] = ids[0];
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotMember.selector, GROUP, ids[0]));
        registry.removeMembers(GROUP, ids);
        vm.stopPrank();
        assertEq(registry.getGroup(GROUP).memberCount, 2, "members unchanged");
    }

    function _proofs(uint256 from, uint256 count)
        internal
        returns (bytes32[] memory ids, bytes[] memory keys, bytes[] memory proofs)
    {
        ids = new bytes32[](count);
        keys = new bytes[](count);
        proofs = new bytes[](count);
        for (uint256 i; i < count; ++i) {
            ids[i] = _node(1000 + from + i);
            (keys[i], proofs[i]) = proof(registry, 0x3000 + from + i, ids[i], OWNER, 1);
        }
    }

    function test_RegisterNodes_RegistersAllWithAnEventEach() public {
        (bytes32[] memory ids, bytes[] memory keys, bytes[] memory proofs) = _proofs(0, 5);
        vm.recordLogs();
        vm.prank(OWNER);
        registry.registerNodes(ids, keys, proofs);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        assertEq(logs.length, 5, "one NodeRegistered per node");
        for (uint256 i; i < 5; ++i) {
            IKeyRegistry.Node memory node = registry.getNode(ids[i]);
            assertEq(node.owner, OWNER, "owner");
            assertEq(node.publicKey, keys[i], "key");
            assertEq(logs[i].topics[0], IKeyRegistry.NodeRegistered.selector, "event");
            assertEq(logs[i].topics[1], ids[i], "node, in list order");
        }
    }

    function test_RevertWhen_RegisterNodes_ListsDifferOrAreEmpty() public {
        (bytes32[] memory ids, bytes[] memory keys,) = _proofs(0, 2);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.BatchLengthMismatch.selector, 2, 2, 1));
        vm.prank(OWNER);
        registry.registerNodes(ids, keys, new bytes[](1));
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.EmptyNodeList.selector));
        vm.prank(OWNER);
        registry.registerNodes(new bytes32[](0), new bytes[](0), new bytes[](0));
    }

    /// A proof made for another account (the owner is in the signed struct) refuses the whole batch.
    function test_RevertWhen_RegisterNodes_OneProofIsForAnotherOwner() public {
        (bytes32[] memory ids, bytes[] memory keys, bytes[] memory proofs) = _proofs(0, 3);
        (, proofs[1]) = proof(registry, 0x3001, ids[1], STRANGER, 1);
        vm.prank(OWNER);
        (bool ok,) = address(registry).call(abi.encodeCall(IKeyRegistry.registerNodes, (ids, keys, proofs)));
        assertTrue(!ok, "refused");
        for (uint256 i; i < 3; ++i) {
            vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NodeNotFound.selector, ids[i]));
            registry.getNode(ids[i]);
        }
    }
}
