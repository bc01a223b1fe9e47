//! A Kafka command (the JSON of `POST /v1/transactions`): reading never
//! panics or allocates without bound, and a command that reads writes back
//! to JSON that reads to the same transaction.
#![no_main]

use coffer_core::Command;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(transaction) = Command::read(bytes, || "kafka:commands:0:1".to_owned()) {
        let json = serde_json::to_vec(&Command::of(&transaction)).expect("a command serializes");
        let again = Command::read(&json, || unreachable!("the written command has its id"));
        assert_eq!(again.as_ref(), Ok(&transaction));
    }
});
