use coffer_core::{AccountId, Amount, Engine, EngineLimits, Operation, Transaction, TransactionId, Unit};
use coffer_journal::{journal_batch, open, recover, JournalError, JournalOptions, Mode, Retention};
use std::path::Path;

fn transfer(id: String, from: String, to: String, amount: u128) -> Transaction {
    let op = Operation::Transfer {
        from: AccountId::parse(&from).unwrap(),
        to: AccountId::parse(&to).unwrap(),
        amount: Amount::new(amount).unwrap(),
    };
    Transaction::new(TransactionId::parse(&id).unwrap(), vec![op], None).unwrap()
}

/// Deterministic batches: opens and funds 20 accounts, then transfers
/// (some rejected for insufficient funds, some duplicate ids).
fn batches(count: usize) -> Vec<(u64, Vec<Transaction>)> {
    let opens = (0..20)
        .map(|n| {
            let account = AccountId::parse(&format!("a{n}")).unwrap();
            let ops = vec![
                Operation::open(account.clone(), Unit::parse("USD/2").unwrap()),
                Operation::deposit(account, Amount::new(1_000).unwrap()),
            ];
            Transaction::new(TransactionId::parse(&format!("open-{n}")).unwrap(), ops, None).unwrap()
        })
        .collect();
    let mut result = vec![(1_000, opens)];
    for batch in 0..count as u64 {
        let transactions = (0..(batch % 7 + 1))
            .map(|n| {
                let k = batch * 7 + n;
                let id = if k % 11 == 0 {
                    format!("dup-{}", k % 3)
                } else {
                    format!("tx-{k}")
                };
                transfer(
                    id,
                    format!("a{}", k % 20),
                    format!("a{}", (k * 3 + 1) % 20),
                    u128::from(k % 400 + 1),
                )
            })
            .collect();
        result.push((2_000 + batch * 10, transactions));
    }
    result
}

fn snapshot(engine: &Engine, writer: &mut coffer_journal::JournalWriter) {
    let mut state = Vec::new();
    engine.encode_snapshot(&mut state);
    writer.snapshot_and_wait(engine.sequence_next(), state).unwrap();
}

fn options() -> JournalOptions {
    JournalOptions {
        segment_bytes_max: 2_048,
        ..JournalOptions::default()
    }
}

/// Writes the batches through a real journal; returns the reference digest
/// after each batch.
fn write_all(directory: &Path, batches: &[(u64, Vec<Transaction>)]) -> Vec<u128> {
    write_with(directory, batches, options())
}

fn write_with(directory: &Path, batches: &[(u64, Vec<Transaction>)], options: JournalOptions) -> Vec<u128> {
    let (mut engine, mut writer, report) = open(directory, options, EngineLimits::default()).unwrap();
    assert_eq!(report.sequence_next, 0);
    let mut digests = Vec::new();
    for (timestamp, transactions) in batches {
        let outcome = engine.apply_batch(*timestamp, transactions);
        writer
            .append_durably(&journal_batch(transactions.clone(), &outcome))
            .unwrap();
        digests.push(engine.digest());
    }
    writer.close().unwrap();
    digests
}

fn reopen(directory: &Path) -> Result<Engine, JournalError> {
    open(directory, options(), EngineLimits::default()).map(|(engine, writer, _)| {
        writer.close().unwrap();
        engine
    })
}

#[test]
fn reopen_gives_the_identical_state() {
    let directory = tempfile::tempdir().unwrap();
    let digests = write_all(directory.path(), &batches(200));
    let segments = coffer_journal::segments(directory.path()).unwrap();
    assert!(segments.len() > 3, "small segments roll: {}", segments.len());
    // Only the last segment keeps its preallocated zeros.
    for (_, path) in &segments[..segments.len() - 1] {
        let length = std::fs::metadata(path).unwrap().len();
        assert_eq!(scan(path).1.valid_bytes, length, "{}", path.display());
    }
    let last = &segments[segments.len() - 1].1;
    assert_eq!(std::fs::metadata(last).unwrap().len(), options().segment_bytes_max);
    let engine = reopen(directory.path()).unwrap();
    assert_eq!(engine.digest(), *digests.last().unwrap());
    engine.check_invariants().unwrap();
}

