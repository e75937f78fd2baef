//! A typed client for every registry function: views, and transactions that wait for their receipt.

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, Bytes};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::client::ClientBuilder;
use alloy::rpc::types::Filter;
use alloy::signers::SignerSync;
use alloy::signers::k256::ecdsa::SigningKey;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolEvent, SolStruct, eip712_domain};
use alloy::transports::layers::RetryBackoffLayer;

use anchormq_core::{GroupId, NodeId, redact_url};

use crate::bindings::IKeyRegistry::{self, IKeyRegistryInstance};
use crate::bindings::NodeKey;
use crate::deployment::Deployment;
use crate::error::ChainError;
use crate::events::PositionedEvent;
use crate::ids::Word;
use crate::logs::{LogReader, RangeConfig};
use crate::state::RegistryState;

/// Connects to `url` (http(s) or ws(s)), with `signer` paying for transactions when given.
pub(crate) async fn connect_provider(
    url: &str,
    signer: Option<PrivateKeySigner>,
) -> Result<DynProvider, ChainError> {
    let unreachable = |source| ChainError::Unreachable {
        url: redact_url(url),
        source,
    };
    // Nonces come from the chain for every transaction: a cached nonce manager skips a nonce when a
    // transaction is refused at gas estimation (a revert), and every later transaction then waits
    // forever behind the gap.
    let builder = ProviderBuilder::default()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id();
    let provider = match signer {
        // A writer (the CLI's transactions) waits out a public RPC's rate limit (HTTP 429, or the
        // JSON-RPC codes providers use for it) instead of failing a half-done batch. Readers do
        // not: the bridge reads `eth_getLogs` in adaptive ranges, and providers answer a range
        // that is too wide with the same -32005 code, which must shrink the range at once.
        Some(signer) => {
            let client = ClientBuilder::default()
                .layer(RetryBackoffLayer::new(
                    RATE_LIMIT_RETRIES,
                    RATE_LIMIT_BACKOFF_MS,
                    u64::MAX,
                ))
                .connect(url)
                .await
                .map_err(unreachable)?;
            builder
                .wallet(EthereumWallet::from(signer))
                .connect_client(client)
                .erased()
        }
        None => builder.connect(url).await.map_err(unreachable)?.erased(),
    };
    Ok(provider)
}

/// Retries of one request a rate-limited writer makes before giving up.
const RATE_LIMIT_RETRIES: u32 = 10;
/// The first wait after a rate-limit answer (a provider's hint, when it gives one, wins).
const RATE_LIMIT_BACKOFF_MS: u64 = 500;

/// Fails fast when the RPC is unreachable, serves another chain, or the address holds no registry.
pub(crate) async fn validate_registry(
    provider: &DynProvider,
    url: &str,
    deployment: &Deployment,
) -> Result<(), ChainError> {
    let actual = provider
        .get_chain_id()
        .await
        .map_err(|source| ChainError::Unreachable {
            url: redact_url(url),
            source,
        })?;
    if actual != deployment.chain_id {
        return Err(ChainError::WrongChain {
            expected: deployment.chain_id,
            actual,
        });
    }
    let code = provider
        .get_code_at(deployment.address)
        .await
        .map_err(|source| ChainError::Rpc {
            call: "eth_getCode",
            source,
        })?;
    if code.is_empty() {
        return Err(ChainError::NoRegistry {
            address: deployment.address,
            chain_id: actual,
        });
    }
    let registry = IKeyRegistry::new(deployment.address, provider.clone());
    let expected = NodeKey::eip712_type_hash_of();
    match registry.NODE_KEY_TYPEHASH().call().await {
        Ok(hash) if hash == expected => Ok(()),
        Ok(hash) => Err(ChainError::NotARegistry {
            address: deployment.address,
            reason: format!("NODE_KEY_TYPEHASH is {hash}, expected {expected}"),
        }),
        Err(error) => Err(ChainError::NotARegistry {
            address: deployment.address,
            reason: error.to_string(),
        }),
    }
}

trait TypeHash {
    fn eip712_type_hash_of() -> B256;
}

