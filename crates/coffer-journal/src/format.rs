//! On-disk formats.
//!
//! A segment file is a sequence of records. Each record is one engine batch:
//!
//! ```text
//! offset size field
//!      0    4 magic "CFJR"
//!      4    2 format version (1)
//!      6    2 flags (0)
//!      8    4 payload length in bytes
//!     12    4 entry count
//!     16    8 first sequence number
//!     24    8 batch timestamp, ms since the Unix epoch
//!     32    4 crc32c of the payload
//!     36    8 reserved (0)
//!     44    4 crc32c of bytes 0..44 (the header)
//!     48    … payload: per entry, the encoded transaction then its verdict
//! ```
//!
//! The header has its own checksum so that a corrupted length can never be
//! mistaken for a record that runs past the end of the file (a torn tail).

use coffer_core::codec::{Reader, Writer};
use coffer_core::{CoreError, Outcome, Rejection, RejectionCode, Transaction, Verdict};

pub const RECORD_MAGIC: &[u8; 4] = b"CFJR";
pub const RECORD_FORMAT_VERSION: u16 = 1;
pub const HEADER_BYTES: usize = 48;
/// Largest payload accepted when reading: a batch of the maximum size with
/// maximal transactions is far below this.
pub const PAYLOAD_BYTES_MAX: u32 = 1 << 30;

/// What the engine decided for one journaled transaction. Replay recomputes
/// it and compares, so nondeterminism is detected instead of silently
/// forking state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryVerdict {
    Committed,
    Rejected(Rejection),
    Replayed,
    IdReused,
    /// In a linked chain that was not applied (`Outcome::NotApplied`).
    NotApplied,
}

/// The high bit of an entry's verdict byte: the transaction is linked to
/// the next one (`Transaction::is_linked_to_next`). Journals written
/// before linked chains never set it, so they read unchanged.
const LINKED_TO_NEXT: u8 = 0x80;

impl EntryVerdict {
    pub fn of(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::New { record, .. } => match record.verdict {
                Verdict::Committed => EntryVerdict::Committed,
                Verdict::Rejected(rejection) => EntryVerdict::Rejected(rejection),
            },
            Outcome::Replayed(_) => EntryVerdict::Replayed,
            Outcome::IdReused(_) => EntryVerdict::IdReused,
            Outcome::NotApplied(_) => EntryVerdict::NotApplied,
        }
    }

    /// The verdict, with `linked` in the high bit of its first byte.
    fn encode(self, linked: bool, writer: &mut Writer) {
        let flag = if linked { LINKED_TO_NEXT } else { 0 };
        match self {
            EntryVerdict::Committed => writer.u8(flag),
            EntryVerdict::Rejected(rejection) => {
                writer.u8(flag | 1);
                writer.u8(rejection.code as u8);
                writer.u64(u64::from(rejection.op_index));
            }
            EntryVerdict::Replayed => writer.u8(flag | 2),
            EntryVerdict::IdReused => writer.u8(flag | 3),
            EntryVerdict::NotApplied => writer.u8(flag | 4),
        }
    }

    /// The verdict, and whether its transaction is linked to the next.
    fn decode(reader: &mut Reader) -> Result<(Self, bool), CoreError> {
        let tag = reader.u8()?;
        let verdict = match tag & !LINKED_TO_NEXT {
            0 => EntryVerdict::Committed,
            1 => {
                let code = reader.u8()?;
                let code = RejectionCode::from_u8(code).ok_or_else(|| reader.error(format!("unknown code {code}")))?;
                let op_index = u16::try_from(reader.u64()?).map_err(|_| reader.error("op index out of range"))?;
                EntryVerdict::Rejected(Rejection { code, op_index })
            }
            2 => EntryVerdict::Replayed,
            3 => EntryVerdict::IdReused,
            4 => EntryVerdict::NotApplied,
            other => return Err(reader.error(format!("unknown verdict {other}"))),
        };
        Ok((verdict, tag & LINKED_TO_NEXT != 0))
    }
}

impl std::fmt::Display for EntryVerdict {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntryVerdict::Committed => formatter.write_str("committed"),
            EntryVerdict::Rejected(rejection) => {
                write!(formatter, "rejected {} at op {}", rejection.code, rejection.op_index)
            }
            EntryVerdict::Replayed => formatter.write_str("replayed"),
            EntryVerdict::IdReused => formatter.write_str("id_reused"),
            EntryVerdict::NotApplied => formatter.write_str("not_applied"),
        }
    }
}

/// One engine batch as the journal stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalBatch {
    pub timestamp_ms: u64,
    pub first_sequence: u64,
    pub transactions: Vec<Transaction>,
    pub verdicts: Vec<EntryVerdict>,
}

