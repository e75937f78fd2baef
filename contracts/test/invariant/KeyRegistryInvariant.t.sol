// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {TestBase} from "../utils/TestBase.sol";
import {console} from "../utils/Vm.sol";
import {IKeyRegistry} from "../../src/IKeyRegistry.sol";
import {KeyRegistry} from "../../src/KeyRegistry.sol";
import {EventModel} from "./EventModel.sol";
import {RegistryHandler} from "./RegistryHandler.sol";

/// After any sequence of operations, the state rebuilt from the emitted events alone equals the contract's.
contract KeyRegistryInvariantTest is TestBase {
    KeyRegistry internal registry;
    EventModel internal model;
    RegistryHandler internal handler;

    function setUp() public {
        registry = new KeyRegistry();
        model = new EventModel(address(registry));
        handler = new RegistryHandler(registry, model);
    }

    /// Only the handler is fuzzed (forge reads this the way forge-std's StdInvariant provides it).
    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(handler);
    }

    /// Guards against a vacuous run: the handler must get real operations through, and reach epochs.
    function afterInvariant() public view {
        uint256 calls = handler.successfulCalls() + handler.revertedCalls();
        // A full-depth run (not a shrunk replay) must get a fair share of operations through.
        if (calls >= 32) {
            assertTrue(handler.successfulCalls() * 8 >= calls, "under an eighth of calls succeeded");
        }
        assertTrue(model.eventCount() >= handler.successfulCalls(), "every success emits at least one event");
        console.log("successful calls", handler.successfulCalls());
        console.log("reverted calls", handler.revertedCalls());
    }

    function invariant_EventsAreConsistent() public view {
        assertEq(model.violation(), "", "event stream violation");
    }

    function invariant_StateRebuiltFromEventsEqualsContract() public view {
        for (uint256 n; n < handler.NODE_POOL(); ++n) {
            _checkNode(handler.nodeId(n));
        }
        for (uint256 g; g < handler.GROUP_POOL(); ++g) {
            _checkGroup(handler.groupId(g));
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
        assertEq(actual.groupCount, expected.groupCount, "group count");
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
        assertEq(actual.topicFilter, expected.topicFilter, "topic filter");

        bytes32[] memory members = registry.groupMembers(groupId, 0, type(uint256).max);
        assertEq(members.length, expected.memberCount, "listed members");
        for (uint256 i; i < members.length; ++i) {
            assertTrue(model.isMember(groupId, members[i]), "listed member unknown to the events");
        }
        for (uint256 n; n < handler.NODE_POOL(); ++n) {
            bytes32 nodeId = handler.nodeId(n);
            assertTrue(registry.isMember(groupId, nodeId) == model.isMember(groupId, nodeId), "isMember");
        }
    }
}
