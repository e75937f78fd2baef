//! Chunking: any signed note as a sequence of MQTT payloads of at most
//! [`MAX_CHUNK_LEN`] bytes (96 KiB, under AWS IoT's 128 KB limit).
//!
//! Chunks are not signed one by one. Each carries the SHA-256 of the whole
//! signed note; the reassembled bytes must hash to it, and the note's own
//! signature is then checked as usual. A forged or stale chunk can therefore
//! only make reassembly fail, never change what is accepted. Every note,
//! even a tiny one, travels as chunks (a small one is a single chunk).
//!
//! ```text
//! off  len  field
//!   0    1  chunk format version (1)
//!   1    1  note kind (1 node, 2 group, 3 sender-key, 4 membership)
//!   2   32  subject (node ID / group ID / group ID / node ID)
//!  34    8  order hint (block number / block number / epoch / block number)
//!  42   32  content hash: SHA-256 of the complete signed note
//!  74    2  chunk index (0-based)
//!  76    2  chunk count
//!  78    4  total length of the signed note
//!  82    4  piece length
//!  86    n  piece
//! ```
//!
//! Splitting is canonical: every piece but the last is exactly
//! [`MAX_PIECE_LEN`] bytes, so a note has one chunk encoding.
//!
//! This module never reads a note body: the header's kind, subject and order
//! are handed over by [`SignedNote`], which learns them from the note type
//! (see [`crate::frame`]).

use sha2::{Digest, Sha256};

use crate::error::{ChunkError, DecodeError};
/// The note types a chunk carries, also reachable under this module as before.
pub use crate::frame::{NoteKind, SignedNote};
use crate::wire::{Reader, put_u16, put_u32, put_u64};

/// Chunk format version.
pub const CHUNK_VERSION: u8 = 1;
/// Largest chunk (header included) on the wire.
pub const MAX_CHUNK_LEN: usize = 96 * 1024;
/// Size of the chunk header.
pub const CHUNK_HEADER_LEN: usize = 86;
/// Largest piece of note carried by one chunk.
pub const MAX_PIECE_LEN: usize = MAX_CHUNK_LEN - CHUNK_HEADER_LEN;
/// Largest signed note accepted (bounds reassembly memory).
pub const MAX_NOTE_LEN: usize = 16 * 1024 * 1024;

/// The chunks of `note`, in index order; the header's kind, subject and order
/// are the ones the frame read or wrote.
pub(crate) fn split(note: &SignedNote) -> Vec<Vec<u8>> {
    let bytes = note.as_bytes();
    let hash: [u8; 32] = Sha256::digest(bytes).into();
    let pieces: Vec<&[u8]> = bytes.chunks(MAX_PIECE_LEN).collect();
    let count = pieces.len() as u16;
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            Chunk {
                kind: note.kind(),
                subject: *note.subject(),
                order: note.order(),
                content_hash: hash,
                index: i as u16,
                count,
                total_len: bytes.len() as u32,
                piece: piece.to_vec(),
            }
            .encode()
        })
        .collect()
}

/// One decoded chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Kind of the note carried.
    pub kind: NoteKind,
    /// Subject of the note carried.
    pub subject: [u8; 32],
    /// Order hint of the note carried.
    pub order: u64,
    /// SHA-256 of the complete signed note.
    pub content_hash: [u8; 32],
    /// This chunk's index.
    pub index: u16,
    /// Number of chunks of the note.
    pub count: u16,
    /// Length of the complete signed note.
    pub total_len: u32,
    /// This chunk's slice of the note.
    pub piece: Vec<u8>,
}

