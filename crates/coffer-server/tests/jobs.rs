//! Bulk balance jobs against the real server: totals and per-item statuses,
//! idempotent job ids, validation.

mod support;

use serde_json::{json, Map, Value};
use support::TestServer;

async fn wait_for_job(server: &TestServer, id: &str) -> Value {
    for _ in 0..1_000 {
        let (status, job) = server.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(status, 200, "{job}");
        if job["status"] == "completed" {
            return job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("job {id} did not finish");
}

#[tokio::test]
async fn a_job_sets_every_valid_balance_and_reports_every_invalid_one() {
    let mut server = TestServer::start(&[]).await;
    server.open("existing", "USD/2").await;
    server.open("euros", "EUR/2").await;
    let mut balances = Map::new();
    for index in 0..10_000 {
        balances.insert(format!("user-{index:05}"), json!(index));
    }
    balances.insert("existing".into(), json!("1234567890123456789"));
    balances.insert("euros".into(), json!(5));
    balances.insert("not valid!".into(), json!(5));
    balances.insert("bad-amount".into(), json!(1.5));
    balances.insert("negative".into(), json!(-1));
    let body = json!({"id": "j1", "unit": "USD/2", "balances": balances, "create_missing": true});
    let (status, accepted, _) = server.put("/v1/balances/batch", body.clone()).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["totals"]["items"], 10_005);
    let job = wait_for_job(&server, "j1").await;
    assert_eq!(
        job["totals"],
        json!({"items": 10_005, "completed": 10_001, "failed": 4, "pending": 0})
    );
    assert_eq!(job["progress"], 1.0);

    let (_, failed) = server.get("/v1/jobs/j1/items?status=failed").await;
    let codes: Vec<(&str, &str)> = failed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| (item["account"].as_str().unwrap(), item["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        codes,
        [
            ("bad-amount", "invalid_amount"),
            ("euros", "unit_mismatch"),
            ("negative", "insufficient_funds"),
            ("not valid!", "invalid_account"),
        ]
    );
    let (_, existing) = server.get("/v1/accounts/existing").await;
    assert_eq!(existing["available"].as_i64(), Some(1_234_567_890_123_456_789));
    let (_, created) = server.get("/v1/accounts/user-09999").await;
    assert_eq!(
        (created["available"].as_i64(), created["version"].as_i64()),
        (Some(9_999), Some(1))
    );
    let (_, page) = server.get("/v1/jobs/j1/items?status=completed&limit=2&cursor=5").await;
    assert_eq!(page["data"][0]["index"], 5);
    assert_eq!(page["next_cursor"], 7);

    // The same job id: the same job, not a second run; another definition: 409.
    let (status, again, _) = server.put("/v1/balances/batch", body).await;
    assert_eq!(status, 200, "{again}");
    let (status, conflict, _) = server
        .put(
            "/v1/balances/batch",
            json!({"id": "j1", "unit": "USD/2", "balances": {"x": 1}}),
        )
        .await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["error"]["code"], "job_exists");

    // Without create_missing, unknown accounts fail and nothing is opened.
    let body = json!({"id": "j2", "unit": "USD/2", "balances": {"ghost": 5, "existing": 7}});
    let (status, _, _) = server.put("/v1/balances/batch", body).await;
    assert_eq!(status, 202);
    let job = wait_for_job(&server, "j2").await;
    assert_eq!(
        (job["totals"]["completed"].as_i64(), job["totals"]["failed"].as_i64()),
        (Some(1), Some(1))
    );
    let (status, _) = server.get("/v1/accounts/ghost").await;
    assert_eq!(status, 404);

    // Jobs survive a restart with their results.
    server.restart(&[]).await;
    let job = wait_for_job(&server, "j1").await;
    assert_eq!(job["totals"]["failed"], 4);
    server.stop().await;
}

#[tokio::test]
async fn job_requests_are_validated() {
    let mut server = TestServer::start(&[]).await;
    for body in [
        json!({"unit": "USD/2", "balances": {}}),
        json!({"unit": "bad unit", "balances": {"a": 1}}),
        json!({"unit": "USD/2", "balances": {"a": 1}, "id": "bad id"}),
        json!({"unit": "USD/2", "balances": {"a": 1}, "colour": "red"}),
        json!({"unit": "USD/2", "balances": [1, 2]}),
    ] {
        let (status, answer, _) = server.put("/v1/balances/batch", body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
    let (status, _) = server.get("/v1/jobs/none").await;
    assert_eq!(status, 404);
    server.stop().await;
}
