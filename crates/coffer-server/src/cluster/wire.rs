//! What travels through Kafka in a cluster: entries of a shard's log (the
//! commands partition) and replies to the node that produced them.
//!
//! Entries are binary (the journal's codec): they are the shard's write-ahead
//! log, replayed by every future owner. Replies are short-lived and read by
//! one node, so they are JSON.

use super::saga::{StepKind, StepResult};
use crate::queries::{Answer, Detail, EffectView, Kind, Query, StepView, Submitted, LIST_LIMIT_MAX, UNITS_QUERY_MAX};
use coffer_core::codec::{Reader, Writer};
use coffer_core::limits::BATCH_TRANSACTIONS_MAX;
use coffer_core::{
    AccountId, AccountView, CoreError, HoldView, Record, Rejection, RejectionCode, Transaction, TransactionId, Unit,
    Verdict,
};
use serde::{Deserialize, Serialize};

const ENTRY_MAGIC: u8 = 0xC5;
const ENTRY_FORMAT_VERSION: u8 = 1;

pub use super::address::ReplyTo;

/// One record of a shard's log.
#[derive(Debug, Clone)]
pub enum Entry {
    /// The first record of every partition, written when the cluster is
    /// created: a log without it at offset 0 is not this cluster's log.
    Genesis {
        log_id: String,
    },
    Submit {
        reply_to: ReplyTo,
        detail: Detail,
        transactions: Vec<Transaction>,
    },
    Read {
        reply_to: ReplyTo,
        query: Query,
    },
    /// Advances the shard's time (holds expire) while no command does.
    Tick,
    /// Asks the owner to reply once the shard's history holds every entry
    /// before this one: a history read that follows sees every write
    /// acknowledged before it.
    HistorySync {
        reply_to: ReplyTo,
    },
    /// A transaction across shards, appended to its home shard's log
    /// (`saga`), which keeps it and answers when every step is answered.
    SagaBegin {
        reply_to: ReplyTo,
        transaction: Transaction,
    },
    /// A home asks a participant to apply its part of a saga step.
    SagaStep {
        home: u32,
        kind: StepKind,
        transaction: Transaction,
    },
    /// A participant's answer to a step, appended to the home's log.
    SagaReport {
        saga: TransactionId,
        shard: u32,
        kind: StepKind,
        result: StepResult,
    },
}

const TAG_GENESIS: u8 = 0;
const TAG_SUBMIT: u8 = 1;
const TAG_READ: u8 = 2;
const TAG_TICK: u8 = 3;
const TAG_HISTORY_SYNC: u8 = 4;
const TAG_SAGA_BEGIN: u8 = 5;
const TAG_SAGA_STEP: u8 = 6;
const TAG_SAGA_REPORT: u8 = 7;

const QUERY_ACCOUNT: u8 = 0;
const QUERY_HOLD: u8 = 1;
const QUERY_TRANSACTION: u8 = 2;
const QUERY_UNITS: u8 = 3;
const QUERY_ACCOUNTS: u8 = 4;

impl Entry {
    pub fn encode(&self) -> Vec<u8> {
        let mut buffer = vec![ENTRY_MAGIC, ENTRY_FORMAT_VERSION];
        let mut writer = Writer::new(&mut buffer);
        match self {
            Entry::Genesis { log_id } => {
                writer.u8(TAG_GENESIS);
                writer.str(log_id);
            }
            Entry::Submit {
                reply_to,
                detail,
                transactions,
            } => {
                writer.u8(TAG_SUBMIT);
                reply_to.encode(&mut writer);
                writer.bool(*detail == Detail::WithEffects);
                writer.u64(transactions.len() as u64);
                for transaction in transactions {
                    writer.bool(transaction.is_linked_to_next());
                    transaction.encode(&mut writer);
                }
            }
            Entry::Read { reply_to, query } => {
                writer.u8(TAG_READ);
                reply_to.encode(&mut writer);
                encode_query(query, &mut writer);
            }
            Entry::Tick => writer.u8(TAG_TICK),
            Entry::HistorySync { reply_to } => {
                writer.u8(TAG_HISTORY_SYNC);
                reply_to.encode(&mut writer);
            }
            Entry::SagaBegin { reply_to, transaction } => {
                writer.u8(TAG_SAGA_BEGIN);
                reply_to.encode(&mut writer);
                transaction.encode(&mut writer);
            }
            Entry::SagaStep {
                home,
                kind,
                transaction,
            } => {
                writer.u8(TAG_SAGA_STEP);
                writer.u64(u64::from(*home));
                kind.encode(&mut writer);
                transaction.encode(&mut writer);
            }
            Entry::SagaReport {
                saga,
                shard,
                kind,
                result,
            } => {
                writer.u8(TAG_SAGA_REPORT);
                writer.str(saga.as_str());
                writer.u64(u64::from(*shard));
                kind.encode(&mut writer);
                result.encode(&mut writer);
            }
        }
        buffer
    }

