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

#[test]
fn every_scenario_runs_and_reports() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
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
            "--url",
            &server.base,
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
    }
    let (ok, stdout, stderr) = bench(&[
        "--url",
        &server.base,
        "--scenario",
        "balance-job",
        "--accounts",
        "500",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["totals"]["completed"], 500, "{report}");
    // The human-readable report, with a rate target.
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
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    let (ok, _, stderr) = bench(&["--url", "http://127.0.0.1:9", "--count", "1"]);
    assert!(!ok);
    assert!(stderr.contains("not reachable"), "{stderr}");
}
