//! A plain group's checkpoint encoding (numbers held in place, no values
//! of its last output), written on the stack in one pass and appended
//! whole: the bytes [`super::group_codec::GroupWriter`] writes, without a
//! call and a capacity check per field.

use datafusion::arrow::datatypes::DataType;

use super::accumulator::Accumulator;
use super::group_codec::{Emitted, Int, Sink};
use crate::state::ScalarCodec;

/// Aggregates a plain group may have (so that it fits [`MAX_BYTES`]).
const MAX_ACCS: usize = 4;

/// A plain group's bytes at most: 9 for its rows, 2 for its last output
/// and the number of accumulators, and 20 per accumulator.
const MAX_BYTES: usize = 11 + 20 * MAX_ACCS;

/// Writes into room made for it: each byte stored once, no check of the
/// vector's capacity per field, and no copy read back from the stack.
struct Cursor<'a> {
    bytes: &'a mut [u8],
    len: usize,
}

impl Sink for Cursor<'_> {
    #[inline(always)]
    fn byte(&mut self, b: u8) {
        self.bytes[self.len] = b;
        self.len += 1;
    }

    #[inline(always)]
    fn slice(&mut self, b: &[u8]) {
        self.bytes[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
    }
}

impl Cursor<'_> {
    /// A present 8-byte value as its codec writes it (a flag, then the
    /// bytes), after its length.
    #[inline(always)]
    fn value(&mut self, bytes: [u8; 8]) {
        self.slice(&[9, 1]);
        self.slice(&bytes);
    }
}

/// Appends to `out` the encoding of a group whose accumulators are all
/// counts, BIGINT or DOUBLE sums or BIGINT extremes without retractions
/// (with the codecs of those types), and which has emitted nothing or what
/// its accumulators give; for any other group it leaves `out` as it was and
/// returns false: the general writer encodes that one.
#[inline]
pub fn encode_into(
    codecs: &[(ScalarCodec, ScalarCodec)],
    rows: i64,
    emitted: Emitted<'_>,
    accs: &[Accumulator],
    out: &mut Vec<u8>,
) -> bool {
    let last = match emitted {
        Emitted::None => 0,
        Emitted::Current => 2,
        Emitted::Values(_) => return false,
    };
    if accs.len() > MAX_ACCS {
        return false;
    }
    let at = out.len();
    out.resize(at + MAX_BYTES, 0);
    let mut c = Cursor {
        bytes: &mut out[at..],
        len: 0,
    };
    rows.write(&mut c);
    c.byte(last);
    c.byte(accs.len() as u8);
    for (acc, (codec, _)) in accs.iter().zip(codecs) {
        let ty = codec.data_type();
        match acc {
            Accumulator::Count(n) => {
                c.byte(0);
                n.write(&mut c);
            }
            Accumulator::SumInt { sum, n } if matches!(ty, DataType::Int64) => {
                c.byte(1);
                c.value(sum.to_le_bytes());
                n.write(&mut c);
            }
            Accumulator::SumFloat { sum, n } if matches!(ty, DataType::Float64) => {
                c.byte(1);
                c.value(sum.to_bits().to_le_bytes());
                n.write(&mut c);
            }
            Accumulator::ExtremeInt { max, best } if matches!(ty, DataType::Int64) => {
                c.slice(&[2, *max as u8]);
                match best {
                    None => c.byte(0),
                    Some(b) => {
                        c.byte(1);
                        c.value(b.to_le_bytes());
                    }
                }
                // No multiset: never retracted.
                c.byte(0);
            }
            _ => {
                out.truncate(at);
                return false;
            }
        }
    }
    let len = c.len;
    out.truncate(at + len);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::operators::group_codec::GroupWriter;

    fn codec(t: DataType) -> (ScalarCodec, ScalarCodec) {
        (
            ScalarCodec::new(t.clone()).unwrap(),
            ScalarCodec::new(t).unwrap(),
        )
    }

    /// Every plain kind, at the edges of each varint width and with
    /// negative values, encodes as the general writer does (which the
    /// group codec's tests hold to bincode's bytes).
    #[test]
    fn plain_groups_encode_as_the_general_writer_does() {
        let ints = [
            0i64,
            1,
            -1,
            125,
            -126,
            126,
            32_767,
            -32_768,
            32_768,
            2_147_483_647,
            -2_147_483_649,
            i64::MAX,
            i64::MIN,
        ];
        let mut writer = GroupWriter::new();
        let mut checked = 0;
        for &a in &ints {
            for &b in &ints {
                let accs = [
                    Accumulator::Count(a),
                    Accumulator::SumInt { sum: b, n: a },
                    Accumulator::SumFloat {
                        sum: b as f64 / 3.0,
                        n: b,
                    },
                    Accumulator::ExtremeInt {
                        max: a < b,
                        best: (a != 0).then_some(b),
                    },
                ];
                let codecs = [
                    codec(DataType::Int64),
                    codec(DataType::Int64),
                    codec(DataType::Float64),
                    codec(DataType::Int64),
                ];
                for emitted in [Emitted::None, Emitted::Current] {
                    let want = writer.group(&codecs, a ^ b, emitted, &accs).unwrap();
                    // After other bytes, which it leaves as they were.
                    let mut got = vec![7u8; 3];
                    assert!(encode_into(&codecs, a ^ b, emitted, &accs, &mut got));
                    assert_eq!(got[..3], [7, 7, 7]);
                    assert_eq!(got[3..], want[..], "{a} {b}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, ints.len() * ints.len() * 2);
    }

    /// Groups it does not cover are left to the general writer, and the
    /// bytes before them as they were.
    #[test]
    fn other_groups_are_not_encoded() {
        let encode =
            |codecs: &[(ScalarCodec, ScalarCodec)], rows, emitted, accs: &[Accumulator]| {
                let mut out = vec![7u8; 3];
                let plain = encode_into(codecs, rows, emitted, accs, &mut out);
                assert_eq!(out, [7, 7, 7]);
                (!plain).then_some(())
            };
        let int = [codec(DataType::Int64)];
        let count = [Accumulator::Count(3)];
        let values = [crate::runtime::operators::agg_value::AggValue::Int(3)];
        assert!(encode(&int, 1, Emitted::Values(&values), &count).is_some());
        // A BIGINT sum under a DECIMAL codec, and too many accumulators.
        let decimal = [codec(DataType::Decimal128(20, 2))];
        let sum = [Accumulator::SumInt { sum: 5, n: 1 }];
        assert!(encode(&decimal, 1, Emitted::None, &sum).is_some());
        let five = vec![Accumulator::Count(1); MAX_ACCS + 1];
        let codecs: Vec<_> = (0..=MAX_ACCS).map(|_| codec(DataType::Int64)).collect();
        assert!(encode(&codecs, 1, Emitted::None, &five).is_some());
    }
}
