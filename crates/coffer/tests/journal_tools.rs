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
        .open(data.path().join("history").join("entries"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&entries, &[0x7f; 8], 1_500 * 96 + 64).unwrap();
    let (ok, _, stderr) = coffer(&["history", "verify", directory]);
    assert!(!ok, "a changed entry is found");
    assert!(stderr.contains("history differs from the journal"), "{stderr}");
}