    /// Reads what `encode` wrote; anything else is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Entry, CoreError> {
        if bytes.len() < 2 || bytes[0] != ENTRY_MAGIC || bytes[1] != ENTRY_FORMAT_VERSION {
            return Err(CoreError::Decode {
                offset: 0,
                reason: "not a coffer log entry of this version".into(),
            });
        }
        let mut reader = Reader::new(&bytes[2..]);
        let entry = match reader.u8()? {
            TAG_GENESIS => Entry::Genesis {
                log_id: reader.str()?.to_owned(),
            },
            TAG_SUBMIT => {
                let reply_to = ReplyTo::decode(&mut reader)?;
                let detail = match reader.bool()? {
                    true => Detail::WithEffects,
                    false => Detail::WithoutEffects,
                };
                let count = reader.u64()?;
                if count > BATCH_TRANSACTIONS_MAX as u64 {
                    return Err(reader.error(format!("{count} transactions in one entry")));
                }
                let mut transactions = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    let linked = reader.bool()?;
                    transactions.push(Transaction::decode(&mut reader)?.linked_to_next(linked));
                }
                Entry::Submit {
                    reply_to,
                    detail,
                    transactions,
                }
            }
            TAG_READ => Entry::Read {
                reply_to: ReplyTo::decode(&mut reader)?,
                query: decode_query(&mut reader)?,
            },
            TAG_TICK => Entry::Tick,
            TAG_HISTORY_SYNC => Entry::HistorySync {
                reply_to: ReplyTo::decode(&mut reader)?,
            },
            TAG_SAGA_BEGIN => Entry::SagaBegin {
                reply_to: ReplyTo::decode(&mut reader)?,
                transaction: Transaction::decode(&mut reader)?,
            },
            TAG_SAGA_STEP => Entry::SagaStep {
                home: reader.u32()?,
                kind: StepKind::decode(&mut reader)?,
                transaction: Transaction::decode(&mut reader)?,
            },
            TAG_SAGA_REPORT => Entry::SagaReport {
                saga: reader.transaction_id()?,
                shard: reader.u32()?,
                kind: StepKind::decode(&mut reader)?,
                result: StepResult::decode(&mut reader)?,
            },
            tag => return Err(reader.error(format!("unknown entry tag {tag}"))),
        };
        if !reader.is_empty() {
            return Err(reader.error("trailing bytes after the entry"));
        }
        Ok(entry)
    }
}

fn encode_query(query: &Query, writer: &mut Writer) {
    match query {
        Query::Account(id) => {
            writer.u8(QUERY_ACCOUNT);
            writer.str(id.as_str());
        }
        Query::Hold(id) => {
            writer.u8(QUERY_HOLD);
            writer.str(id.as_str());
        }
        Query::Transaction(id) => {
            writer.u8(QUERY_TRANSACTION);
            writer.str(id.as_str());
        }
        Query::Units(ids) => {
            writer.u8(QUERY_UNITS);
            writer.u64(ids.len() as u64);
            for id in ids {
                writer.str(id.as_str());
            }
        }
        Query::Accounts { prefix, after, limit } => {
            writer.u8(QUERY_ACCOUNTS);
            writer.str(prefix);
            writer.u64(*after);
            writer.u64(*limit as u64);
        }
    }
}

fn decode_query(reader: &mut Reader) -> Result<Query, CoreError> {
    Ok(match reader.u8()? {
        QUERY_ACCOUNT => Query::Account(reader.account_id()?),
        QUERY_HOLD => Query::Hold(reader.hold_id()?),
        QUERY_TRANSACTION => Query::Transaction(reader.transaction_id()?),
        QUERY_UNITS => {
            let count = reader.u64()?;
            if count > UNITS_QUERY_MAX as u64 {
                return Err(reader.error(format!("{count} ids in one units query")));
            }
            let ids = (0..count).map(|_| reader.account_id()).collect::<Result<_, _>>()?;
            Query::Units(ids)
        }
        QUERY_ACCOUNTS => {
            let prefix = reader.str()?.to_owned();
            let after = reader.u64()?;
            let limit = reader.u64()?;
            if prefix.len() > coffer_core::limits::ID_BYTES_MAX || !(1..=LIST_LIMIT_MAX as u64).contains(&limit) {
                return Err(reader.error(format!(
                    "an accounts query of {limit} from a {}-byte prefix",
                    prefix.len()
                )));
            }
            Query::Accounts {
                prefix,
                after,
                limit: limit as usize,
            }
        }
        tag => return Err(reader.error(format!("unknown query tag {tag}"))),
    })
}