impl TypeHash for NodeKey {
    fn eip712_type_hash_of() -> B256 {
        alloy::primitives::keccak256(NodeKey::eip712_encode_type().as_bytes())
    }
}

/// How long to wait for a sent transaction to be mined before giving up with an error.
pub(crate) const RECEIPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// What a mined registry transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxOutcome {
    /// Transaction hash.
    pub tx_hash: B256,
    /// Block it was mined in.
    pub block_number: u64,
    /// Gas it used.
    pub gas_used: u64,
    /// The registry events it emitted, in order.
    pub events: Vec<PositionedEvent>,
}

/// A registry as seen by one account.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    provider: DynProvider,
    registry: IKeyRegistryInstance<DynProvider>,
    deployment: Deployment,
    sender: Option<Address>,
}

/// One node of a `registerNodes` batch: its ID, 33-byte compressed public key and the 65-byte proof
/// of possession that key made for the registering account ([`prove_possession`], run where the
/// device key is, for example on the factory line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRegistration {
    /// The node.
    pub node: NodeId,
    /// Its compressed public key.
    pub public_key: Bytes,
    /// The proof of possession.
    pub proof: Bytes,
}

impl NodeRegistration {
    /// `node` with `node_key`'s public key and its proof of possession for `owner` (key version 1).
    pub fn prove(
        deployment: &Deployment,
        owner: Address,
        node: NodeId,
        node_key: &SigningKey,
    ) -> Result<Self, ChainError> {
        Ok(Self {
            node,
            public_key: compressed(node_key),
            proof: prove_possession(deployment, owner, node, node_key, 1)?,
        })
    }
}

/// The EIP-712 digest a node key signs to prove possession to the registry of `deployment`, for
/// `owner` (spec §1.5). Computed locally: no RPC.
pub fn node_key_digest(
    deployment: &Deployment,
    node: NodeId,
    owner: Address,
    public_key: &[u8],
    key_version: u32,
) -> B256 {
    let domain = eip712_domain! {
        name: "anchormq KeyRegistry",
        version: "1",
        chain_id: deployment.chain_id,
        verifying_contract: deployment.address,
    };
    NodeKey {
        nodeId: node.word(),
        owner,
        publicKey: Bytes::copy_from_slice(public_key),
        keyVersion: key_version,
    }
    .eip712_signing_hash(&domain)
}

/// The 65-byte proof of possession (r || s || v, low s) by `node_key` at `key_version`, for `owner`
/// to anchor it in the registry of `deployment`. Needs only the key: no RPC, no account.
pub fn prove_possession(
    deployment: &Deployment,
    owner: Address,
    node: NodeId,
    node_key: &SigningKey,
    key_version: u32,
) -> Result<Bytes, ChainError> {
    let public_key = node_key.verifying_key().to_encoded_point(true);
    let digest = node_key_digest(deployment, node, owner, public_key.as_bytes(), key_version);
    let signer = PrivateKeySigner::from_signing_key(node_key.clone());
    let signature = signer
        .sign_hash_sync(&digest)
        .map_err(|e| ChainError::Signing(e.to_string()))?;
    Ok(Bytes::from(signature.as_bytes().to_vec()))
}

impl RegistryClient {
    /// Connects and validates the deployment. Without `signer` the client can only read.
    pub async fn connect(
        url: &str,
        deployment: Deployment,
        signer: Option<PrivateKeySigner>,
    ) -> Result<Self, ChainError> {
        let sender = signer.as_ref().map(|s| s.address());
        let provider = connect_provider(url, signer).await?;
        validate_registry(&provider, url, &deployment).await?;
        let registry = IKeyRegistry::new(deployment.address, provider.clone());
        Ok(Self {
            provider,
            registry,
            deployment,
            sender,
        })
    }

    /// The deployment this client talks to.
    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    /// The underlying provider, for raw calls.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The account that sends transactions, if any.
    pub fn sender(&self) -> Option<Address> {
        self.sender
    }

