//! `anchormq node …`: make a node key; register, rotate, revoke, transfer and show nodes; approve
//! the group admins that may add the operator's nodes.

use std::io::Write;
use std::path::PathBuf;

use anchormq_chain::{Address, NodeRegistration, RegistryEvent, TxOutcome, prove_possession};
use anchormq_core::{NodeId, NodeSecretKey};
use clap::{Args, Subcommand};
use eyre::{WrapErr, eyre};

use crate::context::{Context, load_node_key, signing_key};

/// Node commands.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Make a new node key file (mode 0600; never overwrites).
    Keygen(Keygen),
    /// Register a node with its key, owned by the operator account; or a fleet from a CSV file, in
    /// batches (one transaction each).
    Register(Register),
    /// Make a node's proof of possession for an owner account, where the device key is (a factory
    /// line): prints the `id,public_key,proof` line `node register --csv` takes. No RPC needed with
    /// --chain-id and --registry.
    Prove(Prove),
    /// Replace a node's key (constant gas; members re-key on their own).
    Rotate(Rotate),
    /// Revoke a node for good (constant gas; it can read and send nothing after).
    Revoke(Revoke),
    /// Offer a node to another account; it becomes the owner when that account runs `node accept`.
    Transfer(Transfer),
    /// Take ownership of a node offered to the operator account.
    Accept(Accept),
    /// Let a group admin add the operator account's nodes to its groups (or stop it with --revoke).
    ApproveAdmin(ApproveAdmin),
    /// Show a node as the registry stores it.
    Show(Show),
}

impl NodeCommand {
    /// Runs the node command.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        match self {
            Self::Keygen(c) => c.execute(),
            Self::Register(c) => c.execute(context).await,
            Self::Prove(c) => c.execute(context).await,
            Self::Rotate(c) => c.execute(context).await,
            Self::Revoke(c) => c.execute(context).await,
            Self::Transfer(c) => c.execute(context).await,
            Self::Accept(c) => c.execute(context).await,
            Self::ApproveAdmin(c) => c.execute(context).await,
            Self::Show(c) => c.execute(context).await,
        }
    }
}

/// `node keygen`.
#[derive(Debug, Args)]
pub struct Keygen {
    /// Where to write the key; must not exist yet.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

impl Keygen {
    /// Writes a fresh key and prints its public key.
    pub fn execute(self) -> eyre::Result<()> {
        let key = NodeSecretKey::generate(&mut rand_core::OsRng);
        write_new_key_file(&self.out, &key)?;
        println!("{}", key.public_key());
        eprintln!("wrote node key to {} (mode 0600)", self.out.display());
        Ok(())
    }
}

/// Creates `path` readable by its owner only and writes the key; refuses an existing file.
pub fn write_new_key_file(path: &std::path::Path, key: &NodeSecretKey) -> eyre::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            eyre!(
                "{} already exists; refusing to overwrite a key (--out)",
                path.display()
            )
        } else {
            eyre!("cannot create key file {} (--out): {e}", path.display())
        }
    })?;
    file.write_all(key.to_key_file().as_bytes())
        .and_then(|()| file.sync_all())
        .wrap_err_with(|| format!("cannot write key file {}", path.display()))
}

/// `node register`.
#[derive(Debug, Args)]
pub struct Register {
    /// Node ID (up to 32 ASCII characters, or 0x + 64 hex).
    #[arg(long, required_unless_present = "csv", conflicts_with = "csv")]
    pub id: Option<NodeId>,
    /// The node's key file (from `node keygen`).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "csv",
        conflicts_with = "csv"
    )]
    pub key: Option<PathBuf>,
    /// A fleet: one node a line, `id,key_file` (the key stays here) or `id,public_key,proof` (from
    /// `node prove` where the key is); blank lines and `#` comments ignored.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Nodes per transaction with --csv (about 62,000 gas a node; at most 250 keeps a
    /// transaction under Ethereum's 16,777,216-gas cap, EIP-7825).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=250))]
    pub batch: u32,
}

impl Register {
    /// Sends `registerNode` with the key's proof of possession, or `registerNodes` in batches.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        let (Some(id), Some(path)) = (self.id, &self.key) else {
            let csv = self
                .csv
                .as_deref()
                .ok_or_else(|| eyre!("--csv or --id and --key"))?;
            return register_fleet(context, csv, self.batch).await;
        };
        let key = load_node_key(path)?;
        let client = context.writer().await?;
        let outcome = client
            .register_node(id, &signing_key(&key)?)
            .await
            .wrap_err_with(|| format!("registering node {id}"))?;
        report(
            &format!("registered node {id} with key {}", key.public_key()),
            &outcome,
        );
        Ok(())
    }
}

