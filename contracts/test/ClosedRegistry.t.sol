// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {TestBase} from "./utils/TestBase.sol";
import {vm} from "./utils/Vm.sol";
import {IKeyRegistry} from "../src/IKeyRegistry.sol";
import {KeyRegistry} from "../src/KeyRegistry.sol";

/// A registry deployed with an operator is closed: only the registrars the operator names register nodes and
/// create groups. The operator role moves in two steps. Everything else works as in an open registry.
contract ClosedRegistryTest is TestBase {
    KeyRegistry internal registry;

    address internal constant OPERATOR = address(0x0CE);
    address internal constant REGISTRAR = address(0x4E6);
    address internal constant STRANGER = address(0xBAD);
    address internal constant SUCCESSOR = address(0x5CC);

    function setUp() public {
        registry = new KeyRegistry(OPERATOR);
        vm.prank(OPERATOR);
        registry.setRegistrar(REGISTRAR, true);
    }

    function _proof(address owner, bytes32 nodeId)
        internal
        returns (bytes memory publicKey, bytes memory signature)
    {
        return proof(registry, testNodeKey(vm.toString(nodeId)), nodeId, owner, 1);
    }

    function test_Closed_DeploymentAnnouncesTheOperator() public {
        vm.expectEmit();
        emit IKeyRegistry.OperatorTransferred(address(0), OPERATOR);
        KeyRegistry closed = new KeyRegistry(OPERATOR);
        assertEq(closed.operator(), OPERATOR, "operator");
        assertEq(closed.pendingOperator(), address(0), "no pending operator");
        assertTrue(!closed.isRegistrar(OPERATOR), "the operator is not a registrar unless it names itself");
        assertTrue(!closed.isRegistrar(STRANGER), "no registrar yet");
    }

    function test_RevertWhen_Closed_NonRegistrarRegistersNode() public {
        (bytes memory publicKey, bytes memory signature) = _proof(STRANGER, "1111");
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotRegistrar.selector, STRANGER));
        vm.prank(STRANGER);
        registry.registerNode("1111", publicKey, signature);
    }

    function test_RevertWhen_Closed_NonRegistrarCreatesGroup() public {
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotRegistrar.selector, STRANGER));
        vm.prank(STRANGER);
        registry.createGroup("hsu0001", "");
    }

    function test_RevertWhen_Closed_OperatorIsNotARegistrar() public {
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotRegistrar.selector, OPERATOR));
        vm.prank(OPERATOR);
        registry.createGroup("hsu0001", "");
        // Roles stay explicit: the operator registers once it names itself.
        vm.prank(OPERATOR);
        registry.setRegistrar(OPERATOR, true);
        vm.prank(OPERATOR);
        registry.createGroup("hsu0001", "");
    }

    function test_Closed_RegistrarRegistersAndCreates() public {
        registerAs(registry, REGISTRAR, "1111", testNodeKey("1111"));
        vm.prank(REGISTRAR);
        registry.createGroup("hsu0001", "hsu/0001/#");
        vm.prank(REGISTRAR);
        registry.addMember("hsu0001", "1111");
        assertTrue(registry.isMember("hsu0001", "1111"), "member");
    }

    function test_Closed_OperatorAllowsAndDisallowsRegistrars() public {
        vm.expectEmit(address(registry));
        emit IKeyRegistry.RegistrarSet(STRANGER, true);
        vm.prank(OPERATOR);
        registry.setRegistrar(STRANGER, true);
        assertTrue(registry.isRegistrar(STRANGER), "allowed");
        registerAs(registry, STRANGER, "1111", testNodeKey("1111"));

        vm.expectEmit(address(registry));
        emit IKeyRegistry.RegistrarSet(STRANGER, false);
        vm.prank(OPERATOR);
        registry.setRegistrar(STRANGER, false);
        assertTrue(!registry.isRegistrar(STRANGER), "disallowed");
        (bytes memory publicKey, bytes memory signature) = _proof(STRANGER, "1112");
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotRegistrar.selector, STRANGER));
        vm.prank(STRANGER);
        registry.registerNode("1112", publicKey, signature);

        // What it registered stays its own: the registrar role gates registration and creation only.
        (publicKey, signature) = proof(registry, testNodeKey("1111 v2"), "1111", STRANGER, 2);
        vm.prank(STRANGER);
        registry.rotateKey("1111", publicKey, signature);
    }

    function test_Closed_NodesAndGroupsMayGoToNonRegistrars() public {
        registerAs(registry, REGISTRAR, "1111", testNodeKey("1111"));
        vm.startPrank(REGISTRAR);
        registry.createGroup("hsu0001", "");
        registry.transferNodeOwnership("1111", STRANGER);
        registry.transferGroupAdmin("hsu0001", STRANGER);
        vm.stopPrank();
        vm.startPrank(STRANGER);
        registry.acceptNodeOwnership("1111");
        registry.acceptGroupAdmin("hsu0001");
        registry.addMember("hsu0001", "1111");
        vm.stopPrank();
        assertTrue(registry.isMember("hsu0001", "1111"), "a non-registrar admin adds its node");
    }

    function test_RevertWhen_Closed_NonOperatorSetsRegistrar() public {
        address[2] memory callers = [STRANGER, REGISTRAR];
        for (uint256 i; i < callers.length; ++i) {
            vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotOperator.selector, callers[i]));
            vm.prank(callers[i]);
            registry.setRegistrar(callers[i], true);
        }
    }

    function test_RevertWhen_Closed_RegistrarIsZeroAddress() public {
        vm.expectRevert(IKeyRegistry.ZeroAddress.selector);
        vm.prank(OPERATOR);
        registry.setRegistrar(address(0), true);
    }

    function test_Closed_OperatorTransferIsTwoStep() public {
        vm.expectEmit(address(registry));
        emit IKeyRegistry.OperatorTransferStarted(OPERATOR, SUCCESSOR);
        vm.prank(OPERATOR);
        registry.transferOperator(SUCCESSOR);
        assertEq(registry.operator(), OPERATOR, "offer alone moves nothing");
        assertEq(registry.pendingOperator(), SUCCESSOR, "pending");

        vm.expectEmit(address(registry));
        emit IKeyRegistry.OperatorTransferred(OPERATOR, SUCCESSOR);
        vm.prank(SUCCESSOR);
        registry.acceptOperator();
        assertEq(registry.operator(), SUCCESSOR, "moved");
        assertEq(registry.pendingOperator(), address(0), "cleared");

        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotOperator.selector, OPERATOR));
        vm.prank(OPERATOR);
        registry.setRegistrar(STRANGER, true);
        vm.prank(SUCCESSOR);
        registry.setRegistrar(STRANGER, true);
        assertTrue(registry.isRegistrar(REGISTRAR), "registrars survive the move");
    }

    function test_Closed_OperatorOfferWithdrawnWithZero() public {
        vm.prank(OPERATOR);
        registry.transferOperator(SUCCESSOR);
        vm.expectEmit(address(registry));
        emit IKeyRegistry.OperatorTransferStarted(OPERATOR, address(0));
        vm.prank(OPERATOR);
        registry.transferOperator(address(0));
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotPendingOperator.selector, SUCCESSOR));
        vm.prank(SUCCESSOR);
        registry.acceptOperator();
        assertEq(registry.operator(), OPERATOR, "still the operator");
    }

    function test_RevertWhen_Closed_WrongOperatorAcceptor() public {
        vm.prank(OPERATOR);
        registry.transferOperator(SUCCESSOR);
        address[2] memory wrong = [STRANGER, OPERATOR];
        for (uint256 i; i < wrong.length; ++i) {
            vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotPendingOperator.selector, wrong[i]));
            vm.prank(wrong[i]);
            registry.acceptOperator();
        }
    }

    function test_RevertWhen_Closed_NonOperatorTransfersOperator() public {
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotOperator.selector, STRANGER));
        vm.prank(STRANGER);
        registry.transferOperator(STRANGER);
    }
}

