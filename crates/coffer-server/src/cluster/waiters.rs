//! The requests of this process that wait for their shards' replies. A
//! reply comes through the replies topic, or, when this process owns the
//! shard, straight from the owner's thread (no broker round trip).

use super::wire::{Reply, ReplyTo};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::oneshot;

pub struct Waiters {
    /// This process's incarnation: replies to an earlier one are not ours.
    incarnation: u64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
}

impl Waiters {
    pub fn new(incarnation: u64) -> Waiters {
        Waiters {
            incarnation,
            waiting: Mutex::new(HashMap::new()),
        }
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Registers `request`; `None` when `waiting_max` requests wait already.
    pub fn wait(&self, request: u64, waiting_max: usize) -> Option<oneshot::Receiver<Reply>> {
        let mut waiting = self.waiting.lock().expect("waiters lock");
        if waiting.len() >= waiting_max {
            return None;
        }
        let (sender, receiver) = oneshot::channel();
        waiting.insert(request, sender);
        Some(receiver)
    }

    /// Whether a reply to `reply_to` is for this process.
    pub fn is_ours(&self, reply_to: ReplyTo) -> bool {
        reply_to.incarnation == self.incarnation
    }

    /// Hands a reply to its waiter. Two owners of one shard (a paused one
    /// woke up) reply alike: the first reply is taken, a second finds no
    /// waiter.
    pub fn deliver(&self, reply_to: ReplyTo, reply: Reply) {
        if !self.is_ours(reply_to) {
            return;
        }
        if let Some(sender) = self.waiting.lock().expect("waiters lock").remove(&reply_to.request) {
            let _ = sender.send(reply);
        }
    }

    /// The request ended without its reply (timeout, or given up).
    pub fn forget(&self, request: u64) {
        self.waiting.lock().expect("waiters lock").remove(&request);
    }
}
