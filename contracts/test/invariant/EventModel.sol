// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {Vm} from "../utils/Vm.sol";
import {IKeyRegistry} from "../../src/IKeyRegistry.sol";

/// The registry's state rebuilt from its logs alone, the way the bridge and an auditor would. It never calls
/// the registry. Inconsistent logs (an epoch that does not grow by exactly one, an event about an unknown
/// node or group) are recorded in `violation` rather than reverting, so the invariant test can report them.
contract EventModel {
    struct NodeState {
        address owner;
        uint32 keyVersion;
        IKeyRegistry.NodeStatus status;
        uint32 groupCount;
        bytes publicKey;
    }

    struct GroupState {
        bool exists;
        address admin;
        uint64 epoch;
        uint32 memberCount;
        string topicFilter;
    }

    address public immutable registry;
    string public violation;
    uint256 public eventCount;

    mapping(bytes32 => NodeState) internal _nodes;
    mapping(bytes32 => GroupState) internal _groups;
    mapping(bytes32 => mapping(bytes32 => bool)) public isMember;

    constructor(address registry_) {
        registry = registry_;
    }

    function node(bytes32 nodeId) external view returns (NodeState memory) {
        return _nodes[nodeId];
    }

    function group(bytes32 groupId) external view returns (GroupState memory) {
        return _groups[groupId];
    }

    function ingest(Vm.Log[] calldata logs) external {
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].emitter != registry) continue;
            ++eventCount;
            _apply(logs[i]);
        }
    }

    function _apply(Vm.Log calldata log) internal {
        bytes32 topic = log.topics[0];
        if (topic == IKeyRegistry.NodeRegistered.selector) {
            NodeState storage n = _nodes[log.topics[1]];
            if (n.status != IKeyRegistry.NodeStatus.None) _violate("NodeRegistered twice");
            (bytes memory publicKey, uint32 keyVersion) = abi.decode(log.data, (bytes, uint32));
            n.owner = address(uint160(uint256(log.topics[2])));
            n.publicKey = publicKey;
            n.keyVersion = keyVersion;
            n.status = IKeyRegistry.NodeStatus.Active;
        } else if (topic == IKeyRegistry.NodeKeyRotated.selector) {
            NodeState storage n = _activeNode(log.topics[1]);
            (bytes memory publicKey, uint32 keyVersion,) = abi.decode(log.data, (bytes, uint32, address));
            if (keyVersion != n.keyVersion + 1) _violate("key version did not grow by one");
            n.publicKey = publicKey;
            n.keyVersion = keyVersion;
        } else if (topic == IKeyRegistry.NodeRevoked.selector) {
            _activeNode(log.topics[1]).status = IKeyRegistry.NodeStatus.Revoked;
        } else if (topic == IKeyRegistry.NodeOwnershipTransferred.selector) {
            NodeState storage n = _activeNode(log.topics[1]);
            if (n.owner != address(uint160(uint256(log.topics[2])))) _violate("transfer from a non-owner");
            n.owner = address(uint160(uint256(log.topics[3])));
        } else if (topic == IKeyRegistry.GroupCreated.selector) {
            GroupState storage g = _groups[log.topics[1]];
            if (g.exists) _violate("GroupCreated twice");
            g.exists = true;
            g.admin = address(uint160(uint256(log.topics[2])));
            g.topicFilter = abi.decode(log.data, (string));
        } else if (topic == IKeyRegistry.GroupAdminTransferred.selector) {
            GroupState storage g = _existingGroup(log.topics[1]);
            if (g.admin != address(uint160(uint256(log.topics[2])))) {
                _violate("admin transfer from a non-admin");
            }
            g.admin = address(uint160(uint256(log.topics[3])));
        } else if (topic == IKeyRegistry.MemberAdded.selector) {
            (bytes32 groupId, bytes32 nodeId) = (log.topics[1], log.topics[2]);
            (uint64 epoch,) = abi.decode(log.data, (uint64, address));
            if (isMember[groupId][nodeId]) _violate("added twice");
            if (_activeNode(nodeId).status != IKeyRegistry.NodeStatus.Active) {
                _violate("added a revoked node");
            }
            _bumpEpoch(groupId, epoch).memberCount += 1;
            _nodes[nodeId].groupCount += 1;
            isMember[groupId][nodeId] = true;
        } else if (topic == IKeyRegistry.MemberRemoved.selector) {
            (bytes32 groupId, bytes32 nodeId) = (log.topics[1], log.topics[2]);
            (uint64 epoch,) = abi.decode(log.data, (uint64, address));
            if (!isMember[groupId][nodeId]) _violate("removed a non-member");
            _bumpEpoch(groupId, epoch).memberCount -= 1;
            _nodes[nodeId].groupCount -= 1;
            isMember[groupId][nodeId] = false;
        } else if (topic == IKeyRegistry.GroupEpochBumped.selector) {
            (bytes32 groupId, bytes32 nodeId) = (log.topics[1], log.topics[2]);
            (uint64 epoch, uint32 keyVersion) = abi.decode(log.data, (uint64, uint32));
            if (!isMember[groupId][nodeId]) _violate("epoch bump for a non-member");
            if (_nodes[nodeId].keyVersion != keyVersion) _violate("epoch bump with a stale key version");
            _bumpEpoch(groupId, epoch);
        } else {
            _violate("unknown event");
        }
    }

    function _activeNode(bytes32 nodeId) internal returns (NodeState storage n) {
        n = _nodes[nodeId];
        if (n.status != IKeyRegistry.NodeStatus.Active) _violate("event for a node that is not active");
    }

    function _existingGroup(bytes32 groupId) internal returns (GroupState storage g) {
        g = _groups[groupId];
        if (!g.exists) _violate("event for an unknown group");
    }

    function _bumpEpoch(bytes32 groupId, uint64 epoch) internal returns (GroupState storage g) {
        g = _existingGroup(groupId);
        if (epoch != g.epoch + 1) _violate("epoch did not grow by one");
        g.epoch = epoch;
    }

    function _violate(string memory what) internal {
        if (bytes(violation).length == 0) violation = what;
    }
}
