//! `anchormq group …`: create groups, add and remove members, hand the admin role on, show a group.

use anchormq_chain::{Address, RegistryEvent, TxOutcome};
use anchormq_core::{GroupId, NodeId, NodePublicKey};
use clap::{Args, Subcommand};
use eyre::{WrapErr, bail, eyre};

use crate::commands::node::report;
use crate::context::{Context, parse_public_key};

/// Group commands.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group administered by the operator account.
    Create(Create),
    /// Add a node to a group (bumps its epoch); shows the node's owner and key first.
    Add(Add),
    /// Remove a node from a group (bumps its epoch).
    Remove(Membership),
    /// Take one of the operator account's nodes out of a group (bumps its epoch).
    Leave(Membership),
    /// Offer the admin role to another account; it moves when that account runs `group accept`.
    Transfer(Transfer),
    /// Take the admin role of a group offered to the operator account.
    Accept(Accept),
    /// Show a group as the registry stores it.
    Show(Show),
}

impl GroupCommand {
    /// Runs the group command.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        match self {
            Self::Create(c) => c.execute(context).await,
            Self::Add(c) => c.execute(context).await,
            Self::Remove(c) => c.execute(context, Change::Remove).await,
            Self::Leave(c) => c.execute(context, Change::Leave).await,
            Self::Transfer(c) => c.execute(context).await,
            Self::Accept(c) => c.execute(context).await,
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
            .create_group(self.id, &self.topic)
            .await
            .wrap_err_with(|| format!("creating group {}", self.id))?;
        report(
            &format!("created group {} (topic filter {:?})", self.id, self.topic),
            &outcome,
        );
        Ok(())
    }
}

/// `group add`.
#[derive(Debug, Args)]
pub struct Add {
    /// Group ID.
    #[arg(long)]
    pub id: GroupId,
    /// Node ID.
    #[arg(long)]
    pub node: NodeId,
    /// Refuse unless the node's key on chain is this public key (hex, as `node keygen` prints it):
    /// catches an ID registered by someone else before it is added.
    #[arg(long, value_name = "PUBKEY_HEX")]
    pub expect_key: Option<String>,
}

impl Add {
    /// Shows whose node it is, checks `--expect-key`, then sends `addMember`.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        let expected = self
            .expect_key
            .as_deref()
            .map(parse_public_key)
            .transpose()
            .wrap_err("--expect-key")?;
        let client = context.writer().await?;
        let node_id = self.node;
        let node = client
            .node(node_id)
            .await
            .wrap_err_with(|| format!("reading node {}", self.node))?;
        let key = NodePublicKey::from_compressed(&node.publicKey)
            .map_err(|e| eyre!("node {} has an unreadable key on chain: {e}", self.node))?;
        println!(
            "node {}: owner {}, key {} (version {})",
            self.node, node.owner, key, node.keyVersion
        );
        if let Some(expected) = expected
            && expected != key
        {
            bail!(
                "node {} has key {key} on chain, not the expected {expected} (--expect-key): \
                 the ID may belong to someone else; nothing was sent",
                self.node
            );
        }
        let outcome = client
            .add_member(self.id, node_id)
            .await
            .wrap_err_with(|| format!("adding node {} to group {}", self.node, self.id))?;
        report(
            &format!(
                "added node {} to group {}{}",
                self.node,
                self.id,
                epoch_of(&outcome)
            ),
            &outcome,
        );
        Ok(())
    }
}

/// Which membership change `group remove` / `group leave` sends.
#[derive(Debug, Clone, Copy)]
pub enum Change {
    /// The admin removes a member.
    Remove,
    /// The node's owner takes it out.
    Leave,
}

/// `group remove` / `group leave`.
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
    /// Sends `removeMember` or `leaveGroup`.
    pub async fn execute(self, context: &Context, change: Change) -> eyre::Result<()> {
        let client = context.writer().await?;
        let group = self.id;
        let node = self.node;
        let outcome = match change {
            Change::Remove => client.remove_member(group, node).await,
            Change::Leave => client.leave_group(group, node).await,
        }
        .wrap_err_with(|| format!("removing node {} from group {}", self.node, self.id))?;
        report(
            &format!(
                "removed node {} from group {}{}",
                self.node,
                self.id,
                epoch_of(&outcome)
            ),
            &outcome,
        );
        Ok(())
    }
}

/// The group's new epoch from a membership change's events, as " (epoch N)".
fn epoch_of(outcome: &TxOutcome) -> String {
    outcome
        .events
        .iter()
        .find_map(|e| match e.event {
            RegistryEvent::MemberAdded { epoch, .. }
            | RegistryEvent::MemberRemoved { epoch, .. } => Some(epoch),
            _ => None,
        })
        .map_or_else(String::new, |epoch| format!(" (epoch {epoch})"))
}

/// `group transfer`.
#[derive(Debug, Args)]
pub struct Transfer {
    /// Group ID.
    #[arg(long)]
    pub id: GroupId,
    /// The account the admin role is offered to (the zero address withdraws the offer).
    #[arg(long, value_name = "ADDRESS")]
    pub to: Address,
}

impl Transfer {
    /// Sends `transferGroupAdmin` (an offer: nothing moves until the new admin accepts).
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        let client = context.writer().await?;
        let outcome = client
            .offer_group_admin(self.id, self.to)
            .await
            .wrap_err_with(|| format!("offering group {} to {}", self.id, self.to))?;
        let summary = if self.to.is_zero() {
            format!("withdrew the offer of group {}", self.id)
        } else {
            format!(
                "offered the admin role of group {} to {}; it moves when that account runs \
                 `anchormq group accept --id {}`",
                self.id, self.to, self.id
            )
        };
        report(&summary, &outcome);
        Ok(())
    }
}

/// `group accept`.
#[derive(Debug, Args)]
pub struct Accept {
    /// Group ID.
    #[arg(long)]
    pub id: GroupId,
}

impl Accept {
    /// Sends `acceptGroupAdmin`.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        let client = context.writer().await?;
        let outcome = client
            .accept_group_admin(self.id)
            .await
            .wrap_err_with(|| format!("accepting group {}", self.id))?;
        report(&format!("now the admin of group {}", self.id), &outcome);
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
        let id = self.id;
        let group = client
            .group(id)
            .await
            .wrap_err_with(|| format!("reading group {}", self.id))?;
        let mut members: Vec<NodeId> = client
            .members(id)
            .await
            .wrap_err_with(|| format!("reading the members of group {}", self.id))?;
        members.sort();
        let members: Vec<String> = members.iter().map(ToString::to_string).collect();
        if self.json {
            let value = serde_json::json!({
                "group": self.id.to_string(),
                "admin": group.admin.to_string(),
                "pendingAdmin": (!group.pendingAdmin.is_zero()).then(|| group.pendingAdmin.to_string()),
                "topicFilter": group.topicFilter,
                "epoch": group.epoch,
                "members": members,
            });
            println!("{value}");
        } else {
            println!("group:        {}", self.id);
            println!("admin:        {}", group.admin);
            if !group.pendingAdmin.is_zero() {
                println!("offered to:   {}", group.pendingAdmin);
            }
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