impl Chunk {
    /// Encodes the chunk.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CHUNK_HEADER_LEN + self.piece.len());
        out.push(CHUNK_VERSION);
        out.push(self.kind as u8);
        out.extend_from_slice(&self.subject);
        put_u64(&mut out, self.order);
        out.extend_from_slice(&self.content_hash);
        put_u16(&mut out, self.index);
        put_u16(&mut out, self.count);
        put_u32(&mut out, self.total_len);
        put_u32(&mut out, self.piece.len() as u32);
        out.extend_from_slice(&self.piece);
        out
    }

    /// Decodes a chunk and checks it is canonical (sizes agree with the split rule).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_CHUNK_LEN {
            return Err(DecodeError::malformed("chunk length"));
        }
        let mut r = Reader::new(bytes);
        let version = r.u8("chunk.version")?;
        if version != CHUNK_VERSION {
            return Err(DecodeError::UnsupportedVersion { version });
        }
        let kind =
            NoteKind::from_byte(r.u8("chunk.kind")?).ok_or(DecodeError::malformed("chunk.kind"))?;
        let subject = r.array("chunk.subject")?;
        let order = r.u64("chunk.order")?;
        let content_hash = r.array("chunk.content_hash")?;
        let index = r.u16("chunk.index")?;
        let count = r.u16("chunk.count")?;
        let total_len = r.u32("chunk.total_len")?;
        let piece_len = r.u32("chunk.piece_len")? as usize;
        let piece = r.bytes(piece_len, "chunk.piece")?.to_vec();
        r.finish()?;
        let total = total_len as usize;
        if total == 0 || total > MAX_NOTE_LEN {
            return Err(DecodeError::malformed("chunk.total_len"));
        }
        if count as usize != total.div_ceil(MAX_PIECE_LEN) {
            return Err(DecodeError::malformed("chunk.count"));
        }
        if index >= count {
            return Err(DecodeError::malformed("chunk.index"));
        }
        let expected = if index + 1 < count {
            MAX_PIECE_LEN
        } else {
            total - MAX_PIECE_LEN * (count as usize - 1)
        };
        if piece_len != expected {
            return Err(DecodeError::malformed("chunk.piece_len"));
        }
        Ok(Self {
            kind,
            subject,
            order,
            content_hash,
            index,
            count,
            total_len,
            piece,
        })
    }

    fn same_note(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.subject == other.subject
            && self.order == other.order
            && self.count == other.count
            && self.total_len == other.total_len
    }
}

#[derive(Debug)]
struct Pending {
    first: Chunk,
    pieces: Vec<Option<Vec<u8>>>,
    received: usize,
    last_touch: u64,
}

/// Reassembles chunked notes. Keeps at most `max_pending` incomplete notes
/// (least recently touched dropped first), so memory stays bounded by
/// `max_pending * MAX_NOTE_LEN` even under a flood of junk chunks.
#[derive(Debug)]
pub struct ChunkAssembler {
    pending: Vec<Pending>,
    max_pending: usize,
    tick: u64,
}

impl Default for ChunkAssembler {
    fn default() -> Self {
        Self::new(8)
    }
}

/// Result of feeding one chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assembly {
    /// More chunks are needed.
    Partial {
        /// Chunks received so far for this note.
        received: usize,
        /// Chunks in the note.
        count: usize,
    },
    /// The note is complete and matches its content hash.
    Complete(SignedNote),
}

impl ChunkAssembler {
    /// An assembler holding at most `max_pending` incomplete notes (at least 1).
    pub fn new(max_pending: usize) -> Self {
        Self {
            pending: Vec::new(),
            max_pending: max_pending.max(1),
            tick: 0,
        }
    }

