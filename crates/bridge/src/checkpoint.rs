//! The bridge's durable memory: where the stream stands, the state it has mirrored, and the recent
//! events it may have to undo after a reorg. Written atomically, only after the broker acknowledged
//! the notes of everything it covers.

use std::io::Write;
use std::path::{Path, PathBuf};

use anchormq_chain::{Cursor, InconsistentEvent, PositionedEvent, RegistryState, StreamPosition};
use serde::{Deserialize, Serialize};

/// Format version of the checkpoint file; a file of another version is refused, not guessed at.
const VERSION: u32 = 1;

/// Everything the bridge needs to resume exactly where its last acknowledged batch ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    version: u32,
    /// Chain and registry this checkpoint belongs to, so a file is never applied to another one.
    pub chain_id: u64,
    /// Registry address, lowercase 0x-hex.
    pub registry: String,
    /// Where the event stream resumes.
    pub stream: StreamPosition,
    /// State as of the oldest remembered batch end: the point no reorg can undo.
    base: RegistryState,
    /// Events after `base`, in order; a reorg drops the ones after the fork.
    journal: Vec<PositionedEvent>,
    /// How many reorgs the bridge has followed: notes are signed under it, so those of the
    /// canonical chain outrank those of removed blocks (0 in files written before it existed).
    #[serde(default)]
    generation: u64,
}

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Reading or writing the file failed.
    #[error("checkpoint file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a checkpoint this version understands.
    #[error("checkpoint file {path} is not valid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file belongs to another chain or registry.
    #[error(
        "checkpoint file {path} belongs to chain {chain_id} registry {registry}, not this one; move it away to start over"
    )]
    OtherRegistry {
        /// The file.
        path: PathBuf,
        /// Its chain.
        chain_id: u64,
        /// Its registry.
        registry: String,
    },
    /// The journal does not replay onto the base state.
    #[error("checkpoint journal is inconsistent: {0}")]
    Inconsistent(#[from] InconsistentEvent),
}

impl Checkpoint {
    /// A fresh checkpoint for a registry, before any event.
    pub fn new(chain_id: u64, registry: String, stream: StreamPosition) -> Self {
        Self {
            version: VERSION,
            chain_id,
            registry,
            stream,
            base: RegistryState::default(),
            journal: Vec::new(),
            generation: 0,
        }
    }

    /// The generation notes are signed under now.
    pub const fn generation(&self) -> u64 {
        self.generation
    }

    /// Reads `path`, or returns `None` when it does not exist.
    pub fn load(
        path: &Path,
        chain_id: u64,
        registry: &str,
    ) -> Result<Option<Self>, CheckpointError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let checkpoint: Self =
            serde_json::from_str(&text).map_err(|e| CheckpointError::Invalid {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        if checkpoint.version != VERSION {
            return Err(CheckpointError::Invalid {
                path: path.to_owned(),
                reason: format!(
                    "version {} (this bridge reads version {VERSION})",
                    checkpoint.version
                ),
            });
        }
        if checkpoint.chain_id != chain_id || !checkpoint.registry.eq_ignore_ascii_case(registry) {
            return Err(CheckpointError::OtherRegistry {
                path: path.to_owned(),
                chain_id: checkpoint.chain_id,
                registry: checkpoint.registry,
            });
        }
        Ok(Some(checkpoint))
    }

    /// Writes to a temporary file beside `path`, syncs it, and renames it over `path`, so a crash
    /// leaves either the old or the new checkpoint, never a torn one.
    pub fn store(&self, path: &Path) -> Result<(), CheckpointError> {
        let io = |source| CheckpointError::Io {
            path: path.to_owned(),
            source,
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        let json = serde_json::to_vec(self).map_err(|e| io(std::io::Error::other(e)))?;
        file.write_all(&json).map_err(io)?;
        file.as_file().sync_all().map_err(io)?;
        file.persist(path).map_err(|e| io(e.error))?;
        if let Ok(dir) = std::fs::File::open(dir) {
            // The rename itself must survive a power cut; not every filesystem supports this.
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// The current state: the base with the journal replayed.
    pub fn state(&self) -> Result<RegistryState, InconsistentEvent> {
        let mut state = self.base.clone();
        for event in &self.journal {
            state.apply(event)?;
        }
        Ok(state)
    }

    /// Records a batch the bridge has mirrored, and folds into the base what no reorg can undo any more.
    pub fn record_batch(
        &mut self,
        events: &[PositionedEvent],
        stream: StreamPosition,
    ) -> Result<(), InconsistentEvent> {
        self.journal.extend_from_slice(events);
        self.stream = stream;
        let Some(oldest) = self.stream.recent.first().map(|c| c.block_number) else {
            return Ok(());
        };
        let settled = self
            .journal
            .iter()
            .take_while(|e| e.position.block_number <= oldest)
            .count();
        for event in self.journal.drain(..settled) {
            self.base.apply(&event)?;
        }
        Ok(())
    }

    /// Forgets every event after the fork block `to`, and starts the next generation. A crash
    /// before this is stored follows the same reorg again on restart, into the same generation.
    pub fn rewind(&mut self, to: Cursor, stream: StreamPosition) {
        self.journal
            .retain(|e| e.position.block_number <= to.block_number);
        self.stream = stream;
        self.generation += 1;
    }

    /// Number of events that a reorg could still undo.
    pub fn journal_len(&self) -> usize {
        self.journal.len()
    }
}
