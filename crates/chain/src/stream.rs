//! A complete, ordered stream of registry events that survives reconnects and follows reorgs.
//!
//! `eth_getLogs` over block ranges is the only source of events: it is complete by construction.
//! A WebSocket `newHeads` subscription (or a poll timer over HTTP) only says when to ask again, so a
//! subscription that drops or misses heads delays events but never loses them. Each batch remembers
//! the hash of its last block; when that hash changes, the chain reorganised, and the stream walks back
//! through the hashes it remembers to the fork point and tells its consumer to undo what came after.

use std::collections::VecDeque;
use std::time::Duration;

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::B256;
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{Filter, Log};
use alloy::transports::TransportError;
use serde::{Deserialize, Serialize};

use crate::client::{connect_provider, validate_registry};
use crate::deployment::Deployment;
use crate::error::ChainError;
use crate::events::PositionedEvent;
use crate::heads::Heads;
use crate::logs::{LogReader, RangeConfig};
use anchormq_core::redact_url;

/// Which blocks the stream treats as settled enough to deliver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Finality {
    /// The head (less `confirmations`).
    #[default]
    Latest,
    /// The node's `safe` block (post-merge Ethereum: justified by the beacon chain).
    Safe,
    /// The node's `finalized` block: no reorg can remove it short of a consensus failure.
    Finalized,
}

impl std::str::FromStr for Finality {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "latest" => Ok(Self::Latest),
            "safe" => Ok(Self::Safe),
            "finalized" => Ok(Self::Finalized),
            other => Err(format!(
                "{other:?} is not a finality: latest, safe or finalized"
            )),
        }
    }
}

/// How the stream reads the chain.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Which block is the newest the stream delivers: the head, or the node's `safe` or
    /// `finalized` block.
    pub finality: Finality,
    /// Blocks a log must be buried under, below that block, before it is delivered (0: none).
    pub confirmations: u64,
    /// How often to look for new blocks over HTTP, and the longest wait for a WebSocket head.
    pub poll_interval: Duration,
    /// Adaptive `eth_getLogs` ranges.
    pub ranges: RangeConfig,
    /// How many recent batch ends to remember for finding a fork point; a deeper reorg is an error.
    pub reorg_window: usize,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// How many of the RPC endpoints (the stream's and its witnesses') must answer a range
    /// alike, block hash and logs, before it is delivered (1: the stream's endpoint alone).
    pub quorum: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            finality: Finality::Latest,
            confirmations: 0,
            poll_interval: Duration::from_millis(500),
            ranges: RangeConfig::default(),
            reorg_window: 256,
            max_backoff: Duration::from_secs(10),
            quorum: 1,
        }
    }
}

/// The last block of a delivered batch, by number and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Block number.
    pub block_number: u64,
    /// Its hash when it was read.
    pub block_hash: B256,
}

/// Where the stream stands: persist it after consuming an item, pass it back to resume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPosition {
    /// The next block to read.
    pub next_block: u64,
    /// Ends of recent batches, oldest first, for finding fork points.
    pub recent: Vec<Cursor>,
}

/// What the stream delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    /// Every registry event of the blocks up to and including `cursor`, in chain order (maybe none).
    Batch {
        /// The events.
        events: Vec<PositionedEvent>,
        /// The last block covered.
        cursor: Cursor,
        /// The chain head when the batch was read.
        head: u64,
    },
    /// The chain reorganised: undo every event after block `to.block_number`; the stream goes on
    /// from the block after it.
    Rewind {
        /// The last block both chains share.
        to: Cursor,
    },
}

/// Counters for monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Latest head seen.
    pub head: u64,
    /// Reconnections after a failed RPC call.
    pub reconnects: u64,
    /// Log ranges the RPC refused (and that were retried smaller).
    pub range_refusals: u64,
    /// Reorgs followed.
    pub reorgs: u64,
    /// Reads put off because fewer endpoints than the quorum agreed.
    pub disagreements: u64,
}

/// A reorg deeper than the remembered window, or other unrecoverable stream failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The chain changed below every remembered block: the mirrored state cannot be repaired in place.
    #[error(
        "the chain reorganised deeper than the {window} remembered batches (below block {oldest}); resync from the deployment block"
    )]
    ReorgTooDeep {
        /// Remembered batch ends.
        window: usize,
        /// Oldest remembered block.
        oldest: u64,
    },
    /// Connecting or validating failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The quorum asks for more endpoints than there are.
    #[error("a quorum of {quorum} needs at least {quorum} RPC endpoints; {endpoints} given")]
    Quorum {
        /// The quorum asked for.
        quorum: usize,
        /// Endpoints given.
        endpoints: usize,
    },
}

