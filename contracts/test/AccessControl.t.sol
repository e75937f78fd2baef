// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {TestBase} from "./utils/TestBase.sol";
import {vm} from "./utils/Vm.sol";
import {IKeyRegistry} from "../src/IKeyRegistry.sol";
import {KeyRegistry} from "../src/KeyRegistry.sol";

/// Every state-changing function called by the node owner, the group admin, a stranger and the registry
/// operator: only the allowed callers succeed, the others get the error naming them. Run on an open registry
/// and on a closed one (OPERATOR operates it, OWNER and ADMIN are registrars, STRANGER is not).
abstract contract AccessControlMatrix is TestBase {
    KeyRegistry internal registry;

    address internal constant OWNER = address(0xA11CE);
    address internal constant ADMIN = address(0xAD);
    address internal constant STRANGER = address(0xBAD);
    address internal constant OPERATOR = address(0x0CE);

    bytes32 internal constant MEMBER = "1111";
    /// Owned by OWNER, offered to ADMIN (pending), not in GROUP.
    bytes32 internal constant OUTSIDER = "1112";
    /// Administered by ADMIN, offered to OWNER (pending); MEMBER is in it.
    bytes32 internal constant GROUP = "hsu0001";

    uint256 internal constant FUNCTION_COUNT = 20;

    /// Who gets which error when not allowed.
    enum Role {
        Anyone,
        Registrar,
        NodeOwner,
        PendingNodeOwner,
        GroupAdmin,
        PendingGroupAdmin,
        Operator,
        PendingOperator
    }

    function _closed() internal pure virtual returns (bool);

    function setUp() public {
        registry = new KeyRegistry(_closed() ? OPERATOR : address(0));
        if (_closed()) {
            vm.startPrank(OPERATOR);
            registry.setRegistrar(OWNER, true);
            registry.setRegistrar(ADMIN, true);
            registry.transferOperator(STRANGER);
            vm.stopPrank();
        }
        registerAs(registry, OWNER, MEMBER, testNodeKey("1111"));
        registerAs(registry, OWNER, OUTSIDER, testNodeKey("1112"));
        vm.startPrank(OWNER);
        registry.setAdminApproval(ADMIN, true);
        registry.transferNodeOwnership(OUTSIDER, ADMIN);
        vm.stopPrank();
        vm.startPrank(ADMIN);
        registry.createGroup(GROUP, "hsu/0001/#");
        registry.addMember(GROUP, MEMBER);
        registry.transferGroupAdmin(GROUP, OWNER);
        vm.stopPrank();
    }

    /// The call for function `index` as sent by `caller`, and the role it needs.
    function _call(uint256 index, address caller) internal returns (bytes memory data, Role role) {
        if (index == 0) {
            (bytes memory publicKey, bytes memory signature) =
                proof(registry, testNodeKey("new"), "new", caller, 1);
            return (abi.encodeCall(IKeyRegistry.registerNode, ("new", publicKey, signature)), Role.Registrar);
        }
        if (index == 1) {
            (bytes memory publicKey, bytes memory signature) =
                proof(registry, testNodeKey("v2"), MEMBER, caller, 2);
            return (abi.encodeCall(IKeyRegistry.rotateKey, (MEMBER, publicKey, signature)), Role.NodeOwner);
        }
        if (index == 2) return (abi.encodeCall(IKeyRegistry.revokeNode, (MEMBER)), Role.NodeOwner);
        if (index == 3) {
            return (abi.encodeCall(IKeyRegistry.transferNodeOwnership, (MEMBER, STRANGER)), Role.NodeOwner);
        }
        if (index == 4) {
            return (abi.encodeCall(IKeyRegistry.acceptNodeOwnership, (OUTSIDER)), Role.PendingNodeOwner);
        }
        if (index == 5) return (abi.encodeCall(IKeyRegistry.setAdminApproval, (ADMIN, true)), Role.Anyone);
        if (index == 6) return (abi.encodeCall(IKeyRegistry.createGroup, ("new", "new/#")), Role.Registrar);
        if (index == 7) {
            return (abi.encodeCall(IKeyRegistry.transferGroupAdmin, (GROUP, STRANGER)), Role.GroupAdmin);
        }
        if (index == 8) {
            return (abi.encodeCall(IKeyRegistry.acceptGroupAdmin, (GROUP)), Role.PendingGroupAdmin);
        }
        if (index == 9) return (abi.encodeCall(IKeyRegistry.addMember, (GROUP, OUTSIDER)), Role.GroupAdmin);
        if (index == 10) {
            return (abi.encodeCall(IKeyRegistry.removeMember, (GROUP, MEMBER)), Role.GroupAdmin);
        }
        if (index == 11) return (abi.encodeCall(IKeyRegistry.leaveGroup, (GROUP, MEMBER)), Role.NodeOwner);
        if (index == 12) return (abi.encodeCall(IKeyRegistry.setRegistrar, (STRANGER, true)), Role.Operator);
        if (index == 13) return (abi.encodeCall(IKeyRegistry.transferOperator, (OWNER)), Role.Operator);
        if (index == 14) return (abi.encodeCall(IKeyRegistry.acceptOperator, ()), Role.PendingOperator);
        bytes32[] memory nodes = new bytes32[](1);
        if (index == 15) {
            nodes[0] = OUTSIDER;
            return (abi.encodeCall(IKeyRegistry.addMembers, (GROUP, nodes)), Role.GroupAdmin);
        }
        if (index == 16) {
            nodes[0] = MEMBER;
            return (abi.encodeCall(IKeyRegistry.removeMembers, (GROUP, nodes)), Role.GroupAdmin);
        }
        if (index == 17) {
            nodes[0] = "new";
            bytes[] memory keys = new bytes[](1);
            bytes[] memory proofs = new bytes[](1);
            (keys[0], proofs[0]) = proof(registry, testNodeKey("new"), "new", caller, 1);
            return (abi.encodeCall(IKeyRegistry.registerNodes, (nodes, keys, proofs)), Role.Registrar);
        }
        if (index == 18) {
            nodes[0] = OUTSIDER;
            return (abi.encodeCall(IKeyRegistry.addMembersWithRoles, (GROUP, nodes, 1)), Role.GroupAdmin);
        }
        if (index == 19) {
            nodes[0] = MEMBER;
            return (abi.encodeCall(IKeyRegistry.setMemberRoles, (GROUP, nodes, 1)), Role.GroupAdmin);
        }
        revert("no such function");
    }

    /// Whether `caller` holds `role` in the setUp state.
    function _holds(Role role, address caller) internal pure returns (bool) {
        if (role == Role.Anyone) return true;
        if (role == Role.Registrar) return !_closed() || caller == OWNER || caller == ADMIN;
        if (role == Role.NodeOwner) return caller == OWNER;
        if (role == Role.PendingNodeOwner) return caller == ADMIN;
        if (role == Role.GroupAdmin) return caller == ADMIN;
        if (role == Role.PendingGroupAdmin) return caller == OWNER;
        if (role == Role.Operator) return _closed() && caller == OPERATOR;
        return _closed() && caller == STRANGER; // PendingOperator
    }

    function _expectedError(Role role, address caller) internal pure returns (bytes memory) {
        if (role == Role.Registrar) {
            return abi.encodeWithSelector(IKeyRegistry.NotRegistrar.selector, caller);
        }
        if (role == Role.NodeOwner) {
            return abi.encodeWithSelector(IKeyRegistry.NotNodeOwner.selector, MEMBER, caller);
        }
        if (role == Role.PendingNodeOwner) {
            return abi.encodeWithSelector(IKeyRegistry.NotPendingNodeOwner.selector, OUTSIDER, caller);
        }
        if (role == Role.GroupAdmin) {
            return abi.encodeWithSelector(IKeyRegistry.NotGroupAdmin.selector, GROUP, caller);
        }
        if (role == Role.PendingGroupAdmin) {
            return abi.encodeWithSelector(IKeyRegistry.NotPendingGroupAdmin.selector, GROUP, caller);
        }
        if (role == Role.Operator) return abi.encodeWithSelector(IKeyRegistry.NotOperator.selector, caller);
        return abi.encodeWithSelector(IKeyRegistry.NotPendingOperator.selector, caller);
    }

    function _runMatrix() internal returns (uint256 successes) {
        address[4] memory callers = [OWNER, ADMIN, STRANGER, OPERATOR];
        for (uint256 index; index < FUNCTION_COUNT; ++index) {
            for (uint256 c; c < callers.length; ++c) {
                address caller = callers[c];
                uint256 snapshot = vm.snapshotState();
                (bytes memory data, Role role) = _call(index, caller);
                vm.prank(caller);
                (bool ok, bytes memory returned) = address(registry).call(data);

                string memory cell =
                    string.concat("function ", vm.toString(index), " caller ", vm.toString(caller));
                assertTrue(ok == _holds(role, caller), cell);
                if (ok) ++successes;
                else assertEq(returned, _expectedError(role, caller), cell);
                vm.revertToState(snapshot);
            }
        }
    }
}

