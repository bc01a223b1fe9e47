//! A compact, versionless binary encoding: LEB128 varints, zigzag for signed
//! numbers, length-prefixed strings. The journal and snapshot formats put
//! their own version in front of it. Decoding never panics: every read is
//! bounds-checked and every decoded value is validated like fresh input.

use crate::amount::{Amount, Balance};
use crate::error::CoreError;
use crate::identifier::{AccountId, HoldId, TransactionId};
use crate::metadata::Metadata;
use crate::operation::{LimitChange, Operation};
use crate::unit::Unit;

pub struct Writer<'a> {
    buffer: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    pub fn new(buffer: &'a mut Vec<u8>) -> Self {
        Writer { buffer }
    }

    #[inline]
    pub fn u8(&mut self, value: u8) {
        self.buffer.push(value);
    }

    #[inline]
    pub fn bool(&mut self, value: bool) {
        self.u8(u8::from(value));
    }

    /// LEB128, like `u128`, in 64-bit arithmetic and one copy: every
    /// transaction is encoded twice (journal and fingerprint), so this is
    /// on the engine's hot path.
    #[inline]
    pub fn u64(&mut self, mut value: u64) {
        if value < 0x80 {
            self.buffer.push(value as u8);
            return;
        }
        let mut bytes = [0u8; 10];
        let mut length = 0;
        while value >= 0x80 {
            bytes[length] = (value & 0x7f) as u8 | 0x80;
            value >>= 7;
            length += 1;
        }
        bytes[length] = value as u8;
        self.buffer.extend_from_slice(&bytes[..=length]);
    }

    #[inline]
    pub fn u128(&mut self, mut value: u128) {
        if let Ok(small) = u64::try_from(value) {
            return self.u64(small);
        }
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                self.buffer.push(byte);
                return;
            }
            self.buffer.push(byte | 0x80);
        }
    }

    #[inline]
    pub fn i128(&mut self, value: i128) {
        self.u128(((value << 1) ^ (value >> 127)) as u128);
    }

    #[inline]
    pub fn bytes(&mut self, value: &[u8]) {
        self.u64(value.len() as u64);
        self.buffer.extend_from_slice(value);
    }

    #[inline]
    pub fn str(&mut self, value: &str) {
        self.bytes(value.as_bytes());
    }

    pub fn option<T>(&mut self, value: Option<T>, mut write: impl FnMut(&mut Self, T)) {
        match value {
            None => self.u8(0),
            Some(inner) => {
                self.u8(1);
                write(self, inner);
            }
        }
    }
}

