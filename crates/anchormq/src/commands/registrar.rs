//! `anchormq registrar …`: who may register nodes and create groups in a closed registry.

use anchormq_chain::Address;
use clap::{Args, Subcommand};
use eyre::WrapErr;

use crate::commands::node::report;
use crate::context::Context;

/// Registrar commands (the registry's operator only; an open registry has none).
#[derive(Debug, Subcommand)]
pub enum RegistrarCommand {
    /// Allow an account to register nodes and create groups.
    Add(Account),
    /// Stop an account from registering nodes and creating groups (what it made stays).
    Remove(Account),
}

/// The account a registrar command is about.
#[derive(Debug, Args)]
pub struct Account {
    /// The account.
    #[arg(long, value_name = "ADDRESS")]
    pub account: Address,
}

impl RegistrarCommand {
    /// Sends `setRegistrar`.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        let (account, allowed) = match self {
            Self::Add(a) => (a.account, true),
            Self::Remove(a) => (a.account, false),
        };
        let client = context.writer().await?;
        let outcome = client
            .set_registrar(account, allowed)
            .await
            .wrap_err_with(|| format!("setting registrar {account}"))?;
        let summary = if allowed {
            format!("{account} may now register nodes and create groups")
        } else {
            format!("{account} may no longer register nodes or create groups")
        };
        report(&summary, &outcome);
        Ok(())
    }
}
