//! The load generator's HTTP client: coffer's client library for the
//! writes it has calls for (transfers, deposits, batches of commands), and
//! raw requests with the API key for the rest (holds, purchases, jobs, and
//! the batch scenario's bodies built as text).

use serde_json::Value;

pub struct Client {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
    api: coffer_client::Client,
}

impl Client {
    /// `minimal`: writes through the library ask for minimal answers. The
    /// library does not retry here: a benchmark counts what the server
    /// answered the first time.
    pub fn new(http: reqwest::Client, url: &str, api_key: Option<String>, minimal: bool) -> anyhow::Result<Self> {
        let mut api = coffer_client::Client::builder(url)
            .http_client(http.clone())
            .retry(coffer_client::RetryPolicy::none())
            .minimal_answers(minimal);
        if let Some(key) = &api_key {
            api = api.api_key(key.clone());
        }
        Ok(Client {
            http,
            base: url.trim_end_matches('/').to_owned(),
            api_key,
            api: api.build()?,
        })
    }

    /// coffer's client library, on the same connections.
    pub fn api(&self) -> &coffer_client::Client {
        &self.api
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
        let (status, answer) = self.post_text(path, body.to_string(), false).await?;
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
