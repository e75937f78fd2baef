// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {TestBase} from "./utils/TestBase.sol";
import {vm} from "./utils/Vm.sol";
import {IKeyRegistry} from "../src/IKeyRegistry.sol";
import {KeyRegistry} from "../src/KeyRegistry.sol";

/// Fuzzed IDs, keys, signatures and operation orders.
contract KeyRegistryFuzzTest is TestBase {
    KeyRegistry internal registry;

    address internal constant OWNER = address(0xA11CE);
    address internal constant ADMIN = address(0xAD);
    uint256 internal constant HALF_N = SECP256K1_N / 2;

    function setUp() public {
        registry = new KeyRegistry(address(0));
        vm.prank(OWNER);
        registry.setAdminApproval(ADMIN, true);
    }

    function _nonZeroId(bytes32 id) internal pure returns (bytes32) {
        return bytes32(bound(uint256(id), 1, type(uint256).max));
    }

    function _nonZeroAddress(address account) internal pure returns (address) {
        return address(uint160(bound(uint160(account), 1, type(uint160).max)));
    }

    function testFuzz_registerNode_AnyKeyIdAndOwner(uint256 keySeed, bytes32 nodeId, address owner) public {
        uint256 key = boundKey(keySeed);
        nodeId = _nonZeroId(nodeId);
        owner = _nonZeroAddress(owner);
        registerAs(registry, owner, nodeId, key);

        IKeyRegistry.Node memory node = registry.getNode(nodeId);
        assertEq(node.owner, owner, "owner");
        assertEq(node.publicKey, compressedKey(key), "key");
        assertEq(node.keyVersion, 1, "version");
    }

    /// Random key bytes are rejected by the first check they fail, judged here independently (Euler's
    /// criterion instead of the contract's square root).
    function testFuzz_RevertWhen_registerNode_ArbitraryKeyBytes(uint8 prefix, bytes32 x, bytes32 r, bytes32 s)
        public
    {
        prefix = uint8(bound(prefix, 1, 4)); // mostly valid prefixes, one bad one each side
        if (uint256(x) % 4 == 0) x = bytes32(type(uint256).max - (uint256(x) % 2 ** 32)); // reach x >= p
        s = bytes32(bound(uint256(s), 0, HALF_N));
        bytes memory publicKey = abi.encodePacked(prefix, x);
        bytes memory signature = abi.encodePacked(r, s, uint8(27));

        vm.prank(OWNER);
        (bool ok, bytes memory returned) =
            address(registry).call(abi.encodeCall(IKeyRegistry.registerNode, ("node", publicKey, signature)));
        assertTrue(!ok, "random signature accepted");

        if (prefix != 2 && prefix != 3) {
            assertEq(
                returned,
                abi.encodeWithSelector(IKeyRegistry.InvalidPublicKeyPrefix.selector, prefix),
                "prefix"
            );
        } else if (uint256(x) >= SECP256K1_P) {
            assertEq(returned, abi.encodeWithSelector(IKeyRegistry.PublicKeyXOutOfRange.selector, x), "range");
        } else if (!_isOnCurve(uint256(x))) {
            assertEq(returned, abi.encodeWithSelector(IKeyRegistry.PublicKeyNotOnCurve.selector, x), "curve");
        } else {
            bytes4 selector;
            assembly ("memory-safe") {
                selector := mload(add(returned, 0x20))
            }
            assertTrue(
                returned.length == 68 && selector == IKeyRegistry.InvalidSignature.selector, "signature"
            );
        }
    }

    function testFuzz_RevertWhen_SignerIsNotTheKey(uint256 keySeed, uint256 signerSeed, bytes32 nodeId)
        public
    {
        uint256 key = boundKey(keySeed);
        uint256 signer = boundKey(signerSeed);
        if (signer == key) signer = key == 1 ? 2 : key - 1;
        nodeId = _nonZeroId(nodeId);
        bytes memory publicKey = compressedKey(key);
        bytes memory signature = signDigest(signer, registry.nodeKeyDigest(nodeId, OWNER, publicKey, 1));
        vm.expectRevert(
            abi.encodeWithSelector(IKeyRegistry.InvalidSignature.selector, vm.addr(key), vm.addr(signer))
        );
        vm.prank(OWNER);
        registry.registerNode(nodeId, publicKey, signature);
    }

    function testFuzz_RevertWhen_SenderIsNotTheSignedOwner(uint256 keySeed, address owner, address sender)
        public
    {
        uint256 key = boundKey(keySeed);
        owner = _nonZeroAddress(owner);
        sender = _nonZeroAddress(sender);
        if (sender == owner) sender = address(uint160(owner) ^ 1);
        (bytes memory publicKey, bytes memory signature) = proof(registry, key, "node", owner, 1);
        vm.expectRevert(
            abi.encodeWithSelector(
                IKeyRegistry.InvalidSignature.selector,
                vm.addr(key),
                _recover(registry.nodeKeyDigest("node", sender, publicKey, 1), signature)
            )
        );
        vm.prank(sender);
        registry.registerNode("node", publicKey, signature);
    }

    function testFuzz_RevertWhen_SignatureIsHighS(uint256 keySeed, bytes32 nodeId) public {
        uint256 key = boundKey(keySeed);
        nodeId = _nonZeroId(nodeId);
        bytes memory publicKey = compressedKey(key);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, registry.nodeKeyDigest(nodeId, OWNER, publicKey, 1));
        bytes32 highS = bytes32(SECP256K1_N - uint256(s));
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.SignatureMalleable.selector, highS));
        vm.prank(OWNER);
        registry.registerNode(nodeId, publicKey, abi.encodePacked(r, highS, v == 27 ? uint8(28) : uint8(27)));
    }

    /// A chain of rotations: each bumps the version, and no earlier proof can be replayed.
    /// forge-config: default.fuzz.runs = 128
    function testFuzz_rotateKey_VersionsAndNoReplay(uint256 seed, uint8 rotations) public {
        rotations = uint8(bound(rotations, 1, 6));
        bytes32 nodeId = "node";
        registerAs(registry, OWNER, nodeId, boundKey(seed));
        bytes[] memory keys = new bytes[](rotations);
        bytes[] memory proofs = new bytes[](rotations);
        for (uint256 i; i < rotations; ++i) {
            // forge-lint: disable-next-line(unsafe-typecast)
            uint32 version = uint32(i + 2); // at most 7
            uint256 key = boundKey(uint256(keccak256(abi.encode(seed, i))));
            (keys[i], proofs[i]) = proof(registry, key, nodeId, OWNER, version);
            vm.prank(OWNER);
            registry.rotateKey(nodeId, keys[i], proofs[i]);
            assertEq(registry.getNode(nodeId).keyVersion, version, "version");
            assertEq(registry.getNode(nodeId).publicKey, keys[i], "key");
        }
        for (uint256 i; i + 1 < rotations; ++i) {
            vm.prank(OWNER);
            (bool ok,) =
                address(registry).call(abi.encodeCall(IKeyRegistry.rotateKey, (nodeId, keys[i], proofs[i])));
            assertTrue(!ok, "old rotation proof replayed");
        }
    }

    // Model for the operation-order test (storage keeps the stack small).
    bytes32 internal constant NODE_1 = "1111";
    bytes32 internal constant GROUP_1 = "hsu0001";
    bytes32[4] internal nodes = [NODE_1, "1112", "1113", "1114"];
    bytes32[2] internal groups = [GROUP_1, "hsu0002"];
    uint32[4] internal versions;
    bool[4][2] internal member;
    uint64[2] internal epoch;

    /// Random add/remove/rotate/leave orders on 4 nodes and 2 groups, checked against a model after each step:
    /// membership, counts, and an epoch that grows by exactly one per membership change (never on rotation).
    /// forge-config: default.fuzz.runs = 128
    function testFuzz_OperationOrder_MembershipAndEpochs(bytes32 script) public {
        for (uint256 n; n < 4; ++n) {
            registerAs(registry, OWNER, nodes[n], testNodeKey(vm.toString(nodes[n])));
            versions[n] = 1;
        }
        for (uint256 g; g < 2; ++g) {
            vm.prank(ADMIN);
            registry.createGroup(groups[g], "");
        }
        for (uint256 step; step < 32; ++step) {
            _applyStep(uint8(script[step]), keccak256(abi.encode(script, step)));
            _checkModel();
        }
    }

    function _applyStep(uint8 op, bytes32 keySeed) internal {
        uint256 n = op & 3;
        uint256 g = (op >> 2) & 1;
        uint256 kind = (op >> 3) % 4;
        if (kind == 0 && !member[g][n]) {
            vm.prank(ADMIN);
            registry.addMember(groups[g], nodes[n]);
            member[g][n] = true;
            epoch[g]++;
        } else if (kind == 1 && member[g][n]) {
            vm.prank(ADMIN);
            registry.removeMember(groups[g], nodes[n]);
            member[g][n] = false;
            epoch[g]++;
        } else if (kind == 2 && member[g][n]) {
            vm.prank(OWNER);
            registry.leaveGroup(groups[g], nodes[n]);
            member[g][n] = false;
            epoch[g]++;
        } else if (kind == 3) {
            // Rotation changes the node record only: no epoch moves.
            versions[n]++;
            (bytes memory publicKey, bytes memory signature) =
                proof(registry, boundKey(uint256(keySeed)), nodes[n], OWNER, versions[n]);
            vm.prank(OWNER);
            registry.rotateKey(nodes[n], publicKey, signature);
        }
    }

    function _checkModel() internal view {
        for (uint256 h; h < 2; ++h) {
            IKeyRegistry.Group memory group = registry.getGroup(groups[h]);
            assertEq(group.epoch, epoch[h], "epoch");
            uint256 count;
            for (uint256 m; m < 4; ++m) {
                assertTrue(registry.isMember(groups[h], nodes[m]) == member[h][m], "membership");
                if (member[h][m]) ++count;
            }
            assertEq(group.memberCount, count, "member count");
        }
        for (uint256 m; m < 4; ++m) {
            assertEq(registry.getNode(nodes[m]).keyVersion, versions[m], "key version");
        }
    }

    /// Paging with any offset/limit returns exactly the members in positions [offset, offset+limit).
    /// forge-config: default.fuzz.runs = 128
    function testFuzz_groupMembers_PagesCoverEveryMemberOnce(uint8 count, uint8 removeSeed, uint8 pageSize)
        public
    {
        count = uint8(bound(count, 1, 12));
        pageSize = uint8(bound(pageSize, 1, 13));
        vm.prank(ADMIN);
        registry.createGroup("g", "");
        for (uint256 i; i < count; ++i) {
            registerAs(registry, OWNER, bytes32(i + 1), i + 1);
            vm.prank(ADMIN);
            registry.addMember("g", bytes32(i + 1));
        }
        bytes32 removed = bytes32(bound(removeSeed, 1, count));
        vm.prank(ADMIN);
        registry.removeMember("g", removed);

        bool[13] memory seen; // member IDs 1..12
        uint256 total;
        for (uint256 offset; offset < count + 1; offset += pageSize) {
            bytes32[] memory page = registry.groupMembers("g", offset, pageSize);
            for (uint256 i; i < page.length; ++i) {
                uint256 id = uint256(page[i]);
                assertTrue(id >= 1 && id <= count && id != uint256(removed), "unexpected member");
                assertTrue(!seen[id], "member listed twice");
                seen[id] = true;
                ++total;
            }
        }
        assertEq(total, count - 1, "every member once");
    }

    function _isOnCurve(uint256 x) internal view returns (bool) {
        uint256 rhs = addmod(mulmod(mulmod(x, x, SECP256K1_P), x, SECP256K1_P), 7, SECP256K1_P);
        if (rhs == 0) return true;
        return _modexp(rhs, (SECP256K1_P - 1) / 2, SECP256K1_P) == 1;
    }

    function _modexp(uint256 base, uint256 exponent, uint256 modulus) internal view returns (uint256) {
        (bool ok, bytes memory out) = address(0x05)
            .staticcall(abi.encodePacked(uint256(32), uint256(32), uint256(32), base, exponent, modulus));
        assertTrue(ok, "modexp");
        return abi.decode(out, (uint256));
    }
}