/// Reads a fleet CSV (see [`Register::csv`]) into registrations for `owner`.
fn read_fleet(
    path: &std::path::Path,
    deployment: &anchormq_chain::Deployment,
    owner: Address,
) -> eyre::Result<Vec<NodeRegistration>> {
    let text =
        std::fs::read_to_string(path).wrap_err_with(|| format!("--csv {}", path.display()))?;
    let mut fleet = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let at = || format!("--csv {} line {}", path.display(), index + 1);
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let node: NodeId = fields[0]
            .parse()
            .map_err(|e| eyre!("{}: node ID: {e}", at()))?;
        let registration = match fields[..] {
            [_, key_file] => {
                let base = path.parent().unwrap_or(std::path::Path::new("."));
                let key = load_node_key(&base.join(key_file)).wrap_err_with(at)?;
                NodeRegistration::prove(deployment, owner, node, &signing_key(&key)?)?
            }
            [_, public_key, proof] => {
                let hex = |field: &str, what: &str, len: usize| {
                    let bytes = hex::decode(field.trim_start_matches("0x"))
                        .ok()
                        .filter(|b| b.len() == len)
                        .ok_or_else(|| eyre!("{}: {what} is not {len} bytes of hex", at()))?;
                    eyre::Ok(bytes)
                };
                NodeRegistration {
                    node,
                    public_key: hex(public_key, "public key", 33)?.into(),
                    proof: hex(proof, "proof", 65)?.into(),
                }
            }
            _ => eyre::bail!(
                "{}: expected `id,key_file` or `id,public_key,proof`, got {} fields",
                at(),
                fields.len()
            ),
        };
        fleet.push(registration);
    }
    Ok(fleet)
}

/// `node register --csv`: every node of the file, in batches.
async fn register_fleet(context: &Context, csv: &std::path::Path, batch: u32) -> eyre::Result<()> {
    let client = context.writer().await?;
    let owner = context.signer()?.address();
    let fleet = read_fleet(csv, client.deployment(), owner)?;
    in_batches(&fleet, batch, "registered", |chunk| {
        client.register_nodes(chunk)
    })
    .await
}

/// Sends `send` for each batch of `items` in turn and reports each ("N node(s) `done`"); on a
/// failure says which items the earlier transactions already changed and which were not sent.
pub(crate) async fn in_batches<'a, T, F, Fut>(
    items: &'a [T],
    batch: u32,
    done: &str,
    send: F,
) -> eyre::Result<()>
where
    F: Fn(&'a [T]) -> Fut,
    Fut: std::future::Future<Output = Result<TxOutcome, anchormq_chain::ChainError>>,
{
    let size = usize::try_from(batch).unwrap_or(1).max(1);
    let mut changed = 0;
    for chunk in items.chunks(size) {
        let outcome = send(chunk).await.wrap_err_with(|| {
            let earlier = if changed == 0 {
                String::new()
            } else {
                format!(" (the first {changed} were)")
            };
            format!(
                "nodes {}-{} of {} were not {done}{earlier}",
                changed + 1,
                items.len(),
                items.len()
            )
        })?;
        changed += chunk.len();
        report(
            &format!(
                "{} node(s) {done}{} ({changed} of {})",
                chunk.len(),
                epoch_of(&outcome),
                items.len()
            ),
            &outcome,
        );
    }
    Ok(())
}

/// The group's new epoch from a membership change's events, as " (epoch N)"; empty for others.
pub(crate) fn epoch_of(outcome: &TxOutcome) -> String {
    outcome
        .events
        .iter()
        .find_map(|e| match e.event {
            RegistryEvent::MemberAdded { epoch, .. }
            | RegistryEvent::MemberRolesSet { epoch, .. }
            | RegistryEvent::MemberRemoved { epoch, .. } => Some(epoch),
            _ => None,
        })
        .map_or_else(String::new, |epoch| format!(" (epoch {epoch})"))
}

/// `node prove`.
#[derive(Debug, Args)]
pub struct Prove {
    /// Node ID.
    #[arg(long)]
    pub id: NodeId,
    /// The node's key file.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The account that will register the node (the operator's address).
    #[arg(long)]
    pub owner: Address,
}

impl Prove {
    /// Prints `id,public_key,proof` for key version 1.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        let deployment = context.deployment().await?;
        let key = signing_key(&load_node_key(&self.key)?)?;
        let proof = prove_possession(&deployment, self.owner, self.id, &key, 1)?;
        let public_key = key.verifying_key().to_encoded_point(true);
        println!(
            "{},{},{}",
            self.id,
            hex::encode(public_key.as_bytes()),
            hex::encode(&proof)
        );
        Ok(())
    }
}

/// `node rotate`.
#[derive(Debug, Args)]
pub struct Rotate {
    /// Node ID.
    #[arg(long)]
    pub id: NodeId,
    /// The NEW key file.
    #[arg(long, value_name = "NEWFILE")]
    pub key: PathBuf,
}

impl Rotate {
    /// Sends `rotateKey` signed by the new key.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        let key = load_node_key(&self.key)?;
        let client = context.writer().await?;
        let outcome = client
            .rotate_key(self.id, &signing_key(&key)?)
            .await
            .wrap_err_with(|| format!("rotating the key of node {}", self.id))?;
        report(
            &format!("node {} now uses key {}", self.id, key.public_key()),
            &outcome,
        );
        Ok(())
    }
}

