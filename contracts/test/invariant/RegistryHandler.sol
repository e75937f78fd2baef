// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {TestBase} from "../utils/TestBase.sol";
import {Vm, vm} from "../utils/Vm.sol";
import {IKeyRegistry} from "../../src/IKeyRegistry.sol";
import {KeyRegistry} from "../../src/KeyRegistry.sol";
import {EventModel} from "./EventModel.sol";

/// Drives random operations against the registry from a small pool of honest actors, one hostile actor, and a
/// small pool of nodes and groups, so that operations collide often. Most calls come from the account allowed
/// to make them; some come from a random account and are expected to revert. Every call's logs go to the
/// EventModel, and only its logs.
///
/// The hostile actor owns nodes and groups like anyone, honest owners sometimes approve it as an admin, but it
/// is never offered a node, a group or the operator role. Two operations let it strike between an honest
/// owner's read and write: the owner reads its node, the hostile actor makes one random call, then the owner
/// rotates or revokes with what it read. Nothing the hostile actor may do touches what those calls depend on,
/// so they must succeed, at a bounded cost; any failure is recorded in `griefed`.
contract RegistryHandler is TestBase {
    KeyRegistry public immutable registry;
    EventModel public immutable model;

    bytes32 internal constant NODE_PREFIX = "node";
    bytes32 internal constant GROUP_PREFIX = "group";
    // Small pools make operations collide: with a few groups, the handler regularly removes a member that an
    // earlier removal moved (which is how a stale position would show up).
    uint256 public constant NODE_POOL = 6;
    uint256 public constant GROUP_POOL = 3;
    uint256 public constant ACTOR_COUNT = 3;
    address public constant HOSTILE = address(0xBAD);
    /// The constant cost of rotateKey and revokeNode (about 26k and 8k execution gas, see Gas.t.sol) with a
    /// margin: a loop over the node's groups would exceed it after a few groups.
    uint256 public constant ROTATE_GAS_BOUND = 40_000;
    uint256 public constant REVOKE_GAS_BOUND = 20_000;
    address[ACTOR_COUNT] internal actors = [address(0xA1), address(0xA2), address(0xA3)];

    uint256 public successfulCalls;
    uint256 public revertedCalls;
    uint256 public hostileCalls;
    uint256 public hostileInterleavings;
    /// Empty unless an owner's rotateKey/revokeNode failed or cost too much after a hostile call.
    string public griefed;

    constructor(KeyRegistry registry_, EventModel model_) {
        registry = registry_;
        model = model_;
    }

    function nodeId(uint256 index) public pure returns (bytes32) {
        return NODE_PREFIX | bytes32(index + 1);
    }

    function groupId(uint256 index) public pure returns (bytes32) {
        return GROUP_PREFIX | bytes32(index + 1);
    }

    /// The honest actors, then the hostile one.
    function account(uint256 index) public view returns (address) {
        return index < ACTOR_COUNT ? actors[index] : HOSTILE;
    }

    // ------------------------------------------------------------------ nodes

    function registerNode(uint256 actorSeed, uint256 nodeSeed, uint256 keySeed) external {
        bytes32 id = _pickNode(nodeSeed, false);
        if (_node(id).owner != address(0) && _skip(keySeed)) return; // the whole pool is registered
        address owner = _anyone(actorSeed);
        (bytes memory publicKey, bytes memory signature) = proof(registry, boundKey(keySeed), id, owner, 1);
        _send(owner, abi.encodeCall(KeyRegistry.registerNode, (id, publicKey, signature)));
    }

    function rotateKey(uint256 nodeSeed, uint256 keySeed, uint256 callerSeed) external {
        bytes32 id = nodeId(nodeSeed % NODE_POOL);
        IKeyRegistry.Node memory n = _node(id);
        address caller = _mostly(n.owner, callerSeed);
        (bytes memory publicKey, bytes memory signature) =
            proof(registry, boundKey(keySeed), id, caller, n.keyVersion + 1);
        _send(caller, abi.encodeCall(KeyRegistry.rotateKey, (id, publicKey, signature)));
    }

    function revokeNode(uint256 nodeSeed, uint256 callerSeed) external {
        // Revocation is rare in practice and final: run it on one call in four so the pool stays alive.
        if (callerSeed % 4 != 0) return;
        bytes32 id = nodeId(nodeSeed % NODE_POOL);
        _send(_mostly(_node(id).owner, callerSeed >> 8), abi.encodeCall(KeyRegistry.revokeNode, (id)));
    }

    function transferNodeOwnership(uint256 nodeSeed, uint256 callerSeed, uint256 newOwnerSeed) external {
        bytes32 id = nodeId(nodeSeed % NODE_POOL);
        _send(
            _mostly(_node(id).owner, callerSeed),
            abi.encodeCall(KeyRegistry.transferNodeOwnership, (id, _offeree(newOwnerSeed)))
        );
    }

    function acceptNodeOwnership(uint256 nodeSeed, uint256 callerSeed) external {
        bytes32 id = nodeId(nodeSeed % NODE_POOL);
        if (_node(id).pendingOwner == address(0) && _skip(callerSeed)) return;
        _send(
            _mostly(_node(id).pendingOwner, callerSeed), abi.encodeCall(KeyRegistry.acceptNodeOwnership, (id))
        );
    }

    /// Honest owners approve (or stop approving) any admin, the hostile actor included.
    function setAdminApproval(uint256 ownerSeed, uint256 adminSeed, bool approved) external {
        _send(
            _honest(ownerSeed), abi.encodeCall(KeyRegistry.setAdminApproval, (_anyone(adminSeed), approved))
        );
    }

    // ------------------------------------------------------------------ groups

    function createGroup(uint256 actorSeed, uint256 groupSeed, bytes32 filterSeed) external {
        if (_group(_pickNewGroup(groupSeed)).admin != address(0) && _skip(actorSeed)) return; // all created
        _send(
            _anyone(actorSeed),
            abi.encodeCall(KeyRegistry.createGroup, (_pickNewGroup(groupSeed), _topicFilter(filterSeed)))
        );
    }

    function transferGroupAdmin(uint256 groupSeed, uint256 callerSeed, uint256 newAdminSeed) external {
        bytes32 id = groupId(groupSeed % GROUP_POOL);
        _send(
            _mostly(_group(id).admin, callerSeed),
            abi.encodeCall(KeyRegistry.transferGroupAdmin, (id, _offeree(newAdminSeed)))
        );
    }

    function acceptGroupAdmin(uint256 groupSeed, uint256 callerSeed) external {
        bytes32 id = groupId(groupSeed % GROUP_POOL);
        if (_group(id).pendingAdmin == address(0) && _skip(callerSeed)) return;
        _send(
            _mostly(_group(id).pendingAdmin, callerSeed), abi.encodeCall(KeyRegistry.acceptGroupAdmin, (id))
        );
    }

    function addMember(uint256 groupSeed, uint256 nodeSeed, uint256 callerSeed) external {
        bytes32 id = groupId(groupSeed % GROUP_POOL);
        _send(
            _mostly(_group(id).admin, callerSeed),
            abi.encodeCall(KeyRegistry.addMember, (id, _pickMember(id, nodeSeed, false)))
        );
    }

    function removeMember(uint256 groupSeed, uint256 nodeSeed, uint256 callerSeed) external {
        bytes32 id = groupId(groupSeed % GROUP_POOL);
        _send(
            _mostly(_group(id).admin, callerSeed),
            abi.encodeCall(KeyRegistry.removeMember, (id, _pickMember(id, nodeSeed, true)))
        );
    }

    function addMembersWithRoles(uint256 groupSeed, uint256 nodeSeed, uint256 callerSeed, uint256 rolesSeed)
        external
    {
        bytes32 id = groupId(groupSeed % GROUP_POOL);
        _send(
            _mostly(_group(id).admin, callerSeed),
            abi.encodeCall(
                KeyRegistry.addMembersWithRoles, (id, _pickMembers(id, nodeSeed, false), _roles(rolesSeed))
            )
        );
    }

    function setMemberRoles(uint256 groupSeed, uint256 nodeSeed, uint256 callerSeed, uint256 rolesSeed)
        external
    {
        bytes32 id = groupId(groupSeed % GROUP_POOL);
        _send(
            _mostly(_group(id).admin, callerSeed),
            abi.encodeCall(
                KeyRegistry.setMemberRoles, (id, _pickMembers(id, nodeSeed, true), _roles(rolesSeed))
            )
        );
    }

    function leaveGroup(uint256 groupSeed, uint256 nodeSeed, uint256 callerSeed) external {
        bytes32 id = nodeId(nodeSeed % NODE_POOL);
        _send(
            _mostly(_node(id).owner, callerSeed),
            abi.encodeCall(KeyRegistry.leaveGroup, (groupId(groupSeed % GROUP_POOL), id))
        );
    }

    // ------------------------------------------------------------------ closed registries

    function setRegistrar(uint256 callerSeed, uint256 accountSeed, bool allowed) external {
        if (registry.operator() == address(0) && _skip(callerSeed)) return; // open: nobody may
        _send(
            _mostly(registry.operator(), callerSeed),
            abi.encodeCall(KeyRegistry.setRegistrar, (_anyone(accountSeed), allowed))
        );
    }

    function transferOperator(uint256 callerSeed, uint256 newOperatorSeed) external {
        if (registry.operator() == address(0) && _skip(callerSeed)) return; // open: nobody may
        _send(
            _mostly(registry.operator(), callerSeed),
            abi.encodeCall(KeyRegistry.transferOperator, (_offeree(newOperatorSeed)))
        );
    }

    function acceptOperator(uint256 callerSeed) external {
        if (registry.pendingOperator() == address(0) && _skip(callerSeed)) return;
        _send(_mostly(registry.pendingOperator(), callerSeed), abi.encodeCall(KeyRegistry.acceptOperator, ()));
    }

    // ------------------------------------------------------------------ the hostile actor between read and write

    /// The owner reads its node and signs the next version; the hostile actor calls; the owner rotates.
    function rotateKeyDespiteHostileCall(uint256 nodeSeed, uint256 keySeed, uint256 hostileSeed) external {
        bytes32 id = nodeId(nodeSeed % NODE_POOL);
        IKeyRegistry.Node memory read = _node(id);
        if (read.status != IKeyRegistry.NodeStatus.Active || read.owner == HOSTILE) return;
        (bytes memory publicKey, bytes memory signature) =
            proof(registry, boundKey(keySeed), id, read.owner, read.keyVersion + 1);
        if (keccak256(publicKey) == keccak256(read.publicKey)) return; // an unchanged key is the owner's error

        bytes4 hostileCall = _hostileCall(id, hostileSeed);
        (bool ok, uint256 gas) =
            _send(read.owner, abi.encodeCall(KeyRegistry.rotateKey, (id, publicKey, signature)));
        _judge(ok, gas, ROTATE_GAS_BOUND, "rotateKey", hostileCall);
    }

    /// The owner reads its node; the hostile actor calls; the owner revokes.
    function revokeNodeDespiteHostileCall(uint256 nodeSeed, uint256 hostileSeed) external {
        if (hostileSeed % 4 != 0) return; // final: keep the pool alive, as revokeNode does
        bytes32 id = nodeId(nodeSeed % NODE_POOL);
        IKeyRegistry.Node memory read = _node(id);
        if (read.status != IKeyRegistry.NodeStatus.Active || read.owner == HOSTILE) return;

        bytes4 hostileCall = _hostileCall(id, hostileSeed >> 2);
        (bool ok, uint256 gas) = _send(read.owner, abi.encodeCall(KeyRegistry.revokeNode, (id)));
        _judge(ok, gas, REVOKE_GAS_BOUND, "revokeNode", hostileCall);
    }

    function _judge(bool ok, uint256 gas, uint256 bound, string memory what, bytes4 hostileCall) internal {
        ++hostileInterleavings;
        if (bytes(griefed).length != 0) return;
        string memory after_ = string.concat(" after the hostile call ", vm.toString(bytes32(hostileCall)));
        if (!ok) griefed = string.concat(what, " reverted", after_);
        else if (gas > bound) griefed = string.concat(what, " cost ", vm.toString(gas), after_);
    }

    /// One call by the hostile actor aimed at `target` (an honest owner's node) or at the shared pools: join it
    /// to the hostile actor's groups, take it out or change its roles there (the approved-admin attack), or try
    /// to take, revoke, rotate, leave, or anything else. Returns the selector it sent.
    function _hostileCall(bytes32 target, uint256 seed) internal returns (bytes4 selector) {
        uint256 kind = seed % 13;
        seed /= 13;
        bytes32 group = groupId(seed % GROUP_POOL);
        bytes memory data;
        if (kind == 0 || kind == 1) {
            data = abi.encodeCall(KeyRegistry.addMember, (group, target));
        } else if (kind == 2 || kind == 3) {
            data = abi.encodeCall(KeyRegistry.removeMember, (group, target));
        } else if (kind == 4) {
            data = abi.encodeCall(KeyRegistry.leaveGroup, (group, target));
        } else if (kind == 5) {
            data = abi.encodeCall(KeyRegistry.transferNodeOwnership, (target, HOSTILE));
        } else if (kind == 6) {
            data = abi.encodeCall(KeyRegistry.acceptNodeOwnership, (target));
        } else if (kind == 7) {
            data = abi.encodeCall(KeyRegistry.revokeNode, (target));
        } else if (kind == 8) {
            (bytes memory publicKey, bytes memory signature) =
                proof(registry, boundKey(seed), target, HOSTILE, _node(target).keyVersion + 1);
            data = abi.encodeCall(KeyRegistry.rotateKey, (target, publicKey, signature));
        } else if (kind == 9) {
            data = abi.encodeCall(KeyRegistry.createGroup, (_pickNewGroup(seed), _topicFilter(bytes32(seed))));
        } else if (kind == 10) {
            data = abi.encodeCall(KeyRegistry.setAdminApproval, (_anyone(seed), seed & 1 == 0));
        } else if (kind == 11) {
            bytes32[] memory targets = new bytes32[](1);
            targets[0] = target;
            data = abi.encodeCall(KeyRegistry.setMemberRoles, (group, targets, _roles(seed)));
        } else {
            data = abi.encodeCall(KeyRegistry.acceptGroupAdmin, (group));
        }
        // Counted apart: the hostile actor's calls are meant to fail, most of them.
        ++hostileCalls;
        _record(HOSTILE, data);
        assembly ("memory-safe") {
            selector := mload(add(data, 0x20))
        }
    }

    // ------------------------------------------------------------------ plumbing

    /// From a random start, the first node that is registered (or not); the start itself if none is.
    function _pickNode(uint256 seed, bool registered) internal returns (bytes32) {
        for (uint256 i; i < NODE_POOL; ++i) {
            bytes32 id = nodeId((seed % NODE_POOL + i) % NODE_POOL);
            if ((_node(id).owner != address(0)) == registered) return id;
        }
        return nodeId(seed % NODE_POOL);
    }

    /// From a random start, the first group ID not yet created.
    function _pickNewGroup(uint256 seed) internal returns (bytes32) {
        for (uint256 i; i < GROUP_POOL; ++i) {
            bytes32 id = groupId((seed % GROUP_POOL + i) % GROUP_POOL);
            if (_group(id).admin == address(0)) return id;
        }
        return groupId(seed % GROUP_POOL);
    }

    /// From a random start, the first node that is (or is not) a member of the group.
    function _pickMember(bytes32 group, uint256 seed, bool member) internal view returns (bytes32) {
        for (uint256 i; i < NODE_POOL; ++i) {
            bytes32 id = nodeId((seed % NODE_POOL + i) % NODE_POOL);
            if (registry.isMember(group, id) == member) return id;
        }
        return nodeId(seed % NODE_POOL);
    }

    /// One or two distinct nodes, from a random start, that are (or are not) members of the group; the start
    /// itself if none is (the call then reverts, as it should).
    function _pickMembers(bytes32 group, uint256 seed, bool member)
        internal
        view
        returns (bytes32[] memory ids)
    {
        uint256 wanted = 1 + (seed / NODE_POOL) % 2;
        ids = new bytes32[](wanted);
        uint256 found;
        for (uint256 i; i < NODE_POOL && found < wanted; ++i) {
            bytes32 id = nodeId((seed % NODE_POOL + i) % NODE_POOL);
            if (registry.isMember(group, id) == member) ids[found++] = id;
        }
        if (found == 0) ids[found++] = nodeId(seed % NODE_POOL);
        assembly ("memory-safe") {
            mstore(ids, found)
        }
    }

    /// Roles 1, 2 or 3 three times in four, else an invalid value (0, or 4..255).
    function _roles(uint256 seed) internal pure returns (uint8) {
        uint256 pick = seed % 8;
        if (pick < 6) return uint8(pick % 3 + 1);
        return pick == 6 ? 0 : uint8(4 + (seed / 8) % 252);
    }

    /// Up to 8 bytes drawn mostly from "a", "/", "+", "#", " " and now and then any byte: valid and invalid
    /// filters both come up often.
    function _topicFilter(bytes32 seed) internal pure returns (string memory) {
        bytes memory alphabet = "aa//+# ";
        bytes memory filter = new bytes(uint8(seed[31]) % 9);
        for (uint256 i; i < filter.length; ++i) {
            uint256 pick = uint8(seed[i]) % 8;
            filter[i] = pick < alphabet.length ? alphabet[pick] : seed[i];
        }
        return string(filter);
    }

    /// Sends one call as `caller`, counts it, and returns whether it succeeded and its gas.
    function _send(address caller, bytes memory data) internal returns (bool ok, uint256 gas) {
        (ok, gas) = _record(caller, data);
        if (ok) ++successfulCalls;
        else ++revertedCalls;
    }

    /// Sends one call as `caller` and feeds exactly the logs it produced to the model.
    function _record(address caller, bytes memory data) internal returns (bool ok, uint256 gas) {
        vm.recordLogs();
        vm.prank(caller);
        (ok,) = address(registry).call(data);
        gas = vm.lastCallGas().gasTotalUsed;
        Vm.Log[] memory logs = vm.getRecordedLogs();
        // forge records logs of reverted frames too; a reverted transaction's logs never reach a chain client.
        if (ok) model.ingest(logs);
    }

    /// True seven times in eight: skips most calls that could only revert, keeping a few for their errors.
    function _skip(uint256 seed) internal pure returns (bool) {
        return seed % 8 != 0;
    }

    function _honest(uint256 seed) internal view returns (address) {
        return actors[seed % ACTOR_COUNT];
    }

    /// An honest actor, or the hostile one a quarter of the time.
    function _anyone(uint256 seed) internal view returns (address) {
        return seed % 4 == 3 ? HOSTILE : _honest(seed / 4);
    }

    /// Whom a node, group or the operator role is offered to: an honest actor, or zero (withdrawing the offer)
    /// a quarter of the time. Never the hostile actor (see the contract comment).
    function _offeree(uint256 seed) internal view returns (address) {
        return seed % 4 == 3 ? address(0) : _honest(seed / 4);
    }

    /// `allowed` five times in six (when there is one), else a random account (possibly `allowed` too).
    function _mostly(address allowed, uint256 seed) internal view returns (address) {
        return seed % 6 == 0 || allowed == address(0) ? _anyone(seed / 6) : allowed;
    }

    /// The node, or all zeros when it is not registered.
    function _node(bytes32 id) internal returns (IKeyRegistry.Node memory n) {
        (bool ok, bytes memory returned) = address(registry).call(abi.encodeCall(KeyRegistry.getNode, (id)));
        if (ok) n = abi.decode(returned, (IKeyRegistry.Node));
    }

    /// The group, or all zeros when it does not exist.
    function _group(bytes32 id) internal returns (IKeyRegistry.Group memory g) {
        (bool ok, bytes memory returned) = address(registry).call(abi.encodeCall(KeyRegistry.getGroup, (id)));
        if (ok) g = abi.decode(returned, (IKeyRegistry.Group));
    }
}
