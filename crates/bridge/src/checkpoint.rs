//! The bridge's durable memory: where the stream stands, the state it has mirrored, and the recent
//! events it may have to undo after a reorg. Written only after the broker acknowledged the notes
//! of everything it covers.
//!
//! Two files: a snapshot (`<path>`, written whole and atomically) and a log beside it
//! (`<path>.log`, one JSON line a batch, appended and synced). A batch costs a write of its own
//! size, not of the whole registry (a 100,000-node snapshot is ~50 MB and half a second). The log is
//! folded into a new snapshot when it outgrows the last one, after a reorg, and at the first store
//! after loading; a torn last line (a crash mid-append) is a batch that was never stored.

use std::io::Write;
use std::path::{Path, PathBuf};

use anchormq_chain::{Cursor, InconsistentEvent, PositionedEvent, RegistryState, StreamPosition};
use serde::{Deserialize, Serialize};

/// Format version of the checkpoint file; a file of another version is refused, not guessed at.
const VERSION: u32 = 1;

/// One batch in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LogRecord {
    /// The checkpoint's batch count after this batch.
    batch: u64,
    events: Vec<PositionedEvent>,
    stream: StreamPosition,
}

/// The log never forces a snapshot below this size.
const MIN_LOG_BYTES: u64 = 1 << 20;

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
    /// Batches recorded so far: the log's records after the snapshot carry higher numbers.
    #[serde(default)]
    batches: u64,
    /// Batches recorded and not yet stored.
    #[serde(skip)]
    unstored: Vec<LogRecord>,
    /// Whether the next store must write a snapshot (after a reorg, or a log read at load).
    #[serde(skip)]
    snapshot_due: bool,
    /// Size of the log file and of the last snapshot, to know when to fold the log in.
    #[serde(skip)]
    log_bytes: u64,
    #[serde(skip)]
    snapshot_bytes: u64,
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
            batches: 0,
            unstored: Vec::new(),
            // a log is only ever read beside a snapshot
            snapshot_due: true,
            log_bytes: 0,
            snapshot_bytes: 0,
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
        let mut checkpoint = checkpoint;
        checkpoint.snapshot_bytes = text.len() as u64;
        checkpoint.replay_log(&log_path(path))?;
        Ok(Some(checkpoint))
    }

    /// Applies the log's batches that came after the snapshot. A last line without its newline,
    /// or that does not parse, was torn by a crash: that batch was never stored, and is dropped.
    fn replay_log(&mut self, log: &Path) -> Result<(), CheckpointError> {
        let text = match std::fs::read(log) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: log.to_owned(),
                    source,
                });
            }
        };
        let invalid = |reason: String| CheckpointError::Invalid {
            path: log.to_owned(),
            reason,
        };
        let mut lines = text.split_inclusive(|b| *b == b'\n').peekable();
        while let Some(line) = lines.next() {
            let last = lines.peek().is_none();
            let record = match line
                .strip_suffix(b"\n")
                .map(serde_json::from_slice::<LogRecord>)
            {
                Some(Ok(record)) => record,
                _ if last => break,
                Some(Err(e)) => return Err(invalid(e.to_string())),
                None => unreachable!("only the last piece can lack its newline"),
            };
            if record.batch <= self.batches {
                // already in the snapshot (a crash between writing it and removing the log)
                continue;
            }
            if record.batch != self.batches + 1 {
                return Err(invalid(format!(
                    "batch {} follows batch {}",
                    record.batch, self.batches
                )));
            }
            self.record_batch(&record.events, record.stream)?;
        }
        // the log (with a torn tail, maybe) is folded into a snapshot at the first store
        self.unstored.clear();
        self.snapshot_due = true;
        Ok(())
    }

    /// Makes everything recorded so far durable: appends the batches not yet stored to the log,
    /// or writes a new snapshot when one is due (see the module docs).
    pub fn store(&mut self, path: &Path) -> Result<(), CheckpointError> {
        let lines = if self.snapshot_due {
            None
        } else {
            let mut lines = Vec::new();
            for record in &self.unstored {
                serde_json::to_writer(&mut lines, record).map_err(|e| CheckpointError::Io {
                    path: log_path(path),
                    source: std::io::Error::other(e),
                })?;
                lines.push(b'\n');
            }
            Some(lines)
        };
        match lines {
            Some(lines)
                if self.log_bytes + lines.len() as u64
                    <= self.snapshot_bytes.max(MIN_LOG_BYTES) =>
            {
                self.append_log(path, &lines)?;
            }
            _ => self.write_snapshot(path)?,
        }
        self.unstored.clear();
        self.snapshot_due = false;
        Ok(())
    }

    fn append_log(&mut self, path: &Path, lines: &[u8]) -> Result<(), CheckpointError> {
        if lines.is_empty() {
            return Ok(());
        }
        let log = log_path(path);
        let io = |source| CheckpointError::Io {
            path: log.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io)?;
        file.write_all(lines).map_err(io)?;
        file.sync_data().map_err(io)?;
        if self.log_bytes == 0
            && let Some(dir) = log.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(dir) = std::fs::File::open(dir)
        {
            // the new file's name must survive a power cut too
            let _ = dir.sync_all();
        }
        self.log_bytes += lines.len() as u64;
        Ok(())
    }

    /// Writes to a temporary file beside `path`, syncs it, and renames it over `path`, so a crash
    /// leaves either the old or the new snapshot, never a torn one; then removes the log, whose
    /// batches the snapshot holds.
    fn write_snapshot(&mut self, path: &Path) -> Result<(), CheckpointError> {
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
        // streamed: at 100,000 nodes the JSON is ~100 MB, which a buffer would add to the peak RSS
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, &mut file);
        serde_json::to_writer(&mut writer, &*self).map_err(|e| io(std::io::Error::other(e)))?;
        writer.flush().map_err(io)?;
        drop(writer);
        file.as_file().sync_all().map_err(io)?;
        let written = file.as_file().metadata().map_err(io)?.len();
        file.persist(path).map_err(|e| io(e.error))?;
        if let Ok(dir) = std::fs::File::open(dir) {
            // The rename itself must survive a power cut; not every filesystem supports this.
            let _ = dir.sync_all();
        }
        match std::fs::remove_file(log_path(path)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: log_path(path),
                    source,
                });
            }
        }
        self.snapshot_bytes = written;
        self.log_bytes = 0;
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
        self.batches += 1;
        if !self.snapshot_due {
            // (a snapshot due holds everything: no copy for the log)
            self.unstored.push(LogRecord {
                batch: self.batches,
                events: events.to_vec(),
                stream: self.stream.clone(),
            });
        }
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
        // the log cannot take events back: the next store writes what is left as a snapshot
        self.snapshot_due = true;
    }

    /// Number of events that a reorg could still undo.
    pub fn journal_len(&self) -> usize {
        self.journal.len()
    }
}