/// The registry's event stream. Drive it with [`EventStream::next`].
#[derive(Debug)]
pub struct EventStream {
    url: String,
    deployment: Deployment,
    config: StreamConfig,
    provider: DynProvider,
    heads: Option<Heads>,
    reader: LogReader,
    /// Further endpoints that must corroborate what this one reads (see [`StreamConfig::quorum`]).
    witnesses: Vec<Witness>,
    position: StreamPosition,
    stats: StreamStats,
}

/// An RPC endpoint that checks the stream's reads.
#[derive(Debug)]
struct Witness {
    url: String,
    provider: DynProvider,
    reader: LogReader,
}

impl EventStream {
    /// Connects, checks that the RPC serves the deployment's chain and that the registry is there, and
    /// resumes from `resume` (or starts at the deployment block).
    pub async fn connect(
        url: &str,
        deployment: Deployment,
        config: StreamConfig,
        resume: Option<StreamPosition>,
    ) -> Result<Self, StreamError> {
        Self::connect_with_witnesses(url, &[], deployment, config, resume).await
    }

    /// Like [`EventStream::connect`], with further endpoints (other providers of the same chain)
    /// of which, with `url`, at least [`StreamConfig::quorum`] must return the same block hash
    /// and the same logs for a range before it is delivered: no single provider can then feed
    /// the stream a false history, and fewer than the quorum can only delay it.
    pub async fn connect_with_witnesses(
        url: &str,
        witness_urls: &[String],
        deployment: Deployment,
        config: StreamConfig,
        resume: Option<StreamPosition>,
    ) -> Result<Self, StreamError> {
        let endpoints = 1 + witness_urls.len();
        if config.quorum == 0 || config.quorum > endpoints {
            return Err(StreamError::Quorum {
                quorum: config.quorum,
                endpoints,
            });
        }
        let provider = connect_provider(url, None).await?;
        validate_registry(&provider, url, &deployment).await?;
        let mut witnesses = Vec::with_capacity(witness_urls.len());
        for url in witness_urls {
            let provider = connect_provider(url, None).await?;
            validate_registry(&provider, url, &deployment).await?;
            witnesses.push(Witness {
                url: url.clone(),
                provider,
                reader: LogReader::new(config.ranges),
            });
        }
        let heads = subscribe_heads(url).await;
        let position = resume.unwrap_or(StreamPosition {
            next_block: deployment.deploy_block,
            recent: Vec::new(),
        });
        Ok(Self {
            url: url.to_owned(),
            deployment,
            reader: LogReader::new(config.ranges),
            config,
            provider,
            heads,
            witnesses,
            position,
            stats: StreamStats::default(),
        })
    }

    /// Where the stream stands after the last item it returned.
    pub fn position(&self) -> &StreamPosition {
        &self.position
    }

    /// Counters for monitoring.
    pub fn stats(&self) -> StreamStats {
        StreamStats {
            range_refusals: self.reader.refusals(),
            ..self.stats
        }
    }

