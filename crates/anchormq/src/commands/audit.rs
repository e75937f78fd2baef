//! `anchormq audit`: the history of keys and memberships, read straight from the registry's logs.

use std::collections::HashMap;

use alloy::primitives::B256;
use anchormq_chain::{RegistryClient, RegistryEvent, show_id};
use anchormq_core::{GroupId, NodeId, Roles};
use clap::{Args, ValueEnum};
use eyre::WrapErr;
use serde::Serialize;

use crate::context::Context;
use crate::output::{csv_field, print_table, utc_time};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// One JSON array.
    Json,
    /// Comma-separated values with a header line.
    Csv,
}

/// `audit`.
#[derive(Debug, Args)]
pub struct AuditCommand {
    /// Only events about this node.
    #[arg(long)]
    pub node: Option<NodeId>,
    /// Only events about this group.
    #[arg(long)]
    pub group: Option<GroupId>,
    /// First block to read (default: the registry's deploy block).
    #[arg(long, value_name = "B")]
    pub from_block: Option<u64>,
    /// Last block to read (default: the chain head).
    #[arg(long, value_name = "B")]
    pub to_block: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Block number.
    pub block: u64,
    /// Block timestamp, UTC.
    pub time: String,
    /// Transaction hash.
    pub tx: String,
    /// Log index in the block.
    pub log_index: u64,
    /// Account that sent the transaction.
    pub actor: String,
    /// Event name.
    pub event: String,
    /// Node the event is about, if any.
    pub node: Option<String>,
    /// Group the event is about, if any.
    pub group: Option<String>,
    /// What changed, in words.
    pub details: String,
}

impl AuditCommand {
    /// Reads and prints the history.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        let client = context.reader().await?;
        let node = self.node.map(|n| B256::from(*n.as_bytes()));
        let group = self.group.map(|g| B256::from(*g.as_bytes()));
        let entries = history(&client, self.from_block, self.to_block, |event| {
            node.is_none_or(|n| event.node() == Some(n))
                && group.is_none_or(|g| event.group() == Some(g))
        })
        .await?;
        match self.format {
            Format::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
            Format::Csv => {
                println!("block,time,tx,log_index,actor,event,node,group,details");
                for e in &entries {
                    let fields = [
                        e.block.to_string(),
                        e.time.clone(),
                        e.tx.clone(),
                        e.log_index.to_string(),
                        e.actor.clone(),
                        e.event.clone(),
                        e.node.clone().unwrap_or_default(),
                        e.group.clone().unwrap_or_default(),
                        e.details.clone(),
                    ];
                    let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
                    println!("{}", line.join(","));
                }
            }
            Format::Table => {
                let rows: Vec<Vec<String>> = entries
                    .iter()
                    .map(|e| {
                        vec![
                            e.block.to_string(),
                            e.time.clone(),
                            short_hash(&e.tx),
                            short_hash(&e.actor),
                            e.event.clone(),
                            e.details.clone(),
                        ]
                    })
                    .collect();
                print_table(&["BLOCK", "TIME", "TX", "ACTOR", "EVENT", "DETAILS"], &rows);
            }
        }
        Ok(())
    }
}

fn short_hash(hex: &str) -> String {
    if hex.len() > 14 {
        format!("{}…{}", &hex[..8], &hex[hex.len() - 4..])
    } else {
        hex.to_owned()
    }
}