    fn require_sender(&self) -> Result<Address, ChainError> {
        self.sender.ok_or(ChainError::Signing(
            "no operator key was given: transactions need one".into(),
        ))
    }

    /// The EIP-712 digest a node key signs to prove possession (computed locally).
    pub fn node_key_digest(
        &self,
        node: NodeId,
        owner: Address,
        public_key: &[u8],
        key_version: u32,
    ) -> B256 {
        node_key_digest(&self.deployment, node, owner, public_key, key_version)
    }

    /// The 65-byte proof of possession (r || s || v, low s) by `node_key` for `key_version`, for
    /// the sending account as owner.
    pub fn prove_possession(
        &self,
        node: NodeId,
        node_key: &SigningKey,
        key_version: u32,
    ) -> Result<Bytes, ChainError> {
        let owner = self.require_sender()?;
        prove_possession(&self.deployment, owner, node, node_key, key_version)
    }

    /// Registers a batch of nodes in one transaction (`registerNodes`), owned by the sending account;
    /// each proof must name that account as owner.
    pub async fn register_nodes(
        &self,
        batch: &[NodeRegistration],
    ) -> Result<TxOutcome, ChainError> {
        let ids = batch.iter().map(|r| r.node.word()).collect();
        let keys = batch.iter().map(|r| r.public_key.clone()).collect();
        let proofs = batch.iter().map(|r| r.proof.clone()).collect();
        self.send(
            "registerNodes",
            self.registry.registerNodes(ids, keys, proofs),
        )
        .await
    }

    /// Registers `node` with `node_key`'s public key, owned by the sending account.
    pub async fn register_node(
        &self,
        node: NodeId,
        node_key: &SigningKey,
    ) -> Result<TxOutcome, ChainError> {
        let public_key = compressed(node_key);
        let proof = self.prove_possession(node, node_key, 1)?;
        self.send(
            "registerNode",
            self.registry.registerNode(node.word(), public_key, proof),
        )
        .await
    }

    /// Rotates `node` to `new_key` (constant gas: no group is touched).
    pub async fn rotate_key(
        &self,
        node: NodeId,
        new_key: &SigningKey,
    ) -> Result<TxOutcome, ChainError> {
        let current = self.node(node).await?;
        let proof = self.prove_possession(node, new_key, current.keyVersion + 1)?;
        self.send(
            "rotateKey",
            self.registry
                .rotateKey(node.word(), compressed(new_key), proof),
        )
        .await
    }

    /// Revokes `node` for good (constant gas: no group is touched).
    pub async fn revoke_node(&self, node: NodeId) -> Result<TxOutcome, ChainError> {
        self.send("revokeNode", self.registry.revokeNode(node.word()))
            .await
    }

    /// Offers `node` to `new_owner`, who must accept it; `Address::ZERO` withdraws the offer.
    pub async fn offer_node(
        &self,
        node: NodeId,
        new_owner: Address,
    ) -> Result<TxOutcome, ChainError> {
        self.send(
            "transferNodeOwnership",
            self.registry.transferNodeOwnership(node.word(), new_owner),
        )
        .await
    }

    /// Takes ownership of a node offered to the sending account.
    pub async fn accept_node(&self, node: NodeId) -> Result<TxOutcome, ChainError> {
        self.send(
            "acceptNodeOwnership",
            self.registry.acceptNodeOwnership(node.word()),
        )
        .await
    }

    /// Allows (or stops allowing) `admin` to add the sending account's nodes to its groups.
    pub async fn set_admin_approval(
        &self,
        admin: Address,
        approved: bool,
    ) -> Result<TxOutcome, ChainError> {
        self.send(
            "setAdminApproval",
            self.registry.setAdminApproval(admin, approved),
        )
        .await
    }

    /// Whether `owner` approved `admin` to add its nodes.
    pub async fn is_admin_approved(
        &self,
        owner: Address,
        admin: Address,
    ) -> Result<bool, ChainError> {
        self.registry
            .isAdminApproved(owner, admin)
            .call()
            .await
            .map_err(|e| ChainError::from_contract("isAdminApproved", e))
    }

