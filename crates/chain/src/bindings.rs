//! Rust bindings generated from the Solidity interface, the single source of the ABI.

#![allow(missing_docs, clippy::too_many_arguments, unreachable_pub)]

alloy::sol!(
    #[sol(rpc, all_derives)]
    "../../contracts/src/IKeyRegistry.sol"
);

alloy::sol! {
    /// The EIP-712 struct a node key signs to prove possession (see `IKeyRegistry.registerNode`).
    #[derive(Debug)]
    struct NodeKey {
        bytes32 nodeId;
        address owner;
        bytes publicKey;
        uint32 keyVersion;
    }
}
