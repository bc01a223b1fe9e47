//! # coffer-client
//!
//! A client for coffer's HTTP API.
//!
//! - Typed requests (coffer's own [`Command`] and [`Operation`], so a
//!   request the server would refuse as malformed is refused here first)
//!   and typed answers ([`Account`], [`TransactionResult`], [`HistoryEntry`]).
//! - Every write carries an idempotency key: the caller's transaction id, or
//!   one generated (a random UUID) before the first attempt and sent again
//!   on every retry, so a retried write is applied once.
//! - Retries with exponential backoff and jitter on 503 and 429, and on
//!   transport errors (the request may or may not have reached the server:
//!   the key makes the retry safe); `Retry-After` is honoured. A 4xx other
//!   than 429, a rejection (422) or a key reused with another payload
//!   (409) is returned at once.
//!
//! ```no_run
//! # async fn example() -> Result<(), coffer_client::Error> {
//! let coffer = coffer_client::Client::builder("http://127.0.0.1:8080").api_key("writer-key-0123456789").build()?;
//! coffer.open_account("alice", "USD/2").await?;
//! coffer.open_account("bob", "USD/2").await?;
//! coffer.deposit("alice", 10_000).await?;
//! let transfer = coffer.transfer("alice", "bob", 2_500).await?;
//! assert_eq!(transfer.status, "committed");
//! let alice = coffer.account("alice").await?;
//! assert_eq!(alice.available, 7_500);
//! # Ok(()) }
//! ```

mod answers;
mod retry;

pub use answers::{Account, ApiError, Effect, HistoryEntry, Page, TransactionResult};
pub use coffer_core::{AccountId, Amount, Command, Metadata, Operation, TransactionId, Unit};
pub use retry::RetryPolicy;

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

/// Longest base URL accepted (it goes into every request's URL).
pub const BASE_URL_BYTES_MAX: usize = 2_048;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed before it is sent (an id, a unit or an
    /// amount coffer would refuse).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The server answered with an error (a rejection is `422` with the
    /// rejection's code; see [`ApiError::code`]).
    #[error("{status} {}: {}", .error.code, .error.message)]
    Api { status: u16, error: ApiError },
    /// The server could not be reached or did not answer, after every
    /// retry.
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    /// An answer that is not the JSON expected.
    #[error("unexpected answer ({status}): {reason}")]
    Decode { status: u16, reason: String },
}

impl Error {
    /// The API's error code (`insufficient_funds`, `not_found`, …), if the
    /// server answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { error, .. } => Some(&error.code),
            _ => None,
        }
    }
}

impl From<coffer_core::CoreError> for Error {
    fn from(error: coffer_core::CoreError) -> Self {
        Error::Invalid(error.to_string())
    }
}

pub struct ClientBuilder {
    base: String,
    api_key: Option<String>,
    user: Option<String>,
    minimal_answers: bool,
    timeout: Duration,
    retry: RetryPolicy,
    http: Option<reqwest::Client>,
}

impl ClientBuilder {
    /// Sent as `Authorization: Bearer KEY`.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Sent as `Coffer-User` on writes: the key of the server's per-user
    /// rate limits.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Asks for minimal answers to writes (`Prefer: return=minimal`): id,
    /// status and sequence, without balances; a fifth of the bytes.
    pub fn minimal_answers(mut self, minimal: bool) -> Self {
        self.minimal_answers = minimal;
        self
    }

    /// How long one attempt may take (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Shares an existing connection pool (its own timeout then applies).
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        let base = self.base.trim_end_matches('/').to_owned();
        if base.len() > BASE_URL_BYTES_MAX || !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Invalid(format!(
                "base URL: http:// or https://, at most {BASE_URL_BYTES_MAX} bytes"
            )));
        }
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder().timeout(self.timeout).build()?,
        };
        Ok(Client {
            http,
            base,
            api_key: self.api_key,
            user: self.user,
            minimal_answers: self.minimal_answers,
            retry: self.retry,
        })
    }
}

/// A connection pool to one coffer server (or a load balancer in front of
/// several); cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
    user: Option<String>,
    minimal_answers: bool,
    retry: RetryPolicy,
}

#[derive(Serialize)]
struct OpenAccountBody<'a> {
    id: &'a AccountId,
    unit: &'a Unit,
}

