//! Real local infrastructure for anchormq: an Anvil chain with the KeyRegistry deployed, MQTT
//! brokers (in-process rumqttd or a Mosquitto process) and fault-injecting proxies, all on
//! free loopback ports.
//!
//! It serves `anchormq up` / `anchormq demo` and every end-to-end test. Each service owns a temp
//! dir holding its output log, so a failing test can print what the process said (set
//! `ANCHORMQ_KEEP_LOGS=1` to keep those dirs); every child process is killed when its handle is
//! dropped.
//!
//! Not for production: nothing here is hardened, authenticated or reachable beyond 127.0.0.1,
//! and the JSON-RPC client is a readiness/test helper, not the product's chain client (that is
//! alloy in `anchormq-chain`).

mod anvil;
mod broker;
mod deploy;
mod mosquitto;
mod mqtt_probe;
mod paths;
mod process;
mod proxy;
mod rpc;
mod wait;

pub use anvil::{Anvil, AnvilBuilder, AnvilError, DEFAULT_CHAIN_ID, DEV_ACCOUNTS, DevAccount};
pub use broker::{BrokerError, BrokerSettings, EmbeddedBroker};
pub use deploy::{
    DEPLOYMENTS_DIR_ENV, DeployError, Deployment, FixtureGroup, FixtureNode, PaperFixture,
    SecretHex, deploy_registry, deploy_registry_with_operator,
};
pub use mosquitto::{Credentials, Mosquitto, MosquittoBuilder, MosquittoError};
pub use paths::repo_root;
pub use process::KEEP_ENV;
pub use proxy::TcpCutProxy;
pub use rpc::{JsonRpcClient, ProxyError, RangeError, RangeLimitedRpc, RpcError, parse_quantity};
pub use wait::{WaitTimeout, await_condition, await_value, free_port};
