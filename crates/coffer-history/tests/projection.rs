//! The projector against a real journal and a real database, once per
//! store: the index and SQLite always, PostgreSQL when
//! COFFER_TEST_POSTGRES_URL is set.
//! A random workload (two units, holds that expire, rejections, duplicate
//! ids) is journaled with known timestamps; then the store must equal a
//! fresh projection of the journal, every account's entries must sum to
//! its balance, and `balance_at(T)` must equal an engine replayed up to T.

use coffer_core::{AccountId, Amount, Engine, EngineLimits, HoldId, Operation, Transaction, TransactionId, Unit};
use coffer_history::{
    verify, Changes, Cursor, Database, Export, HistoryQuery, Projector, ProjectorSettings, Shape, HISTORY_PAGE_MAX,
};
use coffer_journal::{journal_batch, JournalOptions, JournalWriter, Position};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

fn stores(data: &Path) -> Vec<Database> {
    let mut stores = vec![
        Database::parse("index", data, "unused").unwrap(),
        Database::parse("sqlite", data, "unused").unwrap(),
    ];
    match std::env::var("COFFER_TEST_POSTGRES_URL") {
        Ok(url) => {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let schema = format!(
                "projection_{}_{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            stores.push(Database::parse(&url, data, &schema).unwrap());
        }
        // Past the harness's capture, so that CI sees it.
        Err(_) => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: projection tests on PostgreSQL (set COFFER_TEST_POSTGRES_URL)"
            );
        }
    }
    stores
}

/// A small deterministic generator: the workload must be the same on
/// every run so a failure can be replayed.
struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

const ACCOUNTS: u64 = 12;

fn account(index: u64) -> AccountId {
    AccountId::parse(&format!("acct-{index}")).unwrap()
}

fn unit_of(index: u64) -> Unit {
    Unit::parse(if index.is_multiple_of(2) { "USD/2" } else { "EUR/2" }).unwrap()
}

fn amount(value: u64) -> Amount {
    Amount::new(u128::from(value.max(1))).unwrap()
}

fn transaction(id: String, ops: Vec<Operation>) -> Transaction {
    Transaction::new(TransactionId::parse(&id).unwrap(), ops, None).unwrap()
}

/// Batches of the workload with their timestamps.
fn workload(seed: u64, batches: u64) -> Vec<(u64, Vec<Transaction>)> {
    let mut random = Random(seed);
    let mut out = Vec::new();
    let opens: Vec<Transaction> = (0..ACCOUNTS)
        .map(|index| {
            transaction(
                format!("open-{index}"),
                vec![Operation::open(account(index), unit_of(index))],
            )
        })
        .collect();
    out.push((1_000, opens));
    let mut holds = 0u64;
    for batch in 0..batches {
        let timestamp_ms = 2_000 + batch * 100;
        let mut transactions = Vec::new();
        for item in 0..random.below(6) {
            let id = format!("t-{batch}-{item}");
            let (a, b) = (random.below(ACCOUNTS), random.below(ACCOUNTS));
            let op = match random.below(6) {
                0 | 1 => Operation::deposit(account(a), amount(random.below(500))),
                2 | 3 => Operation::transfer(account(a), account(b), amount(random.below(300))),
                4 => {
                    holds += 1;
                    Operation::Hold {
                        hold: HoldId::parse(&format!("h-{holds}")).unwrap(),
                        account: account(a),
                        amount: amount(random.below(100)),
                        to: (a != b).then(|| account(b)),
                        expires_at_ms: None,
                        ttl_ms: Some(50 + random.below(400)),
                    }
                }
                _ if holds > 0 => {
                    let hold = HoldId::parse(&format!("h-{}", 1 + random.below(holds))).unwrap();
                    if random.below(2) == 0 {
                        Operation::Capture {
                            hold,
                            amount: None,
                            to: None,
                        }
                    } else {
                        Operation::Release { hold }
                    }
                }
                _ => Operation::deposit(account(a), amount(1)),
            };
            transactions.push(transaction(id, vec![op]));
        }
        // A retry of an earlier id, same payload or not.
        if batch > 3 && random.below(3) == 0 {
            let earlier = out[1 + random.below(out.len() as u64 - 1) as usize].1.first().cloned();
            transactions.extend(earlier);
        }
        out.push((timestamp_ms, transactions));
    }
    out
}

/// Journals the workload, as the server would.
fn journal(directory: &Path, workload: &[(u64, Vec<Transaction>)]) -> (Engine, JournalWriter) {
    let limits = EngineLimits::default();
    let (mut engine, mut writer, _) = coffer_journal::open(directory, JournalOptions::default(), limits).unwrap();
    append(&mut engine, &mut writer, workload);
    (engine, writer)
}

