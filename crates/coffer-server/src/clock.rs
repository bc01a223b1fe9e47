//! The wall clock and server-made ids, in one leaf module. The engine
//! never reads the clock: the sequencer stamps each batch with `now_ms`.

use coffer_core::TransactionId;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// A fresh id for a request that brought none: unique within this
/// process (a counter) and across restarts (the clock's nanoseconds).
/// Such a request cannot be retried safely, which the docs say.
pub fn generated_id() -> TransactionId {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let text = format!("gen-{nanos:x}-{:x}", COUNTER.fetch_add(1, Ordering::Relaxed));
    TransactionId::parse(&text).expect("generated ids are valid")
}