#[test]
fn appends_continue_after_reopen() {
    let directory = tempfile::tempdir().unwrap();
    let all = batches(40);
    let (first, second) = all.split_at(20);
    write_all(directory.path(), first);
    let (mut engine, mut writer, report) = open(directory.path(), options(), EngineLimits::default()).unwrap();
    assert_eq!(report.sequence_next, engine.sequence_next());
    for (timestamp, transactions) in second {
        let outcome = engine.apply_batch(*timestamp, transactions);
        writer
            .append_durably(&journal_batch(transactions.clone(), &outcome))
            .unwrap();
    }
    writer.close().unwrap();
    let mut reference = Engine::new(EngineLimits::default());
    for (timestamp, transactions) in &all {
        reference.apply_batch(*timestamp, transactions);
    }
    assert_eq!(reopen(directory.path()).unwrap().digest(), reference.digest());
}

fn last_segment(directory: &Path) -> std::path::PathBuf {
    coffer_journal::segments(directory).unwrap().last().unwrap().1.clone()
}

/// Offsets of every record in a segment.
fn record_offsets(path: &Path) -> Vec<u64> {
    scan(path).0
}

/// Offsets of every record in a segment, and where its records end.
fn scan(path: &Path) -> (Vec<u64>, coffer_journal::SegmentEnd) {
    let bytes = std::fs::read(path).unwrap();
    let mut offsets = Vec::new();
    let end = coffer_journal::scan_segment(path, &bytes, true, |offset, _, _| {
        offsets.push(offset);
        Ok(())
    })
    .unwrap();
    (offsets, end)
}

/// A crash can cut the last write anywhere, in a segment still padded with
/// its preallocated zeros or in one that is not (a file system without
/// preallocation): recovery keeps every earlier record and removes the rest.
#[test]
fn a_torn_last_record_is_truncated_at_every_byte_offset() {
    let pristine = tempfile::tempdir().unwrap();
    let workload = batches(30);
    let digests = write_all(pristine.path(), &workload);
    let segment = last_segment(pristine.path());
    let bytes = std::fs::read(&segment).unwrap();
    let (offsets, end) = scan(&segment);
    assert_eq!(end.torn_tail, None);
    assert!(bytes[end.valid_bytes as usize..].iter().all(|byte| *byte == 0));
    let last_record = *offsets.last().unwrap() as usize;
    let name = segment.file_name().unwrap();
    for cut in last_record..end.valid_bytes as usize {
        for padded in [false, true] {
            let directory = tempfile::tempdir().unwrap();
            for (_, path) in coffer_journal::segments(pristine.path()).unwrap() {
                std::fs::copy(&path, directory.path().join(path.file_name().unwrap())).unwrap();
            }
            let mut torn = bytes[..cut].to_vec();
            if padded {
                torn.resize(bytes.len(), 0);
            }
            let path = directory.path().join(name);
            std::fs::write(&path, &torn).unwrap();
            // A record whose cut-off bytes were zeros is whole again once
            // padded: its checksum passes, and it is kept.
            let whole = padded && bytes[cut..end.valid_bytes as usize].iter().all(|byte| *byte == 0);
            let (expected_digest, expected_end) = match whole {
                true => (digests[digests.len() - 1], end.valid_bytes as usize),
                false => (digests[digests.len() - 2], last_record),
            };
            let engine = reopen(directory.path()).unwrap_or_else(|error| panic!("cut at {cut}: {error}"));
            assert_eq!(
                engine.digest(),
                expected_digest,
                "cut at {cut}: every earlier record recovered"
            );
            let (_, after_end) = scan(&path);
            assert_eq!(
                after_end.valid_bytes as usize, expected_end,
                "cut at {cut}: records end"
            );
            let after = std::fs::read(&path).unwrap();
            assert!(
                after[expected_end..].iter().all(|byte| *byte == 0),
                "cut at {cut}: the torn bytes are removed"
            );
        }
    }
}

