// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {TestBase} from "./utils/TestBase.sol";
import {Vm, vm} from "./utils/Vm.sol";
import {IKeyRegistry} from "../src/IKeyRegistry.sol";
import {KeyRegistry} from "../src/KeyRegistry.sol";

/// Unit tests: every function, every revert path (by selector and arguments), every event.
contract KeyRegistryTest is TestBase {
    KeyRegistry internal registry;

    address internal constant OWNER = address(0xA11CE);
    address internal constant ADMIN = address(0xAD);
    address internal constant STRANGER = address(0xBAD);

    bytes32 internal constant NODE_A = "1111";
    bytes32 internal constant NODE_B = "1112";
    bytes32 internal constant NODE_C = "1113";
    bytes32 internal constant GROUP_1 = "hsu0001";
    bytes32 internal constant GROUP_2 = "hsu0002";

    uint256 internal keyA;
    uint256 internal keyB;
    uint256 internal keyC;

    function setUp() public {
        registry = new KeyRegistry(address(0));
        keyA = testNodeKey("1111");
        keyB = testNodeKey("1112");
        keyC = testNodeKey("1113");
        // OWNER's nodes may join ADMIN's groups (consent has its own tests in Consent.t.sol).
        vm.prank(OWNER);
        registry.setAdminApproval(ADMIN, true);
    }

    // ------------------------------------------------------------------ helpers

    function _register(bytes32 nodeId, uint256 key) internal {
        registerAs(registry, OWNER, nodeId, key);
    }

    function _group(bytes32 groupId) internal {
        vm.prank(ADMIN);
        registry.createGroup(groupId, "hsu/#");
    }

    function _add(bytes32 groupId, bytes32 nodeId) internal {
        vm.prank(ADMIN);
        registry.addMember(groupId, nodeId);
    }

    /// Node A in groups 1 and 2, node B in group 1.
    function _paperSetup() internal {
        _register(NODE_A, keyA);
        _register(NODE_B, keyB);
        _group(GROUP_1);
        _group(GROUP_2);
        _add(GROUP_1, NODE_A);
        _add(GROUP_1, NODE_B);
        _add(GROUP_2, NODE_A);
    }

    /// Logs the registry emitted since vm.recordLogs() (expectEmit's reference events come from this contract).
    function _registryLogCount() internal returns (uint256 count) {
        Vm.Log[] memory logs = vm.getRecordedLogs();
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].emitter == address(registry)) ++count;
        }
    }

    function _rotationProof(bytes32 nodeId, uint256 newKey, uint32 version)
        internal
        returns (bytes memory publicKey, bytes memory signature)
    {
        return proof(registry, newKey, nodeId, OWNER, version);
    }

    // ------------------------------------------------------------------ registerNode

    function test_registerNode_StoresNodeAndEmits() public {
        (bytes memory publicKey, bytes memory signature) = proof(registry, keyA, NODE_A, OWNER, 1);
        vm.expectEmit(address(registry));
        emit IKeyRegistry.NodeRegistered(NODE_A, OWNER, publicKey, 1);
        vm.prank(OWNER);
        registry.registerNode(NODE_A, publicKey, signature);

        IKeyRegistry.Node memory node = registry.getNode(NODE_A);
        assertEq(node.owner, OWNER, "owner");
        assertEq(node.keyVersion, 1, "keyVersion");
        assertEq(uint256(node.status), uint256(IKeyRegistry.NodeStatus.Active), "status");
        assertEq(node.pendingOwner, address(0), "pendingOwner");
        assertEq(node.publicKey, publicKey, "publicKey");
    }

    function test_registerNode_AcceptsRecoveryIdAsV() public {
        bytes memory publicKey = compressedKey(keyA);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(keyA, registry.nodeKeyDigest(NODE_A, OWNER, publicKey, 1));
        vm.prank(OWNER);
        registry.registerNode(NODE_A, publicKey, abi.encodePacked(r, s, v - 27));
        assertEq(registry.getNode(NODE_A).publicKey, publicKey, "registered with v in {0,1}");
    }

    function test_registerNode_BothKeyParities() public {
        // Find one key of each y parity so both decompression branches run.
        bool[2] memory seen;
        for (uint256 seed = 1; !(seen[0] && seen[1]); ++seed) {
            uint256 key = uint256(keccak256(abi.encode(seed)));
            bytes memory publicKey = compressedKey(key);
            uint8 parity = uint8(publicKey[0]) - 2;
            if (seen[parity]) continue;
            seen[parity] = true;
            _register(bytes32(seed), key);
            assertEq(registry.getNode(bytes32(seed)).publicKey, publicKey, "key round trip");
        }
    }

    function test_RevertWhen_registerNode_ZeroId() public {
        (bytes memory publicKey, bytes memory signature) = proof(registry, keyA, bytes32(0), OWNER, 1);
        vm.expectRevert(IKeyRegistry.ZeroId.selector);
        vm.prank(OWNER);
        registry.registerNode(bytes32(0), publicKey, signature);
    }

    function test_RevertWhen_registerNode_AlreadyRegistered() public {
        _register(NODE_A, keyA);
        (bytes memory publicKey, bytes memory signature) = proof(registry, keyB, NODE_A, OWNER, 1);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NodeAlreadyRegistered.selector, NODE_A));
        vm.prank(OWNER);
        registry.registerNode(NODE_A, publicKey, signature);
    }

    function test_RevertWhen_registerNode_IdWasRevoked() public {
        _register(NODE_A, keyA);
        vm.prank(OWNER);
        registry.revokeNode(NODE_A);
        (bytes memory publicKey, bytes memory signature) = proof(registry, keyA, NODE_A, OWNER, 1);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NodeAlreadyRegistered.selector, NODE_A));
        vm.prank(OWNER);
        registry.registerNode(NODE_A, publicKey, signature);
    }

    function test_RevertWhen_registerNode_KeyWrongLength() public {
        bytes memory compressed = compressedKey(keyA);
        Vm_Wallet_ memory w = _wallet(keyA);
        bytes[3] memory keys = [
            _slice(compressed, 32),
            abi.encodePacked(compressed, uint8(0)),
            abi.encodePacked(uint8(4), bytes32(w.x), bytes32(w.y))
        ];
        for (uint256 i; i < keys.length; ++i) {
            vm.expectRevert(
                abi.encodeWithSelector(IKeyRegistry.InvalidPublicKeyLength.selector, keys[i].length)
            );
            vm.prank(OWNER);
            registry.registerNode(NODE_A, keys[i], new bytes(65));
        }
    }

    function test_RevertWhen_registerNode_KeyBadPrefix() public {
        bytes memory publicKey = compressedKey(keyA);
        uint8[3] memory prefixes = [0, 4, 0xff];
        for (uint256 i; i < prefixes.length; ++i) {
            publicKey[0] = bytes1(prefixes[i]);
            vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.InvalidPublicKeyPrefix.selector, prefixes[i]));
            vm.prank(OWNER);
            registry.registerNode(NODE_A, publicKey, new bytes(65));
        }
    }

    function test_RevertWhen_registerNode_KeyXOutOfRange() public {
        uint256[2] memory xs = [SECP256K1_P, type(uint256).max];
        for (uint256 i; i < xs.length; ++i) {
            bytes memory publicKey = abi.encodePacked(uint8(2), bytes32(xs[i]));
            vm.expectRevert(
                abi.encodeWithSelector(IKeyRegistry.PublicKeyXOutOfRange.selector, bytes32(xs[i]))
            );
            vm.prank(OWNER);
            registry.registerNode(NODE_A, publicKey, new bytes(65));
        }
    }

    function test_RevertWhen_registerNode_KeyNotOnCurve() public {
        // x^3 + 7 is not a square mod p for x = 5 (and is for x = 1).
        bytes memory publicKey = abi.encodePacked(uint8(3), bytes32(uint256(5)));
        vm.expectRevert(
            abi.encodeWithSelector(IKeyRegistry.PublicKeyNotOnCurve.selector, bytes32(uint256(5)))
        );
        vm.prank(OWNER);
        registry.registerNode(NODE_A, publicKey, new bytes(65));
    }

    function test_RevertWhen_registerNode_SignatureWrongLength() public {
        (bytes memory publicKey, bytes memory signature) = proof(registry, keyA, NODE_A, OWNER, 1);
        bytes[2] memory signatures = [_slice(signature, 64), abi.encodePacked(signature, uint8(0))];
        for (uint256 i; i < signatures.length; ++i) {
            vm.expectRevert(
                abi.encodeWithSelector(IKeyRegistry.InvalidSignatureLength.selector, signatures[i].length)
            );
            vm.prank(OWNER);
            registry.registerNode(NODE_A, publicKey, signatures[i]);
        }
    }

    function test_RevertWhen_registerNode_SignatureBadV() public {
        (bytes memory publicKey, bytes memory signature) = proof(registry, keyA, NODE_A, OWNER, 1);
        uint8[4] memory vs = [2, 26, 29, 255];
        for (uint256 i; i < vs.length; ++i) {
            signature[64] = bytes1(vs[i]);
            vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.InvalidSignatureV.selector, vs[i]));
            vm.prank(OWNER);
            registry.registerNode(NODE_A, publicKey, signature);
        }
    }

    function test_RevertWhen_registerNode_SignatureZeroR() public {
        bytes memory publicKey = compressedKey(keyA);
        bytes memory signature = abi.encodePacked(bytes32(0), bytes32(uint256(1)), uint8(27));
        vm.expectRevert(
            abi.encodeWithSelector(IKeyRegistry.InvalidSignature.selector, vm.addr(keyA), address(0))
        );
        vm.prank(OWNER);
        registry.registerNode(NODE_A, publicKey, signature);
    }

    // ------------------------------------------------------------------ rotateKey

    function test_rotateKey_ReplacesKeyAndTouchesNoGroup() public {
        _paperSetup();
        (bytes memory publicKey, bytes memory signature) = _rotationProof(NODE_A, keyC, 2);

        vm.recordLogs();
        vm.expectEmit(address(registry));
        emit IKeyRegistry.NodeKeyRotated(NODE_A, publicKey, 2, OWNER);
        vm.prank(OWNER);
        registry.rotateKey(NODE_A, publicKey, signature);
        assertEq(_registryLogCount(), 1, "one event, no group event");

        IKeyRegistry.Node memory node = registry.getNode(NODE_A);
        assertEq(node.publicKey, publicKey, "new key");
        assertEq(node.keyVersion, 2, "version");
        assertEq(registry.getGroup(GROUP_1).epoch, 2, "group 1 epoch unchanged");
        assertEq(registry.getGroup(GROUP_2).epoch, 1, "group 2 epoch unchanged");
        assertTrue(registry.isMember(GROUP_1, NODE_A) && registry.isMember(GROUP_2, NODE_A), "still member");
    }

    function test_rotateKey_NodeWithoutGroups() public {
        _register(NODE_A, keyA);
        (bytes memory publicKey, bytes memory signature) = _rotationProof(NODE_A, keyB, 2);
        vm.prank(OWNER);
        registry.rotateKey(NODE_A, publicKey, signature);
        (publicKey, signature) = _rotationProof(NODE_A, keyC, 3);
        vm.prank(OWNER);
        registry.rotateKey(NODE_A, publicKey, signature);
        assertEq(registry.getNode(NODE_A).keyVersion, 3, "two rotations");
        assertEq(registry.getNode(NODE_A).publicKey, compressedKey(keyC), "latest key");
    }

    function test_RevertWhen_rotateKey_NodeNotFound() public {
        (bytes memory publicKey, bytes memory signature) = _rotationProof(NODE_A, keyB, 2);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NodeNotFound.selector, NODE_A));
        vm.prank(OWNER);
        registry.rotateKey(NODE_A, publicKey, signature);
    }

    function test_RevertWhen_rotateKey_NotOwner() public {
        _register(NODE_A, keyA);
        (bytes memory publicKey, bytes memory signature) = proof(registry, keyB, NODE_A, STRANGER, 2);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotNodeOwner.selector, NODE_A, STRANGER));
        vm.prank(STRANGER);
        registry.rotateKey(NODE_A, publicKey, signature);
    }

    function test_RevertWhen_rotateKey_Revoked() public {
        _register(NODE_A, keyA);
        vm.prank(OWNER);
        registry.revokeNode(NODE_A);
        (bytes memory publicKey, bytes memory signature) = _rotationProof(NODE_A, keyB, 2);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NodeIsRevoked.selector, NODE_A));
        vm.prank(OWNER);
        registry.rotateKey(NODE_A, publicKey, signature);
    }

    function test_RevertWhen_rotateKey_KeyUnchanged() public {
        _register(NODE_A, keyA);
        (bytes memory publicKey, bytes memory signature) = _rotationProof(NODE_A, keyA, 2);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.PublicKeyUnchanged.selector, NODE_A));
        vm.prank(OWNER);
        registry.rotateKey(NODE_A, publicKey, signature);
    }

    function test_RevertWhen_rotateKey_KeyMalformed() public {
        _register(NODE_A, keyA);
        bytes memory publicKey = abi.encodePacked(uint8(2), bytes32(uint256(5)));
        vm.expectRevert(
            abi.encodeWithSelector(IKeyRegistry.PublicKeyNotOnCurve.selector, bytes32(uint256(5)))
        );
        vm.prank(OWNER);
        registry.rotateKey(NODE_A, publicKey, new bytes(65));
    }

    function test_RevertWhen_rotateKey_SignedForWrongVersion() public {
        _register(NODE_A, keyA);
        (bytes memory publicKey, bytes memory signature) = _rotationProof(NODE_A, keyB, 3);
        address recovered = _recover(registry.nodeKeyDigest(NODE_A, OWNER, publicKey, 2), signature);
        vm.expectRevert(
            abi.encodeWithSelector(IKeyRegistry.InvalidSignature.selector, vm.addr(keyB), recovered)
        );
        vm.prank(OWNER);
        registry.rotateKey(NODE_A, publicKey, signature);
        assertEq(registry.getNode(NODE_A).keyVersion, 1, "unchanged");
    }

    // ------------------------------------------------------------------ revokeNode

    function test_revokeNode_IsFinalAndKeepsMembershipsRecorded() public {
        _paperSetup();
        vm.recordLogs();
        vm.expectEmit(address(registry));
        emit IKeyRegistry.NodeRevoked(NODE_A, OWNER);
        vm.prank(OWNER);
        registry.revokeNode(NODE_A);
        assertEq(_registryLogCount(), 1, "one event, no group event");

        IKeyRegistry.Node memory node = registry.getNode(NODE_A);
        assertEq(uint256(node.status), uint256(IKeyRegistry.NodeStatus.Revoked), "revoked");
        assertEq(node.publicKey, compressedKey(keyA), "key kept for the record");
        assertEq(node.keyVersion, 1, "version kept");
        // Revocation touches no group: the memberships stay recorded, epochs and counts unchanged.
        assertTrue(registry.isMember(GROUP_1, NODE_A) && registry.isMember(GROUP_2, NODE_A), "still recorded");
        assertEq(registry.getGroup(GROUP_1).epoch, 2, "group 1 epoch unchanged");
        assertEq(registry.getGroup(GROUP_2).epoch, 1, "group 2 epoch unchanged");
        assertEq(registry.getGroup(GROUP_1).memberCount, 2, "group 1 count unchanged");
        assertEq(registry.groupMembers(GROUP_2, 0, 10)[0], NODE_A, "listed");

        _group("hsu0003");
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NodeIsRevoked.selector, NODE_A));
        _add("hsu0003", NODE_A);
    }

    function test_revokeNode_AdminRemovesAndOwnerLeavesARevokedNode() public {
        _paperSetup();
        vm.prank(OWNER);
        registry.revokeNode(NODE_A);

        vm.expectEmit(address(registry));
        emit IKeyRegistry.MemberRemoved(GROUP_1, NODE_A, 3, ADMIN);
        vm.prank(ADMIN);
        registry.removeMember(GROUP_1, NODE_A);
        vm.expectEmit(address(registry));
        emit IKeyRegistry.MemberRemoved(GROUP_2, NODE_A, 2, OWNER);
        vm.prank(OWNER);
        registry.leaveGroup(GROUP_2, NODE_A);

        assertTrue(!registry.isMember(GROUP_1, NODE_A) && !registry.isMember(GROUP_2, NODE_A), "removed");
        bytes32[] memory members = registry.groupMembers(GROUP_1, 0, 10);
        assertEq(members.length, 1, "page length");
        assertEq(members[0], NODE_B, "swap and pop moved B");
    }

    function test_revokeNode_LeavesAPendingOfferThatNobodyCanAccept() public {
        _register(NODE_A, keyA);
        vm.prank(OWNER);
        registry.transferNodeOwnership(NODE_A, STRANGER);
        vm.prank(OWNER);
        registry.revokeNode(NODE_A);
        // Only events change state: the offer stays on record, as the event stream says, but is dead.
        assertEq(registry.getNode(NODE_A).pendingOwner, STRANGER, "offer on record");
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NodeIsRevoked.selector, NODE_A));
        vm.prank(STRANGER);
        registry.acceptNodeOwnership(NODE_A);
    }

    function test_RevertWhen_revokeNode_NodeNotFound() public {
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NodeNotFound.selector, NODE_A));
        vm.prank(OWNER);
        registry.revokeNode(NODE_A);
    }

    function test_RevertWhen_revokeNode_NotOwner() public {
        _register(NODE_A, keyA);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotNodeOwner.selector, NODE_A, ADMIN));
        vm.prank(ADMIN);
        registry.revokeNode(NODE_A);
    }

    function test_RevertWhen_revokeNode_AlreadyRevoked() public {
        _register(NODE_A, keyA);
        vm.prank(OWNER);
        registry.revokeNode(NODE_A);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NodeIsRevoked.selector, NODE_A));
        vm.prank(OWNER);
        registry.revokeNode(NODE_A);
    }

    // ------------------------------------------------------------------ transferNodeOwnership

    function test_transferNodeOwnership_OffersOnly() public {
        _register(NODE_A, keyA);
        vm.expectEmit(address(registry));
        emit IKeyRegistry.NodeOwnershipTransferStarted(NODE_A, OWNER, STRANGER);
        vm.prank(OWNER);
        registry.transferNodeOwnership(NODE_A, STRANGER);
        IKeyRegistry.Node memory node = registry.getNode(NODE_A);
        assertEq(node.owner, OWNER, "owner unchanged");
        assertEq(node.pendingOwner, STRANGER, "pending owner");
    }

    function test_acceptNodeOwnership_MovesControl() public {
        _register(NODE_A, keyA);
        vm.prank(OWNER);
        registry.transferNodeOwnership(NODE_A, STRANGER);
        vm.expectEmit(address(registry));
        emit IKeyRegistry.NodeOwnershipTransferred(NODE_A, OWNER, STRANGER);
        vm.prank(STRANGER);
        registry.acceptNodeOwnership(NODE_A);
        assertEq(registry.getNode(NODE_A).owner, STRANGER, "new owner");
        assertEq(registry.getNode(NODE_A).pendingOwner, address(0), "offer consumed");

        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotNodeOwner.selector, NODE_A, OWNER));
        vm.prank(OWNER);
        registry.revokeNode(NODE_A);

        (bytes memory publicKey, bytes memory signature) = proof(registry, keyB, NODE_A, STRANGER, 2);
        vm.prank(STRANGER);
        registry.rotateKey(NODE_A, publicKey, signature);
        assertEq(registry.getNode(NODE_A).keyVersion, 2, "new owner rotated");
    }

    function test_RevertWhen_transferNodeOwnership_NodeNotFound() public {
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NodeNotFound.selector, NODE_A));
        vm.prank(OWNER);
        registry.transferNodeOwnership(NODE_A, STRANGER);
    }

    function test_RevertWhen_transferNodeOwnership_NotOwner() public {
        _register(NODE_A, keyA);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotNodeOwner.selector, NODE_A, STRANGER));
        vm.prank(STRANGER);
        registry.transferNodeOwnership(NODE_A, STRANGER);
    }

    function test_RevertWhen_acceptNodeOwnership_NodeNotFound() public {
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NodeNotFound.selector, NODE_A));
        vm.prank(STRANGER);
        registry.acceptNodeOwnership(NODE_A);
    }

    function test_RevertWhen_acceptNodeOwnership_NoOffer() public {
        _register(NODE_A, keyA);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotPendingNodeOwner.selector, NODE_A, STRANGER));
        vm.prank(STRANGER);
        registry.acceptNodeOwnership(NODE_A);
    }

    function test_RevertWhen_transferNodeOwnership_Revoked() public {
        _register(NODE_A, keyA);
        vm.prank(OWNER);
        registry.revokeNode(NODE_A);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NodeIsRevoked.selector, NODE_A));
        vm.prank(OWNER);
        registry.transferNodeOwnership(NODE_A, STRANGER);
    }

    // ------------------------------------------------------------------ setAdminApproval

    function test_setAdminApproval_SetsAndEmits() public {
        assertTrue(!registry.isAdminApproved(STRANGER, ADMIN), "not approved yet");
        vm.expectEmit(address(registry));
        emit IKeyRegistry.AdminApprovalSet(STRANGER, ADMIN, true);
        vm.prank(STRANGER);
        registry.setAdminApproval(ADMIN, true);
        assertTrue(registry.isAdminApproved(STRANGER, ADMIN), "approved");
        assertTrue(!registry.isAdminApproved(ADMIN, STRANGER), "directed");

        vm.expectEmit(address(registry));
        emit IKeyRegistry.AdminApprovalSet(STRANGER, ADMIN, false);
        vm.prank(STRANGER);
        registry.setAdminApproval(ADMIN, false);
        assertTrue(!registry.isAdminApproved(STRANGER, ADMIN), "withdrawn");
    }

    function test_RevertWhen_setAdminApproval_ZeroAddress() public {
        vm.expectRevert(IKeyRegistry.ZeroAddress.selector);
        vm.prank(OWNER);
        registry.setAdminApproval(address(0), true);
    }

    // ------------------------------------------------------------------ createGroup

    function test_createGroup_StoresGroupAndEmits() public {
        vm.expectEmit(address(registry));
        emit IKeyRegistry.GroupCreated(GROUP_1, ADMIN, "hsu/0001/#");
        vm.prank(ADMIN);
        registry.createGroup(GROUP_1, "hsu/0001/#");
        IKeyRegistry.Group memory group = registry.getGroup(GROUP_1);
        assertEq(group.admin, ADMIN, "admin");
        assertEq(group.epoch, 0, "epoch");
        assertEq(group.memberCount, 0, "members");
        assertEq(group.topicFilter, "hsu/0001/#", "filter");
        assertEq(registry.groupMembers(GROUP_1, 0, 10).length, 0, "no members");
    }

    function test_createGroup_EmptyAndLongestTopicFilter() public {
        vm.prank(ADMIN);
        registry.createGroup(GROUP_1, "");
        assertEq(registry.getGroup(GROUP_1).topicFilter, "", "empty filter");

        bytes memory level = "a/";
        bytes memory longest = new bytes(registry.MAX_TOPIC_FILTER_LENGTH());
        for (uint256 i; i < longest.length; ++i) {
            longest[i] = level[i % 2];
        }
        vm.prank(ADMIN);
        registry.createGroup(GROUP_2, string(longest));
        assertEq(registry.getGroup(GROUP_2).topicFilter, string(longest), "longest filter");
    }

    function test_RevertWhen_createGroup_ZeroId() public {
        vm.expectRevert(IKeyRegistry.ZeroId.selector);
        vm.prank(ADMIN);
        registry.createGroup(bytes32(0), "");
    }

    function test_RevertWhen_createGroup_AlreadyExists() public {
        _group(GROUP_1);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.GroupAlreadyExists.selector, GROUP_1));
        vm.prank(STRANGER);
        registry.createGroup(GROUP_1, "");
    }

    function test_RevertWhen_createGroup_TopicFilterTooLong() public {
        string memory tooLong = string(new bytes(1025));
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.TopicFilterTooLong.selector, 1025, 1024));
        vm.prank(ADMIN);
        registry.createGroup(GROUP_1, tooLong);
    }

    // ------------------------------------------------------------------ transferGroupAdmin

    function test_transferGroupAdmin_OffersOnly() public {
        _group(GROUP_1);
        vm.expectEmit(address(registry));
        emit IKeyRegistry.GroupAdminTransferStarted(GROUP_1, ADMIN, STRANGER);
        vm.prank(ADMIN);
        registry.transferGroupAdmin(GROUP_1, STRANGER);
        IKeyRegistry.Group memory group = registry.getGroup(GROUP_1);
        assertEq(group.admin, ADMIN, "admin unchanged");
        assertEq(group.pendingAdmin, STRANGER, "pending admin");
    }

    function test_acceptGroupAdmin_MovesControl() public {
        _register(NODE_A, keyA);
        _group(GROUP_1);
        vm.prank(ADMIN);
        registry.transferGroupAdmin(GROUP_1, STRANGER);
        vm.expectEmit(address(registry));
        emit IKeyRegistry.GroupAdminTransferred(GROUP_1, ADMIN, STRANGER);
        vm.prank(STRANGER);
        registry.acceptGroupAdmin(GROUP_1);
        assertEq(registry.getGroup(GROUP_1).admin, STRANGER, "new admin");
        assertEq(registry.getGroup(GROUP_1).pendingAdmin, address(0), "offer consumed");

        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotGroupAdmin.selector, GROUP_1, ADMIN));
        _add(GROUP_1, NODE_A);
        vm.prank(OWNER);
        registry.setAdminApproval(STRANGER, true);
        vm.prank(STRANGER);
        registry.addMember(GROUP_1, NODE_A);
        assertTrue(registry.isMember(GROUP_1, NODE_A), "new admin added");
    }

    function test_RevertWhen_acceptGroupAdmin_GroupNotFound() public {
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.GroupNotFound.selector, GROUP_1));
        vm.prank(STRANGER);
        registry.acceptGroupAdmin(GROUP_1);
    }

    function test_RevertWhen_acceptGroupAdmin_NoOffer() public {
        _group(GROUP_1);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotPendingGroupAdmin.selector, GROUP_1, STRANGER));
        vm.prank(STRANGER);
        registry.acceptGroupAdmin(GROUP_1);
    }

    function test_RevertWhen_transferGroupAdmin_GroupNotFound() public {
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.GroupNotFound.selector, GROUP_1));
        vm.prank(ADMIN);
        registry.transferGroupAdmin(GROUP_1, STRANGER);
    }

    function test_RevertWhen_transferGroupAdmin_NotAdmin() public {
        _group(GROUP_1);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotGroupAdmin.selector, GROUP_1, STRANGER));
        vm.prank(STRANGER);
        registry.transferGroupAdmin(GROUP_1, STRANGER);
    }

    // ------------------------------------------------------------------ addMember

    function test_addMember_AddsAndBumpsEpoch() public {
        _register(NODE_A, keyA);
        _register(NODE_B, keyB);
        _group(GROUP_1);
        vm.expectEmit(address(registry));
        emit IKeyRegistry.MemberAdded(GROUP_1, NODE_A, 1, ADMIN);
        _add(GROUP_1, NODE_A);
        vm.expectEmit(address(registry));
        emit IKeyRegistry.MemberAdded(GROUP_1, NODE_B, 2, ADMIN);
        _add(GROUP_1, NODE_B);

        assertTrue(registry.isMember(GROUP_1, NODE_A) && registry.isMember(GROUP_1, NODE_B), "members");
        assertEq(registry.getGroup(GROUP_1).memberCount, 2, "count");
        bytes32[] memory members = registry.groupMembers(GROUP_1, 0, 2);
        assertEq(members[0], NODE_A, "first");
        assertEq(members[1], NODE_B, "second");
    }

    function test_RevertWhen_addMember_GroupNotFound() public {
        _register(NODE_A, keyA);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.GroupNotFound.selector, GROUP_1));
        _add(GROUP_1, NODE_A);
    }

    function test_RevertWhen_addMember_NotAdmin() public {
        _register(NODE_A, keyA);
        _group(GROUP_1);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotGroupAdmin.selector, GROUP_1, OWNER));
        vm.prank(OWNER);
        registry.addMember(GROUP_1, NODE_A);
    }

    function test_RevertWhen_addMember_NodeNotFound() public {
        _group(GROUP_1);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NodeNotFound.selector, NODE_A));
        _add(GROUP_1, NODE_A);
    }

    function test_RevertWhen_addMember_NodeRevoked() public {
        _register(NODE_A, keyA);
        _group(GROUP_1);
        vm.prank(OWNER);
        registry.revokeNode(NODE_A);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NodeIsRevoked.selector, NODE_A));
        _add(GROUP_1, NODE_A);
    }

    function test_RevertWhen_addMember_AdminNotApproved() public {
        registerAs(registry, STRANGER, NODE_A, keyA);
        _group(GROUP_1);
        vm.expectRevert(
            abi.encodeWithSelector(IKeyRegistry.AdminNotApproved.selector, NODE_A, STRANGER, ADMIN)
        );
        _add(GROUP_1, NODE_A);
    }

    function test_RevertWhen_addMember_AlreadyMember() public {
        _register(NODE_A, keyA);
        _group(GROUP_1);
        _add(GROUP_1, NODE_A);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.AlreadyMember.selector, GROUP_1, NODE_A));
        _add(GROUP_1, NODE_A);
    }

    // ------------------------------------------------------------------ removeMember

    function test_removeMember_SwapsLastIntoHole() public {
        _register(NODE_A, keyA);
        _register(NODE_B, keyB);
        _register(NODE_C, keyC);
        _group(GROUP_1);
        _add(GROUP_1, NODE_A);
        _add(GROUP_1, NODE_B);
        _add(GROUP_1, NODE_C);

        vm.expectEmit(address(registry));
        emit IKeyRegistry.MemberRemoved(GROUP_1, NODE_A, 4, ADMIN);
        vm.prank(ADMIN);
        registry.removeMember(GROUP_1, NODE_A);

        bytes32[] memory members = registry.groupMembers(GROUP_1, 0, 10);
        assertEq(members.length, 2, "count");
        assertEq(members[0], NODE_C, "last moved to the hole");
        assertEq(members[1], NODE_B, "second unchanged");

        // The moved member's position was updated: removing it takes out C, not whatever sits at its old slot.
        vm.prank(ADMIN);
        registry.removeMember(GROUP_1, NODE_C);
        members = registry.groupMembers(GROUP_1, 0, 10);
        assertEq(members.length, 1, "one left");
        assertEq(members[0], NODE_B, "B left");
        // Removing the only member empties the group.
        vm.prank(ADMIN);
        registry.removeMember(GROUP_1, NODE_B);
        assertEq(registry.getGroup(GROUP_1).memberCount, 0, "empty");
        assertEq(registry.getGroup(GROUP_1).epoch, 6, "epoch per change");
        _add(GROUP_1, NODE_B);
        assertEq(registry.groupMembers(GROUP_1, 0, 10)[0], NODE_B, "re-added at position 0");
    }

    function test_RevertWhen_removeMember_GroupNotFound() public {
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.GroupNotFound.selector, GROUP_1));
        vm.prank(ADMIN);
        registry.removeMember(GROUP_1, NODE_A);
    }

    function test_RevertWhen_removeMember_NotAdmin() public {
        _paperSetup();
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotGroupAdmin.selector, GROUP_1, OWNER));
        vm.prank(OWNER);
        registry.removeMember(GROUP_1, NODE_A);
    }

    function test_RevertWhen_removeMember_NotMember() public {
        _paperSetup();
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotMember.selector, GROUP_2, NODE_B));
        vm.prank(ADMIN);
        registry.removeMember(GROUP_2, NODE_B);
    }

    // ------------------------------------------------------------------ leaveGroup

    function test_leaveGroup_OwnerTakesNodeOut() public {
        _paperSetup();
        vm.expectEmit(address(registry));
        emit IKeyRegistry.MemberRemoved(GROUP_2, NODE_A, 2, OWNER);
        vm.prank(OWNER);
        registry.leaveGroup(GROUP_2, NODE_A);
        assertTrue(!registry.isMember(GROUP_2, NODE_A), "left");
        assertTrue(registry.isMember(GROUP_1, NODE_A), "other group kept");
    }

    function test_RevertWhen_leaveGroup_GroupNotFound() public {
        _register(NODE_A, keyA);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.GroupNotFound.selector, GROUP_1));
        vm.prank(OWNER);
        registry.leaveGroup(GROUP_1, NODE_A);
    }

    function test_RevertWhen_leaveGroup_NodeNotFound() public {
        _group(GROUP_1);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NodeNotFound.selector, NODE_A));
        vm.prank(OWNER);
        registry.leaveGroup(GROUP_1, NODE_A);
    }

    function test_RevertWhen_leaveGroup_NotOwner() public {
        _paperSetup();
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotNodeOwner.selector, NODE_A, ADMIN));
        vm.prank(ADMIN);
        registry.leaveGroup(GROUP_1, NODE_A);
    }

    function test_RevertWhen_leaveGroup_NotMember() public {
        _paperSetup();
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotMember.selector, GROUP_2, NODE_B));
        vm.prank(OWNER);
        registry.leaveGroup(GROUP_2, NODE_B);
    }

    // ------------------------------------------------------------------ queries

    function test_constructor_ZeroOperatorDeploysAnOpenRegistry() public {
        vm.recordLogs();
        KeyRegistry open = new KeyRegistry(address(0));
        assertEq(vm.getRecordedLogs().length, 0, "no event");
        assertEq(open.operator(), address(0), "no operator");
        assertEq(open.pendingOperator(), address(0), "no pending operator");
        assertTrue(open.isRegistrar(STRANGER) && open.isRegistrar(address(0)), "everyone registers");
    }

    function test_RevertWhen_getNode_Unknown() public {
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NodeNotFound.selector, NODE_A));
        registry.getNode(NODE_A);
    }

    function test_RevertWhen_getGroup_Unknown() public {
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.GroupNotFound.selector, GROUP_1));
        registry.getGroup(GROUP_1);
    }

    function test_RevertWhen_groupMembers_Unknown() public {
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.GroupNotFound.selector, GROUP_1));
        registry.groupMembers(GROUP_1, 0, 1);
    }

    function test_isMember_FalseForUnknownIds() public view {
        assertTrue(!registry.isMember(GROUP_1, NODE_A), "unknown group and node");
    }

    function test_groupMembers_Pages() public {
        _paperSetup();
        _register(NODE_C, keyC);
        _add(GROUP_1, NODE_C);
        assertEq(registry.groupMembers(GROUP_1, 0, 2).length, 2, "first page");
        bytes32[] memory tail = registry.groupMembers(GROUP_1, 2, 2);
        assertEq(tail.length, 1, "short last page");
        assertEq(tail[0], NODE_C, "last member");
        assertEq(registry.groupMembers(GROUP_1, 3, 2).length, 0, "past the end");
        assertEq(
            registry.groupMembers(GROUP_1, type(uint256).max, type(uint256).max).length, 0, "huge offset"
        );
        assertEq(registry.groupMembers(GROUP_1, 1, type(uint256).max).length, 2, "huge limit");
        assertEq(registry.groupMembers(GROUP_1, 0, 0).length, 0, "zero limit");
    }

    function test_nodeKeyDigest_MatchesEip712() public view {
        bytes memory publicKey = hex"021111111111111111111111111111111111111111111111111111111111111111";
        bytes32 domain = keccak256(
            abi.encode(
                keccak256(
                    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
                ),
                keccak256("anchormq KeyRegistry"),
                keccak256("1"),
                block.chainid,
                address(registry)
            )
        );
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256("NodeKey(bytes32 nodeId,address owner,bytes publicKey,uint32 keyVersion)"),
                NODE_A,
                OWNER,
                keccak256(publicKey),
                uint256(7)
            )
        );
        assertEq(registry.domainSeparator(), domain, "domain separator");
        assertEq(
            registry.nodeKeyDigest(NODE_A, OWNER, publicKey, 7),
            keccak256(abi.encodePacked("\x19\x01", domain, structHash)),
            "digest"
        );
        assertEq(
            registry.NODE_KEY_TYPEHASH(),
            0xe3a79243ec317ba4e3d7b0a715c06aaceef94c919fcabb86a80e665de197ef24,
            "typehash"
        );
    }

    function test_eip712Domain_DescribesTheDomain() public view {
        (
            bytes1 fields,
            string memory name,
            string memory version,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] memory extensions
        ) = registry.eip712Domain();
        assertEq(uint256(uint8(fields)), 0x0f, "fields");
        assertEq(name, "anchormq KeyRegistry", "name");
        assertEq(version, "1", "version");
        assertEq(chainId, block.chainid, "chain id");
        assertEq(verifyingContract, address(registry), "contract");
        assertEq(salt, bytes32(0), "salt");
        assertEq(extensions.length, 0, "extensions");
    }

    function test_domainSeparator_FollowsChainId() public {
        bytes32 before = registry.domainSeparator();
        vm.chainId(block.chainid + 1);
        assertTrue(registry.domainSeparator() != before, "chain id is part of the domain");
    }

    // ------------------------------------------------------------------ local helpers

    struct Vm_Wallet_ {
        uint256 x;
        uint256 y;
    }

    function _wallet(uint256 key) internal returns (Vm_Wallet_ memory w) {
        (w.x, w.y) = (vm.createWallet(key).publicKeyX, vm.createWallet(key).publicKeyY);
    }

    function _slice(bytes memory data, uint256 length) internal pure returns (bytes memory out) {
        out = new bytes(length);
        for (uint256 i; i < length; ++i) {
            out[i] = data[i];
        }
    }
}