#[derive(Serialize)]
struct DepositBody<'a> {
    id: &'a TransactionId,
    account: &'a AccountId,
    amount: Amount,
}

#[derive(Serialize)]
struct TransferBody<'a> {
    id: &'a TransactionId,
    from: &'a AccountId,
    to: &'a AccountId,
    amount: Amount,
}

impl Client {
    pub fn builder(base_url: &str) -> ClientBuilder {
        ClientBuilder {
            base: base_url.to_owned(),
            api_key: None,
            user: None,
            minimal_answers: false,
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            http: None,
        }
    }

    /// A client with the defaults: no API key, 30 s a try, the default
    /// retry policy.
    pub fn new(base_url: &str) -> Result<Client, Error> {
        Client::builder(base_url).build()
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Opens `id` in `unit` (`USD/2`: US dollars counted in cents); an id
    /// already open is `422 account_exists`.
    pub async fn open_account(&self, id: &str, unit: &str) -> Result<Account, Error> {
        let (id, unit) = (AccountId::parse(id)?, Unit::parse(unit)?);
        let key = random_transaction_id();
        let body = OpenAccountBody { id: &id, unit: &unit };
        self.write::<_, serde::de::IgnoredAny>("/v1/accounts", Some(&key), &body)
            .await?;
        self.account(id.as_str()).await
    }

    pub async fn account(&self, id: &str) -> Result<Account, Error> {
        let id = AccountId::parse(id)?;
        self.read(&format!("/v1/accounts/{}", id.as_str()), &[]).await
    }

    /// Money in from outside (the world account), under a new idempotency
    /// key. To retry across restarts of your own process, use
    /// [`deposit_as`](Client::deposit_as) with an id you keep.
    pub async fn deposit(&self, account: &str, amount: u128) -> Result<TransactionResult, Error> {
        self.deposit_as(random_transaction_id().as_str(), account, amount).await
    }

    /// A deposit under the caller's id (its idempotency key).
    pub async fn deposit_as(&self, id: &str, account: &str, amount: u128) -> Result<TransactionResult, Error> {
        let (id, account, amount) = (
            TransactionId::parse(id)?,
            AccountId::parse(account)?,
            Amount::new(amount)?,
        );
        let body = DepositBody {
            id: &id,
            account: &account,
            amount,
        };
        self.write("/v1/deposits", Some(&id), &body).await
    }

    /// A transfer under a new idempotency key (see [`deposit`](Client::deposit)).
    pub async fn transfer(&self, from: &str, to: &str, amount: u128) -> Result<TransactionResult, Error> {
        self.transfer_as(random_transaction_id().as_str(), from, to, amount)
            .await
    }

    /// A transfer under the caller's id (its idempotency key).
    pub async fn transfer_as(&self, id: &str, from: &str, to: &str, amount: u128) -> Result<TransactionResult, Error> {
        let id = TransactionId::parse(id)?;
        let (from, to, amount) = (AccountId::parse(from)?, AccountId::parse(to)?, Amount::new(amount)?);
        let body = TransferBody {
            id: &id,
            from: &from,
            to: &to,
            amount,
        };
        self.write("/v1/transfers", Some(&id), &body).await
    }

    /// Any transaction: its operations all apply or none does. Without an
    /// id, one is generated and kept for every retry of this call.
    pub async fn submit(&self, mut command: Command) -> Result<TransactionResult, Error> {
        let id = command.id.get_or_insert_with(random_transaction_id).clone();
        self.write("/v1/transactions", Some(&id), &command).await
    }

    /// Independent transactions in one request (each applied or rejected
    /// on its own; at most the server's `--http-batch-max`): one result
    /// each, in order, a rejection being a result, not an error. Items
    /// without an id get one before the first attempt.
    pub async fn batch(&self, mut commands: Vec<Command>) -> Result<Vec<TransactionResult>, Error> {
        for command in &mut commands {
            command.id.get_or_insert_with(random_transaction_id);
        }
        #[derive(Serialize)]
        struct BatchBody<'a> {
            transactions: &'a [Command],
        }
        #[derive(serde::Deserialize)]
        struct BatchAnswer {
            results: Vec<TransactionResult>,
        }
        let body = BatchBody {
            transactions: &commands,
        };
        let answer: BatchAnswer = self.write("/v1/transactions/batch", None, &body).await?;
        Ok(answer.results)
    }

