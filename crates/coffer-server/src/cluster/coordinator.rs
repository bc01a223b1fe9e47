//! The cluster's coordination state in PostgreSQL: what the cluster is (its
//! shard count and log id), which nodes are alive, who owns each shard
//! (a lease with an epoch), and each shard's newest snapshot.
//!
//! Every expiry is computed by PostgreSQL's clock (`now()`), so the nodes'
//! clocks never decide who owns a shard.

use super::ClusterError;
use coffer_history::pg_connect;
use postgres::Client;
use std::time::Duration;

/// The cluster as it was created.
#[derive(Debug, Clone)]
pub struct ClusterRow {
    pub shards: u32,
    pub log_id: String,
    pub created_by: String,
    /// False while the creator is still making the topics.
    pub ready: bool,
}

/// One shard's lease and what its owner last reported.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShardRow {
    pub shard: u32,
    pub owner: Option<String>,
    pub owner_url: Option<String>,
    pub epoch: u64,
    /// Milliseconds until the lease expires (negative: expired).
    pub lease_ms_left: i64,
    /// The next offset the owner applies.
    pub applied_offset: u64,
    /// The partition's end as the owner last saw it.
    pub log_end: u64,
    /// The shard's history holds every entry before this offset.
    pub history_offset: u64,
    /// Whether the shard's idempotency window forgets ids (or soon will):
    /// from then on, nodes look ids up in the shard's history too.
    pub forgotten: bool,
    /// Why the shard refuses writes, if it does.
    pub refusing: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct NodeRow {
    pub node: String,
    pub url: String,
    pub seen_ms_ago: i64,
}

/// A shard's state after every entry before `next_offset`.
pub struct StoredSnapshot {
    pub next_offset: u64,
    /// xxh3-64 of the entry at `next_offset - 1` (0 when it is 0): a new
    /// owner checks the log still holds that entry there.
    pub previous_digest: u64,
    pub state: Vec<u8>,
    /// The home's sagas (`saga::SagaTable`), empty for none.
    pub sagas: Vec<u8>,
}

/// What an owner reports about its shard with every renewal.
#[derive(Debug, Clone, Default)]
pub struct ShardReport {
    pub applied_offset: u64,
    pub log_end: u64,
    pub history_offset: u64,
    pub forgotten: bool,
    pub refusing: Option<String>,
}

pub struct Coordinator {
    client: Client,
    schema: String,
}

/// Any key: it only serializes the nodes creating the tables together.
const SCHEMA_LOCK_KEY: i64 = 0x636f_6666_6572;

impl Coordinator {
    pub fn connect(url: &str, schema: &str) -> Result<Coordinator, ClusterError> {
        assert!(valid_schema(schema), "checked with the configuration");
        let client = pg_connect::connect(url)?;
        Ok(Coordinator {
            client,
            schema: schema.to_owned(),
        })
    }

