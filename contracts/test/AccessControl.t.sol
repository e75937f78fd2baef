// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {TestBase} from "./utils/TestBase.sol";
import {vm} from "./utils/Vm.sol";
import {IKeyRegistry} from "../src/IKeyRegistry.sol";
import {KeyRegistry} from "../src/KeyRegistry.sol";

/// Every state-changing function called by the node owner, the group admin and a stranger: only the
/// allowed role succeeds, the others get the error naming them.
contract AccessControlTest is TestBase {
    KeyRegistry internal registry;

    address internal constant OWNER = address(0xA11CE);
    address internal constant ADMIN = address(0xAD);
    address internal constant STRANGER = address(0xBAD);

    bytes32 internal constant MEMBER = "1111";
    bytes32 internal constant OUTSIDER = "1112";
    bytes32 internal constant GROUP = "hsu0001";

    enum Allowed {
        Anyone,
        NodeOwner,
        GroupAdmin
    }

    function setUp() public {
        registry = new KeyRegistry();
        registerAs(registry, OWNER, MEMBER, testNodeKey("1111"));
        registerAs(registry, OWNER, OUTSIDER, testNodeKey("1112"));
        vm.prank(ADMIN);
        registry.createGroup(GROUP, "hsu/0001/#");
        vm.prank(ADMIN);
        registry.addMember(GROUP, MEMBER);
    }

    /// The call for function `index` as sent by `caller`, and who may send it.
    function _call(uint256 index, address caller) internal returns (bytes memory data, Allowed allowed) {
        if (index == 0) {
            (bytes memory publicKey, bytes memory signature) =
                proof(registry, testNodeKey("new"), "new", caller, 1);
            return (abi.encodeCall(IKeyRegistry.registerNode, ("new", publicKey, signature)), Allowed.Anyone);
        }
        if (index == 1) {
            (bytes memory publicKey, bytes memory signature) =
                proof(registry, testNodeKey("v2"), MEMBER, caller, 2);
            return (
                abi.encodeCall(IKeyRegistry.rotateKey, (MEMBER, publicKey, signature, one(GROUP))),
                Allowed.NodeOwner
            );
        }
        if (index == 2) {
            return (abi.encodeCall(IKeyRegistry.revokeNode, (MEMBER, one(GROUP))), Allowed.NodeOwner);
        }
        if (index == 3) {
            return (abi.encodeCall(IKeyRegistry.transferNodeOwnership, (MEMBER, STRANGER)), Allowed.NodeOwner);
        }
        if (index == 4) return (abi.encodeCall(IKeyRegistry.createGroup, ("new", "")), Allowed.Anyone);
        if (index == 5) {
            return (abi.encodeCall(IKeyRegistry.transferGroupAdmin, (GROUP, OWNER)), Allowed.GroupAdmin);
        }
        if (index == 6) {
            return (abi.encodeCall(IKeyRegistry.addMember, (GROUP, OUTSIDER)), Allowed.GroupAdmin);
        }
        if (index == 7) {
            return (abi.encodeCall(IKeyRegistry.removeMember, (GROUP, MEMBER)), Allowed.GroupAdmin);
        }
        if (index == 8) return (abi.encodeCall(IKeyRegistry.leaveGroup, (GROUP, MEMBER)), Allowed.NodeOwner);
        revert("no such function");
    }

    uint256 internal constant FUNCTION_COUNT = 9;

    function test_AccessControlMatrix() public {
        address[3] memory callers = [OWNER, ADMIN, STRANGER];
        uint256 successes;
        for (uint256 index; index < FUNCTION_COUNT; ++index) {
            for (uint256 c; c < callers.length; ++c) {
                address caller = callers[c];
                uint256 snapshot = vm.snapshotState();
                (bytes memory data, Allowed allowed) = _call(index, caller);
                vm.prank(caller);
                (bool ok, bytes memory returned) = address(registry).call(data);

                bool expected = allowed == Allowed.Anyone || (allowed == Allowed.NodeOwner && caller == OWNER)
                    || (allowed == Allowed.GroupAdmin && caller == ADMIN);
                string memory cell =
                    string.concat("function ", vm.toString(index), " caller ", vm.toString(caller));
                assertTrue(ok == expected, cell);
                if (ok) {
                    ++successes;
                } else if (allowed == Allowed.NodeOwner) {
                    assertEq(
                        returned,
                        abi.encodeWithSelector(IKeyRegistry.NotNodeOwner.selector, MEMBER, caller),
                        cell
                    );
                } else {
                    assertEq(
                        returned,
                        abi.encodeWithSelector(IKeyRegistry.NotGroupAdmin.selector, GROUP, caller),
                        cell
                    );
                }
                vm.revertToState(snapshot);
            }
        }
        // 2 functions open to all three callers, 7 restricted to exactly one.
        assertEq(successes, 2 * 3 + 7, "successful cells");
    }
}
