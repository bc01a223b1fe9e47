//! PostgreSQL's binary COPY format, written directly: the history's bulk
//! rows (transactions and entries) go in as one `COPY … FROM STDIN (FORMAT
//! binary)` stream per table, with no per-row statement, parameter or
//! decimal text to parse. The format: a header, then per row a field count
//! and each field as a length and its binary send form, then a trailer.

use std::io::Write;

const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// The stream is handed over in pieces of about this size.
pub const CHUNK_BYTES: usize = 1 << 20;

/// `NUMERIC`'s digits are base 10,000.
const NUMERIC_BASE: u128 = 10_000;
/// Base-10,000 digits an `i128` needs at most (39 decimal digits).
const NUMERIC_DIGITS_MAX: usize = 10;
// Enough (10,000^10 exceeds every 128-bit magnitude) and needed (10,000^9
// does not).
const _: () = assert!(NUMERIC_BASE.checked_pow(NUMERIC_DIGITS_MAX as u32).is_none());
const _: () = assert!(NUMERIC_BASE.pow(NUMERIC_DIGITS_MAX as u32 - 1) <= i128::MAX as u128);
const NUMERIC_NEGATIVE: u16 = 0x4000;

/// One table's rows in binary COPY form, flushed to `out` as it grows.
pub struct CopyRows<W: Write> {
    out: W,
    buffer: Vec<u8>,
}

impl<W: Write> CopyRows<W> {
    pub fn new(out: W) -> Self {
        let mut buffer = Vec::with_capacity(CHUNK_BYTES + 4_096);
        buffer.extend_from_slice(HEADER);
        buffer.extend_from_slice(&0i32.to_be_bytes()); // flags
        buffer.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        CopyRows { out, buffer }
    }

    /// Starts a row of `fields` fields; hands the stream over at a row
    /// boundary once a chunk has gathered.
    pub fn row(&mut self, fields: u16) -> std::io::Result<()> {
        if self.buffer.len() >= CHUNK_BYTES {
            self.out.write_all(&self.buffer)?;
            self.buffer.clear();
        }
        self.buffer.extend_from_slice(&(fields as i16).to_be_bytes());
        Ok(())
    }

    fn field(&mut self, bytes: &[u8]) {
        let length = i32::try_from(bytes.len()).expect("a field fits in a COPY length");
        self.buffer.extend_from_slice(&length.to_be_bytes());
        self.buffer.extend_from_slice(bytes);
    }

    pub fn null(&mut self) {
        self.buffer.extend_from_slice(&(-1i32).to_be_bytes());
    }

    pub fn text(&mut self, value: &str) {
        self.field(value.as_bytes());
    }

    pub fn optional_text(&mut self, value: Option<&str>) {
        match value {
            Some(value) => self.text(value),
            None => self.null(),
        }
    }

    pub fn int8(&mut self, value: i64) {
        self.field(&value.to_be_bytes());
    }

    pub fn int4(&mut self, value: i32) {
        self.field(&value.to_be_bytes());
    }

    pub fn optional_int4(&mut self, value: Option<i32>) {
        match value {
            Some(value) => self.int4(value),
            None => self.null(),
        }
    }

    /// `NUMERIC` with scale 0: digit count, weight (the first digit's
    /// power of 10,000), sign, display scale, then the digits, most
    /// significant first.
    pub fn numeric(&mut self, value: i128) {
        let mut digits = [0i16; NUMERIC_DIGITS_MAX];
        let mut count = 0;
        let mut magnitude = value.unsigned_abs();
        while magnitude > 0 {
            digits[count] = (magnitude % NUMERIC_BASE) as i16;
            magnitude /= NUMERIC_BASE;
            count += 1;
        }
        let sign = if value < 0 { NUMERIC_NEGATIVE } else { 0 };
        let weight = count.saturating_sub(1) as i16;
        let length = 8 + 2 * count as i32;
        self.buffer.extend_from_slice(&length.to_be_bytes());
        for word in [count as i16, weight, sign as i16, 0] {
            self.buffer.extend_from_slice(&word.to_be_bytes());
        }
        for digit in digits[..count].iter().rev() {
            self.buffer.extend_from_slice(&digit.to_be_bytes());
        }
    }

    /// Writes the trailer and what remains; returns the writer to finish.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.buffer.extend_from_slice(&(-1i16).to_be_bytes());
        self.out.write_all(&self.buffer)?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_bytes(value: i128) -> Vec<u8> {
        let mut rows = CopyRows::new(Vec::new());
        rows.numeric(value);
        rows.buffer[HEADER.len() + 8..].to_vec()
    }

    #[test]
    fn numerics_are_base_ten_thousand_digits_most_significant_first() {
        // 123456789 = 1·10000² + 2345·10000 + 6789: three digits, weight 2.
        let expected: Vec<u8> = [14i32.to_be_bytes().to_vec()]
            .into_iter()
            .chain([3i16, 2, 0, 0, 1, 2345, 6789].map(|word| word.to_be_bytes().to_vec()))
            .flatten()
            .collect();
        assert_eq!(numeric_bytes(123_456_789), expected);
        let zero: Vec<u8> = [8i32.to_be_bytes().to_vec(), vec![0; 8]].concat();
        assert_eq!(numeric_bytes(0), zero);
        let negative = numeric_bytes(-10_000);
        assert_eq!(&negative[4..12], &[0, 2, 0, 1, 0x40, 0, 0, 0]);
        assert_eq!(numeric_bytes(i128::MIN).len(), 4 + 8 + 2 * NUMERIC_DIGITS_MAX);
    }
}