/// Applies and journals more of a workload (an empty batch journals only
/// when it expired holds).
fn append(engine: &mut Engine, writer: &mut JournalWriter, workload: &[(u64, Vec<Transaction>)]) {
    for (timestamp_ms, transactions) in workload {
        let outcome = engine.apply_batch(*timestamp_ms, transactions);
        if transactions.is_empty() && outcome.expired.is_empty() {
            continue;
        }
        writer
            .append_durably(&journal_batch(transactions.clone(), &outcome))
            .unwrap();
    }
}

/// The SQL stores under test (the export's targets).
fn sql_stores(data: &Path) -> Vec<Database> {
    stores(data)
        .into_iter()
        .filter(|database| database.shape() == Shape::Rows)
        .collect()
}

/// Runs a projector until it has written everything the journal holds.
fn project_everything(database: &Database, directory: &Path, writer: &JournalWriter, sequence_next: u64) {
    project_everything_with(database, directory, writer, sequence_next, settings());
}

fn project_everything_with(
    database: &Database,
    directory: &Path,
    writer: &JournalWriter,
    sequence_next: u64,
    settings: ProjectorSettings,
) {
    let stats = std::sync::Arc::clone(writer.stats());
    let limits = EngineLimits::default();
    let projector = Projector::start(database.clone(), directory.to_path_buf(), stats, limits, settings, None).unwrap();
    assert!(projector.stats().wait_for(sequence_next, Duration::from_secs(60)));
    projector.stop();
}

fn settings() -> ProjectorSettings {
    ProjectorSettings {
        rows_per_write_max: 40,
        ..ProjectorSettings::default()
    }
}

#[test]
fn the_store_equals_the_journal_and_sums_to_the_balances() {
    let data = tempfile::tempdir().unwrap();
    let directory = data.path().join("journal");
    let workload = workload(0x5eed, 300);
    let (engine, writer) = journal(&directory, &workload);
    for database in stores(data.path()) {
        let limits = EngineLimits::default();
        project_everything(&database, &directory, &writer, engine.sequence_next());
        let report = verify(&directory, &database, limits).unwrap();
        assert!(
            report.transactions > 500 && report.entries > 500 && report.holds > 20,
            "{report:?}"
        );

        let mut reader = database.open_reader().unwrap();
        for index in 0..ACCOUNTS {
            let view = engine.account(&account(index)).unwrap();
            let query = HistoryQuery {
                account: view.id.to_string(),
                before: None,
                from_ms: None,
                to_ms: None,
                limit: HISTORY_PAGE_MAX,
            };
            let entries = reader.history(&query).unwrap();
            let available: i128 = entries.iter().map(|entry| entry.available_change).sum();
            let frozen: i128 = entries.iter().map(|entry| entry.frozen_change).sum();
            assert_eq!((available, frozen), (view.available, view.frozen), "{}", view.id);
        }

        // Balances at past instants equal an engine replayed up to them.
        for at_ms in [1_500, 2_250, 9_999, 20_000, 31_950] {
            let mut replayed = Engine::new(limits);
            for (timestamp_ms, transactions) in workload.iter().filter(|(timestamp_ms, _)| *timestamp_ms <= at_ms) {
                replayed.apply_batch(*timestamp_ms, transactions);
            }
            for index in 0..ACCOUNTS {
                let name = account(index);
                let expected = replayed
                    .account(&name)
                    .map_or((0, 0), |view| (view.available, view.frozen));
                let stored = reader
                    .balance_at(name.as_str(), at_ms as i64)
                    .unwrap()
                    .map_or((0, 0), |entry| (entry.available, entry.frozen));
                assert_eq!(stored, expected, "{name} at {at_ms}");
            }
        }
    }
    writer.close().unwrap();
}

#[test]
fn a_restarted_projector_neither_repeats_nor_skips() {
    let data = tempfile::tempdir().unwrap();
    let directory = data.path().join("journal");
    let workload = workload(0xfeed, 200);
    let (first_half, second_half) = workload.split_at(100);
    let limits = EngineLimits::default();
    for database in stores(data.path()) {
        let _ = std::fs::remove_dir_all(&directory);
        let (mut engine, mut writer) = journal(&directory, first_half);
        let stats = std::sync::Arc::clone(writer.stats());
        let projector = Projector::start(
            database.clone(),
            directory.clone(),
            std::sync::Arc::clone(&stats),
            limits,
            settings(),
            None,
        )
        .unwrap();
        // More records arrive while the projector runs; it stops midway.
        for (timestamp_ms, transactions) in &second_half[..50] {
            let outcome = engine.apply_batch(*timestamp_ms, transactions);
            writer
                .append_durably(&journal_batch(transactions.clone(), &outcome))
                .unwrap();
        }
        projector.stop();
        for (timestamp_ms, transactions) in &second_half[50..] {
            let outcome = engine.apply_batch(*timestamp_ms, transactions);
            writer
                .append_durably(&journal_batch(transactions.clone(), &outcome))
                .unwrap();
        }
        let projector = Projector::start(database.clone(), directory.clone(), stats, limits, settings(), None).unwrap();
        assert!(projector
            .stats()
            .wait_for(engine.sequence_next(), Duration::from_secs(30)));
        projector.stop();
        writer.close().unwrap();
        let report = verify(&directory, &database, limits).unwrap();
        assert_eq!(report.sequence_next, engine.sequence_next());
    }
}

