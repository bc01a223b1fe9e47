//! The whole engine state as bytes. Accounts are written in creation order
//! and holds in creation (serial) order, never in hash order, so equal states
//! encode to equal bytes and the digest can compare two engines.

use crate::codec::{Reader, Writer};
use crate::engine::Engine;
use crate::entry_queue::QueueView;
use crate::error::CoreError;
use crate::idempotency::IdempotencyEntry;
use crate::limits::EngineLimits;
use crate::rejection::{Rejection, RejectionCode};
use crate::state::{Account, AccountDetails, AccountIndex, Balances, Hold, HoldStatus, Record, Verdict};
use crate::unit::Unit;
use std::hash::BuildHasher;

const MAGIC: &[u8; 8] = b"CFSNAP\r\n";
/// Bumped on any change to the layout below; decoders refuse other versions.
pub const SNAPSHOT_FORMAT_VERSION: u64 = 1;

/// A snapshot taken on the engine thread and encoded on another: the state
/// but the id window, already encoded (its cost grows with accounts and
/// holds), and a view of the window, which shares the window's chunks
/// instead of copying millions of entries while the engine waits.
pub struct SnapshotSource {
    head: Vec<u8>,
    window: QueueView<IdempotencyEntry>,
}

impl SnapshotSource {
    /// Appends the snapshot's bytes: exactly `Engine::encode_snapshot`'s
    /// at the moment the source was taken.
    pub fn encode(&self, buffer: &mut Vec<u8>) {
        buffer.reserve(self.head.len() + self.window.len() * WINDOW_ENTRY_BYTES_TYPICAL);
        buffer.extend_from_slice(&self.head);
        let mut writer = Writer::new(buffer);
        writer.u64(self.window.len() as u64);
        for entry in self.window.iter() {
            writer.str(entry.id.as_str());
            writer.u128(entry.fingerprint);
            encode_record(&entry.record, &mut writer);
        }
    }
}

/// An encoded window entry: a short id, 16 bytes of fingerprint, a record.
const WINDOW_ENTRY_BYTES_TYPICAL: usize = 48;

impl Engine {
    pub fn encode_snapshot(&self, buffer: &mut Vec<u8>) {
        self.snapshot_source().encode(buffer);
    }

    /// What a snapshot needs from the engine thread; `encode` it anywhere.
    pub fn snapshot_source(&self) -> SnapshotSource {
        let mut head = Vec::new();
        head.extend_from_slice(MAGIC);
        let mut writer = Writer::new(&mut head);
        writer.u64(SNAPSHOT_FORMAT_VERSION);
        writer.u64(self.timestamp_ms_last);
        writer.u64(self.sequence_next);
        writer.u64(self.hold_serial_next);
        writer.u64(self.units.len() as u64);
        for unit in &self.units {
            writer.str(unit.as_str());
        }
        writer.u64(self.accounts.len() as u64);
        for (account, details) in self.accounts.iter().zip(&self.account_details) {
            encode_account(account, details, &mut writer);
        }
        let mut holds: Vec<_> = self.holds.iter().collect();
        holds.sort_unstable_by_key(|(_, hold)| hold.serial);
        writer.u64(holds.len() as u64);
        for (hold_id, hold) in holds {
            writer.str(hold_id.as_str());
            encode_hold(hold, &mut writer);
        }
        writer.u64(self.finished_holds.len() as u64);
        for hold_id in &self.finished_holds {
            writer.str(hold_id.as_str());
        }
        SnapshotSource {
            head,
            window: self.idempotency.view(),
        }
    }

    /// A hash of the snapshot encoding: equal digests mean equal states.
    pub fn digest(&self) -> u128 {
        let mut buffer = Vec::new();
        self.encode_snapshot(&mut buffer);
        xxhash_rust::xxh3::xxh3_128(&buffer)
    }

    /// Rebuilds an engine, validating every value and every invariant: a
    /// snapshot that decodes is a state the engine could have reached.
    pub fn decode_snapshot(bytes: &[u8], limits: EngineLimits) -> Result<Engine, CoreError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(CoreError::Decode {
                offset: 0,
                reason: "not a coffer snapshot (bad magic)".into(),
            });
        }
        let mut reader = Reader::new(&bytes[MAGIC.len()..]);
        let version = reader.u64()?;
        if version != SNAPSHOT_FORMAT_VERSION {
            return Err(reader.error(format!(
                "snapshot format {version}, this build reads {SNAPSHOT_FORMAT_VERSION}"
            )));
        }
        let mut engine = Engine::new(limits);
        engine.timestamp_ms_last = reader.u64()?;
        engine.sequence_next = reader.u64()?;
        engine.hold_serial_next = reader.u64()?;
        decode_units(&mut engine, &mut reader)?;
        decode_accounts(&mut engine, &mut reader)?;
        decode_holds(&mut engine, &mut reader)?;
        decode_idempotency(&mut engine, &mut reader)?;
        if !reader.is_empty() {
            return Err(reader.error("trailing bytes after the snapshot"));
        }
        engine.check_invariants().map_err(|reason| CoreError::Decode {
            offset: 0,
            reason: format!("snapshot breaks an invariant: {reason}"),
        })?;
        Ok(engine)
    }
}

