// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {TestBase} from "./utils/TestBase.sol";
import {vm, Vm} from "./utils/Vm.sol";
import {IKeyRegistry} from "../src/IKeyRegistry.sol";
import {KeyRegistry} from "../src/KeyRegistry.sol";

/// Member roles: READ (1) receives the group's sender keys, WRITE (2) is accepted as a sender. `addMember` and
/// `addMembers` give both (3) and write nothing more; `addMembersWithRoles` and `setMemberRoles` set fewer or
/// more, one epoch bump per call. Granting a role needs the consent an add needs, dropping one needs none, and
/// removal forgets the roles.
contract RolesTest is TestBase {
    KeyRegistry internal registry;

    address internal constant OWNER = address(0xA11CE);
    address internal constant ADMIN = address(0xAD);
    address internal constant STRANGER = address(0xBAD);
    address internal constant NEW_OWNER = address(0xB0B);

    uint8 internal constant READ = 1;
    uint8 internal constant WRITE = 2;
    uint8 internal constant BOTH = 3;

    /// OWNER's nodes; OWNER approved ADMIN in setUp.
    bytes32 internal constant NODE_A = "1111";
    bytes32 internal constant NODE_B = "1112";
    /// ADMIN's own nodes (no approval involved).
    bytes32 internal constant FLEET_1 = "2111";
    bytes32 internal constant FLEET_2 = "2112";
    bytes32 internal constant FLEET_3 = "2113";
    bytes32 internal constant GROUP = "hsu0001";
    bytes32 internal constant OTHER_GROUP = "hsu0002";

    function setUp() public {
        registry = new KeyRegistry(address(0));
        registerAs(registry, OWNER, NODE_A, testNodeKey("1111"));
        registerAs(registry, OWNER, NODE_B, testNodeKey("1112"));
        registerAs(registry, ADMIN, FLEET_1, testNodeKey("2111"));
        registerAs(registry, ADMIN, FLEET_2, testNodeKey("2112"));
        registerAs(registry, ADMIN, FLEET_3, testNodeKey("2113"));
        vm.prank(OWNER);
        registry.setAdminApproval(ADMIN, true);
        vm.startPrank(ADMIN);
        registry.createGroup(GROUP, "hsu/0001/#");
        registry.createGroup(OTHER_GROUP, "");
        vm.stopPrank();
    }

    function _list(bytes32 a) internal pure returns (bytes32[] memory ids) {
        ids = new bytes32[](1);
        ids[0] = a;
    }

    function _list(bytes32 a, bytes32 b) internal pure returns (bytes32[] memory ids) {
        ids = new bytes32[](2);
        (ids[0], ids[1]) = (a, b);
    }

    function _list(bytes32 a, bytes32 b, bytes32 c) internal pure returns (bytes32[] memory ids) {
        ids = new bytes32[](3);
        (ids[0], ids[1], ids[2]) = (a, b, c);
    }

    function _epoch() internal view returns (uint64) {
        return registry.getGroup(GROUP).epoch;
    }

    function _roles(bytes32 nodeId) internal view returns (uint256) {
        return registry.memberRoles(GROUP, nodeId);
    }

    function _addWithRoles(bytes32[] memory ids, uint8 roles) internal {
        vm.prank(ADMIN);
        registry.addMembersWithRoles(GROUP, ids, roles);
    }

    function _setRoles(bytes32[] memory ids, uint8 roles) internal {
        vm.prank(ADMIN);
        registry.setMemberRoles(GROUP, ids, roles);
    }

    /// The logs the registry emitted since `vm.recordLogs()` (the test's own `emit`s for `vm.expectEmit` are
    /// recorded too).
    function _registryLogs() internal returns (Vm.Log[] memory logs) {
        Vm.Log[] memory all = vm.getRecordedLogs();
        logs = new Vm.Log[](all.length);
        uint256 count;
        for (uint256 i; i < all.length; ++i) {
            if (all[i].emitter == address(registry)) logs[count++] = all[i];
        }
        assembly ("memory-safe") {
            mstore(logs, count)
        }
    }

    function _expectNotApproved(bytes32 nodeId, address owner) internal {
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.AdminNotApproved.selector, nodeId, owner, ADMIN));
    }

    // ------------------------------------------------------------------ plain adds: both roles

    function test_Roles_AddMemberAndAddMembersGiveBothWithoutARolesEvent() public {
        vm.recordLogs();
        vm.startPrank(ADMIN);
        registry.addMember(GROUP, NODE_A);
        registry.addMembers(GROUP, _list(FLEET_1, FLEET_2));
        vm.stopPrank();
        Vm.Log[] memory logs = _registryLogs();
        assertEq(logs.length, 3, "one event per added node");
        for (uint256 i; i < logs.length; ++i) {
            assertEq(logs[i].topics[0], IKeyRegistry.MemberAdded.selector, "MemberAdded only");
        }
        assertEq(_roles(NODE_A), BOTH, "addMember");
        assertEq(_roles(FLEET_1), BOTH, "addMembers");
        assertEq(_roles(FLEET_2), BOTH, "addMembers");
    }

    function test_Roles_ZeroForNonMembersAndUnknownIds() public {
        assertEq(_roles(NODE_A), 0, "registered, not a member");
        assertEq(_roles("nobody"), 0, "unknown node");
        assertEq(registry.memberRoles("no group", NODE_A), 0, "unknown group");
        assertEq(registry.memberRoles(bytes32(0), bytes32(0)), 0, "zero IDs");
        _addWithRoles(_list(NODE_A), READ);
        assertEq(registry.memberRoles(OTHER_GROUP, NODE_A), 0, "member of another group only");
    }

    function test_Roles_ArePerGroup() public {
        _addWithRoles(_list(NODE_A), READ);
        vm.prank(ADMIN);
        registry.addMembersWithRoles(OTHER_GROUP, _list(NODE_A), WRITE);
        assertEq(registry.memberRoles(GROUP, NODE_A), READ, "first group");
        assertEq(registry.memberRoles(OTHER_GROUP, NODE_A), WRITE, "second group");
        vm.prank(ADMIN);
        registry.setMemberRoles(OTHER_GROUP, _list(NODE_A), BOTH);
        assertEq(registry.memberRoles(GROUP, NODE_A), READ, "first group untouched");
    }

    // ------------------------------------------------------------------ addMembersWithRoles

    function _checkAddWithRoles(uint8 roles) internal {
        bytes32[] memory ids = _list(NODE_A, FLEET_1, FLEET_2);
        uint64 next = _epoch() + 1;
        vm.recordLogs();
        for (uint256 i; i < ids.length; ++i) {
            vm.expectEmit(address(registry));
            emit IKeyRegistry.MemberAdded(GROUP, ids[i], next, ADMIN);
            vm.expectEmit(address(registry));
            emit IKeyRegistry.MemberRolesSet(GROUP, ids[i], roles, next, ADMIN);
        }
        _addWithRoles(ids, roles);
        assertEq(_registryLogs().length, 2 * ids.length, "MemberAdded and MemberRolesSet per node, only");
        assertEq(_epoch(), next, "one epoch bump for the batch");
        assertEq(registry.getGroup(GROUP).memberCount, ids.length, "member count");
        for (uint256 i; i < ids.length; ++i) {
            assertTrue(registry.isMember(GROUP, ids[i]), "member");
            assertEq(_roles(ids[i]), roles, "roles");
        }
    }

    function test_Roles_AddMembersWithRoles_ReadOnly() public {
        _checkAddWithRoles(READ);
    }

    function test_Roles_AddMembersWithRoles_WriteOnly() public {
        _checkAddWithRoles(WRITE);
    }

    function test_Roles_AddMembersWithRoles_BothEmitsMemberAddedOnly() public {
        vm.prank(ADMIN);
        registry.addMember(GROUP, FLEET_3);
        uint64 next = _epoch() + 1;
        vm.recordLogs();
        vm.expectEmit(address(registry));
        emit IKeyRegistry.MemberAdded(GROUP, NODE_A, next, ADMIN);
        vm.expectEmit(address(registry));
        emit IKeyRegistry.MemberAdded(GROUP, FLEET_1, next, ADMIN);
        _addWithRoles(_list(NODE_A, FLEET_1), BOTH);
        Vm.Log[] memory logs = _registryLogs();
        assertEq(logs.length, 2, "no MemberRolesSet");
        assertEq(logs[1].topics[0], IKeyRegistry.MemberAdded.selector, "MemberAdded");
        assertEq(_epoch(), next, "one epoch bump");
        assertEq(_roles(NODE_A), BOTH, "roles");
        assertEq(_roles(FLEET_1), BOTH, "roles");
    }

    /// A refused batch changes nothing: no member, no roles, no epoch.
    function _expectAddRefused(bytes32[] memory ids, uint8 roles, bytes memory error) internal {
        uint64 before = _epoch();
        uint32 count = registry.getGroup(GROUP).memberCount;
        vm.expectRevert(error);
        _addWithRoles(ids, roles);
        assertEq(_epoch(), before, "epoch unchanged");
        assertEq(registry.getGroup(GROUP).memberCount, count, "members unchanged");
    }

    function test_RevertWhen_Roles_AddMembersWithRoles_InvalidRoles() public {
        _expectAddRefused(_list(FLEET_1), 0, abi.encodeWithSelector(IKeyRegistry.InvalidRoles.selector, 0));
        for (uint256 roles = 4; roles <= type(uint8).max; ++roles) {
            _expectAddRefused(
                _list(FLEET_1),
                uint8(roles),
                abi.encodeWithSelector(IKeyRegistry.InvalidRoles.selector, roles)
            );
        }
        assertEq(_roles(FLEET_1), 0, "not added");
    }

    /// InvalidRoles comes right after the admin check: before the list and its nodes are looked at.
    function test_RevertWhen_Roles_AddMembersWithRoles_CheckOrder() public {
        bytes memory invalid = abi.encodeWithSelector(IKeyRegistry.InvalidRoles.selector, 4);
        _expectAddRefused(new bytes32[](0), 4, invalid);
        _expectAddRefused(_list("nobody"), 4, invalid);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotGroupAdmin.selector, GROUP, STRANGER));
        vm.prank(STRANGER);
        registry.addMembersWithRoles(GROUP, _list(FLEET_1), 0);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.GroupNotFound.selector, bytes32("no group")));
        vm.prank(ADMIN);
        registry.addMembersWithRoles("no group", _list(FLEET_1), 0);
    }

    function test_RevertWhen_Roles_AddMembersWithRoles_EmptyList() public {
        _expectAddRefused(new bytes32[](0), READ, abi.encodeWithSelector(IKeyRegistry.EmptyNodeList.selector));
    }

    function test_RevertWhen_Roles_AddMembersWithRoles_RefusesWhatAddMembersRefuses() public {
        _expectAddRefused(
            _list(FLEET_1, "nobody"),
            READ,
            abi.encodeWithSelector(IKeyRegistry.NodeNotFound.selector, bytes32("nobody"))
        );
        _expectAddRefused(
            _list(FLEET_1, FLEET_2, FLEET_1),
            READ,
            abi.encodeWithSelector(IKeyRegistry.AlreadyMember.selector, GROUP, FLEET_1)
        );
        vm.prank(ADMIN);
        registry.addMember(GROUP, FLEET_3);
        _expectAddRefused(
            _list(FLEET_1, FLEET_3),
            WRITE,
            abi.encodeWithSelector(IKeyRegistry.AlreadyMember.selector, GROUP, FLEET_3)
        );
        vm.prank(OWNER);
        registry.setAdminApproval(ADMIN, false);
        _expectAddRefused(
            _list(FLEET_1, NODE_A),
            READ,
            abi.encodeWithSelector(IKeyRegistry.AdminNotApproved.selector, NODE_A, OWNER, ADMIN)
        );
        vm.prank(ADMIN);
        registry.revokeNode(FLEET_2);
        _expectAddRefused(
            _list(FLEET_1, FLEET_2),
            READ,
            abi.encodeWithSelector(IKeyRegistry.NodeIsRevoked.selector, FLEET_2)
        );
        assertEq(_roles(FLEET_1), 0, "the valid node of each refused batch was not added");
        assertEq(_roles(FLEET_3), BOTH, "the existing member keeps both roles");
    }

    // ------------------------------------------------------------------ setMemberRoles

    function test_Roles_SetMemberRoles_EmitsForEveryNodeUnderOneEpoch() public {
        vm.prank(ADMIN);
        registry.addMembers(GROUP, _list(NODE_A, FLEET_1, FLEET_2));
        uint64 next = _epoch() + 1;
        vm.recordLogs();
        vm.expectEmit(address(registry));
        emit IKeyRegistry.MemberRolesSet(GROUP, FLEET_2, READ, next, ADMIN);
        vm.expectEmit(address(registry));
        emit IKeyRegistry.MemberRolesSet(GROUP, NODE_A, READ, next, ADMIN);
        _setRoles(_list(FLEET_2, NODE_A), READ);
        assertEq(_registryLogs().length, 2, "one event per listed node");
        assertEq(_epoch(), next, "one epoch bump for the batch");
        assertEq(_roles(FLEET_2), READ, "set");
        assertEq(_roles(NODE_A), READ, "set");
        assertEq(_roles(FLEET_1), BOTH, "unlisted member untouched");
        assertEq(registry.getGroup(GROUP).memberCount, 3, "members unchanged");
    }

    function test_Roles_SetMemberRoles_EveryTransition() public {
        uint8[3] memory all = [READ, WRITE, BOTH];
        vm.prank(ADMIN);
        registry.addMember(GROUP, NODE_A);
        for (uint256 from; from < 3; ++from) {
            for (uint256 to; to < 3; ++to) {
                _setRoles(_list(NODE_A), all[from]);
                assertEq(_roles(NODE_A), all[from], "from");
                uint64 next = _epoch() + 1;
                vm.expectEmit(address(registry));
                emit IKeyRegistry.MemberRolesSet(GROUP, NODE_A, all[to], next, ADMIN);
                _setRoles(_list(NODE_A), all[to]);
                assertEq(_roles(NODE_A), all[to], "to");
                assertEq(_epoch(), next, "one epoch bump");
            }
        }
    }

    function test_Roles_SetMemberRoles_UnchangedStillEmitsAndBumps() public {
        vm.prank(ADMIN);
        registry.addMember(GROUP, FLEET_1);
        _addWithRoles(_list(FLEET_2), WRITE);
        uint64 next = _epoch() + 1;
        vm.expectEmit(address(registry));
        emit IKeyRegistry.MemberRolesSet(GROUP, FLEET_1, BOTH, next, ADMIN);
        _setRoles(_list(FLEET_1), BOTH);
        assertEq(_epoch(), next, "epoch bumped");
        vm.expectEmit(address(registry));
        emit IKeyRegistry.MemberRolesSet(GROUP, FLEET_2, WRITE, next + 1, ADMIN);
        _setRoles(_list(FLEET_2), WRITE);
        assertEq(_epoch(), next + 1, "epoch bumped");
        assertEq(_roles(FLEET_1), BOTH, "unchanged");
        assertEq(_roles(FLEET_2), WRITE, "unchanged");
    }

    /// Consent is checked on grant only: with the approval withdrawn, the admin may still narrow a member's
    /// roles (it could remove the member outright) but not widen them.
    function test_Roles_SetMemberRoles_GrantNeedsConsentDropDoesNot() public {
        vm.prank(ADMIN);
        registry.addMember(GROUP, NODE_A);
        vm.prank(OWNER);
        registry.setAdminApproval(ADMIN, false);

        _setRoles(_list(NODE_A), READ); // drops WRITE
        assertEq(_roles(NODE_A), READ, "dropped without consent");
        _setRoles(_list(NODE_A), READ); // grants nothing
        uint64 epoch = _epoch();
        _expectNotApproved(NODE_A, OWNER);
        _setRoles(_list(NODE_A), WRITE); // drops READ but grants WRITE
        _expectNotApproved(NODE_A, OWNER);
        _setRoles(_list(NODE_A), BOTH);
        assertEq(_roles(NODE_A), READ, "refused grants changed nothing");
        assertEq(_epoch(), epoch, "refused grants bumped no epoch");

        vm.prank(OWNER);
        registry.setAdminApproval(ADMIN, true);
        _setRoles(_list(NODE_A), WRITE);
        assertEq(_roles(NODE_A), WRITE, "granted with consent");
    }

    function test_Roles_SetMemberRoles_AdminOwningTheNodeGrantsWithoutApproval() public {
        _addWithRoles(_list(FLEET_1), READ);
        _setRoles(_list(FLEET_1), BOTH);
        assertEq(_roles(FLEET_1), BOTH, "granted");
        assertTrue(!registry.isAdminApproved(ADMIN, ADMIN), "no self-approval was needed");
    }

    /// Consent follows the node's current owner and the group's current admin, as for adding.
    function test_Roles_SetMemberRoles_GrantAfterTransfersNeedsTheNewPartiesConsent() public {
        _addWithRoles(_list(NODE_A), READ);
        vm.prank(OWNER);
        registry.transferNodeOwnership(NODE_A, NEW_OWNER);
        vm.prank(NEW_OWNER);
        registry.acceptNodeOwnership(NODE_A);
        _expectNotApproved(NODE_A, NEW_OWNER);
        _setRoles(_list(NODE_A), BOTH);

        vm.prank(NEW_OWNER);
        registry.setAdminApproval(ADMIN, true);
        vm.prank(ADMIN);
        registry.transferGroupAdmin(GROUP, STRANGER);
        vm.prank(STRANGER);
        registry.acceptGroupAdmin(GROUP);
        vm.expectRevert(
            abi.encodeWithSelector(IKeyRegistry.AdminNotApproved.selector, NODE_A, NEW_OWNER, STRANGER)
        );
        vm.prank(STRANGER);
        registry.setMemberRoles(GROUP, _list(NODE_A), BOTH);
        vm.prank(STRANGER);
        registry.setMemberRoles(GROUP, _list(NODE_A), READ);
        assertEq(_roles(NODE_A), READ, "the new admin may set what needs no grant");
    }

    function test_RevertWhen_Roles_SetMemberRoles_GrantToARevokedNode() public {
        vm.prank(ADMIN);
        registry.addMember(GROUP, FLEET_2);
        _addWithRoles(_list(FLEET_1), READ);
        vm.startPrank(ADMIN);
        registry.revokeNode(FLEET_1);
        registry.revokeNode(FLEET_2);
        vm.stopPrank();

        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NodeIsRevoked.selector, FLEET_1));
        _setRoles(_list(FLEET_1), BOTH);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NodeIsRevoked.selector, FLEET_1));
        _setRoles(_list(FLEET_1), WRITE);
        // Dropping (or keeping) roles of a revoked member is fine.
        _setRoles(_list(FLEET_1), READ);
        _setRoles(_list(FLEET_2), WRITE);
        assertEq(_roles(FLEET_1), READ, "kept");
        assertEq(_roles(FLEET_2), WRITE, "dropped");
    }

    /// As when adding: a revoked node is refused before consent is looked at.
    function test_RevertWhen_Roles_SetMemberRoles_RevokedComesBeforeConsent() public {
        _addWithRoles(_list(NODE_A), READ);
        vm.startPrank(OWNER);
        registry.setAdminApproval(ADMIN, false);
        registry.revokeNode(NODE_A);
        vm.stopPrank();
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NodeIsRevoked.selector, NODE_A));
        _setRoles(_list(NODE_A), BOTH);
    }

    function test_RevertWhen_Roles_SetMemberRoles_NotMember() public {
        vm.prank(ADMIN);
        registry.addMembers(GROUP, _list(FLEET_1, FLEET_2));
        uint64 epoch = _epoch();
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotMember.selector, GROUP, FLEET_3));
        _setRoles(_list(FLEET_1, FLEET_3), READ);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotMember.selector, GROUP, bytes32("nobody")));
        _setRoles(_list(FLEET_1, "nobody"), READ);
        vm.prank(ADMIN);
        registry.removeMember(GROUP, FLEET_2);
        epoch += 1;
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotMember.selector, GROUP, FLEET_2));
        _setRoles(_list(FLEET_1, FLEET_2), READ);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotMember.selector, OTHER_GROUP, FLEET_1));
        vm.prank(ADMIN);
        registry.setMemberRoles(OTHER_GROUP, _list(FLEET_1), READ);
        assertEq(_roles(FLEET_1), BOTH, "the member listed first was not changed");
        assertEq(_epoch(), epoch, "no epoch bump");
    }

    /// One node the admin may not grant to refuses the whole batch.
    function test_RevertWhen_Roles_SetMemberRoles_BatchIsAllOrNothing() public {
        _addWithRoles(_list(FLEET_1, NODE_A), READ);
        vm.prank(OWNER);
        registry.setAdminApproval(ADMIN, false);
        uint64 epoch = _epoch();
        _expectNotApproved(NODE_A, OWNER);
        _setRoles(_list(FLEET_1, NODE_A), BOTH);
        assertEq(_roles(FLEET_1), READ, "first node unchanged");
        assertEq(_epoch(), epoch, "no epoch bump");
    }

    function test_RevertWhen_Roles_SetMemberRoles_InvalidRoles() public {
        vm.prank(ADMIN);
        registry.addMember(GROUP, FLEET_1);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.InvalidRoles.selector, 0));
        _setRoles(_list(FLEET_1), 0);
        for (uint256 roles = 4; roles <= type(uint8).max; ++roles) {
            vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.InvalidRoles.selector, roles));
            _setRoles(_list(FLEET_1), uint8(roles));
        }
        assertEq(_roles(FLEET_1), BOTH, "unchanged");
        // Checked right after the admin check, as in addMembersWithRoles.
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.InvalidRoles.selector, 0));
        _setRoles(new bytes32[](0), 0);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.InvalidRoles.selector, 0));
        _setRoles(_list(FLEET_2), 0);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotGroupAdmin.selector, GROUP, STRANGER));
        vm.prank(STRANGER);
        registry.setMemberRoles(GROUP, _list(FLEET_1), 0);
    }

    function test_RevertWhen_Roles_SetMemberRoles_EmptyList() public {
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.EmptyNodeList.selector));
        _setRoles(new bytes32[](0), READ);
    }

    function test_RevertWhen_Roles_SetMemberRoles_NotAdmin() public {
        _addWithRoles(_list(NODE_A), READ);
        // Not even the node's owner: roles are the admin's to set (the owner may leave the group).
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotGroupAdmin.selector, GROUP, OWNER));
        vm.prank(OWNER);
        registry.setMemberRoles(GROUP, _list(NODE_A), BOTH);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.GroupNotFound.selector, bytes32("no group")));
        vm.prank(ADMIN);
        registry.setMemberRoles("no group", _list(NODE_A), BOTH);
        assertEq(_roles(NODE_A), READ, "unchanged");
    }

    // ------------------------------------------------------------------ removal forgets roles

    function test_Roles_RemoveMemberForgetsRoles() public {
        _addWithRoles(_list(FLEET_1), READ);
        vm.prank(ADMIN);
        registry.removeMember(GROUP, FLEET_1);
        assertEq(_roles(FLEET_1), 0, "not a member");
        vm.prank(ADMIN);
        registry.addMember(GROUP, FLEET_1);
        assertEq(_roles(FLEET_1), BOTH, "re-added with both roles");
    }

    function test_Roles_RemoveMembersForgetsRoles() public {
        _addWithRoles(_list(FLEET_1, FLEET_2), WRITE);
        vm.prank(ADMIN);
        registry.removeMembers(GROUP, _list(FLEET_1, FLEET_2));
        assertEq(_roles(FLEET_1), 0, "not a member");
        vm.prank(ADMIN);
        registry.addMembers(GROUP, _list(FLEET_2, FLEET_1));
        assertEq(_roles(FLEET_1), BOTH, "re-added with both roles");
        assertEq(_roles(FLEET_2), BOTH, "re-added with both roles");
    }

    function test_Roles_LeaveGroupForgetsRoles() public {
        _addWithRoles(_list(NODE_A), READ);
        vm.prank(OWNER);
        registry.leaveGroup(GROUP, NODE_A);
        assertEq(_roles(NODE_A), 0, "not a member");
        vm.prank(ADMIN);
        registry.addMember(GROUP, NODE_A);
        assertEq(_roles(NODE_A), BOTH, "re-added with both roles");
    }

    function test_Roles_ReAddWithRolesAfterRemoval() public {
        _addWithRoles(_list(FLEET_1), READ);
        vm.prank(ADMIN);
        registry.removeMember(GROUP, FLEET_1);
        _addWithRoles(_list(FLEET_1), WRITE);
        assertEq(_roles(FLEET_1), WRITE, "the new roles, not a mix with the old");
    }

    /// Swap and pop moves the last member into the hole: its roles are keyed by node, so they move with it.
    function test_Roles_RemovalKeepsTheMovedMembersRoles() public {
        vm.prank(ADMIN);
        registry.addMembers(GROUP, _list(FLEET_1, FLEET_2));
        _addWithRoles(_list(FLEET_3), WRITE);
        vm.prank(ADMIN);
        registry.removeMember(GROUP, FLEET_1);
        assertEq(registry.groupMembers(GROUP, 0, 1)[0], FLEET_3, "last member moved to the front");
        assertEq(_roles(FLEET_3), WRITE, "moved member's roles");
        assertEq(_roles(FLEET_2), BOTH, "other member's roles");
    }

    // ------------------------------------------------------------------ random sequences

    // Model for the sequence test (storage keeps the stack small).
    bytes32[4] internal pool = [FLEET_1, FLEET_2, NODE_A, NODE_B];
    uint8[4] internal modelRoles;
    uint64 internal modelEpoch;

    /// Random adds (plain and with roles), role changes, removals and leaves of 4 nodes in one group, checked
    /// against a model after every step: roles, membership, and one epoch per call.
    /// forge-config: default.fuzz.runs = 128
    function testFuzz_Roles_SequenceMatchesModel(bytes32 script) public {
        for (uint256 step; step < 32; ++step) {
            _applyStep(uint8(script[step]));
            for (uint256 n; n < 4; ++n) {
                assertEq(_roles(pool[n]), modelRoles[n], "roles");
                assertTrue(registry.isMember(GROUP, pool[n]) == (modelRoles[n] != 0), "membership");
            }
            assertEq(_epoch(), modelEpoch, "epoch");
        }
    }

    function _applyStep(uint8 op) internal {
        uint256 n = op & 3;
        uint8 roles = uint8((op >> 2) % 3) + 1;
        uint256 kind = (op >> 4) % 5;
        bytes32[] memory ids = _list(pool[n]);
        if (kind == 0 && modelRoles[n] == 0) {
            vm.prank(ADMIN);
            registry.addMember(GROUP, pool[n]);
            modelRoles[n] = BOTH;
        } else if (kind == 1 && modelRoles[n] == 0) {
            _addWithRoles(ids, roles);
            modelRoles[n] = roles;
        } else if (kind == 2 && modelRoles[n] != 0) {
            _setRoles(ids, roles);
            modelRoles[n] = roles;
        } else if (kind == 3 && modelRoles[n] != 0) {
            vm.prank(ADMIN);
            registry.removeMember(GROUP, pool[n]);
            modelRoles[n] = 0;
        } else if (kind == 4 && modelRoles[n] != 0) {
            vm.prank(registry.getNode(pool[n]).owner);
            registry.leaveGroup(GROUP, pool[n]);
            modelRoles[n] = 0;
        } else {
            return;
        }
        ++modelEpoch;
    }
}