#[test]
fn a_flipped_byte_in_a_middle_record_refuses_to_start() {
    let directory = tempfile::tempdir().unwrap();
    write_with(directory.path(), &batches(30), JournalOptions::default());
    let segment = last_segment(directory.path());
    let offsets = record_offsets(&segment);
    assert!(offsets.len() >= 30, "one segment holds every record");
    let middle = offsets[offsets.len() / 2] as usize;
    let original = std::fs::read(&segment).unwrap();
    for position in [middle + 3, middle + 9, middle + 60] {
        let mut bytes = original.clone();
        bytes[position] ^= 0x01;
        std::fs::write(&segment, &bytes).unwrap();
        let error = reopen(directory.path()).expect_err("a corrupt middle record refuses to start");
        match &error {
            JournalError::Corrupt { path, offset, .. } => {
                assert_eq!(path, &segment);
                assert_eq!(*offset as usize, middle);
            }
            other => panic!("expected corruption, got {other}"),
        }
        assert!(error.to_string().contains(&segment.display().to_string()), "{error}");
        assert_eq!(std::fs::read(&segment).unwrap(), bytes, "data untouched");
    }
}

#[test]
fn corruption_in_an_earlier_segment_refuses_to_start() {
    let directory = tempfile::tempdir().unwrap();
    write_all(directory.path(), &batches(60));
    let (_, first) = coffer_journal::segments(directory.path()).unwrap()[0].clone();
    let mut bytes = std::fs::read(&first).unwrap();
    let end = bytes.len();
    bytes[end - 1] ^= 0xff; // the last record of a non-last segment
    std::fs::write(&first, &bytes).unwrap();
    assert!(matches!(reopen(directory.path()), Err(JournalError::Corrupt { .. })));
}

#[test]
fn snapshot_then_replay_equals_full_replay() {
    let directory = tempfile::tempdir().unwrap();
    let workload = batches(120);
    let options = JournalOptions {
        segment_bytes_max: 2_048,
        snapshots_kept: 1,
        ..JournalOptions::default()
    };
    let (mut engine, mut writer, _) = open(directory.path(), options, EngineLimits::default()).unwrap();
    for (index, (timestamp, transactions)) in workload.iter().enumerate() {
        let outcome = engine.apply_batch(*timestamp, transactions);
        writer
            .append_durably(&journal_batch(transactions.clone(), &outcome))
            .unwrap();
        if index == 50 || index == 90 {
            snapshot(&engine, &mut writer);
        }
    }
    writer.close().unwrap();
    let snapshots = coffer_journal::snapshots(directory.path()).unwrap();
    assert_eq!(snapshots.len(), 1, "only the newest snapshot is kept");
    let first_segment = coffer_journal::segments(directory.path()).unwrap()[0].0;
    assert!(first_segment > 0, "segments covered by the snapshot were pruned");
    let coffer_journal::Recovered {
        engine: from_snapshot,
        report,
        ..
    } = recover(directory.path(), EngineLimits::default(), Mode::ReadOnly).unwrap();
    assert_eq!(report.snapshot_sequence, Some(snapshots[0].0));
    assert!(report.entries_replayed > 0);
    let mut full = Engine::new(EngineLimits::default());
    for (timestamp, transactions) in &workload {
        full.apply_batch(*timestamp, transactions);
    }
    assert_eq!(from_snapshot.digest(), full.digest());
    assert_eq!(from_snapshot.digest(), engine.digest());
}

#[test]
fn keep_all_retention_keeps_every_segment() {
    let directory = tempfile::tempdir().unwrap();
    let options = JournalOptions {
        segment_bytes_max: 1_024,
        retention: Retention::KeepAll,
        ..JournalOptions::default()
    };
    let (mut engine, mut writer, _) = open(directory.path(), options, EngineLimits::default()).unwrap();
    for (timestamp, transactions) in batches(60) {
        let outcome = engine.apply_batch(timestamp, &transactions);
        writer.append_durably(&journal_batch(transactions, &outcome)).unwrap();
    }
    snapshot(&engine, &mut writer);
    writer.close().unwrap();
    assert_eq!(coffer_journal::segments(directory.path()).unwrap()[0].0, 0);
}