fn encode_account(account: &Account, details: &AccountDetails, writer: &mut Writer) {
    let balances = &account.balances;
    writer.str(account.id.as_str());
    writer.u64(u64::from(account.unit));
    writer.i128(balances.available);
    writer.i128(balances.frozen);
    writer.i128(balances.min_available);
    writer.i128(balances.max_total);
    writer.u64(balances.version);
    writer.u64(balances.updated_at_ms);
    writer.bool(balances.closed);
    writer.option(details.metadata.as_ref(), |writer, metadata| {
        writer.str(metadata.as_str())
    });
    writer.u64(details.created_at_ms);
}

fn encode_hold(hold: &Hold, writer: &mut Writer) {
    writer.u64(hold.account.slot() as u64);
    writer.option(hold.to, |writer, to| writer.u64(to.slot() as u64));
    writer.i128(hold.amount);
    writer.i128(hold.captured);
    writer.i128(hold.remaining);
    writer.option(hold.expiry(), Writer::u64);
    writer.u8(hold.status as u8);
    writer.u64(hold.serial);
    writer.u64(hold.created_at_ms);
    writer.u64(hold.finished_at_ms);
}

/// Shared by snapshots and the journal: what was decided for a transaction.
pub(crate) fn encode_record(record: &Record, writer: &mut Writer) {
    writer.u64(record.sequence);
    writer.u64(record.timestamp_ms);
    match record.verdict {
        Verdict::Committed => writer.u8(0),
        Verdict::Rejected(rejection) => {
            writer.u8(rejection.code as u8);
            writer.u64(u64::from(rejection.op_index));
        }
    }
}

pub(crate) fn decode_record(reader: &mut Reader) -> Result<Record, CoreError> {
    let sequence = reader.u64()?;
    let timestamp_ms = reader.u64()?;
    let verdict = match reader.u8()? {
        0 => Verdict::Committed,
        code => {
            let code =
                RejectionCode::from_u8(code).ok_or_else(|| reader.error(format!("unknown rejection code {code}")))?;
            let op_index = u16::try_from(reader.u64()?).map_err(|_| reader.error("op index out of range"))?;
            Verdict::Rejected(Rejection { code, op_index })
        }
    };
    Ok(Record {
        sequence,
        timestamp_ms,
        verdict,
    })
}

fn count(reader: &mut Reader, limit: usize, what: &str) -> Result<usize, CoreError> {
    let value = reader.u64()?;
    if value > limit as u64 {
        return Err(reader.error(format!("{value} {what} exceed the configured limit {limit}")));
    }
    Ok(value as usize)
}

fn decode_units(engine: &mut Engine, reader: &mut Reader) -> Result<(), CoreError> {
    let units = count(reader, crate::limits::UNITS_MAX, "units")?;
    for number in 0..units {
        let unit = reader.parsed(Unit::parse)?;
        if engine.unit_lookup.insert(unit.clone(), number as u32).is_some() {
            return Err(reader.error(format!("unit {unit} listed twice")));
        }
        engine.units.push(unit);
    }
    Ok(())
}

fn decode_accounts(engine: &mut Engine, reader: &mut Reader) -> Result<(), CoreError> {
    let accounts = count(reader, engine.limits.accounts_max as usize, "accounts")?;
    engine.accounts.reserve(accounts);
    engine.account_details.reserve(accounts);
    let mut worlds: Vec<Option<AccountIndex>> = vec![None; engine.units.len()];
    for slot in 0..accounts as u32 {
        let id = reader.account_id()?;
        let unit = reader.u32()?;
        if unit as usize >= engine.units.len() {
            return Err(reader.error(format!("account {id} names unit {unit}, which does not exist")));
        }
        let balances = Balances {
            available: reader.i128()?,
            frozen: reader.i128()?,
            min_available: reader.i128()?,
            max_total: reader.i128()?,
            version: reader.u64()?,
            updated_at_ms: reader.u64()?,
            closed: reader.bool()?,
        };
        let metadata = reader.metadata()?;
        let created_at_ms = reader.u64()?;
        if id.is_world() {
            let world = &mut worlds[unit as usize];
            if world.is_some() {
                return Err(reader.error(format!("unit {} has two @world accounts", engine.units[unit as usize])));
            }
            *world = Some(AccountIndex::from_slot(slot));
        } else {
            if engine.find_account(&id).is_some() {
                return Err(reader.error(format!("account {id} listed twice")));
            }
            let hash = engine.hasher.hash_one(id.as_str());
            engine.account_index.insert(hash, slot);
        }
        let account = Account { id, unit, balances };
        engine.push_account(
            account,
            AccountDetails {
                metadata,
                created_at_ms,
            },
        );
    }
    if let Some(unit) = worlds.iter().position(Option::is_none) {
        return Err(reader.error(format!("unit {} has no @world account", engine.units[unit])));
    }
    engine.world_of_unit = worlds.into_iter().flatten().collect();
    Ok(())
}