/// A registry deployed with operator zero is open for good: anyone registers and creates, and no call can
/// name an operator or a registrar.
contract OpenRegistryTest is TestBase {
    KeyRegistry internal registry;

    address internal constant STRANGER = address(0xBAD);

    function setUp() public {
        registry = new KeyRegistry(address(0));
    }

    function test_Open_AnyoneRegistersAndCreates() public {
        registerAs(registry, STRANGER, "1111", testNodeKey("1111"));
        vm.prank(STRANGER);
        registry.createGroup("hsu0001", "");
        assertEq(registry.getNode("1111").owner, STRANGER, "registered");
        assertEq(registry.getGroup("hsu0001").admin, STRANGER, "created");
    }

    function testFuzz_Open_EveryoneIsARegistrar(address account) public view {
        assertTrue(registry.isRegistrar(account), "registrar");
        assertEq(registry.operator(), address(0), "no operator");
    }

    function testFuzz_RevertWhen_Open_SetRegistrar(address caller) public {
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotOperator.selector, caller));
        vm.prank(caller);
        registry.setRegistrar(STRANGER, true);
    }

    function testFuzz_RevertWhen_Open_TransferOperator(address caller) public {
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotOperator.selector, caller));
        vm.prank(caller);
        registry.transferOperator(caller);
    }

    function testFuzz_RevertWhen_Open_AcceptOperator(address caller) public {
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotPendingOperator.selector, caller));
        vm.prank(caller);
        registry.acceptOperator();
    }
}
