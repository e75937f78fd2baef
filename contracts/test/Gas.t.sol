// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {TestBase} from "./utils/TestBase.sol";
import {console, vm} from "./utils/Vm.sol";
import {KeyRegistry} from "../src/KeyRegistry.sol";

/// Execution gas of each state-changing function on cold storage (the state is built in setUp, which forge
/// runs as a separate transaction, so the measured call starts with cold slots like a real transaction).
/// Execution gas excludes the 21,000 intrinsic gas and calldata cost. `forge test --mc '^GasTest$' -vv`
/// prints the numbers. Under `--gas-report` (or `--isolate`) forge runs every call as its own transaction and
/// reports transaction gas instead; the tests detect that and subtract the intrinsic part themselves.
contract GasTest is TestBase {
    KeyRegistry internal registry;
    bool internal isolated;

    address internal constant OWNER = address(0xA11CE);
    address internal constant ADMIN = address(0xAD);
    bytes32 internal constant MEMBER = "1111";
    bytes32 internal constant OUTSIDER = "1112";
    bytes32 internal constant GROUP = "hsu0001";

    uint256 internal constant REGISTER_NODE_TARGET = 100_000;
    uint256 internal constant ADD_MEMBER_TARGET = 60_000;

    function setUp() public {
        registry = new KeyRegistry();
        registerAs(registry, OWNER, MEMBER, testNodeKey("1111"));
        registerAs(registry, OWNER, OUTSIDER, testNodeKey("1112"));
        vm.prank(ADMIN);
        registry.createGroup(GROUP, "hsu/0001/#");
        vm.prank(ADMIN);
        registry.addMember(GROUP, MEMBER);
    }

    /// Sends `data` as `caller` and returns the execution gas of that call.
    function _measure(string memory name, address caller, bytes memory data) internal returns (uint256 gas) {
        // An empty call executes a few dozen gas; it reports over 21,000 only when it ran as a transaction.
        new GasProbe().ping();
        isolated = vm.lastCallGas().gasTotalUsed >= 21_000;
        vm.prank(caller);
        (bool ok,) = address(registry).call(data);
        assertTrue(ok, string.concat(name, " reverted"));
        gas = vm.lastCallGas().gasTotalUsed;
        if (isolated) {
            console.log(string.concat(name, ": transaction gas, refunds applied"), gas);
            gas -= intrinsicGas(data);
            console.log(string.concat(name, ": transaction gas minus intrinsic"), gas);
        } else {
            console.log(string.concat(name, ": execution gas, refunds not applied"), gas);
        }
    }

    function test_Gas_registerNode() public {
        (bytes memory publicKey, bytes memory signature) =
            proof(registry, testNodeKey("1113"), "1113", OWNER, 1);
        uint256 gas = _measure(
            "registerNode", OWNER, abi.encodeCall(KeyRegistry.registerNode, ("1113", publicKey, signature))
        );
        assertLe(gas, REGISTER_NODE_TARGET, "registerNode over target");
    }

    function test_Gas_addMember() public {
        uint256 gas = _measure("addMember", ADMIN, abi.encodeCall(KeyRegistry.addMember, (GROUP, OUTSIDER)));
        assertLe(gas, ADD_MEMBER_TARGET, "addMember over target");
    }

    function test_Gas_removeMember() public {
        _measure("removeMember", ADMIN, abi.encodeCall(KeyRegistry.removeMember, (GROUP, MEMBER)));
    }

    function test_Gas_leaveGroup() public {
        _measure("leaveGroup", OWNER, abi.encodeCall(KeyRegistry.leaveGroup, (GROUP, MEMBER)));
    }

    function test_Gas_rotateKey_OneGroup() public {
        (bytes memory publicKey, bytes memory signature) =
            proof(registry, testNodeKey("1111 v2"), MEMBER, OWNER, 2);
        _measure(
            "rotateKey, node in 1 group",
            OWNER,
            abi.encodeCall(KeyRegistry.rotateKey, (MEMBER, publicKey, signature, one(GROUP)))
        );
    }

    function test_Gas_rotateKey_NoGroup() public {
        (bytes memory publicKey, bytes memory signature) =
            proof(registry, testNodeKey("1112 v2"), OUTSIDER, OWNER, 2);
        _measure(
            "rotateKey, node in 0 groups",
            OWNER,
            abi.encodeCall(KeyRegistry.rotateKey, (OUTSIDER, publicKey, signature, none()))
        );
    }

    function test_Gas_revokeNode_OneGroup() public {
        _measure(
            "revokeNode, node in 1 group", OWNER, abi.encodeCall(KeyRegistry.revokeNode, (MEMBER, one(GROUP)))
        );
    }

    function test_Gas_revokeNode_NoGroup() public {
        _measure(
            "revokeNode, node in 0 groups", OWNER, abi.encodeCall(KeyRegistry.revokeNode, (OUTSIDER, none()))
        );
    }

    function test_Gas_transferNodeOwnership() public {
        _measure(
            "transferNodeOwnership", OWNER, abi.encodeCall(KeyRegistry.transferNodeOwnership, (MEMBER, ADMIN))
        );
    }

    function test_Gas_createGroup() public {
        _measure(
            "createGroup, 10-byte filter",
            ADMIN,
            abi.encodeCall(KeyRegistry.createGroup, ("hsu0002", "hsu/0002/#"))
        );
    }

    function test_Gas_transferGroupAdmin() public {
        _measure("transferGroupAdmin", ADMIN, abi.encodeCall(KeyRegistry.transferGroupAdmin, (GROUP, OWNER)));
    }
}

contract GasProbe {
    function ping() external {}
}

