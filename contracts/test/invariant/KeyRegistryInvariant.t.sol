// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {TestBase} from "../utils/TestBase.sol";
import {Vm, console, vm} from "../utils/Vm.sol";
import {IKeyRegistry} from "../../src/IKeyRegistry.sol";
import {KeyRegistry} from "../../src/KeyRegistry.sol";
import {EventModel} from "./EventModel.sol";
import {RegistryHandler} from "./RegistryHandler.sol";

/// After any sequence of operations, the state rebuilt from the emitted events alone equals the contract's, and
/// no hostile call between an owner's read and write ever made the owner's rotateKey/revokeNode fail. The
/// handler itself must never revert (fail-on-revert): its expected reverts happen inside low-level calls.
abstract contract RegistryInvariantBase is TestBase {
    KeyRegistry internal registry;
    EventModel internal model;
    RegistryHandler internal handler;

    /// Zero for an open registry.
    function _operator() internal pure virtual returns (address);

    function setUp() public {
        // The model sees every log from the deployment on (a closed registry announces its operator).
        vm.recordLogs();
        registry = new KeyRegistry(_operator());
        Vm.Log[] memory deployment = vm.getRecordedLogs();
        model = new EventModel(address(registry));
        model.ingest(deployment);
        handler = new RegistryHandler(registry, model);
        if (_operator() != address(0)) {
            // Two of the three honest actors start as registrars; the handler changes that at random.
            vm.recordLogs();
            vm.startPrank(_operator());
            registry.setRegistrar(handler.account(0), true);
            registry.setRegistrar(handler.account(1), true);
            vm.stopPrank();
            model.ingest(vm.getRecordedLogs());
        }
        // A head start, so that short runs spend their calls on more than registering and creating: four of the
        // six nodes (two per registrar) and two of the three groups exist, with one member each.
        vm.recordLogs();
        for (uint256 i; i < 4; ++i) {
            registerAs(registry, handler.account(i % 2), handler.nodeId(i), i + 1);
        }
        vm.startPrank(handler.account(0));
        registry.createGroup(handler.groupId(0), "site/+/#");
        registry.addMember(handler.groupId(0), handler.nodeId(0));
        vm.stopPrank();
        vm.startPrank(handler.account(1));
        registry.createGroup(handler.groupId(1), "");
        registry.addMember(handler.groupId(1), handler.nodeId(1));
        vm.stopPrank();
        model.ingest(vm.getRecordedLogs());
    }

    /// Only the handler is fuzzed (forge reads this the way forge-std's StdInvariant provides it).
    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(handler);
    }

    /// Guards against a vacuous run: the handler must get real operations through.
    function afterInvariant() public view {
        uint256 calls = handler.successfulCalls() + handler.revertedCalls();
        // A full-depth run (not a shrunk replay) must get a fair share of operations through.
        if (calls >= 32) {
            assertTrue(handler.successfulCalls() * 8 >= calls, "under an eighth of calls succeeded");
        }
        assertTrue(model.eventCount() >= handler.successfulCalls(), "every success emits at least one event");
        console.log("successful calls", handler.successfulCalls());
        console.log("reverted calls", handler.revertedCalls());
        console.log("hostile calls", handler.hostileCalls());
        console.log("owner calls right after a hostile call", handler.hostileInterleavings());
    }

    /// forge-config: default.invariant.fail-on-revert = true
    function invariant_EventsAreConsistent() public view {
        assertEq(model.violation(), "", "event stream violation");
    }

    /// forge-config: default.invariant.fail-on-revert = true
    function invariant_HostileCallsNeverBreakRotationOrRevocation() public view {
        assertEq(handler.griefed(), "", "griefed");
    }

    /// forge-config: default.invariant.fail-on-revert = true
    function invariant_StateRebuiltFromEventsEqualsContract() public view {
        for (uint256 n; n < handler.NODE_POOL(); ++n) {
            _checkNode(handler.nodeId(n));
        }
        for (uint256 g; g < handler.GROUP_POOL(); ++g) {
            _checkGroup(handler.groupId(g));
        }
        assertEq(registry.operator(), model.operator(), "operator");
        assertEq(registry.pendingOperator(), model.pendingOperator(), "pending operator");
        for (uint256 a; a <= handler.ACTOR_COUNT(); ++a) {
            address account = handler.account(a);
            assertTrue(registry.isRegistrar(account) == model.isRegistrar(account), "registrar");
            for (uint256 b; b <= handler.ACTOR_COUNT(); ++b) {
                address admin = handler.account(b);
                assertTrue(
                    registry.isAdminApproved(account, admin) == model.isAdminApproved(account, admin),
                    "approval"
                );
            }
        }
    }

    function _checkNode(bytes32 nodeId) internal view {
        EventModel.NodeState memory expected = model.node(nodeId);
        if (expected.status == IKeyRegistry.NodeStatus.None) {
            try registry.getNode(nodeId) {
                revert("node exists on chain but no event registered it");
            } catch (bytes memory reason) {
                assertEq(
                    reason, abi.encodeWithSelector(IKeyRegistry.NodeNotFound.selector, nodeId), "not found"
                );
            }
            return;
        }
        IKeyRegistry.Node memory actual = registry.getNode(nodeId);
        assertEq(actual.owner, expected.owner, "node owner");
        assertEq(actual.keyVersion, expected.keyVersion, "key version");
        assertEq(uint256(actual.status), uint256(expected.status), "status");
        assertEq(actual.pendingOwner, expected.pendingOwner, "pending owner");
        assertEq(actual.publicKey, expected.publicKey, "public key");
    }

    function _checkGroup(bytes32 groupId) internal view {
        EventModel.GroupState memory expected = model.group(groupId);
        if (!expected.exists) {
            try registry.getGroup(groupId) {
                revert("group exists on chain but no event created it");
            } catch (bytes memory reason) {
                assertEq(
                    reason, abi.encodeWithSelector(IKeyRegistry.GroupNotFound.selector, groupId), "not found"
                );
            }
            return;
        }
        IKeyRegistry.Group memory actual = registry.getGroup(groupId);
        assertEq(actual.admin, expected.admin, "admin");
        assertEq(actual.epoch, expected.epoch, "epoch");
        assertEq(actual.memberCount, expected.memberCount, "member count");
        assertEq(actual.pendingAdmin, expected.pendingAdmin, "pending admin");
        assertEq(actual.topicFilter, expected.topicFilter, "topic filter");

        bytes32[] memory members = registry.groupMembers(groupId, 0, type(uint256).max);
        assertEq(members.length, expected.memberCount, "listed members");
        for (uint256 i; i < members.length; ++i) {
            assertTrue(model.isMember(groupId, members[i]), "listed member unknown to the events");
        }
        for (uint256 n; n < handler.NODE_POOL(); ++n) {
            bytes32 nodeId = handler.nodeId(n);
            assertTrue(registry.isMember(groupId, nodeId) == model.isMember(groupId, nodeId), "isMember");
            assertEq(
                registry.memberRoles(groupId, nodeId), model.memberRoles(groupId, nodeId), "member roles"
            );
        }
    }
}

contract OpenRegistryInvariantTest is RegistryInvariantBase {
    function _operator() internal pure override returns (address) {
        return address(0);
    }
}

/// Operated by the third honest actor, which is not a registrar at the start.
contract ClosedRegistryInvariantTest is RegistryInvariantBase {
    function _operator() internal pure override returns (address) {
        return address(0xA3);
    }
}