impl JournalBatch {
    pub fn end_sequence(&self) -> u64 {
        self.first_sequence + self.transactions.len() as u64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub payload_bytes: u32,
    pub count: u32,
    pub first_sequence: u64,
    pub timestamp_ms: u64,
    pub payload_crc: u32,
}

/// Appends one record (header and payload) to `buffer`.
pub fn encode_record(batch: &JournalBatch, buffer: &mut Vec<u8>) {
    assert_eq!(
        batch.transactions.len(),
        batch.verdicts.len(),
        "one verdict per transaction"
    );
    let start = buffer.len();
    buffer.resize(start + HEADER_BYTES, 0);
    {
        let mut writer = Writer::new(buffer);
        for (transaction, verdict) in batch.transactions.iter().zip(&batch.verdicts) {
            transaction.encode(&mut writer);
            verdict.encode(transaction.is_linked_to_next(), &mut writer);
        }
    }
    let payload_bytes = u32::try_from(buffer.len() - start - HEADER_BYTES).expect("a batch payload fits in u32");
    assert!(payload_bytes <= PAYLOAD_BYTES_MAX);
    let header = RecordHeader {
        payload_bytes,
        count: u32::try_from(batch.transactions.len()).expect("batch size fits in u32"),
        first_sequence: batch.first_sequence,
        timestamp_ms: batch.timestamp_ms,
        payload_crc: crc32c::crc32c(&buffer[start + HEADER_BYTES..]),
    };
    write_header(&header, &mut buffer[start..start + HEADER_BYTES]);
}

fn write_header(header: &RecordHeader, bytes: &mut [u8]) {
    bytes[0..4].copy_from_slice(RECORD_MAGIC);
    bytes[4..6].copy_from_slice(&RECORD_FORMAT_VERSION.to_le_bytes());
    bytes[6..8].copy_from_slice(&0u16.to_le_bytes());
    bytes[8..12].copy_from_slice(&header.payload_bytes.to_le_bytes());
    bytes[12..16].copy_from_slice(&header.count.to_le_bytes());
    bytes[16..24].copy_from_slice(&header.first_sequence.to_le_bytes());
    bytes[24..32].copy_from_slice(&header.timestamp_ms.to_le_bytes());
    bytes[32..36].copy_from_slice(&header.payload_crc.to_le_bytes());
    bytes[36..44].copy_from_slice(&0u64.to_le_bytes());
    let header_crc = crc32c::crc32c(&bytes[0..44]);
    bytes[44..48].copy_from_slice(&header_crc.to_le_bytes());
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
}

/// Parses a header; `Err` says why it is not a valid one.
pub fn decode_header(bytes: &[u8]) -> Result<RecordHeader, String> {
    if bytes.len() < HEADER_BYTES {
        return Err(format!("only {} bytes, a header needs {HEADER_BYTES}", bytes.len()));
    }
    if &bytes[0..4] != RECORD_MAGIC {
        return Err("bad magic".into());
    }
    if crc32c::crc32c(&bytes[0..44]) != le_u32(bytes, 44) {
        return Err("header checksum mismatch".into());
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != RECORD_FORMAT_VERSION {
        return Err(format!(
            "record format {version}, this build reads {RECORD_FORMAT_VERSION}"
        ));
    }
    let header = RecordHeader {
        payload_bytes: le_u32(bytes, 8),
        count: le_u32(bytes, 12),
        first_sequence: le_u64(bytes, 16),
        timestamp_ms: le_u64(bytes, 24),
        payload_crc: le_u32(bytes, 32),
    };
    if header.payload_bytes > PAYLOAD_BYTES_MAX || header.count as usize > coffer_core::limits::BATCH_TRANSACTIONS_MAX {
        return Err("length or count out of range".into());
    }
    Ok(header)
}

/// Decodes a payload whose checksum has been verified.
pub fn decode_payload(header: &RecordHeader, payload: &[u8]) -> Result<JournalBatch, CoreError> {
    let mut reader = Reader::new(payload);
    let mut transactions = Vec::with_capacity(header.count as usize);
    let mut verdicts = Vec::with_capacity(header.count as usize);
    for _ in 0..header.count {
        let transaction = Transaction::decode(&mut reader)?;
        let (verdict, linked) = EntryVerdict::decode(&mut reader)?;
        transactions.push(transaction.linked_to_next(linked));
        verdicts.push(verdict);
    }
    if !reader.is_empty() {
        return Err(reader.error("bytes after the last entry"));
    }
    Ok(JournalBatch {
        timestamp_ms: header.timestamp_ms,
        first_sequence: header.first_sequence,
        transactions,
        verdicts,
    })
}

// ---- Snapshot files: magic, version, sequence_next, length, crc, state.

pub const SNAPSHOT_MAGIC: &[u8; 8] = b"CFSNAPF1";
pub const SNAPSHOT_HEADER_BYTES: usize = 28;

pub fn encode_snapshot_file(sequence_next: u64, state: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + state.len());
    bytes.extend_from_slice(SNAPSHOT_MAGIC);
    bytes.extend_from_slice(&sequence_next.to_le_bytes());
    bytes.extend_from_slice(&(state.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(state).to_le_bytes());
    bytes.extend_from_slice(state);
    bytes
}

/// Returns (sequence_next, state bytes) of a well-formed snapshot file.
pub fn decode_snapshot_file(bytes: &[u8]) -> Result<(u64, &[u8]), String> {
    if bytes.len() < SNAPSHOT_HEADER_BYTES || &bytes[0..8] != SNAPSHOT_MAGIC {
        return Err("not a coffer snapshot file".into());
    }
    let sequence_next = le_u64(bytes, 8);
    let length = le_u64(bytes, 16);
    if length != (bytes.len() - SNAPSHOT_HEADER_BYTES) as u64 {
        return Err(format!(
            "length {length} does not match the file ({} bytes of state)",
            bytes.len() - SNAPSHOT_HEADER_BYTES
        ));
    }
    let state = &bytes[SNAPSHOT_HEADER_BYTES..];
    if crc32c::crc32c(state) != le_u32(bytes, 24) {
        return Err("checksum mismatch".into());
    }
    Ok((sequence_next, state))
}