#[test]
fn bad_store_addresses_are_refused_clearly() {
    let data = Path::new("/tmp");
    for text in ["mysql://x", "", "postgres"] {
        let error = Database::parse(text, data, "coffer").unwrap_err().to_string();
        assert!(error.contains("expected index"), "{text}: {error}");
    }
    let error = Database::parse("postgres://h/db", data, "Bad-Schema")
        .unwrap_err()
        .to_string();
    assert!(error.contains("schema"), "{error}");
}

/// Holds are updated in place (captures, releases, expiries), so `verify`
/// compares their final state: a changed or missing hold row is found.
#[test]
fn verify_finds_a_changed_or_missing_hold() {
    let data = tempfile::tempdir().unwrap();
    let directory = data.path().join("journal");
    let workload = workload(0x401d, 120);
    let (engine, writer) = journal(&directory, &workload);
    let database = Database::parse("sqlite", data.path(), "unused").unwrap();
    let limits = EngineLimits::default();
    project_everything(&database, &directory, &writer, engine.sequence_next());
    let report = verify(&directory, &database, limits).unwrap();
    assert!(report.holds > 5, "{report:?}");

    let store = rusqlite::Connection::open(data.path().join("history.sqlite")).unwrap();
    let changed = store
        .execute(
            "UPDATE holds SET status = CASE status WHEN 'active' THEN 'released' ELSE 'active' END \
             WHERE id = (SELECT MIN(id) FROM holds)",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    let error = verify(&directory, &database, limits).unwrap_err().to_string();
    assert!(error.contains("hold: stored"), "{error}");
    store
        .execute("DELETE FROM holds WHERE id = (SELECT MIN(id) FROM holds)", [])
        .unwrap();
    let error = verify(&directory, &database, limits).unwrap_err().to_string();
    assert!(error.contains("hold missing"), "{error}");
}

/// Rows wait for the write interval only while nobody reads: a reader
/// waiting for them has them written at once. With an hour's interval the
/// wait below would time out without that.
#[test]
fn a_waiting_reader_has_rows_written_before_the_interval() {
    let data = tempfile::tempdir().unwrap();
    let directory = data.path().join("journal");
    let (engine, writer) = journal(&directory, &workload(0xfeed, 40));
    for database in stores(data.path()) {
        let settings = ProjectorSettings {
            write_interval: Duration::from_secs(3_600),
            ..ProjectorSettings::default()
        };
        project_everything_with(&database, &directory, &writer, engine.sequence_next(), settings);
    }
}

/// Every account's entries, newest first, read in global order.
fn every_entry(reader: &mut dyn coffer_history::Reader) -> Vec<coffer_history::HistoryEntry> {
    let mut entries = Vec::new();
    loop {
        // History ids start at 0.
        let after = entries
            .last()
            .map_or(-1, |entry: &coffer_history::HistoryEntry| entry.history_id);
        let page = reader.entries_after(after, HISTORY_PAGE_MAX).unwrap();
        if page.is_empty() {
            return entries;
        }
        entries.extend(page);
    }
}

#[test]
fn every_history_page_equals_a_filter_over_all_entries() {
    let data = tempfile::tempdir().unwrap();
    let directory = data.path().join("journal");
    // Long enough that every account has several marks' worth of entries.
    let workload = workload(0xc4a1, 900);
    let (engine, writer) = journal(&directory, &workload);
    for database in stores(data.path()) {
        project_everything(&database, &directory, &writer, engine.sequence_next());
        let mut reader = database.open_reader().unwrap();
        let all = every_entry(reader.as_mut());
        let last_id = all.last().unwrap().history_id;
        let per_account_min = (0..ACCOUNTS)
            .map(|index| {
                all.iter()
                    .filter(|entry| entry.account == account(index).as_str())
                    .count()
            })
            .min()
            .unwrap();
        assert!(per_account_min > 100, "every chain crosses marks: {per_account_min}");
        let mut random = Random(0x51de);
        for round in 0..600 {
            let name = account(random.below(ACCOUNTS)).to_string();
            let mut pick = |present: bool, bound: u64| present.then(|| random.below(bound) as i64);
            let query = HistoryQuery {
                account: name.clone(),
                before: pick(round % 2 == 0, last_id as u64 + 10),
                from_ms: pick(round % 3 == 0, 95_000),
                to_ms: pick(round % 5 < 3, 95_000),
                limit: 1 + (round % 7) * 20,
            };
            let expected: Vec<_> = all
                .iter()
                .rev()
                .filter(|entry| {
                    entry.account == name
                        && entry.history_id < query.before.unwrap_or(i64::MAX)
                        && entry.timestamp_ms >= query.from_ms.unwrap_or(i64::MIN)
                        && entry.timestamp_ms <= query.to_ms.unwrap_or(i64::MAX)
                })
                .take(query.limit as usize)
                .cloned()
                .collect();
            let found = reader.history(&query).unwrap();
            let ids = |entries: &[coffer_history::HistoryEntry]| {
                entries.iter().map(|entry| entry.history_id).collect::<Vec<_>>()
            };
            assert_eq!(ids(&found), ids(&expected), "{query:?}");
            assert_eq!(found, expected, "{query:?}");
            if let Some(at_ms) = query.to_ms {
                let newest = all
                    .iter()
                    .rev()
                    .find(|entry| entry.account == name && entry.timestamp_ms <= at_ms);
                assert_eq!(
                    reader.balance_at(&name, at_ms).unwrap().as_ref(),
                    newest,
                    "{name} at {at_ms}"
                );
            }
        }
        // An account with no entries, and one that does not exist.
        let nobody = HistoryQuery {
            account: "nobody".into(),
            before: None,
            from_ms: None,
            to_ms: None,
            limit: 10,
        };
        assert!(reader.history(&nobody).unwrap().is_empty());
        assert!(reader.balance_at("nobody", i64::MAX).unwrap().is_none());
    }
    writer.close().unwrap();
}

/// Two writers of one PostgreSQL store (a cluster shard's old owner and its
/// new one): a write applies only where its writer last saw the cursor, and
/// a write that is already in (its commit's answer was lost) is not redone.
#[test]
fn a_postgres_write_applies_only_where_its_writer_left_the_cursor() {
    let data = tempfile::tempdir().unwrap();
    let Some(database) = stores(data.path())
        .into_iter()
        .find(|store| matches!(store, Database::Postgres { .. }))
    else {
        return;
    };
    let cursor_at = |offset: u64| coffer_history::Cursor {
        position: coffer_journal::Position { segment: 0, offset },
        sequence_next: offset,
        history_next: 0,
        timestamp_ms: offset,
    };
    let rows = coffer_history::Changes::default();
    let mut old = database.open_writer().unwrap();
    let mut new = database.open_writer().unwrap();
    assert_eq!(old.cursor().unwrap(), None);
    new.write(&rows, &cursor_at(5)).unwrap();
    new.write(&rows, &cursor_at(5)).unwrap();
    let refused = old.write(&rows, &cursor_at(3));
    assert!(
        matches!(refused, Err(coffer_history::HistoryError::CursorMoved { .. })),
        "{refused:?}"
    );
    assert_eq!(
        new.cursor().unwrap(),
        Some(cursor_at(5)),
        "the refused write changed nothing"
    );
    // The same rows again, as a writer that computed them from the same log.
    old.write(&rows, &cursor_at(5)).unwrap();
    new.write(&rows, &cursor_at(9)).unwrap();
    assert_eq!(old.cursor().unwrap(), Some(cursor_at(9)));
}

/// Amounts go into PostgreSQL in COPY's binary NUMERIC form: each SQL
/// store gives back exactly the 128-bit amounts it was given, at the
/// edges of the range and of the base-10,000 digits.
#[test]
fn every_sql_store_keeps_128_bit_amounts_exactly() {
    let data = tempfile::tempdir().unwrap();
    let amounts = [
        0,
        1,
        -1,
        9_999,
        10_000,
        -10_001,
        100_000_000,
        123_456_789_012_345_678,
        10i128.pow(38),
        i128::MAX,
        i128::MIN,
        i128::MIN + 1,
    ];
    for database in sql_stores(data.path()) {
        let mut changes = Changes::default();
        for (n, amount) in amounts.iter().enumerate() {
            changes.entries.push(coffer_history::HistoryEntry {
                history_id: n as i64,
                account: format!("a-{n}"),
                unit: "X/0".into(),
                kind: "transaction",
                transaction_id: Some(format!("t-{n}")),
                hold_id: None,
                sequence: n as i64,
                timestamp_ms: 1_000,
                available_change: *amount,
                frozen_change: amount.wrapping_neg(),
                available: *amount,
                frozen: amount / 7,
            });
        }
        let cursor = Cursor {
            sequence_next: amounts.len() as u64,
            history_next: amounts.len() as i64,
            ..Cursor::default()
        };
        database.open_writer().unwrap().write(&changes, &cursor).unwrap();
        let read = database.open_reader().unwrap().entries_after(-1, 100).unwrap();
        assert_eq!(read, changes.entries, "{}", database.describe());
    }
}

/// The index against the SQLite store built from the same journal: every
/// answer the server reads (history pages with cursors and time bounds,
/// balances at instants, transactions by id, known or not) is the same.
/// Few accounts and many transfers, so that each account's chain crosses
/// the index's marks of the first four levels (every 8th, 64th, 512th and
/// 4,096th entry).
#[test]
fn the_index_answers_as_the_sqlite_store_does() {
    let data = tempfile::tempdir().unwrap();
    let directory = data.path().join("journal");
    const BATCHES: u64 = 4_000;
    const ITEMS: u64 = 5;
    let mut random = Random(0xd1ff);
    let mut workload = vec![(
        1_000,
        (0..3)
            .map(|index| {
                transaction(
                    format!("open-{index}"),
                    vec![Operation::open(account(index), unit_of(0))],
                )
            })
            .collect::<Vec<_>>(),
    )];
    for batch in 0..BATCHES {
        let transactions = (0..ITEMS)
            .map(|item| {
                let (a, b) = (random.below(3), random.below(3));
                let op = if a == b {
                    Operation::deposit(account(a), amount(random.below(50)))
                } else {
                    Operation::transfer(account(a), account(b), amount(random.below(40)))
                };
                transaction(format!("d-{batch}-{item}"), vec![op])
            })
            .collect();
        workload.push((2_000 + batch * 10, transactions));
    }
    let (engine, writer) = journal(&directory, &workload);
    let index = Database::parse("index", data.path(), "unused").unwrap();
    let sqlite = Database::parse("sqlite", data.path(), "unused").unwrap();
    let settings = ProjectorSettings {
        rows_per_write_max: 5_000,
        ..ProjectorSettings::default()
    };
    for database in [&index, &sqlite] {
        project_everything_with(database, &directory, &writer, engine.sequence_next(), settings);
    }
    let (mut a, mut b) = (index.open_reader().unwrap(), sqlite.open_reader().unwrap());
    let entries = every_entry(a.as_mut());
    assert_eq!(entries, every_entry(b.as_mut()));
    let deepest = (0..3)
        .map(|index| {
            entries
                .iter()
                .filter(|entry| entry.account == account(index).as_str())
                .count()
        })
        .min()
        .unwrap();
    assert!(
        deepest > 2 * 4_096,
        "every chain crosses two fourth-level marks: {deepest}"
    );
    let last_id = entries.last().unwrap().history_id as u64;
    let end_ms = 2_000 + BATCHES * 10;
    for round in 0..400u64 {
        let name = if round % 50 == 49 {
            "nobody".to_owned()
        } else {
            account(random.below(3)).to_string()
        };
        let query = HistoryQuery {
            account: name.clone(),
            before: (round % 2 == 0).then(|| random.below(last_id + 10) as i64),
            from_ms: (round % 3 == 0).then(|| random.below(end_ms) as i64),
            to_ms: (round % 5 < 3).then(|| random.below(end_ms) as i64),
            limit: [1, 7, 100, HISTORY_PAGE_MAX][round as usize % 4],
        };
        assert_eq!(a.history(&query).unwrap(), b.history(&query).unwrap(), "{query:?}");
        let at_ms = random.below(end_ms + 100) as i64;
        assert_eq!(
            a.balance_at(&name, at_ms).unwrap(),
            b.balance_at(&name, at_ms).unwrap(),
            "{name} at {at_ms}"
        );
    }
    let ids: Vec<String> = (0..300)
        .map(|n| match n % 3 {
            0 => format!("d-{}-{}", random.below(BATCHES), random.below(ITEMS)),
            1 => format!("open-{}", random.below(3)),
            _ => format!("never-{n}"),
        })
        .collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (found_a, found_b) = (a.transactions(&ids).unwrap(), b.transactions(&ids).unwrap());
    assert!(found_a.len() >= 190, "{}", found_a.len());
    assert_eq!(found_a, found_b);
    assert_eq!(
        a.transactions_after(-1, HISTORY_PAGE_MAX).unwrap(),
        b.transactions_after(-1, HISTORY_PAGE_MAX).unwrap()
    );
    writer.close().unwrap();
}

/// What a crash can leave in the index's directory: bytes past the
/// manifest at the end of every file, a run or heads checkpoint that no
/// manifest lists yet, a half-written manifest. Opening cuts and deletes
/// them, resumes from the heads checkpoint (written once a million entries
/// have come) plus the entries after it, and the index then equals the
/// journal, links and heads included.
#[test]
fn a_reopened_index_drops_what_a_crash_left_and_resumes_from_its_checkpoint() {
    let data = tempfile::tempdir().unwrap();
    let directory = data.path().join("journal");
    let deposits = |from: u64, to: u64| -> Vec<(u64, Vec<Transaction>)> {
        (from..to)
            .map(|batch| {
                let transactions = (0..1_000)
                    .map(|item| {
                        let op = Operation::deposit(account((batch * 7 + item) % ACCOUNTS), amount(1 + item));
                        transaction(format!("c-{batch}-{item}"), vec![op])
                    })
                    .collect();
                (2_000 + batch, transactions)
            })
            .collect()
    };
    let mut workload = workload(0xc4a5, 0);
    workload.extend(deposits(0, 560));
    let (mut engine, mut writer) = journal(&directory, &workload);
    let index = Database::parse("index", data.path(), "unused").unwrap();
    project_everything(&index, &directory, &writer, engine.sequence_next());
    let history = data.path().join("history");
    let listed = |prefix: &str| {
        std::fs::read_dir(&history)
            .unwrap()
            .filter(|item| item.as_ref().unwrap().file_name().to_str().unwrap().starts_with(prefix))
            .count()
    };
    assert_eq!(listed("heads-"), 1, "a checkpoint after 1,120,000 entries");

    for (file, bytes) in [
        ("entries-v2", 1_000),
        ("transactions", 100),
        ("blob", 50),
        ("accounts", 10),
    ] {
        let mut handle = std::fs::OpenOptions::new()
            .append(true)
            .open(history.join(file))
            .unwrap();
        handle.write_all(&vec![0xab; bytes]).unwrap();
    }
    for stray in ["ids-0000000000999999.run", "heads-0000000000999998", "manifest.tmp"] {
        std::fs::write(history.join(stray), b"left by a crash").unwrap();
    }
    for (timestamp_ms, transactions) in deposits(560, 600) {
        let outcome = engine.apply_batch(timestamp_ms, &transactions);
        writer.append_durably(&journal_batch(transactions, &outcome)).unwrap();
    }
    project_everything(&index, &directory, &writer, engine.sequence_next());
    assert!(!history.join("ids-0000000000999999.run").exists() && !history.join("heads-0000000000999998").exists());
    writer.close().unwrap();
    let report = verify(&directory, &index, EngineLimits::default()).unwrap();
    assert_eq!(report.sequence_next, engine.sequence_next());
    assert!(report.entries > 1_200_000, "{report:?}");
    // 600,000 ids in merged runs whose block filters were rebuilt at the
    // reopening: every id is found, and no other.
    let known: Vec<String> = (0..600)
        .map(|n| format!("c-{}-{}", n * 997 % 600, n * 13 % 1_000))
        .collect();
    let unknown: Vec<String> = (0..600).map(|n| format!("c-{}-{}", 600 + n, n)).collect();
    let mut reader = index.open_reader().unwrap();
    let found = reader
        .transactions(&known.iter().map(String::as_str).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(found.len(), known.len());
    assert!(reader
        .transactions(&unknown.iter().map(String::as_str).collect::<Vec<_>>())
        .unwrap()
        .is_empty());
}

/// The engine's feed, with records lost on the way: while nothing is
/// durable the projector takes nothing from the feed, so 600 records
/// appended without a sync overflow it and most are dropped. The projector
/// notices the gap, follows the journal from its cursor, joins the feed
/// again, and the index equals the journal.
#[test]
fn records_the_feed_dropped_are_taken_from_the_journal() {
    let data = tempfile::tempdir().unwrap();
    let directory = data.path().join("journal");
    let limits = EngineLimits::default();
    let (mut engine, mut writer, _) = coffer_journal::open(&directory, JournalOptions::default(), limits).unwrap();
    let (mut sender, receiver) = coffer_history::feed(&engine, writer.end_position());
    let dropped = std::sync::Arc::clone(&receiver.dropped);
    let index = Database::parse("index", data.path(), "unused").unwrap();
    let stats = std::sync::Arc::clone(writer.stats());
    let projector = Projector::start(
        index.clone(),
        directory.clone(),
        stats,
        limits,
        settings(),
        Some(receiver),
    )
    .unwrap();
    let workload = workload(0xfeed5, 900);
    for (number, (timestamp_ms, transactions)) in workload.iter().enumerate() {
        let outcome = engine.apply_batch(*timestamp_ms, transactions);
        if transactions.is_empty() && outcome.expired.is_empty() {
            continue;
        }
        let batch = journal_batch(transactions.clone(), &outcome);
        writer.append(&batch).unwrap();
        sender.offer(
            &engine,
            batch.first_sequence,
            &batch.transactions,
            &outcome,
            writer.end_position(),
        );
        let unsynced = (100..700).contains(&number);
        if !unsynced {
            writer.commit().unwrap();
            if number == 99 {
                // On the feed before the overflow.
                assert!(projector
                    .stats()
                    .wait_for(engine.sequence_next(), Duration::from_secs(30)));
            }
        }
    }
    assert!(projector
        .stats()
        .wait_for(engine.sequence_next(), Duration::from_secs(30)));
    let (from_feed, gaps) = (
        projector.stats().feed_records.load(Ordering::Relaxed),
        projector.stats().feed_gaps.load(Ordering::Relaxed),
    );
    projector.stop();
    writer.close().unwrap();
    assert!(dropped.load(Ordering::Relaxed) > 100, "the feed overflowed");
    assert!(
        from_feed > 100 && gaps >= 1,
        "{from_feed} records from the feed, {gaps} gaps"
    );
    let report = verify(&directory, &index, limits).unwrap();
    assert_eq!(report.sequence_next, engine.sequence_next());
}

/// The export copies the index into each SQL store in writes of a bounded
/// size, resumes from its cursor when the index has grown, and the copy
/// equals a projection of the journal, holds included.
#[test]
fn the_export_copies_the_index_in_bounded_writes() {
    let data = tempfile::tempdir().unwrap();
    let directory = data.path().join("journal");
    let workload = workload(0xe4a0, 300);
    let (first_half, second_half) = workload.split_at(150);
    let (mut engine, mut writer) = journal(&directory, first_half);
    let index = Database::parse("index", data.path(), "unused").unwrap();
    project_everything(&index, &directory, &writer, engine.sequence_next());
    let targets = sql_stores(data.path());
    let export_settings = ProjectorSettings {
        rows_per_write_max: 50,
        ..settings()
    };
    let export_everything = |target: &Database, sequence_next: u64| {
        let export = Export::start(&index, target.clone(), export_settings).unwrap();
        assert!(export.stats().wait_for(sequence_next, Duration::from_secs(60)));
        let writes = export.stats().writes.load(Ordering::Relaxed);
        export.stop();
        writes
    };
    for target in &targets {
        let writes = export_everything(target, engine.sequence_next());
        assert!(writes > 10, "{}: {writes} writes of at most 50 rows", target.describe());
    }
    append(&mut engine, &mut writer, second_half);
    project_everything(&index, &directory, &writer, engine.sequence_next());
    writer.close().unwrap();
    for target in &targets {
        export_everything(target, engine.sequence_next());
        let report = verify(&directory, target, EngineLimits::default()).unwrap();
        assert_eq!(report.sequence_next, engine.sequence_next());
        assert!(report.holds > 20 && report.entries > 500, "{report:?}");
    }
    let error = Export::start(&targets[0], targets[0].clone(), export_settings)
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("copies the index"), "{error}");
}

/// A store the export left between two of the index's writes has no
/// journal position: refused as a history store, saying what to do.
#[test]
fn a_store_the_export_left_midway_is_refused_as_the_history_store() {
    let data = tempfile::tempdir().unwrap();
    let directory = data.path().join("journal");
    let (_, writer) = journal(&directory, &workload(0x3a1d, 10));
    for target in sql_stores(data.path()) {
        let midway = Cursor {
            position: Position {
                segment: Cursor::MIDWAY_SEGMENT,
                offset: 0,
            },
            sequence_next: 5,
            history_next: 9,
            timestamp_ms: 2_000,
        };
        let mut store = target.open_writer().unwrap();
        store.write(&Changes::default(), &midway).unwrap();
        assert_eq!(store.cursor().unwrap(), Some(midway), "{}", target.describe());
        drop(store);
        let stats = std::sync::Arc::clone(writer.stats());
        let error = Projector::start(
            target,
            directory.clone(),
            stats,
            EngineLimits::default(),
            settings(),
            None,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(error.contains("--history-export until it has caught up"), "{error}");
    }
    writer.close().unwrap();
}

fn copy_directory(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for item in std::fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        let target = to.join(item.file_name());
        if item.file_type().unwrap().is_dir() {
            copy_directory(&item.path(), &target);
        } else {
            std::fs::copy(item.path(), target).unwrap();
        }
    }
}

/// An index written in version 1 (the fixture: a journal of 1,822
/// transactions with holds that expire, and its index, whose marks were
/// every 64th entry) is converted when opened. What a crash during the
/// conversion would leave (a half-written new entries file, an unlisted
/// checkpoint) is overwritten; what a crash after it would leave (the old
/// entries file) is deleted. The converted index equals the journal, links
/// included, answers as an index built from the same journal, and grows on.
#[test]
fn a_version_1_index_is_converted_when_opened() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/index-v1");
    let (converted, fresh) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    copy_directory(&fixture, converted.path());
    copy_directory(&fixture.join("journal"), &fresh.path().join("journal"));
    let history = converted.path().join("history");
    std::fs::write(history.join("entries-v2"), vec![0xab; 5_000]).unwrap();
    std::fs::write(history.join("heads-0000000000000151"), b"left by a crash").unwrap();
    let directory = converted.path().join("journal");
    let index = Database::parse("index", converted.path(), "unused").unwrap();
    let report = verify(&directory, &index, EngineLimits::default()).unwrap();
    assert_eq!(
        (report.sequence_next, report.transactions, report.entries),
        (1_822, 1_787, 3_277)
    );
    assert!(!history.join("entries").exists());
    assert_eq!(&std::fs::read(history.join("manifest")).unwrap()[..8], b"CFHIDX02");
    let checkpoint = std::fs::metadata(history.join("heads-0000000000000151")).unwrap();
    assert_eq!(checkpoint.len(), 14 * 64 + 4, "the heads of 14 accounts");

    let (engine, writer, _) = coffer_journal::open(
        &fresh.path().join("journal"),
        JournalOptions::default(),
        EngineLimits::default(),
    )
    .unwrap();
    let built = Database::parse("index", fresh.path(), "unused").unwrap();
    project_everything(&built, &fresh.path().join("journal"), &writer, engine.sequence_next());
    let (mut a, mut b) = (index.open_reader().unwrap(), built.open_reader().unwrap());
    let entries = every_entry(a.as_mut());
    assert_eq!(entries, every_entry(b.as_mut()));
    let deepest = entries
        .iter()
        .filter(|entry| entry.account == account(0).as_str())
        .count();
    assert!(deepest > 512, "a chain crosses marks of the third level: {deepest}");
    let mut random = Random(0xc0de);
    let end_ms = entries.last().unwrap().timestamp_ms as u64 + 100;
    for round in 0..200u64 {
        let name = account(random.below(ACCOUNTS)).to_string();
        let query = HistoryQuery {
            account: name.clone(),
            before: (round % 2 == 0).then(|| random.below(entries.len() as u64 + 10) as i64),
            from_ms: (round % 3 == 0).then(|| random.below(end_ms) as i64),
            to_ms: (round % 5 < 3).then(|| random.below(end_ms) as i64),
            limit: [1, 7, 100, HISTORY_PAGE_MAX][round as usize % 4],
        };
        assert_eq!(a.history(&query).unwrap(), b.history(&query).unwrap(), "{query:?}");
        let at_ms = random.below(end_ms) as i64;
        assert_eq!(a.balance_at(&name, at_ms).unwrap(), b.balance_at(&name, at_ms).unwrap());
    }
    drop((a, b));
    writer.close().unwrap();

    std::fs::write(history.join("entries"), b"version 1's, after a crash").unwrap();
    let (mut engine, mut writer, _) =
        coffer_journal::open(&directory, JournalOptions::default(), EngineLimits::default()).unwrap();
    append(&mut engine, &mut writer, &workload(0x9a0, 200)[1..]);
    project_everything(&index, &directory, &writer, engine.sequence_next());
    assert!(!history.join("entries").exists());
    writer.close().unwrap();
    let report = verify(&directory, &index, EngineLimits::default()).unwrap();
    assert_eq!(report.sequence_next, engine.sequence_next());
    assert!(report.entries > 3_277, "{report:?}");
}

