// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {TestBase} from "./utils/TestBase.sol";
import {console, vm} from "./utils/Vm.sol";
import {IKeyRegistry} from "../src/IKeyRegistry.sol";
import {KeyRegistry} from "../src/KeyRegistry.sol";

/// rotateKey and revokeNode used to take the node's exact group list, so whoever could change that list (any
/// admin the owner approved, and before consent any admin at all) could make them revert between the owner's
/// read and write, or cost up to ~1.2M gas. Now they touch the node record only: the same gas in 0, 1 or 100
/// groups, and nothing another account does can make them fail.
contract GriefingTest is TestBase {
    KeyRegistry internal registry;

    address internal constant OWNER = address(0xA11CE);
    /// An admin OWNER once approved, now hostile: it may add OWNER's nodes to any of its groups.
    address internal constant HOSTILE = address(0xBAD);
    address internal constant ADMIN = address(0xAD);

    bytes32 internal constant NODE = "1111";
    bytes32 internal constant OTHER_NODE = "1112";
    /// HOSTILE's groups are bytes32(1) .. bytes32(MANY).
    uint256 internal constant MANY = 100;

    function setUp() public {
        registry = new KeyRegistry(address(0));
        registerAs(registry, OWNER, NODE, testNodeKey("1111"));
        registerAs(registry, OWNER, OTHER_NODE, testNodeKey("1112"));
        vm.prank(OWNER);
        registry.setAdminApproval(HOSTILE, true);
        vm.startPrank(HOSTILE);
        for (uint256 i = 1; i <= MANY; ++i) {
            registry.createGroup(bytes32(i), "");
        }
        vm.stopPrank();
    }

    function _joinHostileGroups(uint256 count) internal {
        vm.startPrank(HOSTILE);
        for (uint256 i = 1; i <= count; ++i) {
            registry.addMember(bytes32(i), NODE);
        }
        vm.stopPrank();
    }

    /// Execution gas of `data` sent by OWNER once the hostile admin put NODE into `groups` groups, on cold
    /// storage (vm.cool), from the same starting state every time (the state is rolled back afterwards). The
    /// call data is the same for every group count, so the signature checks take the same path too.
    function _gasIn(uint256 groups, bytes memory data) internal returns (uint256 gas) {
        uint256 snapshot = vm.snapshotState();
        _joinHostileGroups(groups);
        assertTrue(groups == 0 || registry.isMember(bytes32(groups), NODE), "joined");
        vm.cool(address(registry));
        vm.prank(OWNER);
        (bool ok,) = address(registry).call(data);
        assertTrue(ok, "owner's call reverted");
        gas = vm.lastCallGas().gasTotalUsed;
        vm.revertToState(snapshot);
    }

    // ------------------------------------------------------------------ constant gas

    function test_Griefing_RotateKeyGasIsTheSameInZeroOneOrManyGroups() public {
        (bytes memory publicKey, bytes memory signature) =
            proof(registry, testNodeKey("1111 v2"), NODE, OWNER, 2);
        bytes memory rotate = abi.encodeCall(IKeyRegistry.rotateKey, (NODE, publicKey, signature));
        uint256 none = _gasIn(0, rotate);
        uint256 single = _gasIn(1, rotate);
        uint256 many = _gasIn(MANY, rotate);
        console.log("rotateKey, node in 0 groups", none);
        console.log("rotateKey, node in 1 group", single);
        console.log("rotateKey, node in 100 groups", many);
        assertEq(single, none, "1 group costs more than 0");
        assertEq(many, none, "100 groups cost more than 0");
    }

    function test_Griefing_RevokeNodeGasIsTheSameInZeroOneOrManyGroups() public {
        bytes memory revoke = abi.encodeCall(IKeyRegistry.revokeNode, (NODE));
        uint256 none = _gasIn(0, revoke);
        uint256 single = _gasIn(1, revoke);
        uint256 many = _gasIn(MANY, revoke);
        console.log("revokeNode, node in 0 groups", none);
        console.log("revokeNode, node in 1 group", single);
        console.log("revokeNode, node in 100 groups", many);
        assertEq(single, none, "1 group costs more than 0");
        assertEq(many, none, "100 groups cost more than 0");
    }

    // ------------------------------------------------------------------ between the owner's read and write

    function test_Griefing_AddAndRemoveBeforeRotateKeyCannotRevertIt() public {
        _joinHostileGroups(MANY);
        // The owner reads its node and signs the next key version...
        IKeyRegistry.Node memory read = registry.getNode(NODE);
        (bytes memory publicKey, bytes memory signature) =
            proof(registry, testNodeKey("1111 v2"), NODE, OWNER, read.keyVersion + 1);

        // ...the approved admin changes the node's groups right before the owner's transaction lands...
        vm.startPrank(HOSTILE);
        registry.removeMember(bytes32(uint256(1)), NODE);
        registry.createGroup("late", "");
        registry.addMember("late", NODE);
        registry.addMember("late", OTHER_NODE);
        vm.stopPrank();

        // ...and the rotation still goes through with what the owner read: there is no group list to mismatch.
        vm.prank(OWNER);
        registry.rotateKey(NODE, publicKey, signature);
        assertEq(registry.getNode(NODE).keyVersion, read.keyVersion + 1, "rotated");
    }

    function test_Griefing_AddAndRemoveBeforeRevokeNodeCannotRevertIt() public {
        _joinHostileGroups(MANY);
        registry.getNode(NODE);
        vm.startPrank(HOSTILE);
        registry.removeMember(bytes32(uint256(2)), NODE);
        registry.createGroup("late", "");
        registry.addMember("late", NODE);
        vm.stopPrank();

        vm.prank(OWNER);
        registry.revokeNode(NODE);
        assertEq(uint256(registry.getNode(NODE).status), uint256(IKeyRegistry.NodeStatus.Revoked), "revoked");
        // The hostile admin cannot add the revoked node anywhere else.
        vm.prank(HOSTILE);
        registry.createGroup("later", "");
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NodeIsRevoked.selector, NODE));
        vm.prank(HOSTILE);
        registry.addMember("later", NODE);
    }

    function test_Griefing_NoGroupLimitToExhaust() public {
        // A hundred hostile groups leave the node free to join a legitimate one (there was a 64-group cap,
        // which a hostile admin could fill).
        _joinHostileGroups(MANY);
        vm.prank(OWNER);
        registry.setAdminApproval(ADMIN, true);
        vm.prank(ADMIN);
        registry.createGroup("legit", "");
        vm.prank(ADMIN);
        registry.addMember("legit", NODE);
        assertTrue(registry.isMember("legit", NODE), "joined");
    }
}