/// The hard cost rule: adding or removing a member costs the same in a group of 1 as in one of 10,000.
/// setUp registers 10,002 real nodes (real signatures) and fills the big group through addMember, with gas
/// metering paused; it takes a few seconds.
contract GroupSizeGasTest is TestBase {
    KeyRegistry internal registry;

    address internal constant OWNER = address(0xA11CE);
    address internal constant ADMIN = address(0xAD);
    bytes32 internal constant SMALL = "small";
    bytes32 internal constant BIG = "big";
    uint256 internal constant BIG_SIZE = 10_000;

    // Node IDs: 1..BIG_SIZE fill BIG; the others are used by the measured calls.
    bytes32 internal constant SMALL_MEMBER = bytes32(uint256(BIG_SIZE + 1));
    bytes32 internal constant SMALL_SECOND_MEMBER = bytes32(uint256(BIG_SIZE + 2));
    bytes32 internal constant JOINS_SMALL = bytes32(uint256(BIG_SIZE + 3));
    bytes32 internal constant JOINS_BIG = bytes32(uint256(BIG_SIZE + 4));

    function setUp() public {
        vm.pauseGasMetering();
        registry = new KeyRegistry();
        for (uint256 i = 1; i <= BIG_SIZE + 4; ++i) {
            registerAs(registry, OWNER, bytes32(i), i);
        }
        vm.startPrank(ADMIN);
        registry.createGroup(SMALL, "");
        registry.createGroup(BIG, "");
        registry.addMember(SMALL, SMALL_MEMBER);
        for (uint256 i = 1; i <= BIG_SIZE; ++i) {
            registry.addMember(BIG, bytes32(i));
        }
        vm.stopPrank();
        vm.resumeGasMetering();
    }

    function _withinOnePercent(uint256 small, uint256 big, string memory what) internal pure {
        uint256 difference = small > big ? small - big : big - small;
        assertLe(difference * 100, small, what);
    }

    function test_Gas_AddMemberIsIndependentOfGroupSize() public {
        vm.prank(ADMIN);
        registry.addMember(SMALL, JOINS_SMALL);
        uint256 second = vm.lastCallGas().gasTotalUsed;
        vm.prank(ADMIN);
        registry.addMember(BIG, JOINS_BIG);
        uint256 tenThousandFirst = vm.lastCallGas().gasTotalUsed;

        console.log("addMember, 2nd member", second);
        console.log("addMember, 10,001st member", tenThousandFirst);
        assertEq(registry.getGroup(BIG).memberCount, BIG_SIZE + 1, "big group size");
        _withinOnePercent(second, tenThousandFirst, "addMember cost depends on group size");
    }

    function test_Gas_RemoveMemberIsIndependentOfGroupSize() public {
        // Both removals take the first member, so both move the last member into the hole.
        vm.prank(ADMIN);
        registry.addMember(SMALL, SMALL_SECOND_MEMBER);
        // Touch BIG's slots the same way, so both removals below see the same warm/cold pattern.
        vm.prank(ADMIN);
        registry.addMember(BIG, JOINS_BIG);

        vm.prank(ADMIN);
        registry.removeMember(SMALL, SMALL_MEMBER);
        uint256 fromSmall = vm.lastCallGas().gasTotalUsed;
        vm.prank(ADMIN);
        registry.removeMember(BIG, bytes32(uint256(1)));
        uint256 fromBig = vm.lastCallGas().gasTotalUsed;

        console.log("removeMember, group of 2", fromSmall);
        console.log("removeMember, group of 10,001", fromBig);
        assertEq(registry.groupMembers(BIG, 0, 1)[0], JOINS_BIG, "last member moved to the front");
        _withinOnePercent(fromSmall, fromBig, "removeMember cost depends on group size");
    }
}

/// rotateKey and revokeNode loop over the node's own groups (never over members); MAX_GROUPS_PER_NODE bounds
/// that loop, so the worst case stays far below a block's gas limit.
contract MaxGroupsGasTest is TestBase {
    KeyRegistry internal registry;
    bytes32[] internal groups;

    address internal constant OWNER = address(0xA11CE);
    address internal constant ADMIN = address(0xAD);
    bytes32 internal constant NODE = "1111";
    uint256 internal constant WORST_CASE_BUDGET = 1_500_000;

    function setUp() public {
        registry = new KeyRegistry();
        registerAs(registry, OWNER, NODE, testNodeKey("1111"));
        vm.startPrank(ADMIN);
        for (uint256 i = 1; i <= registry.MAX_GROUPS_PER_NODE(); ++i) {
            groups.push(bytes32(i));
            registry.createGroup(bytes32(i), "");
            registry.addMember(bytes32(i), NODE);
        }
        vm.stopPrank();
    }

    function test_Gas_rotateKey_MaxGroups() public {
        (bytes memory publicKey, bytes memory signature) =
            proof(registry, testNodeKey("1111 v2"), NODE, OWNER, 2);
        vm.prank(OWNER);
        registry.rotateKey(NODE, publicKey, signature, groups);
        uint256 gas = vm.lastCallGas().gasTotalUsed;
        console.log("rotateKey, node in 64 groups", gas);
        assertLe(gas, WORST_CASE_BUDGET, "rotateKey worst case");
    }

    function test_Gas_revokeNode_MaxGroups() public {
        vm.prank(OWNER);
        registry.revokeNode(NODE, groups);
        uint256 gas = vm.lastCallGas().gasTotalUsed;
        console.log("revokeNode, node in 64 groups", gas);
        assertLe(gas, WORST_CASE_BUDGET, "revokeNode worst case");
    }
}
