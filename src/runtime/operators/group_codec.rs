//! A group's checkpoint encoding, written straight into one buffer: the
//! bytes bincode gives the aggregate's `GroupSnapshot` (which reads them
//! back), without building the snapshot and its vector per value first.

use super::accumulator::{AccSnapshot, Accumulator};
use crate::runtime::RuntimeError;
use crate::state::ScalarCodec;
use datafusion::common::ScalarValue;

/// A group as stored in a checkpoint (its key is the state key): what
/// [`GroupWriter`] writes, read back with bincode.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct GroupSnapshot {
    pub rows: i64,
    pub emitted: Option<Vec<Vec<u8>>>,
    pub accs: Vec<AccSnapshot>,
}

/// Writes the fields of a snapshot in bincode's standard encoding, as
/// serde drives it: integers and lengths as varints, an option as a tag
/// byte, an enum variant as its index, byte strings as length and bytes.
pub struct GroupWriter {
    out: Vec<u8>,
    /// One scalar's encoding, to learn its length before its bytes.
    scratch: Vec<u8>,
}

impl GroupWriter {
    pub fn new() -> Self {
        GroupWriter {
            out: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// The encoding of a group: its row count, its last output (one value
    /// per aggregate, by the output codecs) and its accumulators (by the
    /// value codecs).
    pub fn group(
        &mut self,
        codecs: &[(ScalarCodec, ScalarCodec)],
        rows: i64,
        emitted: Option<&[ScalarValue]>,
        accs: &[Accumulator],
    ) -> Result<Vec<u8>, RuntimeError> {
        let mut out = Vec::with_capacity(16 + 24 * accs.len());
        self.group_into(codecs, rows, emitted, accs, &mut out)?;
        Ok(out)
    }

    /// [`GroupWriter::group`], appended to `out`.
    pub fn group_into(
        &mut self,
        codecs: &[(ScalarCodec, ScalarCodec)],
        rows: i64,
        emitted: Option<&[ScalarValue]>,
        accs: &[Accumulator],
        out: &mut Vec<u8>,
    ) -> Result<(), RuntimeError> {
        std::mem::swap(&mut self.out, out);
        let written = self.fields(codecs, rows, emitted, accs);
        std::mem::swap(&mut self.out, out);
        written
    }

    fn fields(
        &mut self,
        codecs: &[(ScalarCodec, ScalarCodec)],
        rows: i64,
        emitted: Option<&[ScalarValue]>,
        accs: &[Accumulator],
    ) -> Result<(), RuntimeError> {
        self.int(rows)?;
        match emitted {
            None => self.int(0u8)?,
            Some(values) => {
                self.int(1u8)?;
                self.len(values.len())?;
                for (v, (_, out)) in values.iter().zip(codecs) {
                    self.scalar(out, v)?;
                }
            }
        }
        self.len(accs.len())?;
        for (acc, (value, _)) in accs.iter().zip(codecs) {
            self.accumulator(value, acc)?;
        }
        Ok(())
    }

    /// An `AccSnapshot`: the variants in their declared order.
    fn accumulator(&mut self, codec: &ScalarCodec, acc: &Accumulator) -> Result<(), RuntimeError> {
        match acc {
            Accumulator::Count(n) => {
                self.int(0u32)?;
                self.int(*n)
            }
            Accumulator::Sum { sum, n } => {
                self.int(1u32)?;
                self.scalar(codec, sum)?;
                self.int(*n)
            }
            Accumulator::Extreme { max, best, all } => {
                self.int(2u32)?;
                self.int(*max)?;
                match best {
                    None => self.int(0u8)?,
                    Some(b) => {
                        self.int(1u8)?;
                        self.scalar(codec, b)?;
                    }
                }
                match all {
                    None => self.int(0u8),
                    Some(all) => {
                        self.int(1u8)?;
                        self.len(all.len())?;
                        for (v, c) in all.iter() {
                            self.scalar(codec, v.value())?;
                            self.int(*c)?;
                        }
                        Ok(())
                    }
                }
            }
            // Its values are checkpointed one by one: an empty list here.
            Accumulator::Distinct(_) => {
                self.int(3u32)?;
                self.len(0)
            }
        }
    }

    /// A scalar's encoding after its length. Most are short: their length
    /// is one byte, left free before encoding them in place; a longer
    /// one's length is written after, and its bytes moved up.
    fn scalar(&mut self, codec: &ScalarCodec, v: &ScalarValue) -> Result<(), RuntimeError> {
        let at = self.out.len();
        self.out.push(0);
        codec.encode_into(v, &mut self.out)?;
        let n = self.out.len() - at - 1;
        match u8::try_from(n) {
            Ok(n) if n <= 250 => self.out[at] = n,
            _ => {
                self.scratch.clear();
                self.scratch.extend_from_slice(&self.out[at + 1..]);
                self.out.truncate(at);
                self.len(n)?;
                self.out.extend_from_slice(&self.scratch);
            }
        }
        Ok(())
    }

    fn len(&mut self, n: usize) -> Result<(), RuntimeError> {
        self.int(n as u64)
    }

    fn int(&mut self, v: impl Int) -> Result<(), RuntimeError> {
        v.write(&mut self.out);
        Ok(())
    }
}

/// An integer as bincode's standard configuration writes it (written by
/// hand: bincode's writer costs a call and a check per integer, and a
/// checkpoint writes several per group).
trait Int {
    fn write(self, out: &mut Vec<u8>);
}

/// A byte is itself.
impl Int for u8 {
    fn write(self, out: &mut Vec<u8>) {
        out.push(self);
    }
}

/// A bool is a byte, 0 or 1.
impl Int for bool {
    fn write(self, out: &mut Vec<u8>) {
        out.push(self as u8);
    }
}

/// Wider unsigned integers are varints: below 251 one byte; else a
/// marker (251, 252, 253) and the value in 2, 4 or 8 bytes, little-endian.
impl Int for u64 {
    fn write(self, out: &mut Vec<u8>) {
        match self {
            0..=250 => out.push(self as u8),
            251..=0xffff => {
                out.push(251);
                out.extend_from_slice(&(self as u16).to_le_bytes());
            }
            0x1_0000..=0xffff_ffff => {
                out.push(252);
                out.extend_from_slice(&(self as u32).to_le_bytes());
            }
            _ => {
                out.push(253);
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    }
}

impl Int for u32 {
    fn write(self, out: &mut Vec<u8>) {
        (self as u64).write(out);
    }
}

/// Signed integers zigzag-encoded (0, -1, 1, -2, … as 0, 1, 2, 3, …), then as unsigned.
impl Int for i64 {
    fn write(self, out: &mut Vec<u8>) {
        (((self << 1) ^ (self >> 63)) as u64).write(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{AggCall, AggKind};
    use bincode::config::standard;
    use datafusion::arrow::datatypes::DataType;

    fn acc(
        kind: AggKind,
        distinct: bool,
        ty: DataType,
        retract: bool,
        values: &[(ScalarValue, i64)],
    ) -> Accumulator {
        let call = AggCall {
            kind,
            args: vec![],
            distinct,
            filter: None,
            output_type: ty.clone(),
        };
        let mut a = Accumulator::new(&call, &ty, retract).unwrap();
        for (v, sign) in values {
            a.update(v.clone(), *sign).unwrap();
        }
        a
    }

    /// Integers are written as bincode writes them, at each width's edges.
    #[test]
    fn integers_are_written_as_bincode_writes_them() {
        fn check<T: Int + bincode::Encode + Copy + std::fmt::Debug>(v: T) {
            let mut out = Vec::new();
            v.write(&mut out);
            assert_eq!(out, bincode::encode_to_vec(v, standard()).unwrap(), "{v:?}");
        }
        let edges = [
            0u64,
            1,
            250,
            251,
            252,
            0xffff,
            0x1_0000,
            0xffff_ffff,
            1 << 32,
            u64::MAX,
        ];
        for v in edges {
            check(v);
            check(v as u32);
            check(v as i64);
            check((v as i64).wrapping_neg());
            check(v as u8);
        }
        for v in [i64::MIN, i64::MAX, -125, -126, 125, 126, -32768, 32767] {
            check(v);
        }
        check(true);
        check(false);
    }

    /// The bytes written directly are those bincode gives the snapshot
    /// value, for every kind of accumulator: counts and sums past one varint
    /// byte, NULL sums, floats, text extremes through the general codec (one
    /// longer than a one-byte length),
    /// retractable extremes with their multiset, DISTINCT, and a group with
    /// and without a last output.
    #[test]
    fn writes_what_bincode_writes_for_the_snapshot() {
        let int = |v: i64| ScalarValue::Int64(Some(v));
        let text = |v: &str| ScalarValue::Utf8(Some(v.into()));
        // Longer than a one-byte length.
        let long = "zebra".repeat(60);
        let ones = |n: i64| (0..n).map(|i| (int(i * 1_000_003), 1)).collect::<Vec<_>>();
        let accs = vec![
            acc(AggKind::Count, false, DataType::Int64, false, &ones(300)),
            acc(AggKind::Sum, false, DataType::Int64, true, &ones(70_000)),
            acc(AggKind::Sum, false, DataType::Int64, false, &[]),
            acc(
                AggKind::Sum,
                false,
                DataType::Float64,
                false,
                &[(ScalarValue::Float64(Some(-2.5)), 1)],
            ),
            acc(
                AggKind::Max,
                false,
                DataType::Utf8,
                false,
                &[(text("pear"), 1), (text(&long), 1)],
            ),
            acc(AggKind::Min, false, DataType::Utf8, false, &[]),
            acc(
                AggKind::Min,
                false,
                DataType::Int64,
                true,
                &[
                    (int(7), 1),
                    (int(-1), 1),
                    (int(7), 1),
                    (int(9), 1),
                    (int(9), -1),
                ],
            ),
            acc(
                AggKind::Count,
                true,
                DataType::Int64,
                false,
                &[(int(1), 1), (int(2), 1)],
            ),
        ];
        let types = [
            DataType::Int64,
            DataType::Int64,
            DataType::Int64,
            DataType::Float64,
            DataType::Utf8,
            DataType::Utf8,
            DataType::Int64,
            DataType::Int64,
        ];
        let codecs: Vec<_> = types
            .iter()
            .map(|t| {
                (
                    ScalarCodec::new(t.clone()).unwrap(),
                    ScalarCodec::new(t.clone()).unwrap(),
                )
            })
            .collect();
        let emitted = vec![
            int(300),
            int(-5),
            ScalarValue::Int64(None),
            ScalarValue::Float64(Some(-2.5)),
            text(&long),
            ScalarValue::Utf8(None),
            int(-1),
            int(2),
        ];
        let mut writer = GroupWriter::new();
        for (rows, emitted) in [(70_300, Some(emitted.as_slice())), (-1, None)] {
            let expected = GroupSnapshot {
                rows,
                emitted: emitted.map(|vals| {
                    vals.iter()
                        .zip(&codecs)
                        .map(|(v, (_, c))| c.encode(v).unwrap())
                        .collect()
                }),
                accs: accs
                    .iter()
                    .zip(&codecs)
                    .map(|(a, (c, _))| a.snapshot(c).unwrap())
                    .collect(),
            };
            let expected = bincode::serde::encode_to_vec(&expected, standard()).unwrap();
            let written = writer.group(&codecs, rows, emitted, &accs).unwrap();
            assert_eq!(written, expected, "rows {rows}");
        }
    }
}