contract OpenRegistryAccessControlTest is AccessControlMatrix {
    function _closed() internal pure override returns (bool) {
        return false;
    }

    function test_AccessControlMatrix_OpenRegistry() public {
        // registerNode(s), setAdminApproval, createGroup: all 4 callers; 13 functions: exactly one caller;
        // setRegistrar, transferOperator, acceptOperator: nobody (an open registry has no operator).
        assertEq(_runMatrix(), 4 * 4 + 13, "successful cells");
    }

    // ------------------------------------------------------------------ allowed calls, other people's things

    function test_CrossAccount_StrangersOwnGroupCannotTakeOwnersNode() public {
        vm.prank(STRANGER);
        registry.createGroup("trap", "hsu/#");
        vm.expectRevert(
            abi.encodeWithSelector(IKeyRegistry.AdminNotApproved.selector, MEMBER, OWNER, STRANGER)
        );
        vm.prank(STRANGER);
        registry.addMember("trap", MEMBER);
        assertTrue(!registry.isMember("trap", MEMBER), "not a member");
    }

    function test_CrossAccount_StrangersApprovalCoversOnlyStrangersNodes() public {
        registerAs(registry, STRANGER, "stranger node", testNodeKey("stranger node"));
        vm.prank(ADMIN);
        registry.createGroup("hsu0002", "");

        // The stranger approves ADMIN, and even approves itself: neither is consent for OWNER's nodes.
        vm.startPrank(STRANGER);
        registry.setAdminApproval(ADMIN, true);
        registry.setAdminApproval(STRANGER, true);
        registry.createGroup("trap", "");
        vm.expectRevert(
            abi.encodeWithSelector(IKeyRegistry.AdminNotApproved.selector, MEMBER, OWNER, STRANGER)
        );
        registry.addMember("trap", MEMBER);
        vm.stopPrank();
        assertTrue(!registry.isAdminApproved(OWNER, STRANGER), "OWNER's approvals untouched");

        // ADMIN may add the stranger's node now; OWNER's approval of ADMIN is what lets it add OWNER's nodes.
        vm.startPrank(ADMIN);
        registry.addMember("hsu0002", "stranger node");
        registry.addMember("hsu0002", MEMBER);
        vm.stopPrank();
        assertTrue(
            registry.isMember("hsu0002", "stranger node") && registry.isMember("hsu0002", MEMBER), "added"
        );
    }

    function test_CrossAccount_StrangerLeavesAdminsGroupWithItsOwnNodeOnly() public {
        registerAs(registry, STRANGER, "stranger node", testNodeKey("stranger node"));
        vm.prank(STRANGER);
        registry.setAdminApproval(ADMIN, true);
        vm.prank(ADMIN);
        registry.addMember(GROUP, "stranger node");

        vm.prank(STRANGER);
        registry.leaveGroup(GROUP, "stranger node");
        assertTrue(!registry.isMember(GROUP, "stranger node"), "left ADMIN's group");
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotNodeOwner.selector, MEMBER, STRANGER));
        vm.prank(STRANGER);
        registry.leaveGroup(GROUP, MEMBER);
    }

    function test_CrossAccount_StrangersOffersChangeNothingUntilAccepted() public {
        // A stranger cannot push a node or a group onto OWNER: an offer is only an offer.
        registerAs(registry, STRANGER, "stranger node", testNodeKey("stranger node"));
        vm.startPrank(STRANGER);
        registry.createGroup("stranger group", "");
        registry.transferNodeOwnership("stranger node", OWNER);
        registry.transferGroupAdmin("stranger group", OWNER);
        vm.stopPrank();
        assertEq(registry.getNode("stranger node").owner, STRANGER, "node still the stranger's");
        assertEq(registry.getGroup("stranger group").admin, STRANGER, "group still the stranger's");
    }

    function test_CrossAccount_StrangerCannotAcceptOffersMadeToOthers() public {
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotPendingNodeOwner.selector, OUTSIDER, STRANGER));
        vm.prank(STRANGER);
        registry.acceptNodeOwnership(OUTSIDER);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotPendingGroupAdmin.selector, GROUP, STRANGER));
        vm.prank(STRANGER);
        registry.acceptGroupAdmin(GROUP);
        assertEq(registry.getNode(OUTSIDER).pendingOwner, ADMIN, "offer intact");
        assertEq(registry.getGroup(GROUP).pendingAdmin, OWNER, "offer intact");
    }
}

contract ClosedRegistryAccessControlTest is AccessControlMatrix {
    function _closed() internal pure override returns (bool) {
        return true;
    }

    function test_AccessControlMatrix_ClosedRegistry() public {
        // registerNode(s), createGroup: the 2 registrars; setAdminApproval: all 4 callers; 16 functions: exactly
        // one caller (setRegistrar and transferOperator: OPERATOR; acceptOperator: STRANGER, offered the role).
        assertEq(_runMatrix(), 3 * 2 + 4 + 16, "successful cells");
    }
}