/// A reply record: the waiter's address, then the answer as JSON.
pub fn encode_reply(reply_to: ReplyTo, reply: &Reply) -> Vec<u8> {
    let mut buffer = Vec::new();
    let mut writer = Writer::new(&mut buffer);
    reply_to.encode(&mut writer);
    serde_json::to_writer(&mut buffer, reply).expect("replies serialize");
    buffer
}

pub fn decode_reply(bytes: &[u8]) -> Result<(ReplyTo, Reply), String> {
    let mut reader = Reader::new(bytes);
    let reply_to = ReplyTo::decode(&mut reader).map_err(|error| error.to_string())?;
    let reply = serde_json::from_slice(&bytes[reader.position()..]).map_err(|error| error.to_string())?;
    Ok((reply_to, reply))
}

/// What a shard's owner answers an entry with.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Written(Vec<WireSubmitted>),
    Account(Option<AccountView>),
    Hold(Option<HoldView>),
    Transaction(Option<WireRecord>),
    Units(Vec<Option<Unit>>),
    /// A page of a shard's accounts, and the slot to continue from.
    Accounts(Vec<AccountView>, Option<u64>),
    /// The shard's history holds every entry before this offset.
    HistorySynced(u64),
    /// A cross-shard transaction in flight, its steps so far.
    SagaInFlight(Vec<StepView>),
    /// The entry was not taken (a bound); retrying later may work.
    Refused(String),
    /// This cross-shard transaction id is in flight with another payload.
    ReusedInFlight(String),
}

impl Reply {
    pub fn written(submitted: &[Submitted]) -> Reply {
        Reply::Written(submitted.iter().map(WireSubmitted::from).collect())
    }

    pub fn answered(answer: Answer) -> Reply {
        match answer {
            Answer::Account(view) => Reply::Account(view),
            Answer::Hold(view) => Reply::Hold(view),
            Answer::Transaction(record) => Reply::Transaction(record.as_ref().map(WireRecord::from)),
            Answer::Units(units) => Reply::Units(units),
            Answer::Accounts(views, next) => Reply::Accounts(views, next),
            Answer::SagaInFlight(steps) => Reply::SagaInFlight(steps),
        }
    }

    pub fn into_written(self) -> Result<Vec<Submitted>, String> {
        match self {
            Reply::Written(submitted) => submitted.into_iter().map(Submitted::try_from).collect(),
            Reply::Refused(reason) => Err(reason),
            other => Err(format!("expected the outcome of a write, got {other:?}")),
        }
    }

