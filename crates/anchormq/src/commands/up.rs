//! `anchormq up`: a local stack for trying anchormq by hand, running until Ctrl-C.

use anchormq_devnet::DEV_ACCOUNTS;
use clap::Args;
use eyre::WrapErr;

use crate::commands::node::write_new_key_file;
use crate::commands::stack::{LocalStack, StackOptions};
use crate::context::Context;

/// `up`.
#[derive(Debug, Args)]
pub struct UpCommand {
    /// Load the paper fixture (nodes 1111..1114 with test keys, groups hsu0001 and hsu0002)
    /// instead of deploying an empty registry.
    #[arg(long)]
    pub paper: bool,
    /// Deploy a closed registry: only registrars may register nodes and create groups. Its
    /// operator and first registrar is the printed dev account; `anchormq registrar add` adds more.
    #[arg(long, conflicts_with = "paper")]
    pub closed: bool,
}

impl UpCommand {
    /// Starts the stack, prints how to use it, waits for Ctrl-C.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        let external = match &context.globals().broker {
            Some(url) => {
                let config = context.broker_config("anchormq-up")?;
                // Say where the broker setting came from: a stale export of an earlier `up` is
                // the usual surprise.
                let from_env = std::env::var("ANCHORMQ_BROKER").is_ok_and(|v| v == *url);
                println!(
                    "using the external broker {} (from {}; unset it to use the embedded broker)",
                    config.display_url(),
                    if from_env {
                        "ANCHORMQ_BROKER in the environment"
                    } else {
                        "--broker or the config file"
                    }
                );
                Some(config)
            }
            None => None,
        };
        let stack = LocalStack::start(StackOptions {
            paper: self.paper,
            closed: self.closed,
            broker: external,
        })
        .await?;
        // before anything is printed: a script may send SIGINT as soon as it reads the settings
        let signalled = super::shutdown_on_signal();
        let mut key_files = Vec::new();
        if self.paper {
            for id in ["1111", "1112", "1113", "1114"] {
                let (_, key) = stack.fixture_node(id)?;
                let path = stack.dir().join(format!("{id}.key"));
                write_new_key_file(&path, &key)?;
                key_files.push((id, path));
            }
        }
        let rpc = stack.anvil.http_url();
        let broker = stack.broker.display_url();
        let registry = stack.deployment.address.to_string();
        let bridge = stack.bridge_key.public_key().to_string();
        println!("anchormq local stack is up (Ctrl-C stops it)");
        println!("  RPC URL:        {rpc}");
        println!("  broker URL:     {broker}");
        println!(
            "  registry:       {registry} (chain {}, deploy block {})",
            stack.deployment.chain_id, stack.deployment.deploy_block
        );
        println!("  bridge key:     {bridge}");
        if self.closed {
            println!(
                "  closed registry: operator and only registrar is dev account 0 {}; \
                 `anchormq registrar add --account ADDRESS` allows another",
                DEV_ACCOUNTS[0].address
            );
        }
        println!(
            "  operator key:   {}  (anvil dev account 0 {}: TEST ONLY, publicly known)",
            DEV_ACCOUNTS[0].private_key(),
            DEV_ACCOUNTS[0].address
        );
        println!();
        println!("# paste into a shell:");
        println!("export ANCHORMQ_RPC={rpc}");
        println!("export ANCHORMQ_BROKER={broker}");
        println!("export ANCHORMQ_REGISTRY={registry}");
        println!("export ANCHORMQ_CHAIN_ID={}", stack.deployment.chain_id);
        println!("export ANCHORMQ_BRIDGE_KEY={bridge}");
        println!(
            "export ANCHORMQ_PRIVATE_KEY={}   # test-only dev key",
            DEV_ACCOUNTS[0].private_key()
        );
        println!();
        println!("# then, for example:");
        if self.paper {
            let key = |id: &str| {
                key_files
                    .iter()
                    .find(|(k, _)| *k == id)
                    .map(|(_, p)| p.display().to_string())
                    .unwrap_or_default()
            };
            println!(
                "anchormq sub --as 1112 --key {} -t 'hsu/0001/#' -v",
                key("1112")
            );
            println!(
                "anchormq pub --as 1111 --key {} -t hsu/0001/temp -m 'hello hsu0001' -q 1",
                key("1111")
            );
            println!("anchormq group add --id hsu0001 --node 1113");
            println!("anchormq group show --id hsu0001");
        } else {
            println!("anchormq node keygen --out node1.key");
            println!("anchormq node register --id 1111 --key node1.key");
            println!("anchormq group create --id line1 --topic 'factory/line1/#'");
            println!("anchormq group add --id line1 --node 1111");
            println!("anchormq pub --as 1111 --key node1.key -t factory/line1/temp -m 21.5 -q 1");
        }
        println!("anchormq audit");
        println!("anchormq verify");
        tokio::select! {
            () = signalled.cancelled() => {}
            () = stack.shutdown.cancelled() => {}
            () = async {
                loop {
                    if stack.bridge_finished() {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            } => {}
        }
        stack.stop().await.wrap_err("stopping the stack")
    }
}