#[test]
fn a_journaled_outcome_that_replay_contradicts_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let (mut engine, mut writer, _) = open(directory.path(), options(), EngineLimits::default()).unwrap();
    let transactions = vec![transfer("t1".into(), "nobody".into(), "ghost".into(), 5)];
    let outcome = engine.apply_batch(10, &transactions);
    let mut batch = journal_batch(transactions, &outcome);
    batch.verdicts[0] = coffer_journal::EntryVerdict::Committed; // it was rejected
    writer.append_durably(&batch).unwrap();
    writer.close().unwrap();
    let error = reopen(directory.path()).err().unwrap();
    assert!(matches!(error, JournalError::Diverged { sequence: 0, .. }), "{error}");
}

#[test]
fn a_corrupt_newest_snapshot_falls_back_to_replay() {
    let directory = tempfile::tempdir().unwrap();
    let options = JournalOptions {
        retention: Retention::KeepAll,
        ..options()
    };
    let (mut engine, mut writer, _) = open(directory.path(), options, EngineLimits::default()).unwrap();
    for (timestamp, transactions) in batches(20) {
        let outcome = engine.apply_batch(timestamp, &transactions);
        writer.append_durably(&journal_batch(transactions, &outcome)).unwrap();
    }
    snapshot(&engine, &mut writer);
    writer.close().unwrap();
    let (_, snapshot) = coffer_journal::snapshots(directory.path()).unwrap()[0].clone();
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&snapshot, bytes).unwrap();
    let coffer_journal::Recovered {
        engine: recovered,
        report,
        ..
    } = recover(directory.path(), EngineLimits::default(), Mode::ReadOnly).unwrap();
    assert_eq!(report.snapshot_sequence, None);
    assert_eq!(recovered.digest(), engine.digest());
}

/// Pruning keeps what a journal reader (the history projector) still needs:
/// the newest snapshot at or before its sequence and every later segment.
#[test]
fn pruning_waits_for_the_journal_reader() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path();
    let names = |prefix: &str| -> Vec<String> {
        let mut found: Vec<String> = std::fs::read_dir(path)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.starts_with(prefix))
            .collect();
        found.sort();
        found
    };
    let reset = || {
        for entry in std::fs::read_dir(path).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        for first in [0u64, 100, 200, 300, 400] {
            std::fs::write(path.join(format!("{first:020}.wal")), b"").unwrap();
        }
        for next in [150u64, 250, 350] {
            std::fs::write(path.join(format!("snapshot-{next:020}.snap")), b"").unwrap();
        }
    };
    let options = JournalOptions {
        snapshots_kept: 1,
        ..JournalOptions::default()
    };
    let segment = |first: u64| format!("{first:020}.wal");
    let snapshot = |next: u64| format!("snapshot-{next:020}.snap");

    // No reader: the newest snapshot covers everything before segment 300.
    reset();
    coffer_journal::prune(path, &options, u64::MAX).unwrap();
    assert_eq!(names("snapshot-"), [snapshot(350)]);
    assert_eq!(names("000"), [segment(300), segment(400)]);

    // A reader at 260 needs snapshot 250 and the segments from 200 on.
    reset();
    coffer_journal::prune(path, &options, 260).unwrap();
    assert_eq!(names("snapshot-"), [snapshot(250), snapshot(350)]);
    assert_eq!(names("000"), [segment(200), segment(300), segment(400)]);

    // A reader before every snapshot needs the journal from its start.
    reset();
    coffer_journal::prune(path, &options, 100).unwrap();
    assert_eq!(names("snapshot-"), [snapshot(350)]);
    assert_eq!(names("000").len(), 5);
}

/// A reader follows the journal while it grows, one record behind the
/// writer, across segment rolls: it must see each record once, whole, in
/// order (a read buffer that kept the preallocated zeros past the durable
/// end would see a bad record here).
#[test]
fn a_tail_follows_the_journal_as_it_grows() {
    let directory = tempfile::tempdir().unwrap();
    let (mut engine, mut writer, _) = open(directory.path(), options(), EngineLimits::default()).unwrap();
    let mut tail = coffer_journal::Tail::new(
        directory.path(),
        std::sync::Arc::clone(writer.stats()),
        coffer_journal::Position::default(),
    );
    let mut sequence_read = 0;
    for (timestamp, transactions) in batches(120) {
        let outcome = engine.apply_batch(timestamp, &transactions);
        writer
            .append_durably(&journal_batch(transactions.clone(), &outcome))
            .unwrap();
        let record = tail.next_record().unwrap().expect("the record just made durable");
        assert_eq!(record.batch.first_sequence, sequence_read);
        assert_eq!(record.batch.transactions.len(), transactions.len());
        sequence_read = record.batch.end_sequence();
        assert!(tail.next_record().unwrap().is_none(), "nothing beyond the durable end");
    }
    assert_eq!(sequence_read, engine.sequence_next());
    assert!(coffer_journal::segments(directory.path()).unwrap().len() > 3);
    writer.close().unwrap();
}

