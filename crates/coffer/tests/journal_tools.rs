//! `coffer journal verify` and `coffer journal dump` on a real journal.

use std::process::Command;

fn coffer(arguments: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(arguments)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

#[test]
fn verify_and_dump_a_journal_then_catch_corruption() {
    let data = tempfile::tempdir().unwrap();
    let journal = data.path().join("journal");
    let path = journal.to_str().unwrap();
    let (ok, _, stderr) = coffer(&["journal", "load", path, "--batch-size", "8", "--batches", "40"]);
    assert!(ok, "{stderr}");

    // verify accepts the data directory as well as the journal directory
    let (ok, stdout, stderr) = coffer(&["journal", "verify", data.path().to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("result:           sound"), "{stdout}");
    assert!(
        stdout.contains("next sequence:    1312"),
        "1000 opens + 39 batches of 8: {stdout}"
    );

    let (ok, stdout, _) = coffer(&["journal", "dump", path, "--from", "1000", "--limit", "3"]);
    assert!(ok);
    let entries: Vec<_> = stdout.lines().filter(|line| line.starts_with("  ")).collect();
    assert_eq!(entries.len(), 3, "{stdout}");
    assert!(
        entries[0].starts_with("  1000 tx:1:0 ") && entries[0].contains("\"type\":\"transfer\""),
        "{stdout}"
    );

    let (_, segment) = coffer_journal::segments(&journal).unwrap()[0].clone();
    let mut bytes = std::fs::read(&segment).unwrap();
    // The middle of the records, not of the preallocated zeros after them.
    let end = coffer_journal::scan_segment(&segment, &bytes, true, |_, _, _| Ok(())).unwrap();
    let middle = end.valid_bytes as usize / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();
    let (ok, _, stderr) = coffer(&["journal", "verify", path]);
    assert!(!ok, "a corrupt journal fails verification");
    assert!(
        stderr.contains("NOT sound") && stderr.contains(segment.to_str().unwrap()) && stderr.contains("at byte"),
        "{stderr}"
    );
}

mod support;

#[test]
fn history_verify_compares_the_store_with_the_journal() {
    let data = tempfile::tempdir().unwrap();
    let journal = data.path().join("journal");
    let (ok, _, stderr) = coffer(&["journal", "load", journal.to_str().unwrap(), "--batches", "20"]);
    assert!(ok, "{stderr}");
    // A server projects the journal into the default store (the index)
    // and, stopping gracefully, finishes projecting.
    let mut server = support::Server::start(data.path());
    server.terminate();
    let directory = data.path().to_str().unwrap();
    let (ok, stdout, stderr) = coffer(&["history", "verify", directory]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("up to sequence 2216"),
        "1000 opens + 19 batches of 64: {stdout}"
    );

    // Entry 1500's available balance (96-byte entries, the balance at 64).
    let entries = std::fs::OpenOptions::new()
        .write(true)
        .open(data.path().join("history").join("entries-v2"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&entries, &[0x7f; 8], 1_500 * 96 + 64).unwrap();
    let (ok, _, stderr) = coffer(&["history", "verify", directory]);
    assert!(!ok, "a changed entry is found");
    assert!(stderr.contains("history differs from the journal"), "{stderr}");
}

/// A data directory from an earlier coffer, whose default history store
/// was SQLite: once retention has cut the journal, the index cannot be
/// built from it, and the default start says what to do instead of
/// failing on a journal error.
#[test]
fn an_earlier_sqlite_history_over_a_cut_journal_is_refused_clearly() {
    let data = tempfile::tempdir().unwrap();
    let earlier: Vec<String> = [
        "--history-url",
        "sqlite",
        "--snapshot-every-entries",
        "5000",
        "--journal-segment-bytes",
        "1048576",
    ]
    .map(String::from)
    .to_vec();
    let mut server = support::Server::start_with(data.path(), &earlier);
    let (ok, stdout, stderr) = coffer(&[
        "bench",
        "--url",
        &server.base,
        "--scenario",
        "batches",
        "--batch-size",
        "1000",
        "--count",
        "40",
        "--connections",
        "4",
        "--accounts",
        "10",
    ]);
    assert!(ok, "{stdout}{stderr}");
    server.terminate();
    // Cut the journal's start as retention does once a snapshot covers it
    // and the store has passed it.
    let journal = data.path().join("journal");
    let segments = coffer_journal::segments(&journal).unwrap();
    assert!(segments.len() > 1 && coffer_journal::snapshots(&journal).unwrap().len() == 1);
    std::fs::remove_file(&segments[0].1).unwrap();

    let mut default = std::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env("RUST_LOG", "error")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = default.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            default.kill().unwrap();
            panic!("the default start did not refuse the directory");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut default.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("history.sqlite") && stderr.contains("--history-url sqlite"),
        "{stderr}"
    );
    // With the store named, the directory starts as before.
    let mut server = support::Server::start_with(data.path(), &earlier);
    server.terminate();
}
