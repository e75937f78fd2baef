// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

/// A reference MQTT topic filter checker for the tests, written differently from the contract's one-pass
/// check: it splits the filter into levels at '/' and judges each byte by the level it is in. A filter is
/// valid when every byte is printable ASCII (0x20-0x7e), every level holding '+' is exactly "+", and every
/// level holding '#' is exactly "#" and the last level. The empty filter is valid.
library TopicFilterReference {
    /// Whether `filter` is valid, and if not the index of its first offending byte.
    function check(bytes memory filter) internal pure returns (bool valid, uint256 firstInvalid) {
        uint256 levelStart;
        for (uint256 end; end <= filter.length; ++end) {
            if (end < filter.length && filter[end] != "/") continue;
            // The level is filter[levelStart, end); it is the last one when end is the filter's end.
            uint256 levelLength = end - levelStart;
            bool lastLevel = end == filter.length;
            for (uint256 i = levelStart; i < end; ++i) {
                bytes1 b = filter[i];
                bool bad = uint8(b) < 0x20 || uint8(b) > 0x7e;
                if (b == "+") bad = levelLength != 1;
                if (b == "#") bad = levelLength != 1 || !lastLevel;
                if (bad) return (false, i);
            }
            levelStart = end + 1;
        }
        return (true, 0);
    }
}
