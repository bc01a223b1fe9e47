//! Reading segments record by record, telling a torn tail from corruption.

use crate::error::JournalError;
use crate::format::{decode_header, decode_payload, JournalBatch, RecordHeader, HEADER_BYTES, RECORD_MAGIC};
use std::path::{Path, PathBuf};

/// Where a segment's valid records end, when something follows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub path: PathBuf,
    pub offset: u64,
    pub bytes_dropped: u64,
}

/// Where a segment's records end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentEnd {
    /// Bytes from the start of the segment to the end of its last valid record.
    pub valid_bytes: u64,
    pub torn_tail: Option<TornTail>,
}

/// Scans one segment's bytes, calling `visit` with each valid record in
/// order. The last segment is preallocated, so zeros up to the end of the
/// file follow its records. A bad record is a torn tail (the last write was
/// cut short by a crash) only if it is in the last segment and no valid
/// record header follows it; anything else is corruption and an error.
pub fn scan_segment(
    path: &Path,
    bytes: &[u8],
    is_last_segment: bool,
    mut visit: impl FnMut(u64, &RecordHeader, &[u8]) -> Result<(), JournalError>,
) -> Result<SegmentEnd, JournalError> {
    let mut offset = 0usize;
    while offset < bytes.len() {
        match check_record(&bytes[offset..]) {
            Ok((header, payload)) => {
                visit(offset as u64, &header, payload)?;
                offset += HEADER_BYTES + payload.len();
            }
            Err(_) if is_last_segment && bytes[offset..].iter().all(|byte| *byte == 0) => break,
            Err(reason) => {
                let corrupt = !is_last_segment || valid_header_after(bytes, offset + 1);
                if corrupt {
                    return Err(JournalError::Corrupt {
                        path: path.to_owned(),
                        offset: offset as u64,
                        reason,
                    });
                }
                // The preallocated zeros after the torn record are not lost data.
                let written_end = bytes
                    .iter()
                    .rposition(|byte| *byte != 0)
                    .map_or(offset, |last| last + 1);
                return Ok(SegmentEnd {
                    valid_bytes: offset as u64,
                    torn_tail: Some(TornTail {
                        path: path.to_owned(),
                        offset: offset as u64,
                        bytes_dropped: (written_end - offset) as u64,
                    }),
                });
            }
        }
    }
    Ok(SegmentEnd {
        valid_bytes: offset as u64,
        torn_tail: None,
    })
}

fn check_record(bytes: &[u8]) -> Result<(RecordHeader, &[u8]), String> {
    let header = decode_header(bytes)?;
    let end = HEADER_BYTES + header.payload_bytes as usize;
    let payload = bytes.get(HEADER_BYTES..end).ok_or_else(|| {
        format!(
            "record of {} payload bytes runs past the end of the file",
            header.payload_bytes
        )
    })?;
    if crc32c::crc32c(payload) != header.payload_crc {
        return Err("payload checksum mismatch".into());
    }
    Ok((header, payload))
}

fn valid_header_after(bytes: &[u8], from: usize) -> bool {
    let mut position = from;
    while position + HEADER_BYTES <= bytes.len() {
        match bytes[position..].windows(4).position(|window| window == RECORD_MAGIC) {
            None => return false,
            Some(found) => {
                position += found;
                if decode_header(&bytes[position..]).is_ok() {
                    return true;
                }
                position += 1;
            }
        }
    }
    false
}

/// Decodes a payload found by `scan_segment`, as a journal error.
pub fn decode_batch(
    path: &Path,
    offset: u64,
    header: &RecordHeader,
    payload: &[u8],
) -> Result<JournalBatch, JournalError> {
    decode_payload(header, payload).map_err(|error| JournalError::Corrupt {
        path: path.to_owned(),
        offset,
        reason: format!("record passes its checksum but does not decode: {error}"),
    })
}
