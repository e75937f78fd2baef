// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {TestBase} from "./utils/TestBase.sol";
import {vm} from "./utils/Vm.sol";
import {KeyRegistry} from "../src/KeyRegistry.sol";
import {Deploy} from "../script/Deploy.s.sol";

/// The deploy script deploys the compiled registry, open or closed, and records chainId and address for
/// scripts/deploy.sh. Each test uses its own unused chain ID, so tests running in parallel never write the same
/// file and never overwrite a real deployments/<chainId>.json.
contract DeployTest is TestBase {
    address internal constant OPERATOR = address(0x0CE);

    /// Checks what `script` deployed on the current chain ID, and the deployment file it wrote (then removed).
    function _checked(Deploy script, KeyRegistry registry) internal returns (KeyRegistry) {
        // The constructor argument lives in storage: the runtime code is the compiled one either way, which
        // is what scripts/deploy.sh and the fixture test compare.
        assertEq(keccak256(address(registry).code), keccak256(type(KeyRegistry).runtimeCode), "deployed code");
        string memory path = script.deploymentPath(block.chainid);
        string memory json = vm.readFile(path);
        vm.removeFile(path);
        assertEq(vm.parseJsonUint(json, ".chainId"), block.chainid, "chainId");
        assertEq(vm.parseJsonAddress(json, ".address"), address(registry), "address");
        return registry;
    }

    function test_Deploy_OpenRegistryWritesDeploymentFile() public {
        vm.chainId(424_242_424_241);
        Deploy script = new Deploy();
        KeyRegistry registry = _checked(script, script.deploy(address(0)));
        assertEq(registry.operator(), address(0), "open: no operator");
        assertTrue(registry.isRegistrar(address(0xBAD)), "open: anyone registers");
    }

    function test_Deploy_ClosedRegistryHasTheOperator() public {
        vm.chainId(424_242_424_242);
        Deploy script = new Deploy();
        KeyRegistry registry = _checked(script, script.deploy(OPERATOR));
        assertEq(registry.operator(), OPERATOR, "operator");
        assertTrue(!registry.isRegistrar(address(0xBAD)), "closed: no registrar yet");
    }

    function test_Deploy_RunTakesOperatorFromEnvironment() public {
        // The only test that sets or reads the variable (tests share the process environment).
        Deploy script = new Deploy();
        vm.chainId(424_242_424_243);
        vm.setEnv("ANCHORMQ_REGISTRY_OPERATOR", vm.toString(OPERATOR));
        assertEq(_checked(script, script.run()).operator(), OPERATOR, "operator from the environment");
        vm.chainId(424_242_424_244);
        vm.setEnv("ANCHORMQ_REGISTRY_OPERATOR", vm.toString(address(0)));
        assertEq(_checked(script, script.run()).operator(), address(0), "zero address: open");
    }
}
