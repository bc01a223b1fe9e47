//! The load generator's HTTP client: the API key on every request, JSON
//! answers read as values or typed structs.

use serde_json::Value;

pub struct Client {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
}

impl Client {
    pub fn new(http: reqwest::Client, url: &str, api_key: Option<String>) -> Self {
        Client {
            http,
            base: url.trim_end_matches('/').to_owned(),
            api_key,
        }
    }

    /// The server's base URL, for messages.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A GET of `path` with the API key.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.authorized(self.http.get(format!("{}{path}", self.base)))
    }

    /// A PUT of `path` with the API key.
    pub fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.authorized(self.http.put(format!("{}{path}", self.base)))
    }

    /// A gauge or counter from the server's /metrics (0 when absent).
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = self
            .authorized(self.http.get(format!("{}/metrics", self.base)))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0))
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        self.post_preferring(path, body, false).await
    }

    /// `post`, under `Prefer: return=minimal` when `minimal`.
    pub async fn post_preferring(&self, path: &str, body: &Value, minimal: bool) -> anyhow::Result<(u16, Value)> {
        let (status, answer) = self.post_text(path, body.to_string(), minimal).await?;
        Ok((status, answer.unwrap_or(Value::Null)))
    }

    /// A JSON body as text, and the answer parsed into `T` (`None` when it
    /// does not parse). The batch scenario builds its bodies as text and
    /// parses answers into typed structs: `Value` trees of a thousand items
    /// made the load generator, not the server, the limit.
    pub async fn post_text<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: String,
        minimal: bool,
    ) -> anyhow::Result<(u16, Option<T>)> {
        let mut request = self.http.post(format!("{}{path}", self.base));
        if minimal {
            request = request.header("prefer", "return=minimal");
        }
        let request = self.authorized(request.header("content-type", "application/json").body(body));
        let response = request.send().await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        Ok((status, serde_json::from_slice(&bytes).ok()))
    }
}
