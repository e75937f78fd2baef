//! The test kit: real local infrastructure for anchormq's tests and benchmarks, on free loopback
//! ports. It re-exports the development network of `anchormq-devnet` (Anvil, the embedded broker,
//! the paper fixture) and adds what only tests need: Mosquitto processes, fault-injecting TCP and
//! JSON-RPC proxies, raw JSON-RPC calls to Anvil, deployment helpers and bounded waits, and run-time
//! certificates for Mosquitto's TLS listener; and the setup the bridge's, chain's and agents' tests
//! share: a [`RegistryStack`] (fresh Anvil, deployed registry, admin client, bridge key, temp dir)
//! that runs bridges in-process, bulk mining, and an [`Observer`] that verifies every retained note
//! and compares the notes with the chain.
//!
//! Not part of the product: `anchormq` depends on it for its tests only. Each service owns a temp
//! dir holding its output log, so a failing test can print what the process said (set
//! `ANCHORMQ_KEEP_LOGS=1` to keep those dirs); every child process is killed when its handle is
//! dropped.
//!
//! Not for production: nothing here is hardened, authenticated or reachable beyond 127.0.0.1,
//! and the JSON-RPC client is a readiness/test helper, not the product's chain client (that is
//! alloy in `anchormq-chain`).

mod anvil_rpc;
mod cluster;
mod deploy;
mod mosquitto;
mod observer;
mod paths;
mod probe;
mod proxy;
mod rpc;
mod stack;
mod tls;
mod wait;

pub use anchormq_devnet::process::KEEP_ENV;
pub use anchormq_devnet::{
    Anvil, AnvilBuilder, AnvilError, BrokerError, BrokerSettings, DEFAULT_CHAIN_ID, DEV_ACCOUNTS,
    DevAccount, EmbeddedBroker, FixtureError, FixtureGroup, FixtureNode, PaperFixture, SecretHex,
    free_port,
};
pub use anvil_rpc::AnvilRpc;
pub use cluster::{AedesCluster, AedesNode, ClusterError, Redis};
pub use deploy::{DeployError, deploy_registry, deploy_registry_with_operator};
pub use mosquitto::{Credentials, Mosquitto, MosquittoBuilder, MosquittoError};
pub use observer::{GroupView, NoteView, Observer, POLL, SETTLE};
pub use paths::repo_root;
pub use proxy::TcpCutProxy;
pub use rpc::{JsonRpcClient, ProxyError, RangeError, RangeLimitedRpc, RpcError, parse_quantity};
pub use stack::{
    BRIDGE_POLL_MS, RegistryStack, RunningBridge, StackError, bridge_settings, registry_of,
};
pub use tls::{TlsFiles, TlsFilesError};
pub use wait::{WaitTimeout, await_condition, await_value};
