//! `eth_getLogs` over block ranges that shrink when the RPC refuses them and grow when it answers fast.

use std::time::{Duration, Instant};

use alloy::primitives::Address;
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{Filter, Log};
use alloy::transports::TransportError;

/// Adaptive range settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeConfig {
    /// Blocks asked for in the first request.
    pub initial: u64,
    /// Never ask for more blocks than this in one request.
    pub max: u64,
    /// A request answered faster than this lets the next one ask for twice as many blocks.
    pub grow_below: Duration,
}

impl Default for RangeConfig {
    fn default() -> Self {
        Self {
            initial: 2_000,
            max: 50_000,
            grow_below: Duration::from_millis(500),
        }
    }
}

/// Reads the registry's logs in adaptive ranges; remembers the range that worked last.
#[derive(Debug, Clone)]
pub struct LogReader {
    config: RangeConfig,
    current: u64,
    refusals: u64,
}

impl LogReader {
    /// A reader that starts at `config.initial` blocks per request.
    pub fn new(config: RangeConfig) -> Self {
        let current = config.initial.clamp(1, config.max.max(1));
        Self {
            config,
            current,
            refusals: 0,
        }
    }

    /// Blocks per request right now.
    pub fn current_range(&self) -> u64 {
        self.current
    }

    /// How many requests the RPC refused (and were retried with a smaller range).
    pub fn refusals(&self) -> u64 {
        self.refusals
    }

    /// All logs of `address` (optionally narrowed by `topics`) in `from..=to`, in chain order.
    pub async fn read(
        &mut self,
        provider: &DynProvider,
        base: &Filter,
        address: Address,
        from: u64,
        to: u64,
    ) -> Result<Vec<Log>, TransportError> {
        let mut logs = Vec::new();
        let mut start = from;
        while start <= to {
            let end = to.min(start.saturating_add(self.current - 1));
            let filter = base
                .clone()
                .address(address)
                .from_block(start)
                .to_block(end);
            let asked_at = Instant::now();
            match provider.get_logs(&filter).await {
                Ok(batch) => {
                    logs.extend(batch);
                    start = end + 1;
                    if asked_at.elapsed() < self.config.grow_below {
                        self.current = self.current.saturating_mul(2).min(self.config.max);
                    }
                }
                // An error answer (not a transport failure) to a multi-block range is how public RPCs
                // say "range too large" or "too many results"; each speaks its own words, so any such
                // answer halves the range and tries again.
                Err(error) if error.is_error_resp() && end > start => {
                    self.refusals += 1;
                    let asked = end - start + 1;
                    self.current = (asked / 2).max(1);
                    tracing::debug!(target: "anchormq::chain", from = start, to = end, next_range = self.current, %error, "RPC refused log range, shrinking");
                }
                Err(error) => return Err(error),
            }
        }
        Ok(logs)
    }
}
