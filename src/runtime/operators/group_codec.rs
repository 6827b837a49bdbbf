//! A group's checkpoint encoding, written straight into one buffer: the
//! bytes bincode gives the aggregate's `GroupSnapshot`, without building
//! the snapshot and its vector per value first; and read back the same
//! way, each value borrowed from the stored bytes.

use super::accumulator::{AccSnapshot, Accumulator};
use super::agg_value::AggValue;
use crate::runtime::RuntimeError;
use crate::state::ScalarCodec;
use datafusion::common::ScalarValue;
use smallvec::SmallVec;

/// A group as stored in a checkpoint (its key is the state key): the
/// format, as bincode encodes this value. [`GroupWriter`] writes it and
/// [`GroupRead`] reads it by hand; the tests hold both to bincode's bytes.
#[cfg(test)]
#[derive(serde::Serialize, serde::Deserialize)]
pub struct GroupSnapshot {
    pub rows: i64,
    pub emitted: EmittedSnapshot,
    pub accs: Vec<AccSnapshot>,
}

/// A group's last output in the format: bincode writes a variant's index
/// as the one byte an option's tag is, so the first two read as the
/// `Option` this field was before `Current` came.
#[cfg(test)]
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
pub enum EmittedSnapshot {
    None,
    Values(Vec<Vec<u8>>),
    Current,
}

/// A group's last output, as a checkpoint writes it.
#[derive(Clone, Copy)]
pub enum Emitted<'a> {
    /// Nothing emitted yet.
    None,
    /// These values.
    Values(&'a [AggValue]),
    /// What its accumulators give now: it was emitted after they last
    /// changed. One byte instead of a value per aggregate, for most groups
    /// a checkpoint writes (the aggregate emits before each barrier).
    Current,
}

impl<'a> Emitted<'a> {
    /// The values themselves, or none.
    pub fn values(values: Option<&'a [AggValue]>) -> Self {
        values.map_or(Emitted::None, Emitted::Values)
    }
}

