//! A bulk balance job killed with SIGKILL mid-run: after a restart it
//! completes, with every item applied exactly once.

mod support;

use serde_json::{json, Map, Value};
use std::time::Duration;
use support::Server;

const ITEMS: usize = 100_000;

async fn get(client: &reqwest::Client, url: String) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_job_resumes_and_applies_each_item_once() {
    let data = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    for (round, kill_after_ms) in [(0u64, 40u64), (1, 90), (2, 140)] {
        let mut server = Server::start(data.path());
        let mut balances = Map::new();
        for index in 0..ITEMS {
            balances.insert(format!("r{round}-{index:06}"), json!(index as u64 * 3 + round));
        }
        balances.insert(format!("r{round}-bad!"), json!(1));
        let body = json!({"id": format!("job-{round}"), "unit": "USD/2", "balances": balances, "create_missing": true});
        let response = client
            .put(format!("{}/v1/balances/batch", server.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
        let before = get(&client, format!("{}/v1/jobs/job-{round}", server.base)).await;
        server.kill();
        let server = Server::start(data.path());
        let job = loop {
            let job = get(&client, format!("{}/v1/jobs/job-{round}", server.base)).await;
            if job["status"] == "completed" {
                break job;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        eprintln!(
            "round {round}: killed with {} items pending",
            before["totals"]["pending"]
        );
        assert_eq!(
            job["totals"],
            json!({"items": ITEMS + 1, "completed": ITEMS, "failed": 1, "pending": 0}),
            "round {round}"
        );
        // Each account opened and set by one transaction: version 1. An item
        // applied twice would have made it 2.
        let mut cursor: Option<String> = None;
        let mut seen = 0;
        loop {
            let mut url = format!("{}/v1/accounts?prefix=r{round}-&limit=1000", server.base);
            if let Some(cursor) = &cursor {
                url.push_str(&format!("&cursor={cursor}"));
            }
            let page = get(&client, url).await;
            for account in page["data"].as_array().unwrap() {
                let index: u64 = account["id"].as_str().unwrap()[3..].parse().unwrap();
                assert_eq!(account["available"].as_u64(), Some(index * 3 + round), "{account}");
                assert_eq!(account["version"], 1, "applied once: {account}");
                seen += 1;
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen, ITEMS);
        drop(server);
    }
}
