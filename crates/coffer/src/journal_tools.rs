//! `coffer journal …`: offline tools for operators, and the load writer
//! used by crash tests.

use anyhow::Context;
use coffer_core::EngineLimits;
use coffer_journal::{journal_batch, recover, JournalOptions, Mode};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// Accepts a data directory or its `journal` subdirectory.
pub fn journal_directory(directory: &Path) -> PathBuf {
    let nested = directory.join("journal");
    if nested.is_dir() {
        nested
    } else {
        directory.to_owned()
    }
}

fn instant(timestamp_ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(timestamp_ms)).to_string()
}

pub fn verify(directory: &Path) -> anyhow::Result<()> {
    let directory = journal_directory(directory);
    anyhow::ensure!(directory.is_dir(), "{} is not a directory", directory.display());
    let coffer_journal::Recovered { engine, report, .. } = recover(&directory, EngineLimits::default(), Mode::ReadOnly)
        .with_context(|| format!("journal in {} is NOT sound", directory.display()))?;
    engine
        .check_invariants()
        .map_err(|reason| anyhow::anyhow!("replayed state breaks an invariant: {reason}"))?;
    println!("journal:          {}", directory.display());
    match report.snapshot_sequence {
        Some(sequence) => println!("snapshot:         up to sequence {sequence}"),
        None => println!("snapshot:         none (replayed from the start)"),
    }
    println!("records replayed: {}", report.records_replayed);
    println!("entries replayed: {}", report.entries_replayed);
    println!("next sequence:    {}", report.sequence_next);
    println!("accounts:         {}", engine.account_count());
    println!("state digest:     {:032x}", engine.digest());
    println!("replay time:      {} ms", report.duration.as_millis());
    if let Some(tail) = &report.torn_tail {
        println!(
            "torn tail:        {} bytes at {} offset {} (an interrupted write; startup truncates it)",
            tail.bytes_dropped,
            tail.path.display(),
            tail.offset
        );
    }
    println!("result:           sound");
    Ok(())
}

pub fn dump(directory: &Path, from: u64, limit: u64, out: &mut impl Write) -> anyhow::Result<()> {
    let directory = journal_directory(directory);
    let segments = coffer_journal::segments(&directory)?;
    let mut printed = 0u64;
    for (index, (_, path)) in segments.iter().enumerate() {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let is_last = index + 1 == segments.len();
        coffer_journal::scan_segment(path, &bytes, is_last, |offset, header, payload| {
            let end = header.first_sequence + u64::from(header.count);
            if end <= from || printed >= limit {
                return Ok(());
            }
            let batch = coffer_journal::format::decode_payload(header, payload).map_err(|error| {
                coffer_journal::JournalError::Corrupt {
                    path: path.clone(),
                    offset,
                    reason: error.to_string(),
                }
            })?;
            let name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            let when = instant(header.timestamp_ms);
            let _ = writeln!(
                out,
                "record {}..{end} at {when} ({name} @ {offset})",
                header.first_sequence
            );
            for (position, (transaction, verdict)) in batch.transactions.iter().zip(&batch.verdicts).enumerate() {
                let sequence = header.first_sequence + position as u64;
                if sequence < from || printed >= limit {
                    continue;
                }
                let ops = serde_json::to_string(transaction.ops()).unwrap_or_default();
                let _ = writeln!(out, "  {sequence} {} {verdict}: {ops}", transaction.id());
                printed += 1;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// Writes `workload::load_batch` batches through a real journal, printing
/// `durable N` as each batch becomes durable.
pub fn load(directory: &Path, batch_size: usize, batches: u64) -> anyhow::Result<()> {
    let (mut engine, mut writer, report) =
        coffer_journal::open(directory, JournalOptions::default(), EngineLimits::default())?;
    // Continue the deterministic stream where the journal left off.
    let mut n = 0;
    let mut sequence = 0;
    while sequence < report.sequence_next {
        sequence += crate::workload::load_batch(n, batch_size).1.len() as u64;
        n += 1;
    }
    anyhow::ensure!(
        sequence == report.sequence_next,
        "the journal does not end on a batch boundary of this workload"
    );
    while n < batches {
        let (timestamp_ms, transactions) = crate::workload::load_batch(n, batch_size);
        let outcome = engine.apply_batch(timestamp_ms, &transactions);
        let end = outcome.first_sequence + transactions.len() as u64;
        writer.append_durably(&journal_batch(transactions, &outcome))?;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "durable {end}");
        let _ = stdout.flush();
        n += 1;
    }
    writer.close()?;
    Ok(())
}

/// `coffer history verify`: the store against a fresh projection.
pub fn verify_history(data_directory: &Path, history_url: &str, schema: &str) -> anyhow::Result<()> {
    let database = coffer_history::Database::parse(history_url, data_directory, schema)?;
    let journal = data_directory.join("journal");
    let report = coffer_history::verify(&journal, &database, coffer_core::EngineLimits::default())?;
    println!(
        "history matches the journal: {} transactions, {} entries, {} holds, {} orders, up to sequence {}",
        report.transactions, report.entries, report.holds, report.orders, report.sequence_next
    );
    Ok(())
}
