//! The metrics against Prometheus's own tools: `promtool check metrics` on
//! a loaded server's exposition, and a real Prometheus scraping it and
//! answering the queries docs/METRICS.md shows. They need the binaries:
//! COFFER_TEST_PROMTOOL and COFFER_TEST_PROMETHEUS (paths).

mod support;

use serde_json::{json, Value};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::TestServer;

/// A server (started with `flags`) that has answered transfers, a batch,
/// a rejection and a 404.
async fn loaded_server(flags: &[&str]) -> TestServer {
    let server = TestServer::start(flags).await;
    server.open("alice", "USD/2").await;
    server.open("bob", "USD/2").await;
    server.deposit("alice", 1_000_000).await;
    load(&server, 0, 50).await;
    let batch = json!({"transactions": [
        {"id": "b-1", "ops": [{"type": "transfer", "from": "alice", "to": "bob", "amount": 1}]},
        {"id": "b-2", "ops": [{"type": "transfer", "from": "bob", "to": "alice", "amount": 999_999_999}]}
    ]});
    let (status, body, _) = server.post("/v1/transactions/batch", batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get("/v1/accounts/nobody").await.0, 404);
    server
}

async fn load(server: &TestServer, from: u64, count: u64) {
    for n in from..from + count {
        let transfer = json!({"id": format!("t-{n}"), "from": "alice", "to": "bob", "amount": 1});
        assert_eq!(server.post("/v1/transfers", transfer).await.0, 201);
    }
}

#[tokio::test]
async fn the_exposition_passes_promtool() {
    let Some(promtool) = std::env::var_os("COFFER_TEST_PROMTOOL") else {
        support::skipped("promtool check of /metrics (set COFFER_TEST_PROMTOOL)");
        return;
    };
    let mut server = loaded_server(&[]).await;
    let (status, text) = server.get("/metrics").await;
    assert_eq!(status, 200);
    let text = text.as_str().unwrap().to_owned();
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = check.wait_with_output().unwrap();
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    server.stop().await;
}

/// Prometheus, killed when the test ends.
struct Prometheus {
    child: Child,
    base: String,
    _data: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_prometheus(binary: &std::ffi::OsStr, target: &str) -> Prometheus {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: coffer\n    static_configs:\n      - targets: ['{target}']\n"),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.path().join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(data.path().join("log")).unwrap())
        .spawn()
        .expect("prometheus starts");
    Prometheus {
        child,
        base: format!("http://127.0.0.1:{port}"),
        _data: data,
    }
}

/// The values of an instant query's samples (none on any error).
async fn query_all(client: &reqwest::Client, prometheus: &Prometheus, promql: &str) -> Vec<f64> {
    let answer: Option<Value> = async {
        let response = client
            .get(format!("{}/api/v1/query", prometheus.base))
            .query(&[("query", promql)])
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }
    .await;
    let samples = answer.as_ref().and_then(|answer| answer["data"]["result"].as_array());
    samples
        .into_iter()
        .flatten()
        .filter_map(|sample| sample["value"][1].as_str()?.parse().ok())
        .collect()
}

/// Runs `queries` (name, PromQL) until every answer is `good` or `wait`
/// passes, loading the server before each round so that every rate has
/// two samples to span; the last round's values, by name.
async fn query_under_load(
    server: &TestServer,
    prometheus: &Prometheus,
    queries: &[(String, String)],
    good: fn(&[f64]) -> bool,
    wait: Duration,
) -> Vec<(String, Vec<f64>)> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + wait;
    let mut round = 0;
    loop {
        round += 1;
        load(server, 1_000 * round, 20).await;
        let mut answers = Vec::new();
        for (what, promql) in queries {
            answers.push((
                format!("{what}: {promql}"),
                query_all(&client, prometheus, promql).await,
            ));
        }
        if answers.iter().all(|(_, values)| good(values)) || Instant::now() > deadline {
            return answers;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Answers whose failures the assertions list.
fn without(answers: &[(String, Vec<f64>)], good: fn(&[f64]) -> bool) -> Vec<String> {
    answers
        .iter()
        .filter(|(_, values)| !good(values))
        .map(|(what, values)| format!("{what} -> {values:?}"))
        .collect()
}

#[tokio::test]
async fn a_real_prometheus_scrapes_a_loaded_server() {
    let Some(binary) = std::env::var_os("COFFER_TEST_PROMETHEUS") else {
        support::skipped("Prometheus scraping the server (set COFFER_TEST_PROMETHEUS)");
        return;
    };
    let mut server = loaded_server(&[]).await;
    let target = server.base.trim_start_matches("http://").to_owned();
    let prometheus = start_prometheus(&binary, &target);
    let queries = [
        ("up", "up{job=\"coffer\"}"),
        ("requests", "sum(rate(coffer_http_requests_total[5s]))"),
        (
            "p99",
            "histogram_quantile(0.99, sum by (le) (rate(coffer_http_request_duration_seconds_bucket[5s])))",
        ),
        ("fsyncs", "rate(coffer_journal_syncs_total[5s])"),
        (
            "fsync p99",
            "histogram_quantile(0.99, rate(coffer_journal_fsync_seconds_bucket[5s]))",
        ),
        (
            "batch mean",
            "rate(coffer_engine_batch_transactions_sum[5s]) / rate(coffer_engine_batch_transactions_count[5s])",
        ),
    ];
    let queries: Vec<(String, String)> = queries
        .iter()
        .map(|(what, promql)| (what.to_string(), promql.to_string()))
        .collect();
    let positive: fn(&[f64]) -> bool = |values| values.first().is_some_and(|value| value.is_finite() && *value > 0.0);
    let answers = query_under_load(&server, &prometheus, &queries, positive, Duration::from_secs(60)).await;
    let failed = without(&answers, positive);
    assert!(
        failed.is_empty(),
        "queries without a positive answer:\n{}",
        failed.join("\n")
    );
    assert_eq!(answers[0].1.first(), Some(&1.0), "the target is up");
    server.stop().await;
}

/// The Grafana dashboard's queries, with the rate window Grafana would
/// fill in for a 1 s scrape interval.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/grafana/coffer.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap().replace("$__rate_interval", "5s");
            queries.push((format!("{title} / {}", target["legendFormat"]), expr));
        }
    }
    queries
}

/// Every panel of `deploy/grafana/coffer.json` answers with data from a
/// real Prometheus scraping a server under load, with the history index
/// and Kafka on (the lag panels need both).
#[tokio::test]
async fn every_dashboard_panel_returns_data() {
    let (Some(binary), Some(brokers)) = (
        std::env::var_os("COFFER_TEST_PROMETHEUS"),
        std::env::var("COFFER_TEST_KAFKA_BROKERS").ok(),
    ) else {
        support::skipped("dashboard queries (set COFFER_TEST_PROMETHEUS and COFFER_TEST_KAFKA_BROKERS)");
        return;
    };
    let prefix = format!("dashboard-{}.", support::unique());
    let mut server = loaded_server(&["--kafka-brokers", &brokers, "--kafka-topic-prefix", &prefix]).await;
    let target = server.base.trim_start_matches("http://").to_owned();
    let prometheus = start_prometheus(&binary, &target);
    let queries = dashboard_queries();
    assert!(queries.len() >= 12, "{queries:?}");
    let data: fn(&[f64]) -> bool = |values| !values.is_empty() && values.iter().all(|value| value.is_finite());
    let answers = query_under_load(&server, &prometheus, &queries, data, Duration::from_secs(90)).await;
    let missing = without(&answers, data);
    assert!(missing.is_empty(), "panels without data:\n{}", missing.join("\n"));
    server.stop().await;
}