/// `node revoke`.
#[derive(Debug, Args)]
pub struct Revoke {
    /// Node ID.
    #[arg(long)]
    pub id: NodeId,
}

impl Revoke {
    /// Sends `revokeNode`.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        let client = context.writer().await?;
        let outcome = client
            .revoke_node(self.id)
            .await
            .wrap_err_with(|| format!("revoking node {}", self.id))?;
        report(&format!("revoked node {}", self.id), &outcome);
        Ok(())
    }
}

/// `node transfer`.
#[derive(Debug, Args)]
pub struct Transfer {
    /// Node ID.
    #[arg(long)]
    pub id: NodeId,
    /// The account the node is offered to (0x0000000000000000000000000000000000000000 withdraws
    /// the offer).
    #[arg(long, value_name = "ADDRESS")]
    pub to: Address,
}

impl Transfer {
    /// Sends `transferNodeOwnership` (an offer: nothing moves until the new owner accepts).
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        let client = context.writer().await?;
        let outcome = client
            .offer_node(self.id, self.to)
            .await
            .wrap_err_with(|| format!("offering node {} to {}", self.id, self.to))?;
        let summary = if self.to.is_zero() {
            format!("withdrew the offer of node {}", self.id)
        } else {
            format!(
                "offered node {} to {}; it moves when that account runs `anchormq node accept --id {}`",
                self.id, self.to, self.id
            )
        };
        report(&summary, &outcome);
        Ok(())
    }
}

/// `node accept`.
#[derive(Debug, Args)]
pub struct Accept {
    /// Node ID.
    #[arg(long)]
    pub id: NodeId,
}

impl Accept {
    /// Sends `acceptNodeOwnership`.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        let client = context.writer().await?;
        let outcome = client
            .accept_node(self.id)
            .await
            .wrap_err_with(|| format!("accepting node {}", self.id))?;
        report(&format!("now the owner of node {}", self.id), &outcome);
        Ok(())
    }
}

/// `node approve-admin`.
#[derive(Debug, Args)]
pub struct ApproveAdmin {
    /// The group admin account.
    #[arg(long, value_name = "ADDRESS")]
    pub admin: Address,
    /// Withdraw the approval instead (existing memberships stay; `group leave` ends them).
    #[arg(long)]
    pub revoke: bool,
}

impl ApproveAdmin {
    /// Sends `setAdminApproval`.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        let client = context.writer().await?;
        let outcome = client
            .set_admin_approval(self.admin, !self.revoke)
            .await
            .wrap_err_with(|| format!("setting the approval of admin {}", self.admin))?;
        let summary = if self.revoke {
            format!(
                "admin {} may no longer add this account's nodes",
                self.admin
            )
        } else {
            format!(
                "admin {} may now add this account's nodes to its groups",
                self.admin
            )
        };
        report(&summary, &outcome);
        Ok(())
    }
}

/// `node show`.
#[derive(Debug, Args)]
pub struct Show {
    /// Node ID.
    #[arg(long)]
    pub id: NodeId,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

impl Show {
    /// Prints owner, key version, status, public key and groups.
    pub async fn execute(self, context: &Context) -> eyre::Result<()> {
        let client = context.reader().await?;
        let id = self.id;
        let node = client
            .node(id)
            .await
            .wrap_err_with(|| format!("reading node {}", self.id))?;
        let groups: Vec<String> = client
            .node_groups(id)
            .await
            .wrap_err_with(|| format!("reading the groups of node {}", self.id))?
            .iter()
            .map(ToString::to_string)
            .collect();
        let status = match node.status as u8 {
            1 => "active",
            2 => "revoked",
            _ => "unknown",
        };
        let public_key = format!("0x{}", hex::encode(&node.publicKey));
        if self.json {
            let value = serde_json::json!({
                "node": self.id.to_string(),
                "owner": node.owner.to_string(),
                "pendingOwner": (!node.pendingOwner.is_zero()).then(|| node.pendingOwner.to_string()),
                "keyVersion": node.keyVersion,
                "status": status,
                "publicKey": public_key,
                "groups": groups,
            });
            println!("{value}");
        } else {
            println!("node:        {}", self.id);
            println!("owner:       {}", node.owner);
            if !node.pendingOwner.is_zero() {
                println!("offered to:  {}", node.pendingOwner);
            }
            println!("key version: {}", node.keyVersion);
            println!("status:      {status}");
            println!("public key:  {public_key}");
            println!(
                "groups:      {}",
                if groups.is_empty() {
                    "(none)".to_owned()
                } else {
                    groups.join(", ")
                }
            );
        }
        Ok(())
    }
}

/// Prints what a transaction did: a summary, the tx hash and block.
pub fn report(summary: &str, outcome: &TxOutcome) {
    println!("{summary}");
    println!("tx {} (block {})", outcome.tx_hash, outcome.block_number);
}
