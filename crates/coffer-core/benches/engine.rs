//! Engine apply throughput, one core, no I/O. Run with
//! `cargo bench -p coffer-core --bench engine`.
//!
//! Every transaction carries a fresh id, so each one pays the full price:
//! fingerprint, idempotency lookup and insert (with steady-state eviction),
//! account lookups, rule checks, undo log and effects.

use coffer_core::{AccountId, Amount, Engine, EngineLimits, HoldId, Operation, Transaction, TransactionId, Unit};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const ACCOUNTS: u64 = 100_000;
const BATCH: usize = 8_192;

fn account(n: u64) -> AccountId {
    AccountId::parse(&format!("acct:{n}")).unwrap()
}

fn funded_engine() -> Engine {
    let limits = EngineLimits {
        idempotency_entries_max: 1_000_000,
        ..EngineLimits::default()
    };
    let mut engine = Engine::new(limits);
    let unit = Unit::parse("USD/2").unwrap();
    let opens: Vec<Transaction> = (0..ACCOUNTS)
        .map(|n| {
            let ops = vec![
                Operation::open(account(n), unit.clone()),
                Operation::deposit(account(n), Amount::new(1 << 60).unwrap()),
            ];
            Transaction::new(TransactionId::parse(&format!("open-{n}")).unwrap(), ops, None).unwrap()
        })
        .collect();
    for chunk in opens.chunks(BATCH) {
        engine.apply_batch(1, chunk);
    }
    engine
}

/// A tiny deterministic generator (xorshift) for account choice.
struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

struct Workload {
    counter: u64,
    random: Random,
}

impl Workload {
    fn id(&mut self) -> TransactionId {
        self.counter += 1;
        TransactionId::parse(&format!("tx-{}", self.counter)).unwrap()
    }

    fn transfers(&mut self, hot: bool) -> Vec<Transaction> {
        (0..BATCH)
            .map(|_| {
                let from = self.random.below(ACCOUNTS - 1) + 1;
                let to = if hot {
                    0
                } else {
                    (from + 1 + self.random.below(ACCOUNTS - 1)) % ACCOUNTS
                };
                let op = Operation::Transfer {
                    from: account(from),
                    to: account(to),
                    amount: Amount::new(1).unwrap(),
                };
                Transaction::new(self.id(), vec![op], None).unwrap()
            })
            .collect()
    }

    /// BATCH / 2 holds, then their captures, in one batch.
    fn hold_capture_pairs(&mut self) -> Vec<Transaction> {
        let pairs = BATCH / 2;
        let first = self.counter;
        let mut batch = Vec::with_capacity(BATCH);
        for n in 0..pairs as u64 {
            let hold = HoldId::parse(&format!("hold-{}", first + n)).unwrap();
            let from = account(self.random.below(ACCOUNTS));
            let to = account(self.random.below(ACCOUNTS));
            let op = Operation::Hold {
                hold,
                account: from,
                amount: Amount::new(5).unwrap(),
                to: Some(to),
                expires_at_ms: None,
                ttl_ms: Some(60_000),
            };
            batch.push(Transaction::new(self.id(), vec![op], None).unwrap());
        }
        for n in 0..pairs as u64 {
            let hold = HoldId::parse(&format!("hold-{}", first + n)).unwrap();
            let op = Operation::Capture {
                hold,
                amount: None,
                to: None,
            };
            batch.push(Transaction::new(self.id(), vec![op], None).unwrap());
        }
        batch
    }
}

fn run(criterion: &mut Criterion, name: &str, elements: u64, make: fn(&mut Workload) -> Vec<Transaction>) {
    let mut engine = funded_engine();
    let mut workload = Workload {
        counter: 0,
        random: Random(0x2545_F491_4F6C_DD1D),
    };
    let mut timestamp = 2u64;
    let mut group = criterion.benchmark_group("engine");
    group.throughput(Throughput::Elements(elements));
    group.bench_function(name, |bencher| {
        bencher.iter_batched_ref(
            || make(&mut workload),
            |batch: &mut Vec<Transaction>| {
                timestamp += 1;
                let outcome = engine.apply_batch(timestamp, batch);
                assert!(matches!(outcome.outcomes.last(), Some(coffer_core::Outcome::New { effects, .. }) if !effects.is_empty()));
                outcome
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
    engine.check_invariants().expect("invariants after the benchmark");
}

fn benches(criterion: &mut Criterion) {
    run(criterion, "transfers_uniform_100k_accounts", BATCH as u64, |workload| {
        workload.transfers(false)
    });
    run(criterion, "transfers_into_one_hot_account", BATCH as u64, |workload| {
        workload.transfers(true)
    });
    run(
        criterion,
        "hold_capture_pairs",
        (BATCH / 2) as u64,
        Workload::hold_capture_pairs,
    );
    construction(criterion);
}

/// What building a transfer costs the thread that parses a request:
/// validation and the payload fingerprint (work the engine thread no
/// longer does), from already parsed ids.
fn construction(criterion: &mut Criterion) {
    let (from, to) = (account(12_345), account(67_890));
    let amount = Amount::new(1).unwrap();
    let ids: Vec<TransactionId> = (0..BATCH)
        .map(|n| TransactionId::parse(&format!("tx-{n}")).unwrap())
        .collect();
    let mut group = criterion.benchmark_group("transaction");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("new_transfer", |bencher| {
        bencher.iter(|| {
            ids.iter()
                .map(|id| {
                    let op = Operation::Transfer {
                        from: from.clone(),
                        to: to.clone(),
                        amount,
                    };
                    Transaction::new(id.clone(), vec![op], None).unwrap()
                })
                .collect::<Vec<_>>()
        })
    });
    group.finish();
}

criterion_group! {
    name = engine;
    config = Criterion::default().sample_size(30);
    targets = benches
}
criterion_main!(engine);
