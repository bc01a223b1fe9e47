//! The lease loop: one thread per node that keeps the node's heartbeat,
//! renews the leases of the shards it owns, takes expired ones up to its
//! fair share, gives one back when it holds more than that, and refreshes
//! the view of the cluster that `GET /v1/cluster` and routing read.

use super::coordinator::{ClusterRow, Coordinator, NodeRow, ShardRow};
use super::shard::{ShardContext, ShardOwner};
use super::ClusterError;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The cluster as this node last read it from PostgreSQL.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ClusterView {
    pub node: String,
    pub shard_count: u32,
    pub log_id: String,
    pub created_by: String,
    pub nodes: Vec<NodeRow>,
    pub shards: Vec<ShardRow>,
    /// Shards this node applies.
    pub owned: Vec<u32>,
    /// Why the view may be stale (the database is unreachable).
    pub coordination_error: Option<String>,
}

impl ClusterView {
    /// Why `shard` refuses writes, if its owner says it does.
    pub fn refusing(&self, shard: u32) -> Option<String> {
        self.shards.iter().find(|row| row.shard == shard)?.refusing.clone()
    }

    /// Why `shard` cannot answer now, if it cannot: it refuses, or it has
    /// no owner (a failover is in progress).
    pub fn refusal(&self, shard: u32) -> Option<String> {
        let row = self.shards.iter().find(|row| row.shard == shard)?;
        if let Some(reason) = &row.refusing {
            return Some(reason.clone());
        }
        (row.lease_ms_left <= 0).then(|| format!("shard {shard} has no owner at the moment (failover in progress)"))
    }
}

pub struct LeaseLoop {
    pub view: Arc<RwLock<ClusterView>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Owned {
    epoch: u64,
    owner: ShardOwner,
    /// When the lease was last renewed, by this node's clock: past the
    /// TTL without a renewal the lease may be another's, so the shard stops.
    renewed: Instant,
}

impl LeaseLoop {
    pub fn start(
        mut coordinator: Coordinator,
        cluster: &ClusterRow,
        context: Arc<ShardContext>,
    ) -> Result<LeaseLoop, ClusterError> {
        let settings = Arc::clone(&context.settings);
        let view = Arc::new(RwLock::new(ClusterView {
            node: settings.node_id.clone(),
            shard_count: cluster.shards,
            log_id: cluster.log_id.clone(),
            created_by: cluster.created_by.clone(),
            ..ClusterView::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (view, stop, shards) = (Arc::clone(&view), Arc::clone(&stop), cluster.shards);
            std::thread::Builder::new()
                .name("coffer-leases".into())
                .spawn(move || {
                    let mut owned = BTreeMap::new();
                    while !stop.load(Ordering::Acquire) {
                        let started = Instant::now();
                        let result = round(&mut coordinator, &context, shards, &mut owned, &view);
                        if let Err(error) = &result {
                            tracing::warn!(%error, "lease round failed");
                            fence_expired(&mut owned, settings.lease_ttl);
                        }
                        let mut view = view.write().expect("view lock");
                        view.coordination_error = result.err().map(|error| error.to_string());
                        view.owned = owned.keys().copied().collect();
                        drop(view);
                        let pause = (settings.lease_ttl / 4).saturating_sub(started.elapsed());
                        sleep_unless(&stop, pause);
                    }
                    for (shard, held) in std::mem::take(&mut owned) {
                        held.owner.stop();
                        if let Err(error) = coordinator.release(shard, &settings.node_id, held.epoch) {
                            tracing::warn!(shard, %error, "lease not given back; it expires on its own");
                        }
                    }
                })
                .expect("spawn the lease thread")
        };
        Ok(LeaseLoop {
            view,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops every shard this node owns and gives their leases back.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn sleep_unless(stop: &AtomicBool, pause: Duration) {
    let until = Instant::now() + pause;
    while !stop.load(Ordering::Acquire) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20).min(pause));
    }
}

/// One pass: heartbeat, renewals, at most one take or give-back, the view.
fn round(
    coordinator: &mut Coordinator,
    context: &Arc<ShardContext>,
    shards: u32,
    owned: &mut BTreeMap<u32, Owned>,
    view: &RwLock<ClusterView>,
) -> Result<(), ClusterError> {
    let settings = &context.settings;
    let (node, url, ttl) = (&settings.node_id, &settings.advertised_url, settings.lease_ttl);
    fence_expired(owned, ttl);
    coordinator.heartbeat(node, url)?;
    let mut lost = Vec::new();
    for (shard, held) in owned.iter_mut() {
        let report = held.owner.report();
        let asked = Instant::now();
        match coordinator.renew(*shard, node, held.epoch, ttl, &report)? {
            true => held.renewed = asked,
            false => lost.push(*shard),
        }
    }
    for shard in lost {
        tracing::warn!(shard, "lease lost; stopping the shard");
        owned.remove(&shard).expect("owned").owner.stop();
    }
    let live = coordinator.live_nodes(ttl)?.max(1);
    let fair_share = shards.div_ceil(live) as usize;
    if owned.len() < fair_share {
        let asked = Instant::now();
        if let Some((shard, epoch)) = coordinator.acquire_one(node, url, ttl)? {
            tracing::info!(shard, epoch, "lease taken; recovering the shard");
            let owner = ShardOwner::start(shard, Arc::clone(context));
            owned.insert(
                shard,
                Owned {
                    epoch,
                    owner,
                    renewed: asked,
                },
            );
        }
    } else if owned.len() > fair_share {
        let (&shard, _) = owned.iter().next_back().expect("owns more than zero");
        let held = owned.remove(&shard).expect("owned");
        tracing::info!(shard, "giving a shard back to balance the cluster");
        held.owner.stop();
        coordinator.release(shard, node, held.epoch)?;
    }
    let (nodes, rows) = (coordinator.nodes()?, coordinator.shards()?);
    let mut view = view.write().expect("view lock");
    view.nodes = nodes;
    view.shards = rows;
    Ok(())
}

/// Stops the shards whose lease may have expired without a renewal (the
/// database was unreachable, or this process was paused).
fn fence_expired(owned: &mut BTreeMap<u32, Owned>, ttl: Duration) {
    let expired: Vec<u32> = owned
        .iter()
        .filter(|(_, held)| held.renewed.elapsed() >= ttl)
        .map(|(shard, _)| *shard)
        .collect();
    for shard in expired {
        tracing::warn!(shard, "lease not renewed within its TTL; stopping the shard");
        owned.remove(&shard).expect("owned").owner.stop();
    }
}
