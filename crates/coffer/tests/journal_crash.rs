//! kill -9 of a real `coffer` process writing batches: every batch whose
//! append was reported durable is there after restart, and the recovered
//! state is exactly the state of the same stream replayed in memory.

use coffer::workload::load_batch;
use coffer_core::{Engine, EngineLimits};
use coffer_journal::{open, JournalOptions};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCH_SIZE: usize = 64;
const ROUNDS: u64 = 12;

fn reference_digest(sequence_next: u64) -> u128 {
    let mut engine = Engine::new(EngineLimits::default());
    let mut n = 0;
    while engine.sequence_next() < sequence_next {
        let (timestamp, transactions) = load_batch(n, BATCH_SIZE);
        engine.apply_batch(timestamp, &transactions);
        n += 1;
    }
    assert_eq!(
        engine.sequence_next(),
        sequence_next,
        "recovery ends on a batch boundary"
    );
    engine.digest()
}

#[test]
fn kill_9_never_loses_a_durable_batch() {
    let directory = tempfile::tempdir().unwrap();
    let mut acknowledged_before = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_coffer"))
            .args(["journal", "load", "--batch-size", &BATCH_SIZE.to_string()])
            .arg(directory.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start coffer");
        let durable = Arc::new(AtomicU64::new(0));
        let reader = {
            let durable = Arc::clone(&durable);
            let stdout = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(number) = line.strip_prefix("durable ").and_then(|n| n.parse::<u64>().ok()) {
                        durable.fetch_max(number, Ordering::SeqCst);
                    }
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while durable.load(Ordering::SeqCst) <= acknowledged_before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        // Vary the moment of death: 0 to 150 ms into the stream.
        std::thread::sleep(Duration::from_millis(round * 37 % 150));
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        reader.join().unwrap();
        let acknowledged = durable.load(Ordering::SeqCst);
        assert!(
            acknowledged > acknowledged_before,
            "round {round}: the writer made progress"
        );

        let (engine, writer, report) =
            open(directory.path(), JournalOptions::default(), EngineLimits::default()).unwrap();
        writer.close().unwrap();
        assert!(
            report.sequence_next >= acknowledged,
            "round {round}: {acknowledged} acknowledged but only {} recovered",
            report.sequence_next
        );
        assert_eq!(
            engine.digest(),
            reference_digest(report.sequence_next),
            "round {round}: exact state"
        );
        engine.check_invariants().unwrap();
        eprintln!(
            "round {round}: acknowledged {acknowledged}, recovered {}, torn tail {:?}",
            report.sequence_next,
            report.torn_tail.as_ref().map(|tail| tail.bytes_dropped)
        );
        acknowledged_before = report.sequence_next;
    }
}
