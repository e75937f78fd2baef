// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {TestBase} from "./utils/TestBase.sol";
import {vm} from "./utils/Vm.sol";
import {TopicFilterReference} from "./utils/TopicFilterReference.sol";
import {IKeyRegistry} from "../src/IKeyRegistry.sol";
import {KeyRegistry} from "../src/KeyRegistry.sol";

/// createGroup accepts only valid MQTT topic filters of printable ASCII: the filters that crashed the off-chain
/// bridge ("a+", NUL bytes, invalid UTF-8, ...) are refused with the index of the first offending byte.
contract TopicFilterTest is TestBase {
    KeyRegistry internal registry;

    address internal constant ADMIN = address(0xAD);
    bytes32 internal constant GROUP = "hsu0001";

    function setUp() public {
        registry = new KeyRegistry(address(0));
    }

    function _expectInvalid(bytes memory filter, uint256 index) internal {
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.InvalidTopicFilter.selector, index));
        vm.prank(ADMIN);
        registry.createGroup(GROUP, string(filter));
    }

    function _accepted(bytes memory filter) internal returns (bool ok, bytes memory returned) {
        vm.prank(ADMIN);
        (ok, returned) =
            address(registry).call(abi.encodeCall(IKeyRegistry.createGroup, (GROUP, string(filter))));
    }

    // ------------------------------------------------------------------ wildcards

    function test_RevertWhen_TopicFilter_PlusNotAWholeLevel() public {
        _expectInvalid("a+", 1);
        _expectInvalid("+a", 0);
        _expectInvalid("a/b+/c", 3);
        _expectInvalid("a/+b", 2);
        _expectInvalid("++", 0);
        _expectInvalid("+#", 0);
    }

    function test_RevertWhen_TopicFilter_HashNotTheLastLevel() public {
        _expectInvalid("a/#/b", 2);
        _expectInvalid("#/", 0);
        _expectInvalid("#/#", 0);
    }

    function test_RevertWhen_TopicFilter_HashNotAWholeLevel() public {
        _expectInvalid("#a", 0);
        _expectInvalid("a#", 1);
        _expectInvalid("a/b#", 3);
        _expectInvalid("a/+#", 2);
    }

    // ------------------------------------------------------------------ bytes outside printable ASCII

    function test_RevertWhen_TopicFilter_NulByte() public {
        _expectInvalid(hex"00", 0);
        _expectInvalid(abi.encodePacked("hsu/", hex"00", "/#"), 4);
    }

    function test_RevertWhen_TopicFilter_DelByte() public {
        _expectInvalid(abi.encodePacked("hsu", hex"7f"), 3);
    }

    function test_RevertWhen_TopicFilter_InvalidUtf8AndNonAscii() public {
        _expectInvalid(abi.encodePacked("a/", hex"80"), 2); // a lone continuation byte: invalid UTF-8
        _expectInvalid(abi.encodePacked("a/", hex"ff"), 2); // never valid in UTF-8
        _expectInvalid(abi.encodePacked("a/", hex"c3"), 2); // a truncated two-byte sequence
        _expectInvalid("caf\xc3\xa9/#", 3); // valid UTF-8 ("café"), but not ASCII: refused too
    }

    function test_RevertWhen_TopicFilter_ControlCharacters() public {
        _expectInvalid("a\nb", 1);
        _expectInvalid("a\rb", 1);
        _expectInvalid("\tb", 0);
        _expectInvalid(abi.encodePacked("a/", hex"1f"), 2);
    }

    function test_RevertWhen_TopicFilter_TooLong() public {
        bytes memory tooLong = new bytes(registry.MAX_TOPIC_FILTER_LENGTH() + 1);
        for (uint256 i; i < tooLong.length; ++i) {
            tooLong[i] = "a";
        }
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.TopicFilterTooLong.selector, 1025, 1024));
        vm.prank(ADMIN);
        registry.createGroup(GROUP, string(tooLong));

        // The length is checked before the contents: no byte of an over-long filter is looked at.
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.TopicFilterTooLong.selector, 1025, 1024));
        vm.prank(ADMIN);
        registry.createGroup(GROUP, string(new bytes(1025)));
    }

    function test_RevertWhen_TopicFilter_InvalidCreatesNoGroup() public {
        _expectInvalid("a+", 1);
        vm.expectRevert(abi.encodeWithSelector(IKeyRegistry.GroupNotFound.selector, GROUP));
        registry.getGroup(GROUP);
    }

    // ------------------------------------------------------------------ valid filters

    function test_TopicFilter_AcceptsValidFilters() public {
        string[13] memory valid = [
            "",
            "#",
            "+",
            "/",
            "a/+/b",
            "a/#",
            "+/+/#",
            "a//b",
            "with space",
            "/+/",
            "$SYS/#",
            "hsu/0001/#",
            "~!\"$%&'()*,-.0123456789:;<=>?@AZ[\\]^_`az{|}"
        ];
        for (uint256 i; i < valid.length; ++i) {
            bytes32 groupId = bytes32(i + 1);
            vm.expectEmit(address(registry));
            emit IKeyRegistry.GroupCreated(groupId, ADMIN, valid[i]);
            vm.prank(ADMIN);
            registry.createGroup(groupId, valid[i]);
            assertEq(registry.getGroup(groupId).topicFilter, valid[i], valid[i]);
        }
    }

    function test_TopicFilter_AcceptsLongestFilter() public {
        bytes memory levels = "a/+/";
        bytes memory longest = new bytes(registry.MAX_TOPIC_FILTER_LENGTH());
        for (uint256 i; i < longest.length; ++i) {
            longest[i] = levels[i % 4];
        }
        // "...a/+/a//#": the last level is a '#' wildcard.
        longest[longest.length - 2] = "/";
        longest[longest.length - 1] = "#";
        vm.prank(ADMIN);
        registry.createGroup(GROUP, string(longest));
        assertEq(registry.getGroup(GROUP).topicFilter, string(longest), "stored whole");
    }

    // ------------------------------------------------------------------ the contract against a reference checker

    /// Filters built mostly from "a", "/", "+", "#" and " " with now and then an arbitrary byte: valid and
    /// invalid filters of every shape come up. Whatever the contract accepts satisfies the rules (judged by the
    /// reference checker, written level by level), and whatever it refuses breaks them at the reported index.
    function testFuzz_TopicFilter_AcceptsExactlyTheValidFilters(bytes memory seed) public {
        bytes memory alphabet = "a//+# ";
        bytes memory filter = new bytes(seed.length % 25);
        for (uint256 i; i < filter.length; ++i) {
            uint256 pick = uint8(seed[i]) % 8;
            filter[i] = pick < alphabet.length ? alphabet[pick] : seed[i];
        }
        _agreesWithReference(filter);
    }

    /// Raw bytes, mostly invalid: the contract reports the same first offending byte as the reference.
    function testFuzz_TopicFilter_RawBytesAgreeWithReference(bytes memory filter) public {
        vm.assume(filter.length <= 1024);
        _agreesWithReference(filter);
    }

    function _agreesWithReference(bytes memory filter) internal {
        (bool valid, uint256 firstInvalid) = TopicFilterReference.check(filter);
        (bool ok, bytes memory returned) = _accepted(filter);
        if (ok) {
            assertTrue(valid, string.concat("accepted an invalid filter: ", vm.toString(filter)));
            assertEq(registry.getGroup(GROUP).topicFilter, string(filter), "stored");
        } else {
            assertTrue(!valid, string.concat("refused a valid filter: ", vm.toString(filter)));
            assertEq(
                returned,
                abi.encodeWithSelector(IKeyRegistry.InvalidTopicFilter.selector, firstInvalid),
                "first offending byte"
            );
        }
    }

    /// The reference checker itself, on the hand-picked cases above.
    function test_TopicFilterReference_AgreesWithTheHandPickedCases() public pure {
        (bool valid, uint256 index) = TopicFilterReference.check("a/+/#");
        assertTrue(valid, "a/+/#");
        (valid, index) = TopicFilterReference.check("a/#/b");
        assertTrue(!valid && index == 2, "a/#/b");
        (valid, index) = TopicFilterReference.check("a+");
        assertTrue(!valid && index == 1, "a+");
        (valid, index) = TopicFilterReference.check("a\x00");
        assertTrue(!valid && index == 1, "NUL");
        (valid,) = TopicFilterReference.check("");
        assertTrue(valid, "empty");
    }
}
