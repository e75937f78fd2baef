// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {TestBase} from "./utils/TestBase.sol";
import {vm} from "./utils/Vm.sol";
import {IKeyRegistry} from "../src/IKeyRegistry.sol";
import {KeyRegistry} from "../src/KeyRegistry.sol";

/// Membership needs the node owner's consent: an admin adds a node only if it owns the node or the owner
/// approved that admin. Previously any group admin could add anyone's node into its own groups.
contract ConsentTest is TestBase {
    KeyRegistry internal registry;

    address internal constant OWNER = address(0xA11CE);
    address internal constant ADMIN = address(0xAD);
    address internal constant STRANGER = address(0xBAD);
    address internal constant NEW_OWNER = address(0xB0B);

    bytes32 internal constant NODE_A = "1111";
    bytes32 internal constant NODE_B = "1112";
    bytes32 internal constant GROUP = "hsu0001";
    bytes32 internal constant TRAP = "trap";

    function setUp() public {
        registry = new KeyRegistry(address(0));
        registerAs(registry, OWNER, NODE_A, testNodeKey("1111"));
        vm.prank(ADMIN);
        registry.createGroup(GROUP, "hsu/0001/#");
        vm.prank(STRANGER);
        registry.createGroup(TRAP, "#");
    }

    function _expectNotApproved(bytes32 nodeId, address owner, address admin) internal {
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.AdminNotApproved.selector, nodeId, owner, admin));
    }

    function test_RevertWhen_Consent_StrangersGroupAddsSomeoneElsesNode() public {
        _expectNotApproved(NODE_A, OWNER, STRANGER);
        vm.prank(STRANGER);
        registry.addMember(TRAP, NODE_A);
        assertTrue(!registry.isMember(TRAP, NODE_A), "not added");
        assertEq(registry.getGroup(TRAP).epoch, 0, "no epoch change");
    }

    function test_Consent_ApprovedAdminAdds() public {
        vm.prank(OWNER);
        registry.setAdminApproval(ADMIN, true);
        vm.expectEmit(address(registry));
        emit IKeyRegistry.MemberAdded(GROUP, NODE_A, 1, ADMIN);
        vm.prank(ADMIN);
        registry.addMember(GROUP, NODE_A);
        assertTrue(registry.isMember(GROUP, NODE_A), "added");
    }

    function test_Consent_WithdrawnApprovalBlocksNewAddsOnly() public {
        vm.prank(OWNER);
        registry.setAdminApproval(ADMIN, true);
        vm.prank(ADMIN);
        registry.addMember(GROUP, NODE_A);
        vm.prank(OWNER);
        registry.setAdminApproval(ADMIN, false);

        // The existing membership stays (the owner leaves the group if it wants out)...
        assertTrue(registry.isMember(GROUP, NODE_A), "existing membership kept");
        vm.prank(ADMIN);
        registry.removeMember(GROUP, NODE_A);
        // ...but the admin cannot add the node again.
        _expectNotApproved(NODE_A, OWNER, ADMIN);
        vm.prank(ADMIN);
        registry.addMember(GROUP, NODE_A);

        vm.prank(ADMIN);
        registry.createGroup("hsu0002", "");
        _expectNotApproved(NODE_A, OWNER, ADMIN);
        vm.prank(ADMIN);
        registry.addMember("hsu0002", NODE_A);
    }

    function test_Consent_AdminOwningTheNodeNeedsNoApproval() public {
        // A fleet operator that owns its devices and administers their groups adds them with no extra
        // transaction: one registerNode and one addMember per device, nothing else.
        for (uint256 i = 1; i <= 10; ++i) {
            registerAs(registry, ADMIN, bytes32(i), i);
            vm.prank(ADMIN);
            registry.addMember(GROUP, bytes32(i));
        }
        assertEq(registry.getGroup(GROUP).memberCount, 10, "ten devices");
        assertTrue(!registry.isAdminApproved(ADMIN, ADMIN), "no self-approval was needed");
    }

    function test_Consent_ApprovalCoversEveryNodeOfTheOwnerAccount() public {
        vm.prank(OWNER);
        registry.setAdminApproval(ADMIN, true);
        // Registered after the approval: covered too. Approval is per owner account, not per node or group.
        registerAs(registry, OWNER, NODE_B, testNodeKey("1112"));
        vm.startPrank(ADMIN);
        registry.createGroup("hsu0002", "");
        registry.addMember(GROUP, NODE_A);
        registry.addMember(GROUP, NODE_B);
        registry.addMember("hsu0002", NODE_A);
        vm.stopPrank();

        // Another owner's node is not covered by OWNER's approval.
        registerAs(registry, STRANGER, "stranger node", testNodeKey("stranger node"));
        _expectNotApproved("stranger node", STRANGER, ADMIN);
        vm.prank(ADMIN);
        registry.addMember(GROUP, "stranger node");
    }

    function test_Consent_ApprovalIsPerAdmin() public {
        vm.prank(OWNER);
        registry.setAdminApproval(ADMIN, true);
        _expectNotApproved(NODE_A, OWNER, STRANGER);
        vm.prank(STRANGER);
        registry.addMember(TRAP, NODE_A);
    }

    function test_Consent_NewOwnerDecidesAfterATransfer() public {
        vm.prank(OWNER);
        registry.setAdminApproval(ADMIN, true);
        vm.prank(OWNER);
        registry.transferNodeOwnership(NODE_A, NEW_OWNER);
        vm.prank(NEW_OWNER);
        registry.acceptNodeOwnership(NODE_A);

        // OWNER's approval was OWNER's: the node's new owner has approved nobody.
        _expectNotApproved(NODE_A, NEW_OWNER, ADMIN);
        vm.prank(ADMIN);
        registry.addMember(GROUP, NODE_A);
        vm.prank(NEW_OWNER);
        registry.setAdminApproval(ADMIN, true);
        vm.prank(ADMIN);
        registry.addMember(GROUP, NODE_A);
    }

    function test_Consent_NewAdminNeedsItsOwnApproval() public {
        vm.prank(OWNER);
        registry.setAdminApproval(ADMIN, true);
        vm.prank(ADMIN);
        registry.transferGroupAdmin(GROUP, STRANGER);
        vm.prank(STRANGER);
        registry.acceptGroupAdmin(GROUP);

        _expectNotApproved(NODE_A, OWNER, STRANGER);
        vm.prank(STRANGER);
        registry.addMember(GROUP, NODE_A);
    }

    function test_Consent_OwnerLeavesAGroupItNoLongerWants() public {
        vm.prank(OWNER);
        registry.setAdminApproval(ADMIN, true);
        vm.prank(ADMIN);
        registry.addMember(GROUP, NODE_A);
        vm.prank(OWNER);
        registry.leaveGroup(GROUP, NODE_A);
        assertTrue(!registry.isMember(GROUP, NODE_A), "left");
    }
}
