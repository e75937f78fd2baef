// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {TestBase} from "./utils/TestBase.sol";
import {vm} from "./utils/Vm.sol";
import {IKeyRegistry} from "../src/IKeyRegistry.sol";
import {KeyRegistry} from "../src/KeyRegistry.sol";

/// Node ownership and group administration move in two steps: the holder offers, the new holder accepts. A
/// mistyped address used to freeze a node or group for good; now it leaves control where it was.
contract TwoStepTransferTest is TestBase {
    KeyRegistry internal registry;

    address internal constant OWNER = address(0xA11CE);
    address internal constant ADMIN = address(0xAD);
    address internal constant BUYER = address(0xB0B);
    /// BUYER with one digit wrong: nobody holds its key.
    address internal constant TYPO = address(0xB0C);
    address internal constant STRANGER = address(0xBAD);

    bytes32 internal constant NODE = "1111";
    bytes32 internal constant GROUP = "hsu0001";
    bytes32 internal constant NODE_OF_ADMIN = "2111";

    function setUp() public {
        registry = new KeyRegistry(address(0));
        registerAs(registry, OWNER, NODE, testNodeKey("1111"));
        vm.prank(ADMIN);
        registry.createGroup(GROUP, "hsu/0001/#");
    }

    function _offerNode(address to) internal {
        vm.prank(OWNER);
        registry.transferNodeOwnership(NODE, to);
    }

    function _offerGroup(address to) internal {
        vm.prank(ADMIN);
        registry.transferGroupAdmin(GROUP, to);
    }

    // ------------------------------------------------------------------ nodes

    function test_NodeTransfer_OfferThenAccept() public {
        vm.expectEmit(address(registry));
        emit IKeyRegistry.NodeOwnershipTransferStarted(NODE, OWNER, BUYER);
        _offerNode(BUYER);
        assertEq(registry.getNode(NODE).owner, OWNER, "offer alone moves nothing");

        vm.expectEmit(address(registry));
        emit IKeyRegistry.NodeOwnershipTransferred(NODE, OWNER, BUYER);
        vm.prank(BUYER);
        registry.acceptNodeOwnership(NODE);
        assertEq(registry.getNode(NODE).owner, BUYER, "accepted");
    }

    function test_NodeTransfer_PendingOwnerClearedAfterAccept() public {
        _offerNode(BUYER);
        assertEq(registry.getNode(NODE).pendingOwner, BUYER, "pending");
        vm.prank(BUYER);
        registry.acceptNodeOwnership(NODE);
        assertEq(registry.getNode(NODE).pendingOwner, address(0), "cleared");
        // The offer is used up: accepting again (say, after giving the node back) fails.
        vm.prank(BUYER);
        registry.transferNodeOwnership(NODE, OWNER);
        vm.prank(OWNER);
        registry.acceptNodeOwnership(NODE);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotPendingNodeOwner.selector, NODE, BUYER));
        vm.prank(BUYER);
        registry.acceptNodeOwnership(NODE);
    }

    function test_NodeTransfer_OfferWithdrawnWithZero() public {
        _offerNode(BUYER);
        vm.expectEmit(address(registry));
        emit IKeyRegistry.NodeOwnershipTransferStarted(NODE, OWNER, address(0));
        _offerNode(address(0));
        assertEq(registry.getNode(NODE).pendingOwner, address(0), "withdrawn");
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotPendingNodeOwner.selector, NODE, BUYER));
        vm.prank(BUYER);
        registry.acceptNodeOwnership(NODE);
    }

    function test_NodeTransfer_NewOfferReplacesTheOld() public {
        _offerNode(TYPO);
        _offerNode(BUYER);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotPendingNodeOwner.selector, NODE, TYPO));
        vm.prank(TYPO);
        registry.acceptNodeOwnership(NODE);
        vm.prank(BUYER);
        registry.acceptNodeOwnership(NODE);
        assertEq(registry.getNode(NODE).owner, BUYER, "second offer accepted");
    }

    function test_RevertWhen_NodeTransfer_WrongAcceptor() public {
        _offerNode(BUYER);
        address[3] memory wrong = [STRANGER, OWNER, ADMIN];
        for (uint256 i; i < wrong.length; ++i) {
            vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotPendingNodeOwner.selector, NODE, wrong[i]));
            vm.prank(wrong[i]);
            registry.acceptNodeOwnership(NODE);
        }
    }

    function test_NodeTransfer_TypoLeavesControlWithTheOwner() public {
        _offerNode(TYPO);
        // Nobody can accept; the owner still rotates, re-offers to the right address, and the node moves.
        (bytes memory publicKey, bytes memory signature) =
            proof(registry, testNodeKey("1111 v2"), NODE, OWNER, 2);
        vm.prank(OWNER);
        registry.rotateKey(NODE, publicKey, signature);
        _offerNode(BUYER);
        vm.prank(BUYER);
        registry.acceptNodeOwnership(NODE);
        assertEq(registry.getNode(NODE).owner, BUYER, "moved to the right account");
    }

    function test_RevertWhen_NodeTransfer_PendingOwnerActsBeforeAccepting() public {
        _offerNode(BUYER);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotNodeOwner.selector, NODE, BUYER));
        vm.prank(BUYER);
        registry.revokeNode(NODE);
    }

    function test_RevertWhen_NodeTransfer_AcceptedAfterRevocation() public {
        _offerNode(BUYER);
        vm.prank(OWNER);
        registry.revokeNode(NODE);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NodeIsRevoked.selector, NODE));
        vm.prank(BUYER);
        registry.acceptNodeOwnership(NODE);
        assertEq(registry.getNode(NODE).owner, OWNER, "the revoked node stays with its owner");
    }

    // ------------------------------------------------------------------ groups

    function test_GroupTransfer_OfferThenAccept() public {
        vm.expectEmit(address(registry));
        emit IKeyRegistry.GroupAdminTransferStarted(GROUP, ADMIN, BUYER);
        _offerGroup(BUYER);
        assertEq(registry.getGroup(GROUP).admin, ADMIN, "offer alone moves nothing");

        vm.expectEmit(address(registry));
        emit IKeyRegistry.GroupAdminTransferred(GROUP, ADMIN, BUYER);
        vm.prank(BUYER);
        registry.acceptGroupAdmin(GROUP);
        assertEq(registry.getGroup(GROUP).admin, BUYER, "accepted");
    }

    function test_GroupTransfer_PendingAdminClearedAfterAccept() public {
        _offerGroup(BUYER);
        assertEq(registry.getGroup(GROUP).pendingAdmin, BUYER, "pending");
        vm.prank(BUYER);
        registry.acceptGroupAdmin(GROUP);
        assertEq(registry.getGroup(GROUP).pendingAdmin, address(0), "cleared");
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotPendingGroupAdmin.selector, GROUP, BUYER));
        vm.prank(BUYER);
        registry.acceptGroupAdmin(GROUP);
    }

    function test_GroupTransfer_OfferWithdrawnWithZero() public {
        _offerGroup(BUYER);
        vm.expectEmit(address(registry));
        emit IKeyRegistry.GroupAdminTransferStarted(GROUP, ADMIN, address(0));
        _offerGroup(address(0));
        assertEq(registry.getGroup(GROUP).pendingAdmin, address(0), "withdrawn");
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotPendingGroupAdmin.selector, GROUP, BUYER));
        vm.prank(BUYER);
        registry.acceptGroupAdmin(GROUP);
    }

    function test_RevertWhen_GroupTransfer_WrongAcceptor() public {
        _offerGroup(BUYER);
        address[3] memory wrong = [STRANGER, OWNER, ADMIN];
        for (uint256 i; i < wrong.length; ++i) {
            vm.expectRevert(
                abi.encodeWithSelector(IKeyRegistry.NotPendingGroupAdmin.selector, GROUP, wrong[i])
            );
            vm.prank(wrong[i]);
            registry.acceptGroupAdmin(GROUP);
        }
    }

    function test_GroupTransfer_TypoLeavesControlWithTheAdmin() public {
        registerAs(registry, ADMIN, NODE_OF_ADMIN, testNodeKey("admin node"));
        _offerGroup(TYPO);
        vm.prank(ADMIN);
        registry.addMember(GROUP, NODE_OF_ADMIN);
        _offerGroup(BUYER);
        vm.prank(BUYER);
        registry.acceptGroupAdmin(GROUP);
        assertEq(registry.getGroup(GROUP).admin, BUYER, "moved to the right account");
        assertTrue(registry.isMember(GROUP, NODE_OF_ADMIN), "members stay");
    }

    function test_RevertWhen_GroupTransfer_PendingAdminActsBeforeAccepting() public {
        registerAs(registry, BUYER, NODE_OF_ADMIN, testNodeKey("admin node"));
        _offerGroup(BUYER);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotGroupAdmin.selector, GROUP, BUYER));
        vm.prank(BUYER);
        registry.addMember(GROUP, NODE_OF_ADMIN);
    }
}
