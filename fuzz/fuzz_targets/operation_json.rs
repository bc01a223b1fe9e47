//! The JSON of one operation: the fast reader (`Deserialize`) must accept
//! exactly what the reference reader (serde's derived code) accepts, with
//! the same value.
#![no_main]

use coffer_core::Operation;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let fast = serde_json::from_str::<Operation>(text);
    let reference = Operation::from_json_reference(text);
    match (fast, reference) {
        (Ok(fast), Ok(reference)) => assert_eq!(fast, reference, "{text}"),
        (Err(_), Err(_)) => {}
        (fast, reference) => panic!("the readers disagree on {text:?}: fast {fast:?}, reference {reference:?}"),
    }
});
