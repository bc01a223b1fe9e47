//! Journal records. A record's header is read from raw bytes; its payload
//! is read as recovery reads it once the checksum has passed. Neither may
//! panic or allocate without bound, and a payload that decodes re-encodes
//! to a record that decodes to the same batch.
#![no_main]

use coffer_journal::format::{decode_header, decode_payload, encode_record, RecordHeader, HEADER_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = decode_header(bytes);
    let Some((count, payload)) = bytes.split_first_chunk::<2>() else {
        return;
    };
    let header = RecordHeader {
        payload_bytes: payload.len() as u32,
        count: u32::from(u16::from_le_bytes(*count)),
        first_sequence: 1,
        timestamp_ms: 1,
        payload_crc: 0,
    };
    if let Ok(batch) = decode_payload(&header, payload) {
        let mut record = Vec::new();
        encode_record(&batch, &mut record);
        let header = decode_header(&record).expect("an encoded header decodes");
        let again = decode_payload(&header, &record[HEADER_BYTES..]).expect("an encoded payload decodes");
        assert_eq!(again, batch);
    }
});
