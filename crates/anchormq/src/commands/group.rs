//! `anchormq group …`: create groups, add and remove members, show a group.

use alloy::primitives::B256;
use anchormq_chain::show_id;
use anchormq_core::{GroupId, NodeId};
use clap::{Args, Subcommand};
use eyre::WrapErr;

use crate::commands::node::report;
use crate::context::Context;

/// Group commands.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group administered by the operator account.
    Create(Create),
    /// Add a node to a group (bumps its epoch).
    Add(Membership),
    /// Remove a node from a group (bumps its epoch).
    Remove(Membership),
    /// Show a group as the registry stores it.
    Show(Show),
}

impl GroupCommand {
    /// Runs the group command.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        match self {
            Self::Create(c) => c.execute(context).await,
            Self::Add(c) => c.execute(context, true).await,
            Self::Remove(c) => c.execute(context, false).await,
            Self::Show(c) => c.execute(context).await,
        }
    }
}

/// `group create`.
#[derive(Debug, Args)]
pub struct Create {
    /// Group ID (up to 32 ASCII characters, or 0x + 64 hex).
    #[arg(long)]
    pub id: GroupId,
    /// MQTT topic filter the group's messages live under, e.g. 'factory/line1/#'.
    #[arg(long, default_value = "")]
    pub topic: String,
}

impl Create {
    /// Sends `createGroup`.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        if !self.topic.is_empty() {
            anchormq_core::topics::validate_topic_filter(&self.topic)
                .map_err(|e| eyre::eyre!("--topic {:?}: {e}", self.topic))?;
        }
        let client = context.writer().await?;
        let outcome = client
            .create_group(B256::from(*self.id.as_bytes()), &self.topic)
            .await
            .wrap_err_with(|| format!("creating group {}", self.id))?;
        report(
            &format!("created group {} (topic filter {:?})", self.id, self.topic),
            &outcome,
        );
        Ok(())
    }
}

/// `group add` / `group remove`.
#[derive(Debug, Args)]
pub struct Membership {
    /// Group ID.
    #[arg(long)]
    pub id: GroupId,
    /// Node ID.
    #[arg(long)]
    pub node: NodeId,
}

impl Membership {
    /// Sends `addMember` or `removeMember`.
    pub async fn execute(self, context: &Context, add: bool) -> eyre::Result<()> {
        let client = context.writer().await?;
        let group = B256::from(*self.id.as_bytes());
        let node = B256::from(*self.node.as_bytes());
        let outcome = if add {
            client.add_member(group, node).await
        } else {
            client.remove_member(group, node).await
        }
        .wrap_err_with(|| {
            format!(
                "{} node {} {} group {}",
                if add { "adding" } else { "removing" },
                self.node,
                if add { "to" } else { "from" },
                self.id
            )
        })?;
        let epoch = outcome
            .events
            .iter()
            .find_map(|e| match e.event {
                anchormq_chain::RegistryEvent::MemberAdded { epoch, .. }
                | anchormq_chain::RegistryEvent::MemberRemoved { epoch, .. } => Some(epoch),
                _ => None,
            })
            .map_or_else(String::new, |epoch| format!(" (epoch {epoch})"));
        report(
            &format!(
                "{} node {} {} group {}{epoch}",
                if add { "added" } else { "removed" },
                self.node,
                if add { "to" } else { "from" },
                self.id
            ),
            &outcome,
        );
        Ok(())
    }
}

/// `group show`.
#[derive(Debug, Args)]
pub struct Show {
    /// Group ID.
    #[arg(long)]
    pub id: GroupId,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

impl Show {
    /// Prints admin, topic filter, epoch and members.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        let client = context.reader().await?;
        let id = B256::from(*self.id.as_bytes());
        let group = client
            .group(id)
            .await
            .wrap_err_with(|| format!("reading group {}", self.id))?;
        let mut members: Vec<B256> = client
            .members(id)
            .await
            .wrap_err_with(|| format!("reading the members of group {}", self.id))?;
        members.sort();
        let members: Vec<String> = members.iter().map(show_id).collect();
        if self.json {
            let value = serde_json::json!({
                "group": self.id.to_string(),
                "admin": group.admin.to_string(),
                "topicFilter": group.topicFilter,
                "epoch": group.epoch,
                "members": members,
            });
            println!("{value}");
        } else {
            println!("group:        {}", self.id);
            println!("admin:        {}", group.admin);
            println!("topic filter: {:?}", group.topicFilter);
            println!("epoch:        {}", group.epoch);
            println!(
                "members:      {}",
                if members.is_empty() {
                    "(none)".to_owned()
                } else {
                    members.join(", ")
                }
            );
        }
        Ok(())
    }
}
