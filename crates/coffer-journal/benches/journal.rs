//! Journal throughput: one batch appended and synced, at several sizes,
//! replay, and snapshot cost for 1 M accounts.
//! Run with `cargo bench -p coffer-journal --bench journal`.

use coffer_core::{AccountId, Amount, Engine, EngineLimits, Operation, Transaction, TransactionId, Unit};
use coffer_journal::{journal_batch, open, recover, EntryVerdict, JournalBatch, JournalOptions, Mode};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::{Duration, Instant};

fn transfer(n: u64) -> Transaction {
    let op = Operation::Transfer {
        from: AccountId::parse(&format!("acct:{}", n % 10_000)).unwrap(),
        to: AccountId::parse(&format!("acct:{}", (n * 7 + 1) % 10_000)).unwrap(),
        amount: Amount::new(u128::from(n % 500 + 1)).unwrap(),
    };
    Transaction::new(TransactionId::parse(&format!("tx-{n}")).unwrap(), vec![op], None).unwrap()
}

/// One engine batch of `batch_size` transfers appended and committed (one
/// write, one fsync), as the engine thread does for each batch it applies.
fn append(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("journal_append_fsync");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    for batch_size in [1usize, 64, 1_024, 8_192] {
        group.throughput(Throughput::Elements(batch_size as u64));
        let directory = tempfile::tempdir().unwrap();
        let (_, mut writer, _) = open(directory.path(), JournalOptions::default(), EngineLimits::default()).unwrap();
        let mut sequence = 0u64;
        group.bench_function(format!("batch_{batch_size}"), |bencher| {
            bencher.iter_custom(|iterations| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iterations {
                    let transactions: Vec<_> = (0..batch_size as u64).map(|k| transfer(sequence + k)).collect();
                    let batch = JournalBatch {
                        timestamp_ms: 1,
                        first_sequence: sequence,
                        verdicts: vec![EntryVerdict::Committed; batch_size],
                        transactions,
                    };
                    sequence += batch_size as u64;
                    let started = Instant::now();
                    writer.append_durably(&batch).expect("durable");
                    elapsed += started.elapsed();
                }
                elapsed
            })
        });
        writer.close().unwrap();
    }
    group.finish();
}

/// A journal of `entries` transfers over 10k funded accounts.
fn journal_with(entries: u64) -> tempfile::TempDir {
    let directory = tempfile::tempdir().unwrap();
    let (mut engine, mut writer, _) =
        open(directory.path(), JournalOptions::default(), EngineLimits::default()).unwrap();
    let opens: Vec<_> = (0..10_000)
        .map(|n| {
            let account = AccountId::parse(&format!("acct:{n}")).unwrap();
            let ops = vec![
                Operation::open(account.clone(), Unit::parse("USD/2").unwrap()),
                Operation::deposit(account, Amount::new(1 << 40).unwrap()),
            ];
            Transaction::new(TransactionId::parse(&format!("open-{n}")).unwrap(), ops, None).unwrap()
        })
        .collect();
    let outcome = engine.apply_batch(1, &opens);
    writer.append_durably(&journal_batch(opens, &outcome)).unwrap();
    let mut n = 0;
    while n < entries {
        let transactions: Vec<_> = (n..n + 8_192).map(transfer).collect();
        let outcome = engine.apply_batch(2 + n, &transactions);
        writer.append(&journal_batch(transactions, &outcome)).unwrap();
        n += 8_192;
    }
    writer.close().unwrap();
    directory
}

fn replay(criterion: &mut Criterion) {
    const ENTRIES: u64 = 1_048_576;
    let directory = journal_with(ENTRIES);
    let mut group = criterion.benchmark_group("journal_replay");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(ENTRIES + 10_000));
    group.bench_function("1M_transfers", |bencher| {
        bencher.iter(|| {
            let coffer_journal::Recovered { engine, report, .. } =
                recover(directory.path(), EngineLimits::default(), Mode::ReadOnly).unwrap();
            assert_eq!(report.entries_replayed, ENTRIES + 10_000);
            engine
        })
    });
    group.finish();
}

fn snapshot(criterion: &mut Criterion) {
    const ACCOUNTS: u64 = 1_000_000;
    let mut engine = Engine::new(EngineLimits::default());
    let unit = Unit::parse("USD/2").unwrap();
    let mut n = 0;
    while n < ACCOUNTS {
        let opens: Vec<_> = (n..n + 8_192)
            .map(|k| {
                let account = AccountId::parse(&format!("user:{k}")).unwrap();
                let ops = vec![
                    Operation::open(account.clone(), unit.clone()),
                    Operation::deposit(account, Amount::new(k as u128 + 1).unwrap()),
                ];
                Transaction::new(TransactionId::parse(&format!("open-{k}")).unwrap(), ops, None).unwrap()
            })
            .collect();
        engine.apply_batch(1, &opens);
        n += 8_192;
    }
    let mut group = criterion.benchmark_group("snapshot_1M_accounts");
    group.sample_size(10);
    // The pause: the engine thread encodes its state; nothing else runs.
    group.bench_function("encode_pause", |bencher| {
        bencher.iter(|| {
            let mut state = Vec::with_capacity(64 << 20);
            engine.encode_snapshot(&mut state);
            state
        })
    });
    let mut state = Vec::new();
    engine.encode_snapshot(&mut state);
    eprintln!("snapshot of {} accounts: {} bytes", engine.account_count(), state.len());
    // The background part: write, fsync, rename, fsync directory.
    let directory = tempfile::tempdir().unwrap();
    let mut sequence = engine.sequence_next();
    group.bench_function("write_fsync_background", |bencher| {
        bencher.iter(|| {
            sequence += 1;
            coffer_journal::write_snapshot(directory.path(), sequence, &state).unwrap()
        })
    });
    group.bench_function("decode_on_recovery", |bencher| {
        bencher.iter(|| Engine::decode_snapshot(&state, EngineLimits::default()).unwrap())
    });
    group.finish();
}

criterion_group!(benches, append, replay, snapshot);
criterion_main!(benches);