    /// Allows (or stops allowing) `registrar` in a closed registry (operator only).
    pub async fn set_registrar(
        &self,
        registrar: Address,
        allowed: bool,
    ) -> Result<TxOutcome, ChainError> {
        self.send(
            "setRegistrar",
            self.registry.setRegistrar(registrar, allowed),
        )
        .await
    }

    /// The operator of a closed registry, `None` for an open one.
    pub async fn operator(&self) -> Result<Option<Address>, ChainError> {
        let operator = self
            .registry
            .operator()
            .call()
            .await
            .map_err(|e| ChainError::from_contract("operator", e))?;
        Ok((!operator.is_zero()).then_some(operator))
    }

    /// Creates `group` administered by the sending account.
    pub async fn create_group(
        &self,
        group: GroupId,
        topic_filter: &str,
    ) -> Result<TxOutcome, ChainError> {
        self.send(
            "createGroup",
            self.registry
                .createGroup(group.word(), topic_filter.to_owned()),
        )
        .await
    }

    /// Offers the admin role of `group` to `new_admin`, who must accept it; `Address::ZERO`
    /// withdraws the offer.
    pub async fn offer_group_admin(
        &self,
        group: GroupId,
        new_admin: Address,
    ) -> Result<TxOutcome, ChainError> {
        self.send(
            "transferGroupAdmin",
            self.registry.transferGroupAdmin(group.word(), new_admin),
        )
        .await
    }

    /// Takes the admin role of a group offered to the sending account.
    pub async fn accept_group_admin(&self, group: GroupId) -> Result<TxOutcome, ChainError> {
        self.send(
            "acceptGroupAdmin",
            self.registry.acceptGroupAdmin(group.word()),
        )
        .await
    }

    /// Adds `node` to `group`.
    pub async fn add_member(&self, group: GroupId, node: NodeId) -> Result<TxOutcome, ChainError> {
        self.send(
            "addMember",
            self.registry.addMember(group.word(), node.word()),
        )
        .await
    }

    /// Adds `nodes` to `group` in one transaction and one epoch bump (`addMembers`).
    pub async fn add_members(
        &self,
        group: GroupId,
        nodes: &[NodeId],
    ) -> Result<TxOutcome, ChainError> {
        let words = nodes.iter().map(|n| n.word()).collect();
        self.send("addMembers", self.registry.addMembers(group.word(), words))
            .await
    }

    /// Adds `nodes` to `group` with `roles` (1 read, 2 write, 3 both) in one transaction and one
    /// epoch bump (`addMembersWithRoles`).
    pub async fn add_members_with_roles(
        &self,
        group: GroupId,
        nodes: &[NodeId],
        roles: u8,
    ) -> Result<TxOutcome, ChainError> {
        let words = nodes.iter().map(|n| n.word()).collect();
        self.send(
            "addMembersWithRoles",
            self.registry
                .addMembersWithRoles(group.word(), words, roles),
        )
        .await
    }

    /// Sets the roles of members `nodes` of `group` in one transaction and one epoch bump
    /// (`setMemberRoles`).
    pub async fn set_member_roles(
        &self,
        group: GroupId,
        nodes: &[NodeId],
        roles: u8,
    ) -> Result<TxOutcome, ChainError> {
        let words = nodes.iter().map(|n| n.word()).collect();
        self.send(
            "setMemberRoles",
            self.registry.setMemberRoles(group.word(), words, roles),
        )
        .await
    }

    /// Removes `nodes` from `group` in one transaction and one epoch bump (`removeMembers`).
    pub async fn remove_members(
        &self,
        group: GroupId,
        nodes: &[NodeId],
    ) -> Result<TxOutcome, ChainError> {
        let words = nodes.iter().map(|n| n.word()).collect();
        self.send(
            "removeMembers",
            self.registry.removeMembers(group.word(), words),
        )
        .await
    }

    /// Removes `node` from `group`.
    pub async fn remove_member(
        &self,
        group: GroupId,
        node: NodeId,
    ) -> Result<TxOutcome, ChainError> {
        self.send(
            "removeMember",
            self.registry.removeMember(group.word(), node.word()),
        )
        .await
    }