    /// The next batch or rewind. Waits for new blocks when caught up; retries RPC failures with
    /// backoff (reconnecting) until it succeeds, so it only returns errors nothing can repair.
    pub async fn next(&mut self) -> Result<StreamItem, StreamError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.step().await {
                Ok(Some(item)) => return Ok(item),
                Ok(None) => self.wait_for_head().await,
                Err(StepError::Fatal(error)) => return Err(error),
                Err(StepError::NoQuorum(what)) => {
                    self.stats.disagreements += 1;
                    tracing::warn!(target: "anchormq::chain", quorum = self.config.quorum, "fewer RPC endpoints than the quorum agree on {what}; asking again");
                    // the endpoint that proposed it may be the odd one out: the next proposes
                    self.rotate();
                    self.wait_for_head().await;
                }
                Err(StepError::Transport(error)) => {
                    self.stats.reconnects += 1;
                    tracing::warn!(target: "anchormq::chain", %error, retry_in_ms = backoff.as_millis() as u64, "RPC failed, reconnecting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                    self.reconnect().await;
                }
            }
        }
    }

    /// The first witness reads next, and this endpoint becomes the last witness.
    fn rotate(&mut self) {
        let Some(first) = self.witnesses.first_mut() else {
            return;
        };
        std::mem::swap(&mut self.url, &mut first.url);
        std::mem::swap(&mut self.provider, &mut first.provider);
        std::mem::swap(&mut self.reader, &mut first.reader);
        self.witnesses.rotate_left(1);
    }

    async fn reconnect(&mut self) {
        match connect_provider(&self.url, None).await {
            Ok(provider) => {
                self.heads = subscribe_heads(&self.url).await;
                self.provider = provider;
            }
            Err(error) => tracing::warn!(target: "anchormq::chain", %error, "reconnect failed"),
        }
    }

    async fn wait_for_head(&mut self) {
        match self.heads.as_mut() {
            Some(heads) => {
                match tokio::time::timeout(self.config.poll_interval, heads.next()).await {
                    Ok(Some(())) | Err(_) => {}
                    // The subscription ended: fall back to polling until the next reconnect subscribes again.
                    Ok(None) => self.heads = None,
                }
            }
            None => tokio::time::sleep(self.config.poll_interval).await,
        }
    }

    /// One attempt: a rewind, a batch, or `None` when there is nothing new yet.
    async fn step(&mut self) -> Result<Option<StreamItem>, StepError> {
        let head = self.provider.get_block_number().await?;
        self.stats.head = head;
        if let Some(to) = self.find_fork().await? {
            self.stats.reorgs += 1;
            tracing::info!(target: "anchormq::chain", fork_block = to.block_number, "chain reorganised, rewinding");
            return Ok(Some(StreamItem::Rewind { to }));
        }
        let settled = match self.config.finality {
            Finality::Latest => head,
            tag => match self.tagged_block(tag).await? {
                Some(number) => number,
                // No block carries the tag yet (a young chain): nothing is settled.
                None => return Ok(None),
            },
        };
        let safe = settled.saturating_sub(self.config.confirmations);
        let from = self.position.next_block;
        if from > safe {
            return Ok(None);
        }
        let to = safe.min(from.saturating_add(self.reader.current_range() - 1));
        let before = self.block_hash(to).await?;
        let filter = Filter::new();
        let logs = self
            .reader
            .read(&self.provider, &filter, self.deployment.address, from, to)
            .await?;
        let after = self.block_hash(to).await?;
        let Some(after) = after.filter(|hash| before == Some(*hash)) else {
            // The chain moved under the read (or the node does not have the block yet): read the
            // range again on the next step.
            return Ok(None);
        };
        // The range must continue the chain already delivered: a reorg between the fork check and
        // the read (seen on Anvil, whose `anvil_reorg` is not atomic to readers) would otherwise
        // splice the new blocks onto orphaned ones, and the fork would never be found again.
        if let Some(last) = self.position.recent.last().copied()
            && last.block_number + 1 == from
            && self.parent_hash(from).await? != Some(last.block_hash)
        {
            return Ok(None);
        }
        let mut events = Vec::with_capacity(logs.len());
        for log in &logs {
            if log.removed {
                continue;
            }
            let event = PositionedEvent::from_log(log)
                .map_err(|e| StepError::Fatal(ChainError::from(e).into()))?;
            if event.position.block_number == to && event.position.block_hash != after {
                return Ok(None);
            }
            events.push(event);
        }
        if !self.witnesses.is_empty() {
            self.corroborate(from, to, after, &logs).await?;
        }
        let cursor = Cursor {
            block_number: to,
            block_hash: after,
        };
        self.remember(cursor);
        Ok(Some(StreamItem::Batch {
            events,
            cursor,
            head,
        }))
    }

    fn remember(&mut self, cursor: Cursor) {
        self.position.next_block = cursor.block_number + 1;
        self.position.recent.push(cursor);
        let excess = self
            .position
            .recent
            .len()
            .saturating_sub(self.config.reorg_window.max(1));
        self.position.recent.drain(..excess);
    }

    /// When the last remembered block's hash changed, the newest remembered block that is still
    /// canonical; the position is moved back to it.
    async fn find_fork(&mut self) -> Result<Option<Cursor>, StepError> {
        let Some(last) = self.position.recent.last().copied() else {
            return Ok(None);
        };
        let now = self.block_hash(last.block_number).await?;
        if now == Some(last.block_hash) {
            return Ok(None);
        }
        // one endpoint saying the chain changed is not enough to undo what was delivered
        self.corroborate_hash(last.block_number, now).await?;
        let mut recent: VecDeque<Cursor> = self.position.recent.iter().copied().collect();
        while let Some(candidate) = recent.pop_back() {
            let hash = self.block_hash(candidate.block_number).await?;
            if self.corroborate_hash(candidate.block_number, hash).await?
                == Some(candidate.block_hash)
            {
                recent.push_back(candidate);
                self.position.recent = recent.into_iter().collect();
                self.position.next_block = candidate.block_number + 1;
                return Ok(Some(candidate));
            }
        }
        Err(StepError::Fatal(StreamError::ReorgTooDeep {
            window: self.config.reorg_window,
            oldest: self.position.recent.first().map_or(0, |c| c.block_number),
        }))
    }

    /// Checks that at least the quorum of endpoints, this one included, see block `to` with
    /// hash `hash` and the same registry logs in `from..=to`.
    async fn corroborate(
        &mut self,
        from: u64,
        to: u64,
        hash: B256,
        logs: &[Log],
    ) -> Result<(), StepError> {
        let digest = logs_digest(logs);
        let mut agree = 1;
        let address = self.deployment.address;
        for witness in &mut self.witnesses {
            if agree >= self.config.quorum {
                break;
            }
            match witness.read(address, from, to).await {
                Ok(Some((their_hash, their_logs)))
                    if their_hash == hash && logs_digest(&their_logs) == digest =>
                {
                    agree += 1;
                }
                Ok(_) => {
                    tracing::debug!(target: "anchormq::chain", witness = %redact_url(&witness.url), from, to, "witness disagrees");
                }
                Err(error) => {
                    tracing::debug!(target: "anchormq::chain", witness = %redact_url(&witness.url), %error, "witness unreachable");
                }
            }
        }
        if agree >= self.config.quorum {
            Ok(())
        } else {
            Err(StepError::NoQuorum(format!("blocks {from}..={to}")))
        }
    }

    /// `mine`, this endpoint's hash of block `number` (`None`: the block is gone), once at least
    /// the quorum of endpoints see the same.
    async fn corroborate_hash(
        &self,
        number: u64,
        mine: Option<B256>,
    ) -> Result<Option<B256>, StepError> {
        let mut agree = 1;
        for witness in &self.witnesses {
            if agree >= self.config.quorum {
                break;
            }
            if let Ok(theirs) = block_hash(&witness.provider, number).await
                && theirs == mine
            {
                agree += 1;
            }
        }
        if agree >= self.config.quorum {
            Ok(mine)
        } else {
            Err(StepError::NoQuorum(format!("the hash of block {number}")))
        }
    }

    /// The number of the block the node tags `safe` or `finalized`, if any.
    async fn tagged_block(&self, finality: Finality) -> Result<Option<u64>, StepError> {
        let tag = match finality {
            Finality::Safe => BlockNumberOrTag::Safe,
            Finality::Finalized => BlockNumberOrTag::Finalized,
            Finality::Latest => BlockNumberOrTag::Latest,
        };
        Ok(self
            .provider
            .get_block_by_number(tag)
            .await?
            .map(|block| block.header.number))
    }

    async fn parent_hash(&self, number: u64) -> Result<Option<B256>, TransportError> {
        let block = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Number(number))
            .await?;
        Ok(block.map(|b| b.header.parent_hash))
    }

    async fn block_hash(&self, number: u64) -> Result<Option<B256>, TransportError> {
        block_hash(&self.provider, number).await
    }
}