    /// Number of incomplete notes held.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Feeds one MQTT payload.
    pub fn push(&mut self, payload: &[u8]) -> Result<Assembly, ChunkError> {
        let chunk = Chunk::decode(payload)?;
        self.tick += 1;
        if chunk.count == 1 {
            return finish(&chunk, chunk.piece.clone()).map(Assembly::Complete);
        }
        let slot = match self
            .pending
            .iter()
            .position(|p| p.first.content_hash == chunk.content_hash)
        {
            Some(i) => i,
            None => {
                if self.pending.len() >= self.max_pending {
                    let oldest = (0..self.pending.len())
                        .min_by_key(|&i| self.pending[i].last_touch)
                        .unwrap_or(0);
                    self.pending.swap_remove(oldest);
                }
                let count = chunk.count as usize;
                self.pending.push(Pending {
                    first: chunk.clone(),
                    pieces: vec![None; count],
                    received: 0,
                    last_touch: 0,
                });
                self.pending.len() - 1
            }
        };
        let p = &mut self.pending[slot];
        if !p.first.same_note(&chunk) {
            return Err(ChunkError::Inconsistent);
        }
        p.last_touch = self.tick;
        let idx = chunk.index as usize;
        match &p.pieces[idx] {
            Some(existing) if *existing != chunk.piece => return Err(ChunkError::Inconsistent),
            Some(_) => {}
            None => {
                p.pieces[idx] = Some(chunk.piece);
                p.received += 1;
            }
        }
        if p.received < p.pieces.len() {
            return Ok(Assembly::Partial {
                received: p.received,
                count: p.pieces.len(),
            });
        }
        let done = self.pending.swap_remove(slot);
        let mut bytes = Vec::with_capacity(done.first.total_len as usize);
        for piece in done.pieces.into_iter().flatten() {
            bytes.extend_from_slice(&piece);
        }
        finish(&done.first, bytes).map(Assembly::Complete)
    }
}

fn finish(header: &Chunk, bytes: Vec<u8>) -> Result<SignedNote, ChunkError> {
    let hash: [u8; 32] = Sha256::digest(&bytes).into();
    if hash != header.content_hash {
        return Err(ChunkError::HashMismatch);
    }
    // the frame decodes the note and says what its kind, subject and order are
    let note = SignedNote::from_bytes(bytes)?;
    if (note.kind(), note.subject(), note.order()) != (header.kind, &header.subject, header.order) {
        return Err(ChunkError::HeaderMismatch);
    }
    Ok(note)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{GroupId, NodeId};
    use crate::keys::NodeSecretKey;
    use crate::notes::{ChainPosition, GroupNote, Member};

    /// A group note of 5,000 members: three chunks.
    fn big_note(seed: u8) -> SignedNote {
        let position = ChainPosition {
            chain_id: 1,
            registry: [seed; 20],
            block_number: u64::from(seed),
            block_hash: [seed; 32],
            tx_hash: [seed; 32],
            log_index: 0,
        };
        let members = (0..5000u32)
            .map(|i| {
                let mut id = [seed; 32];
                id[..4].copy_from_slice(&i.to_be_bytes());
                Member::new(NodeId::from_bytes(id), 1)
            })
            .collect();
        let group = GroupId::from_bytes([seed; 32]);
        let key = NodeSecretKey::from_bytes(&[seed; 32]).expect("valid key");
        GroupNote::new(position, group, 1, "", None, members)
            .expect("valid")
            .sign(&key)
    }

    #[test]
    fn split_is_canonical_and_bounded() {
        let note = big_note(1);
        let chunks = note.chunks();
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| c.len() <= MAX_CHUNK_LEN));
        assert_eq!(chunks[0].len(), MAX_CHUNK_LEN);
        for c in &chunks {
            assert_eq!(&Chunk::decode(c).expect("valid").encode(), c);
        }
    }

    #[test]
    fn pending_notes_are_bounded_and_oldest_is_dropped() {
        let mut asm = ChunkAssembler::new(2);
        let notes: Vec<Vec<Vec<u8>>> = (1..=3).map(|i| big_note(i).chunks()).collect();
        for n in &notes {
            assert!(matches!(
                asm.push(&n[0]),
                Ok(Assembly::Partial {
                    received: 1,
                    count: 3
                })
            ));
        }
        assert_eq!(asm.pending(), 2);
        // note 1 was evicted: its second chunk starts over
        assert!(matches!(
            asm.push(&notes[0][1]),
            Ok(Assembly::Partial { received: 1, .. })
        ));
        // note 3 completes normally
        asm.push(&notes[2][1]).expect("chunk");
        assert!(matches!(asm.push(&notes[2][2]), Ok(Assembly::Complete(_))));
    }
}