/// The registry's events in `from..=to` (deploy block .. head by default) that `keep` selects,
/// with block times and the sending account of each transaction.
pub async fn history(
    client: &RegistryClient,
    from: Option<u64>,
    to: Option<u64>,
    keep: impl Fn(&RegistryEvent) -> bool,
) -> eyre::Result<Vec<AuditEntry>> {
    let events = client
        .events(from, to)
        .await
        .wrap_err("reading the registry's logs")?;
    let mut times: HashMap<u64, u64> = HashMap::new();
    let mut senders: HashMap<B256, String> = HashMap::new();
    let mut entries = Vec::new();
    for positioned in events {
        if !keep(&positioned.event) {
            continue;
        }
        let at = positioned.position;
        if let std::collections::hash_map::Entry::Vacant(slot) = times.entry(at.block_number) {
            slot.insert(client.block_timestamp(at.block_number).await?);
        }
        if let std::collections::hash_map::Entry::Vacant(slot) = senders.entry(at.tx_hash) {
            slot.insert(client.transaction_sender(at.tx_hash).await?.to_string());
        }
        entries.push(AuditEntry {
            block: at.block_number,
            time: utc_time(times[&at.block_number]),
            tx: at.tx_hash.to_string(),
            log_index: at.log_index,
            actor: senders[&at.tx_hash].clone(),
            event: positioned.event.name().to_owned(),
            node: positioned.event.node().map(|n| show_id(&n)),
            group: positioned.event.group().map(|g| show_id(&g)),
            details: details(&positioned.event),
        });
    }
    Ok(entries)
}

/// What an event changed, in words.
pub fn details(event: &RegistryEvent) -> String {
    match event {
        RegistryEvent::NodeRegistered {
            node,
            owner,
            public_key,
            key_version,
        } => format!(
            "node {} registered by owner {owner}, key v{key_version} 0x{}",
            show_id(node),
            hex::encode(public_key)
        ),
        RegistryEvent::NodeKeyRotated {
            node,
            public_key,
            key_version,
            ..
        } => format!(
            "node {} key rotated to v{key_version} 0x{}",
            show_id(node),
            hex::encode(public_key)
        ),
        RegistryEvent::NodeRevoked { node, .. } => format!("node {} revoked", show_id(node)),
        RegistryEvent::NodeOwnershipTransferred { node, from, to } => {
            format!("node {} owner {from} -> {to}", show_id(node))
        }
        RegistryEvent::GroupCreated {
            group,
            admin,
            topic_filter,
        } => format!(
            "group {} created, admin {admin}, topic filter {topic_filter:?}",
            show_id(group)
        ),
        RegistryEvent::GroupAdminTransferred { group, from, to } => {
            format!("group {} admin {from} -> {to}", show_id(group))
        }
        RegistryEvent::MemberAdded {
            group, node, epoch, ..
        } => format!(
            "node {} added to group {} (epoch {epoch})",
            show_id(node),
            show_id(group)
        ),
        RegistryEvent::MemberRolesSet {
            group,
            node,
            roles,
            epoch,
            ..
        } => format!(
            "node {} in group {} now {} (epoch {epoch})",
            show_id(node),
            show_id(group),
            Roles::from_bits(*roles).map_or_else(|| format!("roles {roles}"), |r| r.to_string())
        ),
        RegistryEvent::MemberRemoved {
            group, node, epoch, ..
        } => format!(
            "node {} removed from group {} (epoch {epoch})",
            show_id(node),
            show_id(group)
        ),
        RegistryEvent::NodeOwnershipTransferStarted {
            node,
            owner,
            pending,
        } => {
            if pending.is_zero() {
                format!("node {} offer withdrawn by owner {owner}", show_id(node))
            } else {
                format!("node {} offered by {owner} to {pending}", show_id(node))
            }
        }
        RegistryEvent::GroupAdminTransferStarted {
            group,
            admin,
            pending,
        } => {
            if pending.is_zero() {
                format!("group {} offer withdrawn by admin {admin}", show_id(group))
            } else {
                format!("group {} offered by {admin} to {pending}", show_id(group))
            }
        }
        RegistryEvent::AdminApprovalSet {
            owner,
            admin,
            approved,
        } => {
            if *approved {
                format!("owner {owner} approved admin {admin} to add its nodes")
            } else {
                format!("owner {owner} withdrew the approval of admin {admin}")
            }
        }
        RegistryEvent::OperatorTransferred { from, to } => format!("operator {from} -> {to}"),
        RegistryEvent::OperatorTransferStarted { operator, pending } => {
            format!("operator role offered by {operator} to {pending}")
        }
        RegistryEvent::RegistrarSet { registrar, allowed } => {
            if *allowed {
                format!("registrar {registrar} allowed")
            } else {
                format!("registrar {registrar} removed")
            }
        }
    }
}
