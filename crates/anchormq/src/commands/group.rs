//! `anchormq group …`: create groups, add and remove members, hand the admin role on, show a group.

use std::path::PathBuf;

use anchormq_chain::Address;
use anchormq_core::{GroupId, NodeId, NodePublicKey, Roles};
use clap::{Args, Subcommand, ValueEnum};
use eyre::{WrapErr, bail, eyre};

use crate::commands::node::{epoch_of, in_batches, report};
use crate::context::{Context, parse_public_key};

/// Group commands.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group administered by the operator account.
    Create(Create),
    /// Add nodes to a group: one node shows its owner and key first; several go in batches, one
    /// transaction and one epoch bump each.
    Add(Add),
    /// Remove nodes from a group (one epoch bump per transaction, batched like `add`).
    Remove(Remove),
    /// Set what members may do: read (receive sender keys), write (readers accept their
    /// messages) or both; one epoch bump per transaction, batched like `add`.
    Roles(SetRoles),
    /// Take one of the operator account's nodes out of a group (bumps its epoch).
    Leave(Leave),
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
            Self::Remove(c) => c.execute(context).await,
            Self::Roles(c) => c.execute(context).await,
            Self::Leave(c) => c.execute(context).await,
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

/// Nodes named on the command line and in a file, for `group add` and `group remove`.
#[derive(Debug, Args)]
pub struct Nodes {
    /// Node ID; repeat for several.
    #[arg(
        long = "node",
        value_name = "NODE",
        required_unless_present = "nodes_file"
    )]
    pub node: Vec<NodeId>,
    /// A file of node IDs, one per line (blank lines and `#` comments ignored).
    #[arg(long, value_name = "FILE")]
    pub nodes_file: Option<PathBuf>,
    /// Nodes per transaction, one epoch bump each (about 52,000 gas a node, 75,000 with a role;
    /// at most 200 keeps a transaction under Ethereum's 16,777,216-gas cap, EIP-7825).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub batch: u32,
}

impl Nodes {
    /// The nodes in the order given, each once.
    fn list(&self) -> eyre::Result<Vec<NodeId>> {
        let mut nodes = self.node.clone();
        if let Some(path) = &self.nodes_file {
            let text = std::fs::read_to_string(path)
                .wrap_err_with(|| format!("--nodes-file {}", path.display()))?;
            for (index, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or_default().trim();
                if line.is_empty() {
                    continue;
                }
                nodes.push(line.parse().map_err(|e| {
                    eyre!("--nodes-file {} line {}: {e}", path.display(), index + 1)
                })?);
            }
        }
        let mut seen = std::collections::HashSet::new();
        nodes.retain(|n| seen.insert(*n));
        Ok(nodes)
    }
}

/// What a member may do in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Receives the group's sender keys: reads its messages, sends none readers accept.
    Read,
    /// Sends messages readers accept; is given no keys, so reads nothing.
    Write,
    /// Reads and writes (what the paper's groups use).
    Both,
}

impl Role {
    const fn bits(self) -> u8 {
        match self {
            Self::Read => 1,
            Self::Write => 2,
            Self::Both => 3,
        }
    }
}

/// `group add`.
#[derive(Debug, Args)]
pub struct Add {
    /// Group ID.
    #[arg(long)]
    pub id: GroupId,
    #[command(flatten)]
    pub nodes: Nodes,
    /// What the added nodes may do in the group.
    #[arg(long, value_enum, default_value_t = Role::Both)]
    pub role: Role,
    /// Refuse unless the node's key on chain is this public key (hex, as `node keygen` prints it):
    /// catches an ID registered by someone else before it is added. One node only.
    #[arg(long, value_name = "PUBKEY_HEX")]
    pub expect_key: Option<String>,
}