    /// The node's owner takes it out of `group`.
    pub async fn leave_group(&self, group: GroupId, node: NodeId) -> Result<TxOutcome, ChainError> {
        self.send(
            "leaveGroup",
            self.registry.leaveGroup(group.word(), node.word()),
        )
        .await
    }

    /// The node as stored on chain.
    pub async fn node(&self, node: NodeId) -> Result<IKeyRegistry::Node, ChainError> {
        self.registry
            .getNode(node.word())
            .call()
            .await
            .map_err(|e| ChainError::from_contract("getNode", e))
    }

    /// The group as stored on chain.
    pub async fn group(&self, group: GroupId) -> Result<IKeyRegistry::Group, ChainError> {
        self.registry
            .getGroup(group.word())
            .call()
            .await
            .map_err(|e| ChainError::from_contract("getGroup", e))
    }

    /// Whether `node` is a member of `group`.
    pub async fn is_member(&self, group: GroupId, node: NodeId) -> Result<bool, ChainError> {
        self.registry
            .isMember(group.word(), node.word())
            .call()
            .await
            .map_err(|e| ChainError::from_contract("isMember", e))
    }

    /// What `node` may do in `group`: 1 read, 2 write, 3 both; 0 when not a member.
    pub async fn member_roles(&self, group: GroupId, node: NodeId) -> Result<u8, ChainError> {
        self.registry
            .memberRoles(group.word(), node.word())
            .call()
            .await
            .map_err(|e| ChainError::from_contract("memberRoles", e))
    }

    /// All members of `group`, read page by page.
    pub async fn members(&self, group: GroupId) -> Result<Vec<NodeId>, ChainError> {
        const PAGE: u64 = 500;
        let mut members = Vec::new();
        loop {
            let page = self
                .registry
                .groupMembers(
                    group.word(),
                    alloy::primitives::U256::from(members.len()),
                    alloy::primitives::U256::from(PAGE),
                )
                .call()
                .await
                .map_err(|e| ChainError::from_contract("groupMembers", e))?;
            let done = (page.len() as u64) < PAGE;
            members.extend(page.into_iter().map(|id| NodeId::from_bytes(id.0)));
            if done {
                return Ok(members);
            }
        }
    }

    /// The contract's own digest for a proof of possession (to check local signing against).
    pub async fn contract_node_key_digest(
        &self,
        node: NodeId,
        owner: Address,
        public_key: &[u8],
        key_version: u32,
    ) -> Result<B256, ChainError> {
        self.registry
            .nodeKeyDigest(
                node.word(),
                owner,
                Bytes::copy_from_slice(public_key),
                key_version,
            )
            .call()
            .await
            .map_err(|e| ChainError::from_contract("nodeKeyDigest", e))
    }

    /// The chain head's block number.
    pub async fn head(&self) -> Result<u64, ChainError> {
        self.provider
            .get_block_number()
            .await
            .map_err(|source| ChainError::Rpc {
                call: "eth_blockNumber",
                source,
            })
    }

    /// Every registry event in `from..=to` (default: deploy block to head; `to` is clamped to the
    /// head), in chain order, read in bounded ranges.
    pub async fn events(
        &self,
        from: Option<u64>,
        to: Option<u64>,
    ) -> Result<Vec<PositionedEvent>, ChainError> {
        let head = self.head().await?;
        self.events_up_to(from, to.unwrap_or(head).min(head)).await
    }

    /// Every registry event in `from..=to` (default `from`: the deploy block).
    async fn events_up_to(
        &self,
        from: Option<u64>,
        to: u64,
    ) -> Result<Vec<PositionedEvent>, ChainError> {
        let from = from.unwrap_or(self.deployment.deploy_block);
        if from > to {
            return Ok(Vec::new());
        }
        let logs = LogReader::new(RangeConfig::default())
            .read(
                &self.provider,
                &Filter::new(),
                self.deployment.address,
                from,
                to,
            )
            .await
            .map_err(|source| ChainError::Rpc {
                call: "eth_getLogs",
                source,
            })?;
        logs.iter()
            .map(|log| PositionedEvent::from_log(log).map_err(ChainError::from))
            .collect()
    }

