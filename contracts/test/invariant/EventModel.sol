// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {Vm} from "../utils/Vm.sol";
import {TopicFilterReference} from "../utils/TopicFilterReference.sol";
import {IKeyRegistry} from "../../src/IKeyRegistry.sol";

/// The registry's state rebuilt from its logs alone, the way the bridge and an auditor would: nodes (with
/// pending owners), groups (with pending admins, members and their roles), admin approvals, operator, pending
/// operator and registrars. It never calls the registry. Logs that break a rule (an epoch that does not grow by
/// exactly one per transaction, an event about an unknown node or group, a member added or granted a role
/// without its owner's consent, invalid roles, a transfer accepted by someone it was not offered to, a
/// registration by a non-registrar in a closed registry, an invalid topic filter) are recorded in `violation`
/// rather than reverting, so the invariant test can report them.
contract EventModel {
    struct NodeState {
        address owner;
        uint32 keyVersion;
        IKeyRegistry.NodeStatus status;
        address pendingOwner;
        bytes publicKey;
    }

    struct GroupState {
        bool exists;
        address admin;
        uint64 epoch;
        uint32 memberCount;
        address pendingAdmin;
        string topicFilter;
    }

    address public immutable registry;
    string public violation;
    uint256 public eventCount;

    mapping(bytes32 => NodeState) internal _nodes;
    mapping(bytes32 => GroupState) internal _groups;
    mapping(bytes32 => mapping(bytes32 => bool)) public isMember;
    /// 0 for non-members; MemberAdded alone means both roles (3).
    mapping(bytes32 => mapping(bytes32 => uint8)) public memberRoles;
    mapping(address owner => mapping(address admin => bool)) public isAdminApproved;
    address public operator;
    address public pendingOperator;
    mapping(address => bool) internal _registrars;
    /// Numbers the `ingest` calls; a group's epoch moves once per call, which the batches' events share.
    uint256 internal _ingests;
    mapping(bytes32 groupId => uint256 ingest) internal _epochMovedIn;

    constructor(address registry_) {
        registry = registry_;
    }

    function node(bytes32 nodeId) external view returns (NodeState memory) {
        return _nodes[nodeId];
    }

    function group(bytes32 groupId) external view returns (GroupState memory) {
        return _groups[groupId];
    }

    function isRegistrar(address account) public view returns (bool) {
        return operator == address(0) || _registrars[account];
    }

    /// Applies one transaction's logs (the head start in the invariant test's setUp passes several
    /// transactions at once, none of which changes the same group twice).
    function ingest(Vm.Log[] calldata logs) external {
        ++_ingests;
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
            n.owner = _address(log.topics[2]);
            if (!isRegistrar(n.owner)) _violate("node registered by a non-registrar");
            if (keyVersion != 1) _violate("registered with a key version other than 1");
            n.publicKey = publicKey;
            n.keyVersion = keyVersion;
            n.status = IKeyRegistry.NodeStatus.Active;
        } else if (topic == IKeyRegistry.NodeKeyRotated.selector) {
            NodeState storage n = _activeNode(log.topics[1]);
            (bytes memory publicKey, uint32 keyVersion, address actor) =
                abi.decode(log.data, (bytes, uint32, address));
            if (keyVersion != n.keyVersion + 1) _violate("key version did not grow by one");
            if (actor != n.owner) _violate("rotated by a non-owner");
            n.publicKey = publicKey;
            n.keyVersion = keyVersion;
        } else if (topic == IKeyRegistry.NodeRevoked.selector) {
            NodeState storage n = _activeNode(log.topics[1]);
            if (abi.decode(log.data, (address)) != n.owner) _violate("revoked by a non-owner");
            n.status = IKeyRegistry.NodeStatus.Revoked;
        } else if (topic == IKeyRegistry.NodeOwnershipTransferStarted.selector) {
            NodeState storage n = _activeNode(log.topics[1]);
            if (n.owner != _address(log.topics[2])) _violate("node offered by a non-owner");
            n.pendingOwner = _address(log.topics[3]);
        } else if (topic == IKeyRegistry.NodeOwnershipTransferred.selector) {
            NodeState storage n = _activeNode(log.topics[1]);
            if (n.owner != _address(log.topics[2])) _violate("transfer from a non-owner");
            address newOwner = _address(log.topics[3]);
            if (newOwner == address(0) || newOwner != n.pendingOwner) {
                _violate("node taken without an offer");
            }
            n.owner = newOwner;
            n.pendingOwner = address(0);
        } else if (topic == IKeyRegistry.GroupCreated.selector) {
            GroupState storage g = _groups[log.topics[1]];
            if (g.exists) _violate("GroupCreated twice");
            g.exists = true;
            g.admin = _address(log.topics[2]);
            if (!isRegistrar(g.admin)) _violate("group created by a non-registrar");
            g.topicFilter = abi.decode(log.data, (string));
            (bool valid,) = TopicFilterReference.check(bytes(g.topicFilter));
            if (!valid) _violate("group created with an invalid topic filter");
        } else if (topic == IKeyRegistry.GroupAdminTransferStarted.selector) {
            GroupState storage g = _existingGroup(log.topics[1]);
            if (g.admin != _address(log.topics[2])) _violate("group offered by a non-admin");
            g.pendingAdmin = _address(log.topics[3]);
        } else if (topic == IKeyRegistry.GroupAdminTransferred.selector) {
            GroupState storage g = _existingGroup(log.topics[1]);
            if (g.admin != _address(log.topics[2])) _violate("admin transfer from a non-admin");
            address newAdmin = _address(log.topics[3]);
            if (newAdmin == address(0) || newAdmin != g.pendingAdmin) {
                _violate("group taken without an offer");
            }
            g.admin = newAdmin;
            g.pendingAdmin = address(0);
        } else if (topic == IKeyRegistry.AdminApprovalSet.selector) {
            address admin = _address(log.topics[2]);
            if (admin == address(0)) _violate("approval of the zero address");
            isAdminApproved[_address(log.topics[1])][admin] = abi.decode(log.data, (bool));
        } else if (topic == IKeyRegistry.MemberAdded.selector) {
            _memberAdded(log);
        } else if (topic == IKeyRegistry.MemberRemoved.selector) {
            (bytes32 groupId, bytes32 nodeId) = (log.topics[1], log.topics[2]);
            (uint64 epoch, address actor) = abi.decode(log.data, (uint64, address));
            if (!isMember[groupId][nodeId]) _violate("removed a non-member");
            GroupState storage g = _bumpEpoch(groupId, epoch);
            if (actor != g.admin && actor != _nodes[nodeId].owner) {
                _violate("removed by neither admin nor owner");
            }
            g.memberCount -= 1;
            isMember[groupId][nodeId] = false;
            memberRoles[groupId][nodeId] = 0;
        } else if (topic == IKeyRegistry.MemberRolesSet.selector) {
            _memberRolesSet(log);
        } else if (topic == IKeyRegistry.OperatorTransferred.selector) {
            address previous = _address(log.topics[1]);
            address next = _address(log.topics[2]);
            if (previous != operator) _violate("operator transfer from a non-operator");
            // Only the deployment of a closed registry starts from zero; later moves need an accepted offer.
            if (previous != address(0) && next != pendingOperator) {
                _violate("operator role taken without offer");
            }
            if (next == address(0)) _violate("operator role moved to zero");
            operator = next;
            pendingOperator = address(0);
        } else if (topic == IKeyRegistry.OperatorTransferStarted.selector) {
            if (operator == address(0) || _address(log.topics[1]) != operator) {
                _violate("operator role offered by a non-operator");
            }
            pendingOperator = _address(log.topics[2]);
        } else if (topic == IKeyRegistry.RegistrarSet.selector) {
            if (operator == address(0)) _violate("registrar set in an open registry");
            _registrars[_address(log.topics[1])] = abi.decode(log.data, (bool));
        } else {
            _violate("unknown event");
        }
    }

    function _memberAdded(Vm.Log calldata log) internal {
        (bytes32 groupId, bytes32 nodeId) = (log.topics[1], log.topics[2]);
        (uint64 epoch, address actor) = abi.decode(log.data, (uint64, address));
        if (isMember[groupId][nodeId]) _violate("added twice");
        NodeState storage n = _activeNode(nodeId);
        GroupState storage g = _bumpEpoch(groupId, epoch);
        if (actor != g.admin) _violate("added by a non-admin");
        if (actor != n.owner && !isAdminApproved[n.owner][actor]) {
            _violate("added without the owner's consent");
        }
        g.memberCount += 1;
        isMember[groupId][nodeId] = true;
        memberRoles[groupId][nodeId] = 3;
    }

    function _memberRolesSet(Vm.Log calldata log) internal {
        (bytes32 groupId, bytes32 nodeId) = (log.topics[1], log.topics[2]);
        (uint8 roles, uint64 epoch, address actor) = abi.decode(log.data, (uint8, uint64, address));
        if (!isMember[groupId][nodeId]) _violate("roles set for a non-member");
        if (roles == 0 || roles > 3) _violate("invalid roles");
        GroupState storage g = _bumpEpoch(groupId, epoch);
        if (actor != g.admin) _violate("roles set by a non-admin");
        // A grant needs what an add needs; dropping roles needs nothing.
        if (roles & ~memberRoles[groupId][nodeId] != 0) {
            NodeState storage n = _activeNode(nodeId);
            if (actor != n.owner && !isAdminApproved[n.owner][actor]) {
                _violate("role granted without the owner's consent");
            }
        }
        memberRoles[groupId][nodeId] = roles;
    }

    function _activeNode(bytes32 nodeId) internal returns (NodeState storage n) {
        n = _nodes[nodeId];
        if (n.status != IKeyRegistry.NodeStatus.Active) _violate("event for a node that is not active");
    }

    function _existingGroup(bytes32 groupId) internal returns (GroupState storage g) {
        g = _groups[groupId];
        if (!g.exists) _violate("event for an unknown group");
    }

    /// The first membership event of a transaction moves the epoch up by one; the others of a batch carry the
    /// same epoch.
    function _bumpEpoch(bytes32 groupId, uint64 epoch) internal returns (GroupState storage g) {
        g = _existingGroup(groupId);
        if (_epochMovedIn[groupId] == _ingests) {
            if (epoch != g.epoch) _violate("events of one transaction carry different epochs");
            return g;
        }
        if (epoch != g.epoch + 1) _violate("epoch did not grow by one");
        g.epoch = epoch;
        _epochMovedIn[groupId] = _ingests;
    }

    function _address(bytes32 topic) internal pure returns (address) {
        return address(uint160(uint256(topic)));
    }

    function _violate(string memory what) internal {
        if (bytes(violation).length == 0) violation = what;
    }
}