    pub fn into_answer(self) -> Result<Answer, String> {
        Ok(match self {
            Reply::Account(view) => Answer::Account(view),
            Reply::Hold(view) => Answer::Hold(view),
            Reply::Transaction(record) => Answer::Transaction(record.map(Record::try_from).transpose()?),
            Reply::Units(units) => Answer::Units(units),
            Reply::Accounts(views, next) => Answer::Accounts(views, next),
            Reply::SagaInFlight(steps) => Answer::SagaInFlight(steps),
            Reply::Refused(reason) => return Err(reason),
            Reply::ReusedInFlight(id) => return Err(format!("{id} is in flight")),
            other @ (Reply::Written(_) | Reply::HistorySynced(_)) => {
                return Err(format!("expected an answer to a read, got {other:?}"))
            }
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WireSubmitted {
    id: String,
    kind: u8,
    record: WireRecord,
    effects: Vec<WireEffect>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WireRecord {
    sequence: u64,
    timestamp_ms: u64,
    /// `None`: committed; else the rejection code and operation.
    rejected: Option<(u8, u16)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireEffect {
    account: AccountId,
    unit: Unit,
    available: i128,
    frozen: i128,
    version: u64,
}

const KINDS: [Kind; 4] = [Kind::New, Kind::Replayed, Kind::IdReused, Kind::NotApplied];

impl From<&Submitted> for WireSubmitted {
    fn from(submitted: &Submitted) -> Self {
        WireSubmitted {
            id: submitted.id.to_string(),
            kind: KINDS
                .iter()
                .position(|kind| *kind == submitted.kind)
                .expect("every kind listed") as u8,
            record: WireRecord::from(&submitted.record),
            effects: submitted
                .effects
                .iter()
                .map(|effect| WireEffect {
                    account: effect.account.clone(),
                    unit: effect.unit.clone(),
                    available: effect.available,
                    frozen: effect.frozen,
                    version: effect.version,
                })
                .collect(),
        }
    }
}

impl TryFrom<WireSubmitted> for Submitted {
    type Error = String;

    fn try_from(wire: WireSubmitted) -> Result<Self, String> {
        Ok(Submitted {
            id: wire.id.parse().map_err(|error: CoreError| error.to_string())?,
            kind: *KINDS.get(usize::from(wire.kind)).ok_or("unknown outcome kind")?,
            record: Record::try_from(wire.record)?,
            effects: wire
                .effects
                .into_iter()
                .map(|effect| EffectView {
                    account: effect.account,
                    unit: effect.unit,
                    available: effect.available,
                    frozen: effect.frozen,
                    version: effect.version,
                })
                .collect(),
        })
    }
}

impl From<&Record> for WireRecord {
    fn from(record: &Record) -> Self {
        WireRecord {
            sequence: record.sequence,
            timestamp_ms: record.timestamp_ms,
            rejected: match record.verdict {
                Verdict::Committed => None,
                Verdict::Rejected(rejection) => Some((rejection.code as u8, rejection.op_index)),
            },
        }
    }
}

impl TryFrom<WireRecord> for Record {
    type Error = String;

    fn try_from(wire: WireRecord) -> Result<Self, String> {
        let verdict = match wire.rejected {
            None => Verdict::Committed,
            Some((code, op_index)) => Verdict::Rejected(Rejection {
                code: RejectionCode::from_u8(code).ok_or("unknown rejection code")?,
                op_index,
            }),
        };
        Ok(Record {
            sequence: wire.sequence,
            timestamp_ms: wire.timestamp_ms,
            verdict,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_core::{Amount, Operation, TransactionId};

    fn transfer(id: &str) -> Transaction {
        let account = |name: &str| AccountId::parse(name).unwrap();
        let operation = Operation::transfer(account("a"), account("b"), Amount::new(5).unwrap());
        Transaction::new(TransactionId::parse(id).unwrap(), vec![operation], None).unwrap()
    }

    #[test]
    fn entries_read_back_as_written_and_nothing_else_reads() {
        let reply_to = ReplyTo {
            incarnation: 7,
            request: 9,
        };
        let entry = Entry::Submit {
            reply_to,
            detail: Detail::WithEffects,
            transactions: Transaction::chain(vec![transfer("t1"), transfer("t2")]),
        };
        let bytes = entry.encode();
        let Entry::Submit {
            reply_to: read_reply_to,
            detail,
            transactions,
        } = Entry::decode(&bytes).unwrap()
        else {
            panic!("a submit reads back as one")
        };
        assert_eq!((read_reply_to, detail), (reply_to, Detail::WithEffects));
        assert_eq!(transactions.len(), 2);
        assert!(transactions[0].is_linked_to_next() && !transactions[1].is_linked_to_next());
        for cut in 0..bytes.len() {
            assert!(
                Entry::decode(&bytes[..cut]).is_err(),
                "a cut entry is refused ({cut} bytes)"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Entry::decode(&longer).is_err(), "trailing bytes are refused");
        let query = Query::Accounts {
            prefix: "user:".into(),
            after: 7,
            limit: 50,
        };
        let read = Entry::Read { reply_to, query }.encode();
        assert!(matches!(
            Entry::decode(&read),
            Ok(Entry::Read { query: Query::Accounts { prefix, after: 7, limit: 50 }, .. }) if prefix == "user:"
        ));
        let sync = Entry::HistorySync { reply_to }.encode();
        assert!(matches!(Entry::decode(&sync), Ok(Entry::HistorySync { reply_to: read }) if read == reply_to));
    }

    #[test]
    fn saga_entries_read_back_as_written_and_cut_ones_do_not() {
        let reply_to = ReplyTo {
            incarnation: 3,
            request: 4,
        };
        let rejection = Rejection {
            code: RejectionCode::InsufficientFunds,
            op_index: 0,
        };
        let entries = [
            Entry::SagaBegin {
                reply_to,
                transaction: transfer("s1"),
            },
            Entry::SagaStep {
                home: 5,
                kind: StepKind::Commit,
                transaction: transfer("s1"),
            },
            Entry::SagaReport {
                saga: TransactionId::parse("s1").unwrap(),
                shard: 2,
                kind: StepKind::Prepare,
                result: StepResult::Rejected(rejection),
            },
        ];
        for entry in entries {
            let bytes = entry.encode();
            assert_eq!(Entry::decode(&bytes).unwrap().encode(), bytes, "{entry:?}");
            for cut in 0..bytes.len() {
                assert!(Entry::decode(&bytes[..cut]).is_err(), "{entry:?} cut at {cut}");
            }
        }
    }
}
