// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {TestBase} from "./utils/TestBase.sol";
import {vm} from "./utils/Vm.sol";
import {IKeyRegistry} from "../src/IKeyRegistry.sol";
import {KeyRegistry} from "../src/KeyRegistry.sol";

/// IDs are first come, first served. What a squatter can and cannot do, and the operator's defences: a closed
/// registry, or registering IDs before announcing them, and checking the key off chain (`group add
/// --expect-key`) before adding a node it did not register itself.
contract SquattingTest is TestBase {
    KeyRegistry internal registry;

    address internal constant OPERATOR = address(0xA11CE);
    address internal constant SQUATTER = address(0xBAD);
    bytes32 internal constant NODE = "1111";
    bytes32 internal constant GROUP = "hsu0001";

    uint256 internal deviceKey;

    function setUp() public {
        registry = new KeyRegistry(address(0));
        deviceKey = testNodeKey("1111");
    }

    function test_Squatting_FirstRegistrantWinsTheNodeId() public {
        // A squatter who learned the ID registers it first, with a key of its own.
        registerAs(registry, SQUATTER, NODE, testNodeKey("squatter"));
        (bytes memory publicKey, bytes memory signature) = proof(registry, deviceKey, NODE, OPERATOR, 1);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NodeAlreadyRegistered.selector, NODE));
        vm.prank(OPERATOR);
        registry.registerNode(NODE, publicKey, signature);

        // The squatter holds the ID, not the device: the key on record is not the device's, which is what an
        // admin checking the expected key before `addMember` sees.
        IKeyRegistry.Node memory node = registry.getNode(NODE);
        assertEq(node.owner, SQUATTER, "squatter owns the ID");
        assertTrue(keccak256(node.publicKey) != keccak256(compressedKey(deviceKey)), "not the device's key");
    }

    function test_RevertWhen_Squatting_FrontRunnerReplaysTheOwnersProof() public {
        // The squatter copies the operator's pending registration: the proof binds owner = msg.sender.
        (bytes memory publicKey, bytes memory signature) = proof(registry, deviceKey, NODE, OPERATOR, 1);
        bytes32 squatterDigest = registry.nodeKeyDigest(NODE, SQUATTER, publicKey, 1);
        vm.expectRevert(
            abi.encodeWithSelector(
                IKeyRegistry.InvalidSignature.selector,
                vm.addr(deviceKey),
                _recover(squatterDigest, signature)
            )
        );
        vm.prank(SQUATTER);
        registry.registerNode(NODE, publicKey, signature);

        vm.prank(OPERATOR);
        registry.registerNode(NODE, publicKey, signature);
        assertEq(registry.getNode(NODE).owner, OPERATOR, "the front-run failed; the operator registered");
    }

    function test_RevertWhen_Squatting_ClaimingTheDeviceKeyWithoutIt() public {
        // Without the device's private key, the squatter cannot put the device's key on record.
        bytes memory publicKey = compressedKey(deviceKey);
        bytes memory signature =
            signDigest(testNodeKey("squatter"), registry.nodeKeyDigest(NODE, SQUATTER, publicKey, 1));
        vm.expectRevert(
            abi.encodeWithSelector(
                IKeyRegistry.InvalidSignature.selector, vm.addr(deviceKey), vm.addr(testNodeKey("squatter"))
            )
        );
        vm.prank(SQUATTER);
        registry.registerNode(NODE, publicKey, signature);
    }

    function test_Squatting_FirstGroupCreatorWins() public {
        vm.prank(SQUATTER);
        registry.createGroup(GROUP, "#");
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.GroupAlreadyExists.selector, GROUP));
        vm.prank(OPERATOR);
        registry.createGroup(GROUP, "hsu/0001/#");
    }

    function test_Squatting_RegisteringBeforeAnnouncingLeavesNothingToSquat() public {
        registerAs(registry, OPERATOR, NODE, deviceKey);
        vm.prank(OPERATOR);
        registry.createGroup(GROUP, "hsu/0001/#");
        // Announced now; too late for the squatter.
        (bytes memory publicKey, bytes memory signature) =
            proof(registry, testNodeKey("squatter"), NODE, SQUATTER, 1);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NodeAlreadyRegistered.selector, NODE));
        vm.prank(SQUATTER);
        registry.registerNode(NODE, publicKey, signature);
    }

    function test_RevertWhen_Squatting_InAClosedRegistry() public {
        KeyRegistry closed = new KeyRegistry(OPERATOR);
        vm.prank(OPERATOR);
        closed.setRegistrar(OPERATOR, true);
        (bytes memory publicKey, bytes memory signature) =
            proof(closed, testNodeKey("squatter"), NODE, SQUATTER, 1);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotRegistrar.selector, SQUATTER));
        vm.prank(SQUATTER);
        closed.registerNode(NODE, publicKey, signature);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.NotRegistrar.selector, SQUATTER));
        vm.prank(SQUATTER);
        closed.createGroup(GROUP, "");

        // The operator registers whenever it likes.
        registerAs(closed, OPERATOR, NODE, deviceKey);
        assertEq(closed.getNode(NODE).owner, OPERATOR, "registered");
    }
}
