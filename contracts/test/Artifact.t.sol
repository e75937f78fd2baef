// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {TestBase} from "./utils/TestBase.sol";
import {vm} from "./utils/Vm.sol";
import {KeyRegistry} from "../src/KeyRegistry.sol";

/// The `anchormq` binary deploys the bytecode committed in artifacts/KeyRegistry.bin (so installing it needs no
/// Foundry). This fails when that file is not what the Solidity source compiles to: run
/// scripts/make-artifact.sh and commit the file.
contract ArtifactTest is TestBase {
    function test_CommittedBytecodeIsTheCompiledSource() public view {
        string memory text = vm.readFile(string.concat(vm.projectRoot(), "/artifacts/KeyRegistry.bin"));
        bytes memory committed = vm.parseBytes(string.concat("0x", _trimmed(text)));
        assertEq(
            keccak256(committed),
            keccak256(type(KeyRegistry).creationCode),
            "artifacts/KeyRegistry.bin is stale: run scripts/make-artifact.sh"
        );
    }

    /// `text` without a trailing newline.
    function _trimmed(string memory text) internal pure returns (string memory) {
        bytes memory b = bytes(text);
        uint256 end = b.length;
        while (end > 0 && (b[end - 1] == "\n" || b[end - 1] == "\r")) --end;
        bytes memory out = new bytes(end);
        for (uint256 i; i < end; ++i) {
            out[i] = b[i];
        }
        return string(out);
    }
}
