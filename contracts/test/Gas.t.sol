// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {TestBase} from "./utils/TestBase.sol";
import {console, vm} from "./utils/Vm.sol";
import {KeyRegistry} from "../src/KeyRegistry.sol";

/// Execution gas of one call on cold storage (the state is built in setUp, which forge runs as a separate
/// transaction, so the measured call starts with cold slots like a real transaction). Execution gas excludes
/// the 21,000 intrinsic gas and calldata cost. Under `--gas-report` (or `--isolate`) forge runs every call as
/// its own transaction and reports transaction gas instead; `_measure` detects that and subtracts the
/// intrinsic part itself.
abstract contract GasMeasurement is TestBase {
    KeyRegistry internal registry;
    bool internal isolated;

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
}

/// Execution gas of each state-changing function (see GasMeasurement). `forge test --mc '^GasTest$' -vv`
/// prints the numbers; `forge test --mc '^RolesGasTest$' -vv` those of the member-role batches.
contract GasTest is GasMeasurement {
    address internal constant OWNER = address(0xA11CE);
    address internal constant ADMIN = address(0xAD);
    /// OWNER's nodes: MEMBER is in GROUP, OUTSIDER in no group, OFFERED is offered to ADMIN.
    bytes32 internal constant MEMBER = "1111";
    bytes32 internal constant OUTSIDER = "1112";
    bytes32 internal constant OFFERED = "1113";
    /// ADMIN's own node (a fleet operator that owns its devices and administers their groups).
    bytes32 internal constant FLEET_NODE = "2111";
    bytes32 internal constant GROUP = "hsu0001";
    /// ADMIN's group offered to OWNER.
    bytes32 internal constant OFFERED_GROUP = "hsu0009";

    uint256 internal constant REGISTER_NODE_TARGET = 100_000;
    uint256 internal constant ADD_MEMBER_TARGET = 60_000;

    function setUp() public {
        registry = new KeyRegistry(address(0));
        registerAs(registry, OWNER, MEMBER, testNodeKey("1111"));
        registerAs(registry, OWNER, OUTSIDER, testNodeKey("1112"));
        registerAs(registry, OWNER, OFFERED, testNodeKey("1113"));
        registerAs(registry, ADMIN, FLEET_NODE, testNodeKey("2111"));
        vm.startPrank(OWNER);
        registry.setAdminApproval(ADMIN, true);
        registry.transferNodeOwnership(OFFERED, ADMIN);
        vm.stopPrank();
        vm.startPrank(ADMIN);
        registry.createGroup(GROUP, "hsu/0001/#");
        registry.addMember(GROUP, MEMBER);
        registry.createGroup(OFFERED_GROUP, "");
        registry.transferGroupAdmin(OFFERED_GROUP, OWNER);
        vm.stopPrank();
    }

    function test_Gas_registerNode() public {
        (bytes memory publicKey, bytes memory signature) =
            proof(registry, testNodeKey("1114"), "1114", OWNER, 1);
        uint256 gas = _measure(
            "registerNode", OWNER, abi.encodeCall(KeyRegistry.registerNode, ("1114", publicKey, signature))
        );
        assertLe(gas, REGISTER_NODE_TARGET, "registerNode over target");
    }

    function test_Gas_addMember_AdminOwnsNode() public {
        uint256 gas = _measure(
            "addMember, admin owns the node",
            ADMIN,
            abi.encodeCall(KeyRegistry.addMember, (GROUP, FLEET_NODE))
        );
        assertLe(gas, ADD_MEMBER_TARGET, "addMember over target");
    }

    function test_Gas_addMember_ApprovedAdmin() public {
        uint256 gas = _measure(
            "addMember, owner approved the admin",
            ADMIN,
            abi.encodeCall(KeyRegistry.addMember, (GROUP, OUTSIDER))
        );
        assertLe(gas, ADD_MEMBER_TARGET, "addMember over target");
    }

    /// Three nodes in one transaction: compare with three `registerNode` transactions.
    function test_Gas_registerNodes_Three() public {
        bytes32[] memory ids = new bytes32[](3);
        bytes[] memory keys = new bytes[](3);
        bytes[] memory proofs = new bytes[](3);
        (ids[0], ids[1], ids[2]) = (bytes32("3001"), bytes32("3002"), bytes32("3003"));
        for (uint256 i; i < 3; ++i) {
            (keys[i], proofs[i]) = proof(registry, 0x3000 + i, ids[i], OWNER, 1);
        }
        uint256 gas = _measure(
            "registerNodes, 3 nodes", OWNER, abi.encodeCall(KeyRegistry.registerNodes, (ids, keys, proofs))
        );
        assertLe(gas, 3 * REGISTER_NODE_TARGET, "registerNodes over target");
    }

    /// Three nodes, one epoch bump: compare with three `addMember` calls (three transactions, three epochs).
    function test_Gas_addMembers_Three() public {
        bytes32[] memory nodes = new bytes32[](3);
        (nodes[0], nodes[1], nodes[2]) = (FLEET_NODE, OUTSIDER, OFFERED);
        uint256 gas =
            _measure("addMembers, 3 nodes", ADMIN, abi.encodeCall(KeyRegistry.addMembers, (GROUP, nodes)));
        assertLe(gas, 3 * ADD_MEMBER_TARGET, "addMembers over target");
    }

    function test_Gas_removeMembers_One() public {
        bytes32[] memory nodes = new bytes32[](1);
        nodes[0] = MEMBER;
        _measure("removeMembers, 1 node", ADMIN, abi.encodeCall(KeyRegistry.removeMembers, (GROUP, nodes)));
    }

    function test_Gas_removeMember() public {
        _measure("removeMember", ADMIN, abi.encodeCall(KeyRegistry.removeMember, (GROUP, MEMBER)));
    }

    function test_Gas_leaveGroup() public {
        _measure("leaveGroup", OWNER, abi.encodeCall(KeyRegistry.leaveGroup, (GROUP, MEMBER)));
    }

    function test_Gas_rotateKey() public {
        (bytes memory publicKey, bytes memory signature) =
            proof(registry, testNodeKey("1111 v2"), MEMBER, OWNER, 2);
        _measure("rotateKey", OWNER, abi.encodeCall(KeyRegistry.rotateKey, (MEMBER, publicKey, signature)));
    }

    function test_Gas_revokeNode() public {
        _measure("revokeNode", OWNER, abi.encodeCall(KeyRegistry.revokeNode, (MEMBER)));
    }

    function test_Gas_transferNodeOwnership() public {
        _measure(
            "transferNodeOwnership (offer)",
            OWNER,
            abi.encodeCall(KeyRegistry.transferNodeOwnership, (MEMBER, ADMIN))
        );
    }

    function test_Gas_acceptNodeOwnership() public {
        _measure("acceptNodeOwnership", ADMIN, abi.encodeCall(KeyRegistry.acceptNodeOwnership, (OFFERED)));
    }

    function test_Gas_setAdminApproval() public {
        _measure(
            "setAdminApproval", OWNER, abi.encodeCall(KeyRegistry.setAdminApproval, (address(0xA2), true))
        );
    }

    function test_Gas_createGroup_ShortFilter() public {
        _measure(
            "createGroup, 10-byte filter",
            ADMIN,
            abi.encodeCall(KeyRegistry.createGroup, ("hsu0002", "hsu/0002/#"))
        );
    }

    function test_Gas_createGroup_LongestFilter() public {
        // 1024 bytes of "a/+/" levels: every byte is checked and half the levels are '+' wildcards.
        bytes memory levels = "a/+/";
        bytes memory filter = new bytes(registry.MAX_TOPIC_FILTER_LENGTH());
        for (uint256 i; i < filter.length; ++i) {
            filter[i] = levels[i % 4];
        }
        _measure(
            "createGroup, 1024-byte filter",
            ADMIN,
            abi.encodeCall(KeyRegistry.createGroup, ("hsu0002", string(filter)))
        );
    }

    function test_Gas_transferGroupAdmin() public {
        _measure(
            "transferGroupAdmin (offer)",
            ADMIN,
            abi.encodeCall(KeyRegistry.transferGroupAdmin, (GROUP, OWNER))
        );
    }

    function test_Gas_acceptGroupAdmin() public {
        _measure("acceptGroupAdmin", OWNER, abi.encodeCall(KeyRegistry.acceptGroupAdmin, (OFFERED_GROUP)));
    }
}