    /// The registry's state rebuilt from all its events up to the head, and that head.
    pub async fn state(&self) -> Result<(RegistryState, u64), ChainError> {
        let head = self.head().await?;
        let mut state = RegistryState::default();
        for event in self.events_up_to(None, head).await? {
            state.apply(&event)?;
        }
        Ok((state, head))
    }

    /// The timestamp of block `number`, in seconds.
    pub async fn block_timestamp(&self, number: u64) -> Result<u64, ChainError> {
        let block = self
            .provider
            .get_block_by_number(number.into())
            .await
            .map_err(|source| ChainError::Rpc {
                call: "eth_getBlockByNumber",
                source,
            })?
            .ok_or(ChainError::Missing {
                what: format!("block {number}"),
            })?;
        Ok(block.header.timestamp)
    }

    /// The account that sent transaction `tx`.
    pub async fn transaction_sender(&self, tx: B256) -> Result<Address, ChainError> {
        let receipt = self
            .provider
            .get_transaction_receipt(tx)
            .await
            .map_err(|source| ChainError::Rpc {
                call: "eth_getTransactionReceipt",
                source,
            })?
            .ok_or(ChainError::Missing {
                what: format!("the receipt of {tx}"),
            })?;
        Ok(receipt.from)
    }

    /// The groups `node` is recorded in now, strictly ascending, rebuilt from its MemberAdded/MemberRemoved logs.
    pub async fn node_groups(&self, node: NodeId) -> Result<Vec<GroupId>, ChainError> {
        let head = self.head().await?;
        let filter = Filter::new()
            .event_signature(vec![
                IKeyRegistry::MemberAdded::SIGNATURE_HASH,
                IKeyRegistry::MemberRemoved::SIGNATURE_HASH,
            ])
            .topic2(node.word());
        let logs = LogReader::new(RangeConfig::default())
            .read(
                &self.provider,
                &filter,
                self.deployment.address,
                self.deployment.deploy_block,
                head,
            )
            .await
            .map_err(|source| ChainError::Rpc {
                call: "eth_getLogs",
                source,
            })?;
        let mut groups = std::collections::BTreeSet::new();
        for log in &logs {
            match PositionedEvent::from_log(log)?.event {
                crate::RegistryEvent::MemberAdded { group, .. } => {
                    groups.insert(group);
                }
                crate::RegistryEvent::MemberRemoved { group, .. } => {
                    groups.remove(&group);
                }
                _ => {}
            }
        }
        Ok(groups
            .into_iter()
            .map(|id| GroupId::from_bytes(id.0))
            .collect())
    }

    async fn send<C: SolCall>(
        &self,
        call: &'static str,
        builder: alloy::contract::SolCallBuilder<&DynProvider, C>,
    ) -> Result<TxOutcome, ChainError> {
        self.require_sender()?;
        let pending = builder
            .send()
            .await
            .map_err(|e| ChainError::from_contract(call, e))?;
        let receipt = pending
            .with_timeout(Some(RECEIPT_TIMEOUT))
            .get_receipt()
            .await
            .map_err(|source| ChainError::Receipt {
                call,
                source: Box::new(source),
            })?;
        if !receipt.status() {
            return Err(ChainError::Failed {
                tx_hash: receipt.transaction_hash,
            });
        }
        let events = receipt
            .logs()
            .iter()
            .filter(|log| log.address() == self.deployment.address)
            .map(PositionedEvent::from_log)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TxOutcome {
            tx_hash: receipt.transaction_hash,
            block_number: receipt.block_number.unwrap_or_default(),
            gas_used: receipt.gas_used,
            events,
        })
    }
}

fn compressed(key: &SigningKey) -> Bytes {
    Bytes::copy_from_slice(key.verifying_key().to_encoded_point(true).as_bytes())
}
