//! Snapshots: the file envelope and the engine state inside. Neither may
//! panic or allocate without bound; a state that decodes holds every
//! invariant and re-encodes to a state that decodes to the same engine.
#![no_main]

use coffer_core::{Engine, EngineLimits};
use coffer_journal::format::decode_snapshot_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = decode_snapshot_file(bytes);
    let limits = EngineLimits::default();
    if let Ok(engine) = Engine::decode_snapshot(bytes, limits) {
        engine
            .check_invariants()
            .expect("a decoded state holds every invariant");
        let mut again = Vec::new();
        engine.encode_snapshot(&mut again);
        let other = Engine::decode_snapshot(&again, limits).expect("an encoded state decodes");
        assert_eq!(other.digest(), engine.digest());
    }
});