contract GasProbe {
    function ping() external {}
}

/// Member roles at fleet scale: `setMemberRoles` on 1 and 100 members, a grant that needs the owner's approval,
/// and `addMembersWithRoles` of 100 nodes next to `addMembers` of the same 100 nodes (the difference is the
/// roles slot and the `MemberRolesSet` event of each node). setUp registers 201 nodes with gas metering
/// paused.
contract RolesGasTest is GasMeasurement {
    address internal constant OWNER = address(0xA11CE);
    address internal constant ADMIN = address(0xAD);
    bytes32 internal constant FLEET = "fleet";
    uint256 internal constant BATCH = 100;
    /// OWNER's node, approved for ADMIN, a member of FLEET with READ only.
    bytes32 internal constant READER = "1111";
    uint8 internal constant READ = 1;
    uint8 internal constant BOTH = 3;

    /// ADMIN's nodes bytes32(from) .. bytes32(from + BATCH - 1): 1..100 are members of FLEET with both roles,
    /// 101..200 are in no group.
    function _batch(uint256 from) internal pure returns (bytes32[] memory ids) {
        ids = new bytes32[](BATCH);
        for (uint256 i; i < BATCH; ++i) {
            ids[i] = bytes32(from + i);
        }
    }

    function setUp() public {
        vm.pauseGasMetering();
        registry = new KeyRegistry(address(0));
        for (uint256 i = 1; i <= 2 * BATCH; ++i) {
            registerAs(registry, ADMIN, bytes32(i), i);
        }
        registerAs(registry, OWNER, READER, testNodeKey("1111"));
        vm.prank(OWNER);
        registry.setAdminApproval(ADMIN, true);
        vm.startPrank(ADMIN);
        registry.createGroup(FLEET, "fleet/#");
        registry.addMembers(FLEET, _batch(1));
        bytes32[] memory reader = new bytes32[](1);
        reader[0] = READER;
        registry.addMembersWithRoles(FLEET, reader, READ);
        vm.stopPrank();
        vm.resumeGasMetering();
    }

    function test_Gas_setMemberRoles_One() public {
        bytes32[] memory ids = new bytes32[](1);
        ids[0] = bytes32(uint256(1));
        _measure(
            "setMemberRoles, 1 node (drop WRITE)",
            ADMIN,
            abi.encodeCall(KeyRegistry.setMemberRoles, (FLEET, ids, READ))
        );
    }

    function test_Gas_setMemberRoles_OneGrant_ApprovedAdmin() public {
        bytes32[] memory ids = new bytes32[](1);
        ids[0] = READER;
        _measure(
            "setMemberRoles, 1 node (grant WRITE, owner approved the admin)",
            ADMIN,
            abi.encodeCall(KeyRegistry.setMemberRoles, (FLEET, ids, BOTH))
        );
    }

    function test_Gas_setMemberRoles_Hundred() public {
        _measure(
            "setMemberRoles, 100 nodes (drop WRITE)",
            ADMIN,
            abi.encodeCall(KeyRegistry.setMemberRoles, (FLEET, _batch(1), READ))
        );
    }

    function test_Gas_addMembersWithRoles_Hundred() public {
        _measure(
            "addMembersWithRoles, 100 nodes (READ)",
            ADMIN,
            abi.encodeCall(KeyRegistry.addMembersWithRoles, (FLEET, _batch(BATCH + 1), READ))
        );
    }

    function test_Gas_addMembers_Hundred() public {
        _measure(
            "addMembers, 100 nodes (both roles)",
            ADMIN,
            abi.encodeCall(KeyRegistry.addMembers, (FLEET, _batch(BATCH + 1)))
        );
    }
}

/// The hard cost rule: adding or removing a member costs the same in a group of 1 as in one of 10,000.
/// setUp registers 10,004 real nodes (real signatures) and fills the big group through addMember, with gas
/// metering paused; it takes a few seconds.
contract GroupSizeGasTest is TestBase {
    KeyRegistry internal registry;

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
        registry = new KeyRegistry(address(0));
        // ADMIN owns the nodes it adds: no approval slot to read, which would be cold for the first add only.
        for (uint256 i = 1; i <= BIG_SIZE + 4; ++i) {
            registerAs(registry, ADMIN, bytes32(i), i);
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
