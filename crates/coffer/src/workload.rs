//! Deterministic workloads, shared by the load tool and the tests that
//! check what it wrote: the same seed always gives the same batches, so a
//! test can rebuild the exact expected state for any journal length.

use coffer_core::{AccountId, Amount, Operation, Transaction, TransactionId, Unit};

/// A small xorshift generator: reproducible, no dependency, no clock.
pub struct Random(u64);

impl Random {
    pub fn new(seed: u64) -> Self {
        Random(seed.max(1))
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

pub const LOAD_ACCOUNTS: u64 = 1_000;

fn account(n: u64) -> AccountId {
    AccountId::parse(&format!("load:{n}")).expect("valid id")
}

/// Batch `n` of the load stream: batch 0 opens and funds the accounts,
/// later ones are random transfers (some rejected, some retried ids).
pub fn load_batch(n: u64, batch_size: usize) -> (u64, Vec<Transaction>) {
    let timestamp_ms = 1_700_000_000_000 + n * 3;
    if n == 0 {
        let unit = Unit::parse("USD/2").expect("valid unit");
        let opens = (0..LOAD_ACCOUNTS)
            .map(|k| {
                let ops = vec![
                    Operation::open(account(k), unit.clone()),
                    Operation::deposit(account(k), Amount::new(10_000).expect("positive")),
                ];
                Transaction::new(TransactionId::parse(&format!("open:{k}")).expect("valid id"), ops, None)
                    .expect("valid")
            })
            .collect();
        return (timestamp_ms, opens);
    }
    let mut random = Random::new(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let transactions = (0..batch_size as u64)
        .map(|k| {
            // One in sixteen reuses an id from the previous batch: a retry.
            let id = if random.below(16) == 0 {
                format!("tx:{}:{k}", n - 1)
            } else {
                format!("tx:{n}:{k}")
            };
            let from = random.below(LOAD_ACCOUNTS);
            let to = (from + 1 + random.below(LOAD_ACCOUNTS - 1)) % LOAD_ACCOUNTS;
            let amount = Amount::new(u128::from(random.below(300) + 1)).expect("positive");
            let op = Operation::Transfer {
                from: account(from),
                to: account(to),
                amount,
            };
            Transaction::new(TransactionId::parse(&id).expect("valid id"), vec![op], None).expect("valid")
        })
        .collect();
    (timestamp_ms, transactions)
}