/// A group's last output read back.
pub enum EmittedRead<'a> {
    None,
    /// The encoded values.
    Values(SmallVec<[&'a [u8]; 2]>),
    /// What its accumulators give.
    Current,
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
    #[cfg(test)]
    pub fn group(
        &mut self,
        codecs: &[(ScalarCodec, ScalarCodec)],
        rows: i64,
        emitted: Emitted<'_>,
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
        emitted: Emitted<'_>,
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
        emitted: Emitted<'_>,
        accs: &[Accumulator],
    ) -> Result<(), RuntimeError> {
        self.int(rows)?;
        match emitted {
            Emitted::None => self.int(0u8)?,
            Emitted::Values(values) => {
                self.int(1u8)?;
                self.len(values.len())?;
                for (v, (_, out)) in values.iter().zip(codecs) {
                    match v {
                        AggValue::Other(v) => self.scalar(out, v)?,
                        v => self.scalar(out, &v.to_scalar(out.data_type())?)?,
                    }
                }
            }
            Emitted::Current => self.int(2u8)?,
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
            Accumulator::SumInt { sum, n } => {
                self.int(1u32)?;
                self.encoded(|out| codec.encode_int_into(*sum, out))?;
                self.int(*n)
            }
            Accumulator::SumFloat { sum, n } => {
                self.int(1u32)?;
                self.scalar(codec, &ScalarValue::Float64(Some(*sum)))?;
                self.int(*n)
            }
            Accumulator::Sum { sum, n } => {
                self.int(1u32)?;
                self.scalar(codec, sum)?;
                self.int(*n)
            }
            Accumulator::ExtremeInt { max, best } => {
                let best = best.map(|b| move |out: &mut Vec<u8>| codec.encode_int_into(b, out));
                self.extreme(*max, best)?;
                // Never retracted: no multiset.
                self.int(0u8)
            }
            Accumulator::Extreme { max, best, all } => {
                let best = best
                    .as_deref()
                    .map(|b| move |out: &mut Vec<u8>| codec.encode_into(b, out));
                self.extreme(*max, best)?;
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

    /// An extreme's variant index, `max`, and its best value, if any, as
    /// `encode` writes it.
    fn extreme(
        &mut self,
        max: bool,
        best: Option<impl FnOnce(&mut Vec<u8>) -> Result<(), crate::state::StateError>>,
    ) -> Result<(), RuntimeError> {
        self.int(2u32)?;
        self.int(max)?;
        match best {
            None => self.int(0u8),
            Some(encode) => {
                self.int(1u8)?;
                self.encoded(encode)
            }
        }
    }

    /// A scalar's encoding after its length. Most are short: their length
    /// is one byte, left free before encoding them in place; a longer
    /// one's length is written after, and its bytes moved up.
    fn scalar(&mut self, codec: &ScalarCodec, v: &ScalarValue) -> Result<(), RuntimeError> {
        self.encoded(|out| codec.encode_into(v, out))
    }

    /// What `encode` appends, after its length (as `scalar` writes it).
    #[inline]
    fn encoded(
        &mut self,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), crate::state::StateError>,
    ) -> Result<(), RuntimeError> {
        let at = self.out.len();
        self.out.push(0);
        encode(&mut self.out)?;
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

/// A group read back from the bytes [`GroupWriter`] wrote: its values
/// borrowed from them, to be decoded by the aggregate's codecs.
pub struct GroupRead<'a> {
    pub rows: i64,
    pub emitted: EmittedRead<'a>,
    pub accs: SmallVec<[AccRead<'a>; 2]>,
}

/// An accumulator read back: the usual kinds borrowed, the others as a
/// snapshot.
pub enum AccRead<'a> {
    Count(i64),
    Sum { sum: &'a [u8], n: i64 },
    Other(AccSnapshot),
}

impl<'a> GroupRead<'a> {
    /// Reads `bytes`, which must be one group's encoding, whole.
    pub fn read(bytes: &'a [u8]) -> Result<Self, RuntimeError> {
        let mut r = Reader { bytes };
        let rows = r.i64()?;
        let emitted = match r.u8()? {
            0 => EmittedRead::None,
            1 => EmittedRead::Values((0..r.len()?).map(|_| r.bytes()).collect::<Result<_, _>>()?),
            2 => EmittedRead::Current,
            _ => return Err(corrupt()),
        };
        let accs = (0..r.len()?)
            .map(|_| r.accumulator())
            .collect::<Result<_, _>>()?;
        if !r.bytes.is_empty() {
            return Err(corrupt());
        }
        Ok(GroupRead {
            rows,
            emitted,
            accs,
        })
    }
}

fn corrupt() -> RuntimeError {
    RuntimeError::Internal("corrupt aggregate state: a group's encoding".into())
}

/// Reads what [`Int`] and [`GroupWriter`] write.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RuntimeError> {
        let (head, rest) = self.bytes.split_at_checked(n).ok_or_else(corrupt)?;
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, RuntimeError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, RuntimeError> {
        Ok(match self.u8()? {
            b @ 0..=250 => b as u64,
            251 => u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")) as u64,
            252 => u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as u64,
            253 => u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")),
            _ => return Err(corrupt()),
        })
    }

    fn i64(&mut self) -> Result<i64, RuntimeError> {
        let v = self.u64()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn len(&mut self) -> Result<usize, RuntimeError> {
        usize::try_from(self.u64()?).map_err(|_| corrupt())
    }

    fn bool(&mut self) -> Result<bool, RuntimeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(corrupt()),
        }
    }

    fn bytes(&mut self) -> Result<&'a [u8], RuntimeError> {
        let n = self.len()?;
        self.take(n)
    }

    /// Values and their counts, as a retractable extreme's multiset and
    /// DISTINCT's values are written.
    fn counted(&mut self) -> Result<Vec<(Vec<u8>, i64)>, RuntimeError> {
        (0..self.len()?)
            .map(|_| Ok((self.bytes()?.to_vec(), self.i64()?)))
            .collect()
    }

    fn accumulator(&mut self) -> Result<AccRead<'a>, RuntimeError> {
        Ok(match self.u64()? {
            0 => AccRead::Count(self.i64()?),
            1 => {
                let sum = self.bytes()?;
                AccRead::Sum {
                    sum,
                    n: self.i64()?,
                }
            }
            2 => {
                let max = self.bool()?;
                // An option's tag is a byte, 0 or 1, as a bool is.
                let best = match self.bool()? {
                    true => Some(self.bytes()?.to_vec()),
                    false => None,
                };
                let all = match self.bool()? {
                    true => Some(self.counted()?),
                    false => None,
                };
                AccRead::Other(AccSnapshot::Extreme { max, best, all })
            }
            3 => AccRead::Other(AccSnapshot::Distinct(self.counted()?)),
            _ => return Err(corrupt()),
        })
    }
}

/// Where an encoding goes: a growing vector, or room made for it (see
/// `plain_group`).
pub trait Sink {
    fn byte(&mut self, b: u8);
    fn slice(&mut self, b: &[u8]);
}

impl Sink for Vec<u8> {
    #[inline(always)]
    fn byte(&mut self, b: u8) {
        self.push(b);
    }

    #[inline(always)]
    fn slice(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}

/// An integer as bincode's standard configuration writes it (written by
/// hand: bincode's writer costs a call and a check per integer, and a
/// checkpoint writes several per group).
pub trait Int {
    fn write(self, out: &mut impl Sink);
}

/// A byte is itself.
impl Int for u8 {
    #[inline(always)]
    fn write(self, out: &mut impl Sink) {
        out.byte(self);
    }
}

/// A bool is a byte, 0 or 1.
impl Int for bool {
    #[inline(always)]
    fn write(self, out: &mut impl Sink) {
        out.byte(self as u8);
    }
}

/// Wider unsigned integers are varints: below 251 one byte; else a
/// marker (251, 252, 253) and the value in 2, 4 or 8 bytes, little-endian.
impl Int for u64 {
    #[inline(always)]
    fn write(self, out: &mut impl Sink) {
        match self {
            0..=250 => out.byte(self as u8),
            251..=0xffff => {
                out.byte(251);
                out.slice(&(self as u16).to_le_bytes());
            }
            0x1_0000..=0xffff_ffff => {
                out.byte(252);
                out.slice(&(self as u32).to_le_bytes());
            }
            _ => {
                out.byte(253);
                out.slice(&self.to_le_bytes());
            }
        }
    }
}

impl Int for u32 {
    #[inline(always)]
    fn write(self, out: &mut impl Sink) {
        (self as u64).write(out);
    }
}

/// Signed integers zigzag-encoded (0, -1, 1, -2, … as 0, 1, 2, 3, …), then as unsigned.
impl Int for i64 {
    #[inline(always)]
    fn write(self, out: &mut impl Sink) {
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
        // And read back as they were.
        for v in edges {
            for signed in [v as i64, (v as i64).wrapping_neg()] {
                let mut out = Vec::new();
                v.write(&mut out);
                signed.write(&mut out);
                let mut r = Reader { bytes: &out };
                assert_eq!((r.u64().unwrap(), r.i64().unwrap()), (v, signed));
                assert!(r.bytes.is_empty());
            }
        }
        check(true);
        check(false);
    }

    /// The bytes written directly are those bincode gives the snapshot
    /// value, for every kind of accumulator: counts and sums past one varint
    /// byte, NULL sums, floats, text extremes through the general codec (one
    /// longer than a one-byte length),
    /// retractable extremes with their multiset, DISTINCT, and a group with
    /// without a last output, and with the one its accumulators give.
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
            // BIGINT extremes never retracted: kept as plain numbers.
            acc(
                AggKind::Max,
                false,
                DataType::Int64,
                false,
                &[(int(-400), 1), (int(1 << 40), 1), (int(3), 1)],
            ),
            acc(AggKind::Min, false, DataType::Int64, false, &[]),
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
        let scalars = [
            int(300),
            int(-5),
            ScalarValue::Int64(None),
            ScalarValue::Float64(Some(-2.5)),
            text(&long),
            ScalarValue::Utf8(None),
            int(-1),
            int(2),
            int(1 << 40),
            ScalarValue::Int64(None),
        ];
        let values: Vec<AggValue> = scalars.iter().cloned().map(AggValue::from_scalar).collect();
        let mut writer = GroupWriter::new();
        for (rows, emitted) in [
            (70_300, Emitted::Values(&values)),
            (-1, Emitted::None),
            (301, Emitted::Current),
        ] {
            let expected = GroupSnapshot {
                rows,
                emitted: match emitted {
                    Emitted::None => EmittedSnapshot::None,
                    Emitted::Values(_) => EmittedSnapshot::Values(
                        scalars
                            .iter()
                            .zip(&codecs)
                            .map(|(v, (_, c))| c.encode(v).unwrap())
                            .collect(),
                    ),
                    Emitted::Current => EmittedSnapshot::Current,
                },
                accs: accs
                    .iter()
                    .zip(&codecs)
                    .map(|(a, (c, _))| a.snapshot(c).unwrap())
                    .collect(),
            };
            let expected_bytes = bincode::serde::encode_to_vec(&expected, standard()).unwrap();
            // What was written as an option before reads the same.
            let as_option = match &expected.emitted {
                EmittedSnapshot::None => Some(None),
                EmittedSnapshot::Values(v) => Some(Some(v.clone())),
                EmittedSnapshot::Current => None,
            };
            if let Some(option) = as_option {
                let before: Option<Vec<Vec<u8>>> = option;
                assert_eq!(
                    bincode::serde::encode_to_vec(&before, standard()).unwrap(),
                    bincode::serde::encode_to_vec(&expected.emitted, standard()).unwrap()
                );
            }
            let written = writer.group(&codecs, rows, emitted, &accs).unwrap();
            assert_eq!(written, expected_bytes, "rows {rows}");
            // Read back by hand, it is the snapshot bincode reads.
            let read = GroupRead::read(&written).unwrap();
            assert_eq!(read.rows, expected.rows);
            let read_emitted = match read.emitted {
                EmittedRead::None => EmittedSnapshot::None,
                EmittedRead::Values(e) => {
                    EmittedSnapshot::Values(e.iter().map(|v| v.to_vec()).collect())
                }
                EmittedRead::Current => EmittedSnapshot::Current,
            };
            assert_eq!(read_emitted, expected.emitted);
            let read: Vec<String> = read
                .accs
                .into_iter()
                .map(|a| match a {
                    AccRead::Count(n) => format!("{:?}", AccSnapshot::Count(n)),
                    AccRead::Sum { sum, n } => format!(
                        "{:?}",
                        AccSnapshot::Sum {
                            sum: sum.to_vec(),
                            n
                        }
                    ),
                    AccRead::Other(s) => format!("{s:?}"),
                })
                .collect();
            let want: Vec<String> = expected.accs.iter().map(|a| format!("{a:?}")).collect();
            assert_eq!(read, want);
            // A byte short, or one too many, is corrupt.
            assert!(GroupRead::read(&written[..written.len() - 1]).is_err());
            assert!(GroupRead::read(&[&written[..], &[0]].concat()).is_err());
        }
    }
}
