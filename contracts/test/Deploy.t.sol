// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {TestBase} from "./utils/TestBase.sol";
import {vm} from "./utils/Vm.sol";
import {KeyRegistry} from "../src/KeyRegistry.sol";
import {Deploy} from "../script/Deploy.s.sol";

/// The deploy script deploys the compiled registry and records chainId and address for scripts/deploy.sh.
contract DeployTest is TestBase {
    // An unused chain ID, so the test never overwrites a real deployments/<chainId>.json.
    uint256 internal constant TEST_CHAIN_ID = 424_242_424_242;

    function test_Deploy_DeploysRegistryAndWritesDeploymentFile() public {
        vm.chainId(TEST_CHAIN_ID);
        Deploy script = new Deploy();
        string memory path = script.deploymentPath(TEST_CHAIN_ID);

        KeyRegistry registry = script.run();

        assertEq(keccak256(address(registry).code), keccak256(type(KeyRegistry).runtimeCode), "deployed code");
        assertEq(registry.MAX_GROUPS_PER_NODE(), 64, "registry answers");
        string memory json = vm.readFile(path);
        vm.removeFile(path);
        assertEq(vm.parseJsonUint(json, ".chainId"), TEST_CHAIN_ID, "chainId");
        assertEq(vm.parseJsonAddress(json, ".address"), address(registry), "address");
    }
}
