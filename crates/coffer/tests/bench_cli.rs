//! `coffer bench`: every scenario runs against a fresh server and reports;
//! an unreachable server is a clear error with a non-zero exit status.

mod support;

use std::process::Command;
use support::Server;

fn bench(arguments: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .arg("bench")
        .args(arguments)
        .output()
        .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

/// Each scenario on a server of its own, started by `--fresh-server`.
#[test]
fn every_scenario_runs_on_a_fresh_server_and_reports() {
    for (scenario, extra) in [
        ("transfers", None),
        ("transfers", Some("--minimal-answers")),
        ("transfers-zipf", None),
        ("deposits", None),
        ("hold-capture", None),
        ("batches", None),
        ("batches", Some("--minimal-answers")),
        ("purchases", None),
    ] {
        let mut arguments = vec![
            "--fresh-server",
            "--scenario",
            scenario,
            "--connections",
            "4",
            "--count",
            "40",
            "--accounts",
            "50",
            "--batch-size",
            "20",
            "--json",
        ];
        arguments.extend(extra);
        let (ok, stdout, stderr) = bench(&arguments);
        assert!(ok, "{scenario}: {stderr}");
        let report: serde_json::Value =
            serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("{scenario}: {stdout}"));
        assert_eq!(report["operations"], 40, "{scenario}");
        assert_eq!(report["errors"], 0, "{scenario}");
        assert!(report["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
        assert_eq!(report["latency_from"], "request start", "unpaced");
    }
    let (ok, stdout, stderr) = bench(&[
        "--fresh-server",
        "--server-option=--history-url=off",
        "--scenario",
        "balance-job",
        "--accounts",
        "500",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["totals"]["completed"], 500, "{report}");
}

/// A fresh server that cannot start is reported with its own error.
#[test]
fn a_fresh_server_that_fails_to_start_is_a_clear_error() {
    let (ok, _, stderr) = bench(&["--fresh-server", "--server-option=--no-such-flag", "--count", "1"]);
    assert!(!ok);
    assert!(stderr.contains("the fresh server exited"), "{stderr}");
    assert!(
        stderr.contains("--no-such-flag"),
        "the server's own error is quoted: {stderr}"
    );
    let (ok, _, stderr) = bench(&["--server-option=--history-url=off", "--count", "1"]);
    assert!(!ok, "a server option without --fresh-server is refused");
    assert!(stderr.contains("--fresh-server"), "{stderr}");
    let mut too_many = vec!["--fresh-server", "--count", "1"];
    too_many.extend(["--server-option=--history-url=off"; 65]);
    let (ok, _, stderr) = bench(&too_many);
    assert!(!ok);
    assert!(stderr.contains("at most 64 --server-option flags"), "{stderr}");
}

/// Against a running server (--url), with the human-readable report.
#[test]
fn a_running_server_is_driven_at_a_target_rate() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let (ok, stdout, _) = bench(&[
        "--url",
        &server.base,
        "--connections",
        "2",
        "--count",
        "20",
        "--rate",
        "200",
        "--accounts",
        "50",
    ]);
    assert!(ok);
    assert!(stdout.contains("throughput") && stdout.contains("p99.9"), "{stdout}");
    assert!(stdout.contains("(from the intended send time)"), "{stdout}");
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    let (ok, _, stderr) = bench(&["--url", "http://127.0.0.1:9", "--count", "1"]);
    assert!(!ok);
    assert!(stderr.contains("not reachable"), "{stderr}");
}

/// Ctrl-C (SIGINT) during a run on a fresh server stops the server and
/// deletes its directory before the bench exits.
#[test]
fn an_interrupted_run_removes_its_fresh_server() {
    let temporary = tempfile::tempdir().unwrap();
    let bench = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args([
            "bench",
            "--fresh-server",
            "--duration",
            "60",
            "--connections",
            "2",
            "--accounts",
            "10",
        ])
        .env("TMPDIR", temporary.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let server_directory = || {
        std::fs::read_dir(temporary.path())
            .unwrap()
            .next()
            .map(|entry| entry.unwrap().path())
    };
    let started = std::time::Instant::now();
    while !server_directory().is_some_and(|directory| directory.join("data").exists()) {
        assert!(started.elapsed().as_secs() < 30, "the fresh server never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Into the run itself, past start-up and account funding.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let signalled = Command::new("kill")
        .args(["-INT", &bench.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let output = bench.wait_with_output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_eq!(server_directory(), None, "the fresh server's directory is gone");
}

/// The Kafka scenario, on a fresh server consuming from the test broker:
/// every command produced is applied, and its result and events published.
#[test]
fn kafka_ingest_runs_on_a_fresh_server_and_reports() {
    let Ok(brokers) = std::env::var("COFFER_TEST_KAFKA_BROKERS") else {
        support::skipped("kafka-ingest bench scenario (set COFFER_TEST_KAFKA_BROKERS)");
        return;
    };
    let prefix = format!("bench{}.", std::process::id());
    let server_brokers = format!("--server-option=--kafka-brokers={brokers}");
    let server_prefix = format!("--server-option=--kafka-topic-prefix={prefix}");
    let (ok, stdout, stderr) = bench(&[
        "--fresh-server",
        &server_brokers,
        &server_prefix,
        "--scenario",
        "kafka-ingest",
        "--kafka-brokers",
        &brokers,
        "--kafka-topic-prefix",
        &prefix,
        "--count",
        "200",
        "--accounts",
        "20",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("{stdout}"));
    assert_eq!(report["commands"], 200, "{report}");
    // One result per command, and at least one event.
    assert!(report["messages_published"].as_f64().unwrap() > 200.0, "{report}");
}
