//! What reading a batch request's items costs a worker thread: ids,
//! account ids and amounts parsed from JSON in the HTTP batch endpoint's
//! item shape. Deterministic, so count instructions rather than time it on
//! a shared machine:
//! `valgrind --tool=callgrind target/release/examples/parse_items 50`
//! (`cargo build --release -p coffer-core --example parse_items` first).

// The allocator of the coffer binary: allocation is part of the cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use coffer_core::{Operation, TransactionId};
use std::time::Instant;

const ITEMS: u32 = 1_000;

#[derive(serde::Deserialize)]
struct Item {
    #[allow(dead_code)] // read to be measured, not used
    id: TransactionId,
    #[allow(dead_code)]
    ops: Vec<Operation>,
}

fn main() {
    let rounds: u32 = std::env::args()
        .nth(1)
        .map_or(50, |value| value.parse().expect("a number of rounds"));
    let items: Vec<String> = (0..ITEMS)
        .map(|n| {
            format!(
                r#"{{"id":"tx-{n}-0123456789","ops":[{{"type":"transfer","from":"acct:{}","to":"acct:{}","amount":1}}]}}"#,
                n % 1_000,
                (n + 7) % 1_000
            )
        })
        .collect();
    let body = format!("[{}]", items.join(",")).into_bytes();
    let started = Instant::now();
    for _ in 0..rounds {
        let parsed: Vec<Item> = serde_json::from_slice(&body).expect("valid items");
        assert_eq!(parsed.len(), ITEMS as usize);
    }
    println!("{:?} per item", started.elapsed() / (rounds * ITEMS).max(1));
}
