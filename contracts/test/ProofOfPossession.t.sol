// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {TestBase} from "./utils/TestBase.sol";
import {vm} from "./utils/Vm.sol";
import {IKeyRegistry} from "../src/IKeyRegistry.sol";
import {KeyRegistry} from "../src/KeyRegistry.sol";

/// Attacks on the node-key proof: each must be rejected with the error that names it.
contract ProofOfPossessionTest is TestBase {
    KeyRegistry internal registry;

    address internal constant OWNER = address(0xA11CE);
    address internal constant ATTACKER = address(0xBAD);
    bytes32 internal constant NODE = "1111";

    uint256 internal nodeKey;
    address internal nodeKeyAddress;

    function setUp() public {
        registry = new KeyRegistry(address(0));
        nodeKey = testNodeKey("1111");
        nodeKeyAddress = vm.addr(nodeKey);
    }

    function _expectInvalidSignature(bytes32 digest, bytes memory signature) internal {
        vm.expectRevert(
            abi.encodeWithSelector(
                IKeyRegistry.InvalidSignature.selector, nodeKeyAddress, _recover(digest, signature)
            )
        );
    }

    function test_RevertWhen_SignedByAnotherKey() public {
        // The attacker claims the node's public key but signs with their own key.
        bytes memory publicKey = compressedKey(nodeKey);
        bytes32 digest = registry.nodeKeyDigest(NODE, ATTACKER, publicKey, 1);
        bytes memory signature = signDigest(testNodeKey("attacker"), digest);
        vm.expectRevert(
            abi.encodeWithSelector(
                IKeyRegistry.InvalidSignature.selector, nodeKeyAddress, vm.addr(testNodeKey("attacker"))
            )
        );
        vm.prank(ATTACKER);
        registry.registerNode(NODE, publicKey, signature);
    }

    function test_RevertWhen_OwnerFrontRunsRegistration() public {
        // The attacker copies the honest owner's pending transaction and sends it first.
        (bytes memory publicKey, bytes memory signature) = proof(registry, nodeKey, NODE, OWNER, 1);
        _expectInvalidSignature(registry.nodeKeyDigest(NODE, ATTACKER, publicKey, 1), signature);
        vm.prank(ATTACKER);
        registry.registerNode(NODE, publicKey, signature);

        vm.prank(OWNER);
        registry.registerNode(NODE, publicKey, signature);
        assertEq(registry.getNode(NODE).owner, OWNER, "honest owner still registers");
    }

    function test_RevertWhen_ProofIsForAnotherNodeId() public {
        (bytes memory publicKey, bytes memory signature) = proof(registry, nodeKey, NODE, OWNER, 1);
        _expectInvalidSignature(registry.nodeKeyDigest("1112", OWNER, publicKey, 1), signature);
        vm.prank(OWNER);
        registry.registerNode("1112", publicKey, signature);
    }

    function test_RevertWhen_ProofIsFromAnotherChain() public {
        (bytes memory publicKey, bytes memory signature) = proof(registry, nodeKey, NODE, OWNER, 1);
        vm.chainId(block.chainid + 1);
        _expectInvalidSignature(registry.nodeKeyDigest(NODE, OWNER, publicKey, 1), signature);
        vm.prank(OWNER);
        registry.registerNode(NODE, publicKey, signature);
    }

    function test_RevertWhen_ProofIsFromAnotherRegistry() public {
        KeyRegistry other = new KeyRegistry(address(0));
        (bytes memory publicKey, bytes memory signature) = proof(other, nodeKey, NODE, OWNER, 1);
        vm.prank(OWNER);
        other.registerNode(NODE, publicKey, signature);

        _expectInvalidSignature(registry.nodeKeyDigest(NODE, OWNER, publicKey, 1), signature);
        vm.prank(OWNER);
        registry.registerNode(NODE, publicKey, signature);
    }

    function test_RevertWhen_ProofIsForAnotherKeyVersion() public {
        (bytes memory publicKey, bytes memory signature) = proof(registry, nodeKey, NODE, OWNER, 2);
        _expectInvalidSignature(registry.nodeKeyDigest(NODE, OWNER, publicKey, 1), signature);
        vm.prank(OWNER);
        registry.registerNode(NODE, publicKey, signature);
    }

    function test_RevertWhen_OldRotationSignatureIsReplayed() public {
        registerAs(registry, OWNER, NODE, nodeKey);
        uint256 secondKey = testNodeKey("1111 v2");
        (bytes memory secondPublicKey, bytes memory secondProof) = proof(registry, secondKey, NODE, OWNER, 2);
        vm.prank(OWNER);
        registry.rotateKey(NODE, secondPublicKey, secondProof);
        (bytes memory thirdPublicKey, bytes memory thirdProof) =
            proof(registry, testNodeKey("1111 v3"), NODE, OWNER, 3);
        vm.prank(OWNER);
        registry.rotateKey(NODE, thirdPublicKey, thirdProof);

        // Going back to key 2 with its old (version 2) proof must fail: version 4 is expected now.
        vm.expectRevert(
            abi.encodeWithSelector(
                IKeyRegistry.InvalidSignature.selector,
                vm.addr(secondKey),
                _recover(registry.nodeKeyDigest(NODE, OWNER, secondPublicKey, 4), secondProof)
            )
        );
        vm.prank(OWNER);
        registry.rotateKey(NODE, secondPublicKey, secondProof);
    }

    function test_RevertWhen_SignatureIsHighS() public {
        (bytes memory publicKey, bytes memory signature) = proof(registry, nodeKey, NODE, OWNER, 1);
        (bytes32 r, bytes32 s, uint8 v) = _split(signature);
        // (r, n - s, v ^ 1) is the same signature's malleable twin: ecrecover accepts it.
        bytes32 highS = bytes32(SECP256K1_N - uint256(s));
        uint8 flippedV = v == 27 ? 28 : 27;
        bytes32 digest = registry.nodeKeyDigest(NODE, OWNER, publicKey, 1);
        assertEq(ecrecover(digest, flippedV, r, highS), nodeKeyAddress, "twin recovers to the same key");

        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.SignatureMalleable.selector, highS));
        vm.prank(OWNER);
        registry.registerNode(NODE, publicKey, abi.encodePacked(r, highS, flippedV));
    }

    function test_RevertWhen_KeyIsClaimedWithoutSignature() public {
        bytes memory publicKey = compressedKey(nodeKey);
        bytes memory empty = new bytes(65);
        empty[64] = bytes1(uint8(27));
        vm.expectRevert(
            abi.encodeWithSelector(IKeyRegistry.InvalidSignature.selector, nodeKeyAddress, address(0))
        );
        vm.prank(ATTACKER);
        registry.registerNode(NODE, publicKey, empty);
    }

    function test_RevertWhen_RotationProofIsSignedByOldKey() public {
        // Rotation must prove the NEW key: a proof by the current key for a key it does not hold fails.
        registerAs(registry, OWNER, NODE, nodeKey);
        uint256 newKey = testNodeKey("1111 v2");
        bytes memory newPublicKey = compressedKey(newKey);
        bytes32 digest = registry.nodeKeyDigest(NODE, OWNER, newPublicKey, 2);
        bytes memory signature = signDigest(nodeKey, digest);
        vm.expectRevert(
            abi.encodeWithSelector(IKeyRegistry.InvalidSignature.selector, vm.addr(newKey), nodeKeyAddress)
        );
        vm.prank(OWNER);
        registry.rotateKey(NODE, newPublicKey, signature);
    }

    function _split(bytes memory signature) internal pure returns (bytes32 r, bytes32 s, uint8 v) {
        assembly ("memory-safe") {
            r := mload(add(signature, 0x20))
            s := mload(add(signature, 0x40))
            v := byte(0, mload(add(signature, 0x60)))
        }
    }
}