fn decode_account_index(engine: &Engine, reader: &mut Reader) -> Result<AccountIndex, CoreError> {
    let slot = reader.u32()?;
    if slot as usize >= engine.accounts.len() {
        return Err(reader.error(format!("account number {slot} does not exist")));
    }
    Ok(AccountIndex::from_slot(slot))
}

fn decode_holds(engine: &mut Engine, reader: &mut Reader) -> Result<(), CoreError> {
    let holds = count(
        reader,
        engine.limits.holds_max as usize + engine.limits.finished_holds_max as usize,
        "holds",
    )?;
    for _ in 0..holds {
        let hold_id = reader.hold_id()?;
        let hold = Hold {
            account: decode_account_index(engine, reader)?,
            to: reader.option(|reader| decode_account_index(engine, reader))?,
            amount: reader.i128()?,
            captured: reader.i128()?,
            remaining: reader.i128()?,
            expires_at_ms: reader
                .option(Reader::u64)?
                .map(|at| std::num::NonZeroU64::new(at).ok_or_else(|| reader.error("expiry 0")))
                .transpose()?,
            status: HoldStatus::from_u8(reader.u8()?).ok_or_else(|| reader.error("unknown hold status"))?,
            serial: reader.u64()?,
            created_at_ms: reader.u64()?,
            finished_at_ms: reader.u64()?,
        };
        check_hold(engine, &hold_id, &hold).map_err(|reason| reader.error(reason))?;
        if let (HoldStatus::Active, Some(at)) = (hold.status, hold.expiry()) {
            engine.hold_expiry.insert((at, hold.serial), hold_id.clone());
        }
        if engine.holds.insert(hold_id.clone(), hold).is_some() {
            return Err(reader.error(format!("hold {hold_id} listed twice")));
        }
    }
    let finished = count(
        reader,
        holds.min(engine.limits.finished_holds_max as usize),
        "finished holds",
    )?;
    for _ in 0..finished {
        let hold_id = reader.hold_id()?;
        match engine.holds.get(&hold_id) {
            Some(hold) if hold.status != HoldStatus::Active => engine.finished_holds.push_back(hold_id),
            _ => return Err(reader.error(format!("finished hold {hold_id} is not a finished hold"))),
        }
    }
    Ok(())
}

/// What the engine's rules guarantee for every hold, checked so that a
/// decoded state can never make a later operation misbehave.
fn check_hold(engine: &Engine, hold_id: &crate::HoldId, hold: &Hold) -> Result<(), String> {
    let account = &engine.accounts[hold.account.slot()];
    if account.id.is_world() {
        return Err(format!("hold {hold_id} is on @world"));
    }
    if let Some(to) = hold.to {
        if to == hold.account || engine.accounts[to.slot()].unit != account.unit {
            return Err(format!("hold {hold_id} has an impossible destination"));
        }
    }
    if hold.serial >= engine.hold_serial_next {
        return Err(format!("hold {hold_id} has a serial from the future"));
    }
    Ok(())
}

fn decode_idempotency(engine: &mut Engine, reader: &mut Reader) -> Result<(), CoreError> {
    let entries = count(
        reader,
        engine.limits.idempotency_entries_max as usize,
        "idempotency entries",
    )?;
    let mut previous_timestamp_ms = 0;
    for _ in 0..entries {
        let id = reader.transaction_id()?;
        let fingerprint = reader.u128()?;
        let record = decode_record(reader)?;
        let hash = engine.idempotency.hash(&id);
        if engine.idempotency.get_hashed(&id, hash).is_some() {
            return Err(reader.error(format!("transaction {id} listed twice")));
        }
        if record.sequence >= engine.sequence_next || record.timestamp_ms > engine.timestamp_ms_last {
            return Err(reader.error(format!("transaction {id} is from the future")));
        }
        if record.timestamp_ms < previous_timestamp_ms {
            return Err(reader.error(format!("transaction {id} is out of time order")));
        }
        previous_timestamp_ms = record.timestamp_ms;
        engine.idempotency.insert(
            IdempotencyEntry {
                id,
                fingerprint,
                record,
            },
            hash,
            engine.limits.idempotency_entries_max,
        );
    }
    Ok(())
}