    /// A transaction's outcome by id (`pending` while an async write is
    /// still on its way).
    pub async fn transaction(&self, id: &str) -> Result<TransactionResult, Error> {
        let id = TransactionId::parse(id)?;
        self.read(&format!("/v1/transactions/{}", id.as_str()), &[]).await
    }

    /// One page of an account's history, newest first; pass the page's
    /// `next_cursor` for the next.
    pub async fn history(&self, account: &str, limit: u32, cursor: Option<&str>) -> Result<Page<HistoryEntry>, Error> {
        let account = AccountId::parse(account)?;
        let limit = limit.to_string();
        let mut query = vec![("limit", limit.as_str())];
        query.extend(cursor.map(|cursor| ("cursor", cursor)));
        self.read(&format!("/v1/accounts/{}/history", account.as_str()), &query)
            .await
    }

    async fn read<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T, Error> {
        let url = format!("{}{path}", self.base);
        self.with_retries(|| self.authorized(self.http.get(&url).query(query)))
            .await
    }

    /// A POST under `key` (the same on every attempt; a batch's items
    /// carry their own).
    async fn write<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        key: Option<&TransactionId>,
        body: &B,
    ) -> Result<T, Error> {
        let url = format!("{}{path}", self.base);
        let body = serde_json::to_vec(body).map_err(|error| Error::Invalid(error.to_string()))?;
        self.with_retries(|| {
            let mut request = self
                .http
                .post(&url)
                .header("content-type", "application/json")
                .body(body.clone());
            if let Some(key) = key {
                request = request.header("idempotency-key", key.as_str());
            }
            if let Some(user) = &self.user {
                request = request.header("coffer-user", user);
            }
            if self.minimal_answers {
                request = request.header("prefer", "return=minimal");
            }
            self.authorized(request)
        })
        .await
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    async fn with_retries<T: DeserializeOwned>(
        &self,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<T, Error> {
        let mut attempt = 1;
        loop {
            let outcome = request().send().await;
            let wait = match &outcome {
                Ok(response) => retry::worth_retrying(response),
                Err(error) => retry::transport_worth_retrying(error).then_some(None),
            };
            match wait {
                Some(retry_after) if attempt < self.retry.attempts_max => {
                    tokio::time::sleep(self.retry.delay(attempt, retry_after)).await;
                    attempt += 1;
                }
                _ => return answer(outcome?).await,
            }
        }
    }
}

/// The answer's JSON as `T`, or the API error it carries.
async fn answer<T: DeserializeOwned>(response: reqwest::Response) -> Result<T, Error> {
    let status = response.status().as_u16();
    let bytes = response.bytes().await?;
    if (200..300).contains(&status) {
        return serde_json::from_slice(&bytes).map_err(|error| Error::Decode {
            status,
            reason: error.to_string(),
        });
    }
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: ApiError,
    }
    match serde_json::from_slice::<Envelope>(&bytes) {
        Ok(envelope) => Err(Error::Api {
            status,
            error: envelope.error,
        }),
        Err(_) => Err(Error::Decode {
            status,
            reason: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
        }),
    }
}

/// A random UUID (version 4) as a transaction id.
pub fn random_transaction_id() -> TransactionId {
    let mut bytes = [0_u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    let text = format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    );
    TransactionId::parse(&text).expect("a UUID is a valid transaction id")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_version_4_uuids_and_differ() {
        let (first, second) = (random_transaction_id(), random_transaction_id());
        assert_ne!(first, second);
        let text = first.as_str();
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "4");
        assert!("89ab".contains(&text[19..20]), "{text}");
    }

    #[test]
    fn a_malformed_request_is_refused_before_sending() {
        let client = Client::new("http://127.0.0.1:1").unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let error = runtime.block_on(client.transfer("alice", "", 5)).unwrap_err();
        assert!(matches!(error, Error::Invalid(_)), "{error}");
        let error = runtime.block_on(client.deposit("alice", 0)).unwrap_err();
        assert!(matches!(error, Error::Invalid(_)), "{error}");
        assert!(Client::new("ftp://example").is_err());
    }
}
