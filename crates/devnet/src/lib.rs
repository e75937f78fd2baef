//! A local development network for anchormq, built into the `anchormq` binary for `up` and
//! `demo`: an Anvil chain (the `anvil` program from Foundry, found on `PATH`, through
//! `ANCHORMQ_ANVIL`, or in a checkout's `.toolchain/`), an embedded MQTT broker (anchormq's own,
//! `anchormq-broker`, on a thread of this process), and the paper's fixture (its Anvil state is
//! compiled in, so no source checkout is needed).
//!
//! Everything listens on 127.0.0.1 only, on free ports; every child process is killed when its
//! handle is dropped (the broker is a thread: it runs until stopped or the process ends). Not for
//! production. Fault injection, Mosquitto and other test infrastructure live in the
//! `anchormq-localstack` test kit, which builds on this crate.

mod anvil;
mod broker;
mod fixture;
pub mod paths;
pub mod process;

pub use anvil::{Anvil, AnvilBuilder, AnvilError, DEFAULT_CHAIN_ID, DEV_ACCOUNTS, DevAccount};
pub use broker::{BrokerError, BrokerSettings, EmbeddedBroker};
pub use fixture::{FixtureError, FixtureGroup, FixtureNode, PaperFixture, SecretHex};

/// A free TCP port on 127.0.0.1 (the OS picks it; it may be taken again before use, so callers
/// that bind later retry).
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    #[test]
    fn free_port_is_bindable() {
        let port = super::free_port().expect("free port");
        assert_ne!(port, 0);
        std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).expect("still free");
    }
}