    pub fn create_tables(&mut self) -> Result<(), ClusterError> {
        let schema = &self.schema;
        let mut transaction = self.client.transaction()?;
        transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK_KEY])?;
        transaction.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {schema}.cluster (
                 singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
                 shards INTEGER NOT NULL,
                 log_id TEXT NOT NULL,
                 created_by TEXT NOT NULL,
                 ready BOOLEAN NOT NULL DEFAULT FALSE,
                 created_at TIMESTAMPTZ NOT NULL DEFAULT now());
             CREATE TABLE IF NOT EXISTS {schema}.nodes (
                 node TEXT PRIMARY KEY,
                 url TEXT NOT NULL,
                 seen_at TIMESTAMPTZ NOT NULL);
             CREATE TABLE IF NOT EXISTS {schema}.leases (
                 shard INTEGER PRIMARY KEY,
                 owner TEXT,
                 owner_url TEXT,
                 epoch BIGINT NOT NULL DEFAULT 0,
                 expires_at TIMESTAMPTZ NOT NULL DEFAULT 'epoch',
                 applied_offset BIGINT NOT NULL DEFAULT 0,
                 log_end BIGINT NOT NULL DEFAULT 0,
                 history_offset BIGINT NOT NULL DEFAULT 0,
                 forgotten BOOLEAN NOT NULL DEFAULT FALSE,
                 refusing TEXT);
             CREATE TABLE IF NOT EXISTS {schema}.snapshots (
                 shard INTEGER PRIMARY KEY,
                 next_offset BIGINT NOT NULL,
                 previous_digest BIGINT NOT NULL,
                 state BYTEA NOT NULL,
                 taken_at TIMESTAMPTZ NOT NULL DEFAULT now());
             ALTER TABLE {schema}.snapshots ADD COLUMN IF NOT EXISTS sagas BYTEA NOT NULL DEFAULT '';"
        ))?;
        transaction.commit()?;
        Ok(())
    }

    /// The cluster row, creating it (with `shards` leases) if there is none.
    /// Returns the row and whether this call created it.
    pub fn claim_creation(
        &mut self,
        shards: u32,
        log_id: &str,
        node: &str,
    ) -> Result<(ClusterRow, bool), ClusterError> {
        let schema = &self.schema;
        let mut transaction = self.client.transaction()?;
        let created = transaction.execute(
            &format!(
                "INSERT INTO {schema}.cluster (shards, log_id, created_by) VALUES ($1, $2, $3)
                 ON CONFLICT (singleton) DO NOTHING"
            ),
            &[&(shards as i32), &log_id, &node],
        )? == 1;
        if created {
            transaction.execute(
                &format!("INSERT INTO {schema}.leases (shard) SELECT generate_series(0, $1 - 1)"),
                &[&(shards as i32)],
            )?;
        }
        transaction.commit()?;
        let row = self.cluster()?.expect("the row exists once claimed");
        Ok((row, created))
    }

    pub fn mark_ready(&mut self) -> Result<(), ClusterError> {
        let schema = &self.schema;
        self.client
            .execute(&format!("UPDATE {schema}.cluster SET ready = TRUE"), &[])?;
        Ok(())
    }

    pub fn cluster(&mut self) -> Result<Option<ClusterRow>, ClusterError> {
        let schema = &self.schema;
        let row = self.client.query_opt(
            &format!("SELECT shards, log_id, created_by, ready FROM {schema}.cluster"),
            &[],
        )?;
        Ok(row.map(|row| ClusterRow {
            shards: row.get::<_, i32>(0) as u32,
            log_id: row.get(1),
            created_by: row.get(2),
            ready: row.get(3),
        }))
    }

    pub fn heartbeat(&mut self, node: &str, url: &str) -> Result<(), ClusterError> {
        let schema = &self.schema;
        self.client.execute(
            &format!(
                "INSERT INTO {schema}.nodes (node, url, seen_at) VALUES ($1, $2, now())
                 ON CONFLICT (node) DO UPDATE SET url = EXCLUDED.url, seen_at = EXCLUDED.seen_at"
            ),
            &[&node, &url],
        )?;
        Ok(())
    }

    /// Nodes seen within `ttl`.
    pub fn live_nodes(&mut self, ttl: Duration) -> Result<u32, ClusterError> {
        let schema = &self.schema;
        let row = self.client.query_one(
            &format!("SELECT count(*) FROM {schema}.nodes WHERE seen_at > now() - $1 * interval '1 millisecond'"),
            &[&(ttl.as_millis() as f64)],
        )?;
        Ok(row.get::<_, i64>(0) as u32)
    }

    /// Extends this node's lease on `shard` at `epoch` and stores its
    /// report; false if the lease is no longer this node's.
    pub fn renew(
        &mut self,
        shard: u32,
        node: &str,
        epoch: u64,
        ttl: Duration,
        report: &ShardReport,
    ) -> Result<bool, ClusterError> {
        let schema = &self.schema;
        let renewed = self.client.execute(
            &format!(
                "UPDATE {schema}.leases
                 SET expires_at = now() + $4 * interval '1 millisecond',
                     applied_offset = $5, log_end = $6, refusing = $7, history_offset = $8,
                     forgotten = $9
                 WHERE shard = $1 AND owner = $2 AND epoch = $3 AND expires_at > now()"
            ),
            &[
                &(shard as i32),
                &node,
                &(epoch as i64),
                &(ttl.as_millis() as f64),
                &(report.applied_offset as i64),
                &(report.log_end as i64),
                &report.refusing,
                &(report.history_offset as i64),
                &report.forgotten,
            ],
        )?;
        Ok(renewed == 1)
    }

    /// Takes one shard whose lease has expired, if any: a new epoch, so
    /// the previous owner's renewals fail from now on.
    pub fn acquire_one(&mut self, node: &str, url: &str, ttl: Duration) -> Result<Option<(u32, u64)>, ClusterError> {
        let schema = &self.schema;
        let row = self.client.query_opt(
            &format!(
                "UPDATE {schema}.leases
                 SET owner = $1, owner_url = $2, epoch = epoch + 1,
                     expires_at = now() + $3 * interval '1 millisecond', refusing = NULL
                 WHERE shard = (SELECT shard FROM {schema}.leases WHERE expires_at <= now()
                                ORDER BY shard LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING shard, epoch"
            ),
            &[&node, &url, &(ttl.as_millis() as f64)],
        )?;
        Ok(row.map(|row| (row.get::<_, i32>(0) as u32, row.get::<_, i64>(1) as u64)))
    }

    /// Gives a shard up at once (its owner has stopped applying it).
    pub fn release(&mut self, shard: u32, node: &str, epoch: u64) -> Result<(), ClusterError> {
        let schema = &self.schema;
        self.client.execute(
            &format!(
                "UPDATE {schema}.leases SET expires_at = now() - interval '1 millisecond'
                 WHERE shard = $1 AND owner = $2 AND epoch = $3"
            ),
            &[&(shard as i32), &node, &(epoch as i64)],
        )?;
        Ok(())
    }

    pub fn shards(&mut self) -> Result<Vec<ShardRow>, ClusterError> {
        let schema = &self.schema;
        let rows = self.client.query(
            &format!(
                "SELECT shard, owner, owner_url, epoch,
                        (extract(epoch FROM expires_at - now()) * 1000)::BIGINT,
                        applied_offset, log_end, refusing, history_offset, forgotten
                 FROM {schema}.leases ORDER BY shard"
            ),
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|row| ShardRow {
                shard: row.get::<_, i32>(0) as u32,
                owner: row.get(1),
                owner_url: row.get(2),
                epoch: row.get::<_, i64>(3) as u64,
                lease_ms_left: row.get(4),
                applied_offset: row.get::<_, i64>(5) as u64,
                log_end: row.get::<_, i64>(6) as u64,
                refusing: row.get(7),
                history_offset: row.get::<_, i64>(8) as u64,
                forgotten: row.get(9),
            })
            .collect())
    }

    pub fn nodes(&mut self) -> Result<Vec<NodeRow>, ClusterError> {
        let schema = &self.schema;
        let rows = self.client.query(
            &format!(
                "SELECT node, url, (extract(epoch FROM now() - seen_at) * 1000)::BIGINT
                 FROM {schema}.nodes ORDER BY node"
            ),
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|row| NodeRow {
                node: row.get(0),
                url: row.get(1),
                seen_ms_ago: row.get(2),
            })
            .collect())
    }

    pub fn load_snapshot(&mut self, shard: u32) -> Result<Option<StoredSnapshot>, ClusterError> {
        let schema = &self.schema;
        let row = self.client.query_opt(
            &format!("SELECT next_offset, previous_digest, state, sagas FROM {schema}.snapshots WHERE shard = $1"),
            &[&(shard as i32)],
        )?;
        Ok(row.map(|row| StoredSnapshot {
            next_offset: row.get::<_, i64>(0) as u64,
            previous_digest: row.get::<_, i64>(1) as u64,
            state: row.get(2),
            sagas: row.get(3),
        }))
    }

    /// Stores a snapshot unless one at the same or a later offset is there:
    /// a paused old owner that wakes up can never move a shard back.
    pub fn store_snapshot(&mut self, shard: u32, snapshot: &StoredSnapshot) -> Result<bool, ClusterError> {
        let schema = &self.schema;
        let stored = self.client.execute(
            &format!(
                "INSERT INTO {schema}.snapshots (shard, next_offset, previous_digest, state, sagas)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (shard) DO UPDATE
                 SET next_offset = EXCLUDED.next_offset, previous_digest = EXCLUDED.previous_digest,
                     state = EXCLUDED.state, sagas = EXCLUDED.sagas, taken_at = now()
                 WHERE {schema}.snapshots.next_offset < EXCLUDED.next_offset"
            ),
            &[
                &(shard as i32),
                &(snapshot.next_offset as i64),
                &(snapshot.previous_digest as i64),
                &snapshot.state,
                &snapshot.sagas,
            ],
        )?;
        Ok(stored == 1)
    }
}

/// A PostgreSQL schema name coffer accepts: it is written into SQL text.
pub fn valid_schema(schema: &str) -> bool {
    let mut bytes = schema.bytes();
    (1..=63).contains(&schema.len())
        && bytes
            .next()
            .is_some_and(|first| first.is_ascii_lowercase() || first == b'_')
        && bytes.all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
}
