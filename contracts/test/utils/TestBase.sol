// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import {Vm, vm} from "./Vm.sol";
import {IKeyRegistry} from "../../src/IKeyRegistry.sol";
import {KeyRegistry} from "../../src/KeyRegistry.sol";

/// Assertions, bound() and node-key helpers shared by the test suites. A failed assertion reverts, which
/// forge reports as a failed test.
abstract contract TestBase {
    uint256 internal constant SECP256K1_N =
        0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141;
    uint256 internal constant SECP256K1_P =
        0xfffffffffffffffffffffffffffffffffffffffffffffffffffffffefffffc2f;

    // ------------------------------------------------------------------ assertions

    function assertTrue(bool condition, string memory what) internal pure {
        if (!condition) revert(string.concat("assertion failed: ", what));
    }

    function assertEq(uint256 left, uint256 right, string memory what) internal pure {
        if (left != right) {
            revert(string.concat(what, ": ", vm.toString(left), " != ", vm.toString(right)));
        }
    }

    function assertEq(bytes32 left, bytes32 right, string memory what) internal pure {
        if (left != right) {
            revert(string.concat(what, ": ", vm.toString(left), " != ", vm.toString(right)));
        }
    }

    function assertEq(address left, address right, string memory what) internal pure {
        if (left != right) {
            revert(string.concat(what, ": ", vm.toString(left), " != ", vm.toString(right)));
        }
    }

    function assertEq(bytes memory left, bytes memory right, string memory what) internal pure {
        if (keccak256(left) != keccak256(right)) {
            revert(string.concat(what, ": ", vm.toString(left), " != ", vm.toString(right)));
        }
    }

    function assertEq(string memory left, string memory right, string memory what) internal pure {
        if (keccak256(bytes(left)) != keccak256(bytes(right))) {
            revert(string.concat(what, ": '", left, "' != '", right, "'"));
        }
    }

    function assertLe(uint256 left, uint256 right, string memory what) internal pure {
        if (left > right) revert(string.concat(what, ": ", vm.toString(left), " > ", vm.toString(right)));
    }

    // ------------------------------------------------------------------ fuzz helpers

    /// Maps `x` into [min, max] without discarding runs.
    function bound(uint256 x, uint256 min, uint256 max) internal pure returns (uint256) {
        if (min > max) revert("bound: min > max");
        uint256 size = max - min;
        if (size == type(uint256).max) return x;
        return min + (x % (size + 1));
    }

    /// A valid secp256k1 private key derived from any seed.
    function boundKey(uint256 seed) internal pure returns (uint256) {
        return bound(seed, 1, SECP256K1_N - 1);
    }

    /// Intrinsic gas of a call transaction with this calldata (no access list): 21,000 plus 4 per zero byte
    /// and 16 per non-zero byte. (The EIP-7623 calldata floor only applies to calls that execute far less
    /// than these registry calls do.)
    function intrinsicGas(bytes memory data) internal pure returns (uint256) {
        uint256 zeros;
        for (uint256 i; i < data.length; ++i) {
            if (data[i] == 0) ++zeros;
        }
        uint256 tokens = zeros + 4 * (data.length - zeros);
        return 21_000 + 4 * tokens;
    }

    // ------------------------------------------------------------------ node keys

    /// The test-only private key of a human node ID, as the fixtures derive it.
    function testNodeKey(string memory id) internal pure returns (uint256) {
        return uint256(keccak256(bytes(string.concat("anchormq test node ", id))));
    }

    function compressedKey(uint256 privateKey) internal returns (bytes memory) {
        Vm.Wallet memory wallet = vm.createWallet(privateKey);
        return abi.encodePacked(uint8(2 + (wallet.publicKeyY & 1)), bytes32(wallet.publicKeyX));
    }

    function signDigest(uint256 privateKey, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(privateKey, digest);
        return abi.encodePacked(r, s, v);
    }

    /// Proof of possession of `privateKey`'s public key for (nodeId, owner, keyVersion) on `registry`.
    function proof(KeyRegistry registry, uint256 privateKey, bytes32 nodeId, address owner, uint32 keyVersion)
        internal
        returns (bytes memory publicKey, bytes memory signature)
    {
        publicKey = compressedKey(privateKey);
        signature = signDigest(privateKey, registry.nodeKeyDigest(nodeId, owner, publicKey, keyVersion));
    }

    function registerAs(KeyRegistry registry, address owner, bytes32 nodeId, uint256 privateKey) internal {
        (bytes memory publicKey, bytes memory signature) = proof(registry, privateKey, nodeId, owner, 1);
        vm.prank(owner);
        registry.registerNode(nodeId, publicKey, signature);
    }

    function _recover(bytes32 digest, bytes memory signature) internal pure returns (address) {
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly ("memory-safe") {
            r := mload(add(signature, 0x20))
            s := mload(add(signature, 0x40))
            v := byte(0, mload(add(signature, 0x60)))
        }
        return ecrecover(digest, v, r, s);
    }
}
