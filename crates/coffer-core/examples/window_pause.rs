//! The longest engine pause while the idempotency window fills and then
//! churns: applies N unique deposits in batches of 8,192 under the default
//! limits (24 h, 20 M ids) and reports the slowest batch.
//! `cargo run --release -p coffer-core --example window_pause -- 60000000`

use coffer_core::{AccountId, Amount, Engine, EngineLimits, Operation, Transaction, TransactionId, Unit};
use std::time::Instant;

const BATCH: u64 = 8_192;

fn transaction(id: &str, op: Operation) -> Transaction {
    Transaction::new(TransactionId::parse(id).expect("valid id"), vec![op], None).expect("valid transaction")
}

fn main() {
    let total: u64 = std::env::args()
        .nth(1)
        .map_or(20_000_000, |value| value.parse().expect("a count of ids"));
    let mut engine = Engine::new(EngineLimits::default());
    let account = AccountId::parse("account").expect("valid id");
    engine.apply_batch(
        1,
        &[transaction(
            "open",
            Operation::open(account.clone(), Unit::parse("X").expect("unit")),
        )],
    );
    let one = Amount::new(1).expect("positive");
    let (mut slowest_ms, mut slowest_at) = (0.0f64, 0);
    let started = Instant::now();
    for first in (0..total).step_by(BATCH as usize) {
        let batch: Vec<_> = (first..first + BATCH)
            .map(|n| transaction(&format!("t{n}"), Operation::deposit(account.clone(), one)))
            .collect();
        let applying = Instant::now();
        engine.apply_batch(2, &batch);
        let elapsed_ms = applying.elapsed().as_secs_f64() * 1e3;
        if elapsed_ms > slowest_ms {
            (slowest_ms, slowest_at) = (elapsed_ms, first);
        }
    }
    println!(
        "{total} ids in {:.1} s; slowest batch of {BATCH}: {slowest_ms:.1} ms, at {slowest_at} ids",
        started.elapsed().as_secs_f64()
    );
}