/// `append` only buffers: a batch is durable (and survives the writer
/// going away) once `commit` has returned, and one commit syncs every
/// batch appended before it.
#[test]
fn batches_are_durable_only_once_committed() {
    use std::sync::atomic::Ordering;
    let directory = tempfile::tempdir().unwrap();
    let workload = batches(3);
    // Default segments: no segment roll (which commits) between the appends.
    let (mut engine, mut writer, _) =
        open(directory.path(), JournalOptions::default(), EngineLimits::default()).unwrap();
    let stats = std::sync::Arc::clone(writer.stats());
    let mut ends = Vec::new();
    for (timestamp_ms, transactions) in &workload {
        let outcome = engine.apply_batch(*timestamp_ms, transactions);
        writer.append(&journal_batch(transactions.clone(), &outcome)).unwrap();
        ends.push(engine.sequence_next());
        if ends.len() == 2 {
            writer.commit().unwrap();
        }
    }
    assert_eq!(
        stats.syncs.load(Ordering::Relaxed),
        1,
        "one sync for the first two batches"
    );
    assert_eq!(stats.durable_sequence.load(Ordering::Acquire), ends[1]);
    // Dropped without a commit, as in a crash before the sync: the third
    // batch was never acknowledged, and recovery ends where the commit did.
    drop(writer);
    let recovered = recover(directory.path(), EngineLimits::default(), Mode::ReadOnly).unwrap();
    assert_eq!(recovered.report.sequence_next, ends[1]);
    assert!(ends[2] > ends[1]);
}

/// Linked chains are journaled with their links, so replay applies them
/// as chains: a chain that failed replays as failed (its earlier
/// transactions not applied), one that committed as committed.
#[test]
fn linked_chains_replay_as_chains() {
    let link = Transaction::chain;
    let mut all = batches(0);
    let mut chained = link(vec![
        transfer("ok-1".into(), "a1".into(), "a2".into(), 10),
        transfer("ok-2".into(), "a2".into(), "a3".into(), 5),
    ]);
    chained.push(transfer("single".into(), "a4".into(), "a5".into(), 1));
    chained.extend(link(vec![
        transfer("bad-1".into(), "a1".into(), "a2".into(), 10),
        transfer("bad-2".into(), "a1".into(), "a2".into(), 1_000_000),
    ]));
    all.push((5_000, chained.clone()));
    let directory = tempfile::tempdir().unwrap();
    let digests = write_all(directory.path(), &all);
    let engine = reopen(directory.path()).unwrap();
    assert_eq!(engine.digest(), *digests.last().unwrap());
    let balance = |id: &str| engine.account(&AccountId::parse(id).unwrap()).unwrap().available;
    assert_eq!((balance("a1"), balance("a2"), balance("a3")), (990, 1_005, 1_005));
    // The links themselves survive the round trip through the journal.
    let mut linked = Vec::new();
    for (_, path) in coffer_journal::segments(directory.path()).unwrap() {
        let bytes = std::fs::read(path).unwrap();
        let mut offset = 0;
        while let Ok(header) = coffer_journal::format::decode_header(&bytes[offset..]) {
            let start = offset + coffer_journal::format::HEADER_BYTES;
            let end = start + header.payload_bytes as usize;
            let batch = coffer_journal::format::decode_payload(&header, &bytes[start..end]).unwrap();
            linked.extend(batch.transactions.iter().map(Transaction::is_linked_to_next));
            offset = end;
        }
    }
    let expected: Vec<bool> = all
        .iter()
        .flat_map(|(_, batch)| batch.iter().map(Transaction::is_linked_to_next))
        .collect();
    assert_eq!(linked, expected);
    assert!(linked.iter().filter(|link| **link).count() == 2);
}