impl Add {
    /// One node: shows whose node it is, checks `--expect-key`, sends `addMember`. Several: sends
    /// `addMembers` in batches.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        let nodes = self.nodes.list()?;
        let [node_id] = nodes[..] else {
            if self.expect_key.is_some() {
                bail!("--expect-key checks one node; {} were given", nodes.len());
            }
            let client = context.writer().await?;
            let done = format!("added to group {}", self.id);
            let (client, role, id) = (&client, self.role, self.id);
            return in_batches(&nodes, self.nodes.batch, &done, |batch| async move {
                if role == Role::Both {
                    client.add_members(id, batch).await
                } else {
                    client.add_members_with_roles(id, batch, role.bits()).await
                }
            })
            .await;
        };
        let expected = self
            .expect_key
            .as_deref()
            .map(parse_public_key)
            .transpose()
            .wrap_err("--expect-key")?;
        let client = context.writer().await?;
        let node = client
            .node(node_id)
            .await
            .wrap_err_with(|| format!("reading node {node_id}"))?;
        let key = NodePublicKey::from_compressed(&node.publicKey)
            .map_err(|e| eyre!("node {node_id} has an unreadable key on chain: {e}"))?;
        println!(
            "node {node_id}: owner {}, key {key} (version {})",
            node.owner, node.keyVersion
        );
        if let Some(expected) = expected
            && expected != key
        {
            bail!(
                "node {node_id} has key {key} on chain, not the expected {expected} (--expect-key): \
                 the ID may belong to someone else; nothing was sent"
            );
        }
        let outcome = if self.role == Role::Both {
            client.add_member(self.id, node_id).await
        } else {
            client
                .add_members_with_roles(self.id, &[node_id], self.role.bits())
                .await
        }
        .wrap_err_with(|| format!("adding node {node_id} to group {}", self.id))?;
        report(
            &format!(
                "added node {node_id} to group {}{}",
                self.id,
                epoch_of(&outcome)
            ),
            &outcome,
        );
        Ok(())
    }
}

/// `group roles`.
#[derive(Debug, Args)]
pub struct SetRoles {
    /// Group ID.
    #[arg(long)]
    pub id: GroupId,
    #[command(flatten)]
    pub nodes: Nodes,
    /// The members' roles from now on.
    #[arg(long, value_enum)]
    pub role: Role,
}

impl SetRoles {
    /// Sends `setMemberRoles` in batches.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        let nodes = self.nodes.list()?;
        let client = context.writer().await?;
        let role = match self.role {
            Role::Read => "read",
            Role::Write => "write",
            Role::Both => "read+write",
        };
        let done = format!("set to {role} in group {}", self.id);
        in_batches(&nodes, self.nodes.batch, &done, |batch| {
            client.set_member_roles(self.id, batch, self.role.bits())
        })
        .await
    }
}

/// `group remove`.
#[derive(Debug, Args)]
pub struct Remove {
    /// Group ID.
    #[arg(long)]
    pub id: GroupId,
    #[command(flatten)]
    pub nodes: Nodes,
}

impl Remove {
    /// Sends `removeMember` for one node, `removeMembers` in batches for several.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        let nodes = self.nodes.list()?;
        let client = context.writer().await?;
        if let [node] = nodes[..] {
            let outcome = client
                .remove_member(self.id, node)
                .await
                .wrap_err_with(|| format!("removing node {node} from group {}", self.id))?;
            report(
                &format!(
                    "removed node {node} from group {}{}",
                    self.id,
                    epoch_of(&outcome)
                ),
                &outcome,
            );
            return Ok(());
        }
        let done = format!("removed from group {}", self.id);
        in_batches(&nodes, self.nodes.batch, &done, |batch| {
            client.remove_members(self.id, batch)
        })
        .await
    }
}

/// `group leave`.
#[derive(Debug, Args)]
pub struct Leave {
    /// Group ID.
    #[arg(long)]
    pub id: GroupId,
    /// Node ID.
    #[arg(long)]
    pub node: NodeId,
}

impl Leave {
    /// Sends `leaveGroup`.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        let client = context.writer().await?;
        let outcome = client
            .leave_group(self.id, self.node)
            .await
            .wrap_err_with(|| format!("taking node {} out of group {}", self.node, self.id))?;
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
        // roles of the members that do not have both (the paper's groups: none)
        let mut restricted = serde_json::Map::new();
        for node in &members {
            let roles = client
                .member_roles(id, *node)
                .await
                .wrap_err_with(|| format!("reading the roles of node {node}"))?;
            if let Some(roles) = Roles::from_bits(roles).filter(|r| *r != Roles::BOTH) {
                restricted.insert(node.to_string(), roles.to_string().into());
            }
        }
        let members: Vec<String> = members.iter().map(ToString::to_string).collect();
        if self.json {
            let value = serde_json::json!({
                "group": self.id.to_string(),
                "admin": group.admin.to_string(),
                "pendingAdmin": (!group.pendingAdmin.is_zero()).then(|| group.pendingAdmin.to_string()),
                "topicFilter": group.topicFilter,
                "epoch": group.epoch,
                "members": members,
                "roles": restricted,
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
                    members
                        .iter()
                        .map(|m| match restricted.get(m).and_then(|r| r.as_str()) {
                            Some(roles) => format!("{m} ({roles} only)"),
                            None => m.clone(),
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
        }
        Ok(())
    }
}
