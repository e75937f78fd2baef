// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {vm} from "../test/utils/Vm.sol";
import {KeyRegistry} from "../src/KeyRegistry.sol";

/// Deploys KeyRegistry and writes ../deployments/<chainId>.json with the fields a script can know: chainId and
/// address. The transaction hash and block are only known once the broadcast is mined, so scripts/deploy.sh
/// writes the complete file from forge's broadcast log instead (it sets ANCHORMQ_SKIP_DEPLOYMENT_FILE so this
/// partial file is not written at all).
///
/// ANCHORMQ_REGISTRY_OPERATOR (optional) is the constructor argument: unset or the zero address deploys an open
/// registry (anyone registers nodes and creates groups, for good); an account makes it the operator of a
/// closed registry, which then names the registrars. Either way the runtime code is the same.
///
///   forge script script/Deploy.s.sol --rpc-url URL --broadcast --private-key KEY
contract Deploy {
    function run() external returns (KeyRegistry registry) {
        return deploy(vm.envOr("ANCHORMQ_REGISTRY_OPERATOR", address(0)));
    }

    function deploy(address operator_) public returns (KeyRegistry registry) {
        vm.startBroadcast();
        registry = new KeyRegistry(operator_);
        vm.stopBroadcast();

        if (vm.envOr("ANCHORMQ_SKIP_DEPLOYMENT_FILE", false)) return registry;
        string memory json = vm.serializeUint("deployment", "chainId", block.chainid);
        json = vm.serializeAddress("deployment", "address", address(registry));
        vm.writeJson(json, deploymentPath(block.chainid));
    }

    function deploymentPath(uint256 chainId) public view returns (string memory) {
        return string.concat(vm.projectRoot(), "/../deployments/", vm.toString(chainId), ".json");
    }
}