/// The log beside the snapshot at `path`.
fn log_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".log");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use anchormq_chain::{Address, B256, LogPosition, RegistryEvent};

    use super::*;

    /// A batch registering node `n` in block `n`.
    fn batch(n: u64) -> (Vec<PositionedEvent>, StreamPosition) {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&n.to_be_bytes());
        let event = PositionedEvent {
            position: LogPosition {
                block_number: n,
                block_hash: B256::repeat_byte(1),
                tx_hash: B256::repeat_byte(2),
                log_index: 0,
            },
            event: RegistryEvent::NodeRegistered {
                node: B256::from(id),
                owner: Address::repeat_byte(3),
                public_key: vec![2u8; 33].into(),
                key_version: 1,
            },
        };
        let stream = StreamPosition {
            next_block: n + 1,
            recent: Vec::new(),
        };
        (vec![event], stream)
    }

    fn stored(dir: &Path, count: u64) -> (Checkpoint, PathBuf) {
        let path = dir.join("c.json");
        let mut checkpoint = Checkpoint::new(31337, "0xab".into(), batch(0).1);
        for n in 1..=count {
            let (events, stream) = batch(n);
            checkpoint.record_batch(&events, stream).expect("record");
            checkpoint.store(&path).expect("store");
        }
        (checkpoint, path)
    }

    fn load(path: &Path) -> Checkpoint {
        Checkpoint::load(path, 31337, "0xab")
            .expect("load")
            .expect("exists")
    }

    #[test]
    fn batches_after_the_first_are_appended_to_the_log_and_replayed() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut checkpoint, path) = stored(dir.path(), 1);
        let snapshot = std::fs::read(&path).expect("snapshot");
        for n in 2..=5 {
            let (events, stream) = batch(n);
            checkpoint.record_batch(&events, stream).expect("record");
            checkpoint.store(&path).expect("store");
        }
        assert_eq!(
            std::fs::read(&path).expect("snapshot"),
            snapshot,
            "not rewritten"
        );
        let log = std::fs::read_to_string(log_path(&path)).expect("log");
        assert_eq!(log.lines().count(), 4);
        let loaded = load(&path);
        assert_eq!(loaded.state(), checkpoint.state());
        assert_eq!(loaded.stream, checkpoint.stream);
        assert_eq!(loaded.state().expect("state").nodes.len(), 5);
    }

    #[test]
    fn a_torn_last_line_is_a_batch_never_stored() {
        let dir = tempfile::tempdir().expect("dir");
        let (checkpoint, path) = stored(dir.path(), 3);
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(log_path(&path))
            .expect("log");
        log.write_all(br#"{"batch":4,"events":[{"posi"#)
            .expect("tear");
        let mut loaded = load(&path);
        assert_eq!(loaded.state(), checkpoint.state());
        // the next store folds the log into a snapshot, torn line and all
        let (events, stream) = batch(4);
        loaded.record_batch(&events, stream).expect("record");
        loaded.store(&path).expect("store");
        assert!(!log_path(&path).exists());
        assert_eq!(load(&path).state().expect("state").nodes.len(), 4);
    }

    #[test]
    fn a_log_the_snapshot_already_holds_is_not_applied_twice() {
        let dir = tempfile::tempdir().expect("dir");
        let (_, path) = stored(dir.path(), 3);
        let log = std::fs::read(log_path(&path)).expect("log");
        // a load folds the log into the next snapshot; the crash leaves the old log behind
        let mut loaded = load(&path);
        loaded.store(&path).expect("store");
        std::fs::write(log_path(&path), log).expect("old log back");
        let again = load(&path);
        assert_eq!(again.state(), loaded.state());
        assert_eq!(again.state().expect("state").nodes.len(), 3);
    }

    #[test]
    fn a_gap_in_the_log_is_refused_with_the_file_named() {
        let dir = tempfile::tempdir().expect("dir");
        let (_, path) = stored(dir.path(), 3);
        let log = std::fs::read_to_string(log_path(&path)).expect("log");
        let without_second: String = log
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != 0)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        std::fs::write(log_path(&path), without_second).expect("write");
        let error = Checkpoint::load(&path, 31337, "0xab").expect_err("gap");
        let message = error.to_string();
        assert!(
            message.contains("c.json.log") && message.contains("batch 3 follows batch 1"),
            "{message}"
        );
    }
}
