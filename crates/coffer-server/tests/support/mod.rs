//! The sandbox: the real app on a random port over a temporary data
//! directory, and a client for it.
#![allow(dead_code)]

use clap::Parser;
use coffer_server::{RunningServer, ServerConfig};
use serde_json::Value;

#[derive(Parser)]
struct Wrapper {
    #[command(flatten)]
    config: ServerConfig,
}

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub base: String,
    pub client: reqwest::Client,
    pub data: tempfile::TempDir,
    pub token: Option<String>,
}

pub fn config(data: &std::path::Path, extra: &[&str]) -> ServerConfig {
    let mut arguments = vec![
        "coffer",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    arguments.extend_from_slice(extra);
    Wrapper::parse_from(arguments).config
}

impl TestServer {
    pub async fn start(extra: &[&str]) -> Self {
        let data = tempfile::tempdir().unwrap();
        let server = coffer_server::start(config(data.path(), extra))
            .await
            .expect("server starts");
        let base = format!("http://{}", server.address);
        TestServer {
            server: Some(server),
            base,
            client: reqwest::Client::new(),
            data,
            token: None,
        }
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.unwrap();
        }
    }

    /// Stops and starts again on the same data directory.
    pub async fn restart(&mut self, extra: &[&str]) {
        self.stop().await;
        let server = coffer_server::start(config(self.data.path(), extra))
            .await
            .expect("server restarts");
        self.base = format!("http://{}", server.address);
        self.server = Some(server);
    }

    fn with_auth(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value, reqwest::header::HeaderMap) {
        let response = self
            .with_auth(self.client.post(format!("{}{path}", self.base)).json(&body))
            .send()
            .await
            .unwrap();
        Self::read(response).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (u16, Value, reqwest::header::HeaderMap) {
        let response = self
            .with_auth(self.client.put(format!("{}{path}", self.base)).json(&body))
            .send()
            .await
            .unwrap();
        Self::read(response).await
    }

    pub async fn post_raw(&self, path: &str, body: &'static str) -> (u16, Value) {
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        let (status, body, _) = Self::read(self.with_auth(request).send().await.unwrap()).await;
        (status, body)
    }

    pub async fn post_keyed(&self, path: &str, key: &str, body: Value) -> (u16, Value, reqwest::header::HeaderMap) {
        self.post_with_header(path, ("idempotency-key", key), body).await
    }

    pub async fn post_with_header(
        &self,
        path: &str,
        (name, value): (&str, &str),
        body: Value,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .header(name, value)
            .json(&body);
        Self::read(self.with_auth(request).send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .with_auth(self.client.get(format!("{}{path}", self.base)))
            .send()
            .await
            .unwrap();
        let (status, body, _) = Self::read(response).await;
        (status, body)
    }

    async fn read(response: reqwest::Response) -> (u16, Value, reqwest::header::HeaderMap) {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body, headers)
    }

    /// coffer's client library on this server, with the test's API key.
    pub fn api(&self) -> coffer_client::Client {
        let builder = coffer_client::Client::builder(&self.base).http_client(self.client.clone());
        match &self.token {
            Some(token) => builder.api_key(token.clone()),
            None => builder,
        }
        .build()
        .unwrap()
    }

    pub async fn open(&self, id: &str, unit: &str) {
        self.api().open_account(id, unit).await.unwrap();
    }

    pub async fn deposit(&self, id: &str, amount: u64) {
        let result = self.api().deposit(id, u128::from(amount)).await.unwrap();
        assert_eq!(result.status, "committed");
    }

    /// (available, frozen) of an account.
    pub async fn balance(&self, id: &str) -> (i64, i64) {
        let account = self.api().account(id).await.unwrap();
        (
            i64::try_from(account.available).unwrap(),
            i64::try_from(account.frozen).unwrap(),
        )
    }

    /// Every account, for "state unchanged" checks.
    pub async fn all_accounts(&self) -> Value {
        self.get("/v1/accounts?limit=1000").await.1["data"].clone()
    }
}

/// Says that a test needing a service did not run. Written to the process's
/// stderr directly, past the test harness's capture, so that CI sees it.
pub fn skipped(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {what}");
}

/// A number no other call in this process returns, for unique names.
pub fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    nanos ^ NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