pub struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, position: 0 }
    }

    pub fn position(&self) -> usize {
        self.position
    }

    pub fn is_empty(&self) -> bool {
        self.position == self.bytes.len()
    }

    pub fn error(&self, reason: impl Into<String>) -> CoreError {
        CoreError::Decode {
            offset: self.position,
            reason: reason.into(),
        }
    }

    pub fn u8(&mut self) -> Result<u8, CoreError> {
        let byte = *self
            .bytes
            .get(self.position)
            .ok_or_else(|| self.error("unexpected end"))?;
        self.position += 1;
        Ok(byte)
    }

    pub fn bool(&mut self) -> Result<bool, CoreError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.error(format!("bad boolean {other}"))),
        }
    }

    pub fn u128(&mut self) -> Result<u128, CoreError> {
        let mut value: u128 = 0;
        for shift in (0..128).step_by(7) {
            let byte = self.u8()?;
            let bits = u128::from(byte & 0x7f);
            if shift == 126 && bits > 0b11 {
                return Err(self.error("varint overflows 128 bits"));
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error("varint longer than 19 bytes"))
    }

    pub fn u64(&mut self) -> Result<u64, CoreError> {
        let value = self.u128()?;
        u64::try_from(value).map_err(|_| self.error("value exceeds 64 bits"))
    }

    pub fn u32(&mut self) -> Result<u32, CoreError> {
        let value = self.u128()?;
        u32::try_from(value).map_err(|_| self.error("value exceeds 32 bits"))
    }

    pub fn i128(&mut self) -> Result<i128, CoreError> {
        let raw = self.u128()?;
        Ok(((raw >> 1) as i128) ^ -((raw & 1) as i128))
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], CoreError> {
        let length = self.u64()? as usize;
        let end = self.position.checked_add(length).filter(|end| *end <= self.bytes.len());
        let end = end.ok_or_else(|| self.error(format!("length {length} runs past the end")))?;
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }

    pub fn str(&mut self) -> Result<&'a str, CoreError> {
        let start = self.position;
        let bytes = self.bytes()?;
        std::str::from_utf8(bytes).map_err(|_| CoreError::Decode {
            offset: start,
            reason: "invalid UTF-8".into(),
        })
    }

    pub fn option<T>(
        &mut self,
        mut read: impl FnMut(&mut Self) -> Result<T, CoreError>,
    ) -> Result<Option<T>, CoreError> {
        if self.bool()? {
            read(self).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Parses a string with a validating constructor, reporting failures as
    /// decode errors at the string's offset.
    pub fn parsed<T>(&mut self, parse: impl FnOnce(&str) -> Result<T, CoreError>) -> Result<T, CoreError> {
        let start = self.position;
        let text = self.str()?;
        parse(text).map_err(|error| CoreError::Decode {
            offset: start,
            reason: error.to_string(),
        })
    }

    pub fn account_id(&mut self) -> Result<AccountId, CoreError> {
        self.parsed(AccountId::parse)
    }

    pub fn hold_id(&mut self) -> Result<HoldId, CoreError> {
        self.parsed(HoldId::parse)
    }

    pub fn transaction_id(&mut self) -> Result<TransactionId, CoreError> {
        self.parsed(TransactionId::parse)
    }

    pub fn metadata(&mut self) -> Result<Option<Metadata>, CoreError> {
        self.option(|reader| reader.parsed(Metadata::parse))
    }

    fn amount(&mut self) -> Result<Amount, CoreError> {
        let start = self.position;
        Amount::new(self.u128()?).map_err(|error| CoreError::Decode {
            offset: start,
            reason: error.to_string(),
        })
    }

    fn balance(&mut self) -> Result<Balance, CoreError> {
        self.i128().map(Balance::new)
    }
}

mod tag {
    pub const OPEN: u8 = 1;
    pub const TRANSFER: u8 = 2;
    pub const HOLD: u8 = 3;
    pub const CAPTURE: u8 = 4;
    pub const RELEASE: u8 = 5;
    pub const SET_BALANCE: u8 = 6;
    pub const SET_LIMITS: u8 = 7;
    pub const CLOSE: u8 = 8;
    pub const REOPEN: u8 = 9;
}

/// Encodes what a transaction asks for, without its id: the idempotency
/// fingerprint is a hash of exactly these bytes.
pub fn encode_transaction_body(ops: &[Operation], metadata: Option<&Metadata>, writer: &mut Writer) {
    writer.u64(ops.len() as u64);
    for op in ops {
        encode_operation(op, writer);
    }
    writer.option(metadata, |writer, metadata| writer.str(metadata.as_str()));
}

fn encode_operation(op: &Operation, writer: &mut Writer) {
    match op {
        Operation::Open {
            account,
            unit,
            min_available,
            max_total,
            metadata,
        } => {
            writer.u8(tag::OPEN);
            writer.str(account.as_str());
            writer.str(unit.as_str());
            writer.option(*min_available, |writer, value| writer.i128(value.value()));
            writer.option(*max_total, |writer, value| writer.i128(value.value()));
            writer.option(metadata.as_ref(), |writer, value| writer.str(value.as_str()));
        }
        Operation::Transfer { from, to, amount } => {
            writer.u8(tag::TRANSFER);
            writer.str(from.as_str());
            writer.str(to.as_str());
            writer.u128(amount.value());
        }
        Operation::Hold {
            hold,
            account,
            amount,
            to,
            expires_at_ms,
            ttl_ms,
        } => {
            writer.u8(tag::HOLD);
            writer.str(hold.as_str());
            writer.str(account.as_str());
            writer.u128(amount.value());
            writer.option(to.as_ref(), |writer, value| writer.str(value.as_str()));
            writer.option(*expires_at_ms, Writer::u64);
            writer.option(*ttl_ms, Writer::u64);
        }
        Operation::Capture { hold, amount, to } => {
            writer.u8(tag::CAPTURE);
            writer.str(hold.as_str());
            writer.option(*amount, |writer, value| writer.u128(value.value()));
            writer.option(to.as_ref(), |writer, value| writer.str(value.as_str()));
        }
        Operation::Release { hold } => {
            writer.u8(tag::RELEASE);
            writer.str(hold.as_str());
        }
        Operation::SetBalance { account, available } => {
            writer.u8(tag::SET_BALANCE);
            writer.str(account.as_str());
            writer.i128(available.value());
        }
        Operation::SetLimits {
            account,
            min_available,
            max_total,
        } => {
            writer.u8(tag::SET_LIMITS);
            writer.str(account.as_str());
            writer.option(*min_available, |writer, value| writer.i128(value.value()));
            match max_total {
                LimitChange::Unchanged => writer.u8(0),
                LimitChange::Remove => writer.u8(1),
                LimitChange::Set(value) => {
                    writer.u8(2);
                    writer.i128(value.value());
                }
            }
        }
        Operation::Close { account } => {
            writer.u8(tag::CLOSE);
            writer.str(account.as_str());
        }
        Operation::Reopen { account } => {
            writer.u8(tag::REOPEN);
            writer.str(account.as_str());
        }
    }
}

pub(crate) fn decode_operation(reader: &mut Reader) -> Result<Operation, CoreError> {
    let op = match reader.u8()? {
        tag::OPEN => Operation::Open {
            account: reader.account_id()?,
            unit: reader.parsed(Unit::parse)?,
            min_available: reader.option(Reader::balance)?,
            max_total: reader.option(Reader::balance)?,
            metadata: reader.metadata()?,
        },
        tag::TRANSFER => Operation::Transfer {
            from: reader.account_id()?,
            to: reader.account_id()?,
            amount: reader.amount()?,
        },
        tag::HOLD => Operation::Hold {
            hold: reader.hold_id()?,
            account: reader.account_id()?,
            amount: reader.amount()?,
            to: reader.option(Reader::account_id)?,
            expires_at_ms: reader.option(Reader::u64)?,
            ttl_ms: reader.option(Reader::u64)?,
        },
        tag::CAPTURE => Operation::Capture {
            hold: reader.hold_id()?,
            amount: reader.option(Reader::amount)?,
            to: reader.option(Reader::account_id)?,
        },
        tag::RELEASE => Operation::Release {
            hold: reader.hold_id()?,
        },
        tag::SET_BALANCE => Operation::SetBalance {
            account: reader.account_id()?,
            available: reader.balance()?,
        },
        tag::SET_LIMITS => Operation::SetLimits {
            account: reader.account_id()?,
            min_available: reader.option(Reader::balance)?,
            max_total: match reader.u8()? {
                0 => LimitChange::Unchanged,
                1 => LimitChange::Remove,
                2 => LimitChange::Set(reader.balance()?),
                other => return Err(reader.error(format!("bad limit change {other}"))),
            },
        },
        tag::CLOSE => Operation::Close {
            account: reader.account_id()?,
        },
        tag::REOPEN => Operation::Reopen {
            account: reader.account_id()?,
        },
        other => return Err(reader.error(format!("unknown operation tag {other}"))),
    };
    Ok(op)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte-at-a-time LEB128 the format was defined with.
    fn reference_leb128(mut value: u128) -> Vec<u8> {
        let mut bytes = Vec::new();
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                bytes.push(byte);
                return bytes;
            }
            bytes.push(byte | 0x80);
        }
    }

    /// The fast varint writer must not change a byte of the format: the
    /// journal and stored fingerprints depend on it.
    #[test]
    fn varints_keep_their_bytes_and_round_trip() {
        let mut values: Vec<u128> = vec![0, 1, 127, 128, 255, 16_383, 16_384, u128::from(u32::MAX), u128::MAX];
        for shift in 0..128 {
            values.extend([1u128 << shift, (1u128 << shift) - 1, (1u128 << shift) + 1]);
        }
        for value in values {
            let mut buffer = Vec::new();
            Writer::new(&mut buffer).u128(value);
            assert_eq!(buffer, reference_leb128(value), "{value}");
            assert_eq!(Reader::new(&buffer).u128().unwrap(), value);
            if let Ok(small) = u64::try_from(value) {
                let mut buffer = Vec::new();
                Writer::new(&mut buffer).u64(small);
                assert_eq!(buffer, reference_leb128(value), "{value}");
            }
        }
    }
}