impl Witness {
    /// Block `to`'s hash and the registry's logs in `from..=to`; `None` when this endpoint does
    /// not have block `to` (yet) or it changed during the read.
    async fn read(
        &mut self,
        address: alloy::primitives::Address,
        from: u64,
        to: u64,
    ) -> Result<Option<(B256, Vec<Log>)>, TransportError> {
        let Some(before) = block_hash(&self.provider, to).await? else {
            return Ok(None);
        };
        let logs = self
            .reader
            .read(&self.provider, &Filter::new(), address, from, to)
            .await?;
        let after = block_hash(&self.provider, to).await?;
        Ok((after == Some(before)).then_some((before, logs)))
    }
}

async fn block_hash(provider: &DynProvider, number: u64) -> Result<Option<B256>, TransportError> {
    let block = provider
        .get_block_by_number(BlockNumberOrTag::Number(number))
        .await?;
    Ok(block.map(|b| b.header.hash))
}

/// What two endpoints must agree on for a range: every log's place and content.
fn logs_digest(logs: &[Log]) -> B256 {
    let mut hasher = alloy::primitives::Keccak256::new();
    for log in logs.iter().filter(|log| !log.removed) {
        hasher.update(log.block_hash.unwrap_or_default());
        hasher.update(log.transaction_hash.unwrap_or_default());
        hasher.update(log.log_index.unwrap_or_default().to_be_bytes());
        hasher.update(log.address());
        for topic in log.topics() {
            hasher.update(topic);
        }
        hasher.update(&log.data().data);
    }
    hasher.finalize()
}

enum StepError {
    Transport(TransportError),
    Fatal(StreamError),
    /// Fewer endpoints than the quorum agreed on this: ask again later.
    NoQuorum(String),
}

impl From<TransportError> for StepError {
    fn from(error: TransportError) -> Self {
        Self::Transport(error)
    }
}

async fn subscribe_heads(url: &str) -> Option<Heads> {
    if !(url.starts_with("ws://") || url.starts_with("wss://")) {
        return None;
    }
    match Heads::subscribe(url).await {
        Ok(heads) => Some(heads),
        Err(error) => {
            tracing::warn!(target: "anchormq::chain", %error, "newHeads subscription failed, polling instead");
            None
        }
    }
}
