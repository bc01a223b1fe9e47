//! Projection throughput: a journal of transfers is projected from scratch
//! into the index and SQLite (and PostgreSQL when COFFER_TEST_POSTGRES_URL
//! is set), following the journal as after a restart; the
//! figure is transfers (and rows) per second until the projector has
//! caught up. Run: `cargo bench -p coffer-history --bench projection`.
//! COFFER_BENCH_TRANSFERS sets the journal's size (default 500,000);
//! COFFER_BENCH_IDS=random gives transfers random 32-hex-digit ids (as
//! clients sending UUIDs do) instead of ids in ascending order.

use coffer_core::{AccountId, Amount, Engine, EngineLimits, Operation, Transaction, TransactionId, Unit};
use coffer_history::{Database, Projector, ProjectorSettings};
use coffer_journal::{journal_batch, JournalOptions};
use std::time::{Duration, Instant};

const ACCOUNTS: u64 = 100_000;
const BATCH: u64 = 1_000;

fn main() {
    let transfers: u64 = std::env::var("COFFER_BENCH_TRANSFERS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(500_000);
    let data = tempfile::tempdir().unwrap();
    let directory = data.path().join("journal");
    let limits = EngineLimits::default();
    let (mut engine, mut writer, _) = coffer_journal::open(&directory, JournalOptions::default(), limits).unwrap();
    fill(&mut engine, &mut writer, transfers);
    let mut databases = vec![
        ("index", Database::parse("index", data.path(), "unused").unwrap()),
        ("sqlite", Database::parse("sqlite", data.path(), "unused").unwrap()),
    ];
    if let Ok(url) = std::env::var("COFFER_TEST_POSTGRES_URL") {
        let schema = format!("bench_{}", std::process::id());
        databases.push(("postgres", Database::parse(&url, data.path(), &schema).unwrap()));
    }
    for (name, database) in databases {
        let started = Instant::now();
        let stats = std::sync::Arc::clone(writer.stats());
        let projector = Projector::start(
            database,
            directory.clone(),
            stats,
            limits,
            ProjectorSettings::default(),
            None,
        )
        .unwrap();
        assert!(projector
            .stats()
            .wait_for(engine.sequence_next(), Duration::from_secs(3_600)));
        let seconds = started.elapsed().as_secs_f64();
        let rows = projector
            .stats()
            .rows_written
            .load(std::sync::atomic::Ordering::Relaxed);
        let writing = projector
            .stats()
            .write_micros_total
            .load(std::sync::atomic::Ordering::Relaxed) as f64
            / 1e6;
        projector.stop();
        // Every transaction counts: the transfers and the account openings.
        let transactions = transfers + ACCOUNTS;
        println!(
            "projection/{name}: {transactions} transactions in {seconds:.2} s = {:.0} transactions/s, {:.0} rows/s \
             (database writes busy {:.0} % of the time)",
            transactions as f64 / seconds,
            rows as f64 / seconds,
            writing / seconds * 100.0
        );
    }
    writer.close().unwrap();
}

fn account(index: u64) -> AccountId {
    AccountId::parse(&format!("account-{index}")).unwrap()
}

/// Opens and funds the accounts, then journals uniform random transfers.
fn fill(engine: &mut Engine, writer: &mut coffer_journal::JournalWriter, transfers: u64) {
    let unit = Unit::parse("USD/2").unwrap();
    let mut timestamp_ms = 1_000;
    let mut append = |engine: &mut Engine, transactions: Vec<Transaction>| {
        timestamp_ms += 1;
        let outcome = engine.apply_batch(timestamp_ms, &transactions);
        writer.append_durably(&journal_batch(transactions, &outcome)).unwrap();
    };
    for chunk in (0..ACCOUNTS).collect::<Vec<_>>().chunks(BATCH as usize) {
        let transactions = chunk
            .iter()
            .map(|index| {
                let ops = vec![
                    Operation::open(account(*index), unit.clone()),
                    Operation::deposit(account(*index), Amount::new(1_000_000).unwrap()),
                ];
                Transaction::new(TransactionId::parse(&format!("fund-{index}")).unwrap(), ops, None).unwrap()
            })
            .collect();
        append(engine, transactions);
    }
    let random_ids = std::env::var("COFFER_BENCH_IDS").is_ok_and(|ids| ids == "random");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for batch in 0..transfers / BATCH {
        let transactions = (0..BATCH)
            .map(|item| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let from = state % ACCOUNTS;
                let to = (from + 1 + (state >> 32) % (ACCOUNTS - 1)) % ACCOUNTS;
                let op = Operation::transfer(account(from), account(to), Amount::new(1).unwrap());
                let id = if random_ids {
                    format!("{:016x}{:016x}", state, state.wrapping_mul(0x2545_f491_4f6c_dd1d))
                } else {
                    format!("t-{batch}-{item}")
                };
                Transaction::new(TransactionId::parse(&id).unwrap(), vec![op], None).unwrap()
            })
            .collect();
        append(engine, transactions);
    }
}