/// A version 1 index whose entries do not chain as their accounts say (an
/// entry's previous link changed) is refused with what to do, and left as
/// it was: the same manifest, the same entries, no version 2 file.
#[test]
fn a_damaged_version_1_index_is_refused_and_left_as_it_was() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/index-v1");
    let data = tempfile::tempdir().unwrap();
    copy_directory(&fixture, data.path());
    let history = data.path().join("history");
    let entries = std::fs::OpenOptions::new()
        .write(true)
        .open(history.join("entries"))
        .unwrap();
    // Entry 2,000's previous link (version 1: a u64 at byte 32 of 96).
    std::os::unix::fs::FileExt::write_all_at(&entries, &7u64.to_le_bytes(), 2_000 * 96 + 32).unwrap();
    let before = (
        std::fs::read(history.join("manifest")).unwrap(),
        std::fs::read(history.join("entries")).unwrap(),
    );
    let index = Database::parse("index", data.path(), "unused").unwrap();
    let error = index.open_reader().err().expect("refused").to_string();
    assert!(
        error.contains("entry 2000") && error.contains("delete the history directory"),
        "{error}"
    );
    let after = (
        std::fs::read(history.join("manifest")).unwrap(),
        std::fs::read(history.join("entries")).unwrap(),
    );
    assert!(before == after, "the version 1 index is unchanged");
    assert!(
        !history.join("entries-v2").exists(),
        "nothing of the conversion is left"
    );
}
