//! Local pre-aggregation for the streaming aggregate: one chunk's rows are
//! grouped by key among themselves, and the plain aggregates (COUNT, SUM
//! and MIN/MAX of 64-bit integers) folded per chunk group, so the
//! operator's state sees each key of a chunk once instead of once per row
//! (as Flink's mini-batch local aggregation does). Keys of 64-bit columns
//! without NULLs are grouped on their values, without encoding each row.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, TimeUnit};
use hashbrown::hash_table::Entry;
use hashbrown::HashTable;

use super::accumulator::{Accumulator, Arg};
use crate::plan::{AggCall, AggKind};
use crate::runtime::chunk::Op;
use crate::runtime::RuntimeError;

/// A chunk's rows grouped by key, groups numbered in order of first row.
#[derive(Debug, PartialEq)]
pub(super) struct ChunkGroups {
    /// Per row: its group.
    pub of_row: Vec<u32>,
    /// Per group: its first row.
    pub first: Vec<u32>,
}

/// The values of a key column that holds 64-bit numbers and no NULLs.
fn words(column: &ArrayRef) -> Option<&[i64]> {
    use datafusion::arrow::datatypes as t;
    if column.null_count() > 0 {
        return None;
    }
    Some(match column.data_type() {
        DataType::Int64 => column.as_primitive::<t::Int64Type>().values(),
        DataType::Date64 => column.as_primitive::<t::Date64Type>().values(),
        DataType::Timestamp(unit, _) => match unit {
            TimeUnit::Second => column.as_primitive::<t::TimestampSecondType>().values(),
            TimeUnit::Millisecond => column
                .as_primitive::<t::TimestampMillisecondType>()
                .values(),
            TimeUnit::Microsecond => column
                .as_primitive::<t::TimestampMicrosecondType>()
                .values(),
            TimeUnit::Nanosecond => column.as_primitive::<t::TimestampNanosecondType>().values(),
        },
        _ => return None,
    })
}

/// Calls `f(row, group, sign)` for each row `arg` aggregates.
fn each(arg: &Arg, of_row: &[u32], ops: Option<&[Op]>, mut f: impl FnMut(usize, usize, i64)) {
    let all_valid = arg.all_valid();
    for (row, &g) in of_row.iter().enumerate() {
        if all_valid || arg.is_valid(row) {
            let sign = ops.map_or(1, |o| o[row].sign());
            f(row, g as usize, sign);
        }
    }
}

impl ChunkGroups {
    /// Groups `rows` rows by the values of `keys`; None if some key column
    /// is not 64-bit or holds a NULL (such keys take the row-by-row path).
    pub fn of_keys(keys: &[ArrayRef], rows: usize) -> Option<ChunkGroups> {
        let columns = keys.iter().map(words).collect::<Option<Vec<_>>>()?;
        // A column with one value in the whole chunk (a window's bounds,
        // most chunks) tells no rows apart: grouped on the others only.
        let varying: Vec<&[i64]> = columns
            .into_iter()
            .filter(|c| {
                c.first()
                    .is_some_and(|&first| c.iter().any(|&v| v != first))
            })
            .collect();
        match varying[..] {
            [] => Some(ChunkGroups {
                of_row: vec![0; rows],
                first: if rows > 0 { vec![0] } else { Vec::new() },
            }),
            [column] => {
                Some(Self::of_small_range(column).unwrap_or_else(|| Self::hashed(&varying)))
            }
            _ => Some(Self::hashed(&varying)),
        }
    }

    /// One key column whose values span a range of at most a few times the
    /// chunk's rows: each value's group is found in a table indexed by the
    /// value, without hashing. None for a wider range.
    fn of_small_range(column: &[i64]) -> Option<ChunkGroups> {
        let (min, max) = column
            .iter()
            .fold((i64::MAX, i64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let span = (max as i128 - min as i128) as u128 + 1;
        if span > (4 * column.len()).max(1024) as u128 {
            return None;
        }
        let mut group_of = vec![u32::MAX; span as usize];
        let mut of_row = Vec::with_capacity(column.len());
        let mut first = Vec::new();
        for (row, &v) in column.iter().enumerate() {
            let slot = &mut group_of[v.wrapping_sub(min) as u64 as usize];
            if *slot == u32::MAX {
                *slot = first.len() as u32;
                first.push(row as u32);
            }
            of_row.push(*slot);
        }
        Some(ChunkGroups { of_row, first })
    }

    /// Rows grouped on the values of `columns` (of the chunk's length) in a
    /// hash table.
    fn hashed(columns: &[&[i64]]) -> ChunkGroups {
        let rows = columns[0].len();
        let mut hashes = vec![0u64; rows];
        for column in columns {
            for (h, &v) in hashes.iter_mut().zip(*column) {
                *h = (h.rotate_left(26) ^ v as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            }
        }
        for h in &mut hashes {
            *h ^= *h >> 32;
        }
        let same = |a: usize, b: usize| columns.iter().all(|c| c[a] == c[b]);
        // (group, its first row)
        let mut table: HashTable<(u32, u32)> = HashTable::with_capacity(rows.min(1024));
        let mut of_row = Vec::with_capacity(rows);
        let mut first = Vec::new();
        for (row, &h) in hashes.iter().enumerate() {
            let entry = table.entry(
                h,
                |&(_, f)| same(f as usize, row),
                |&(_, f)| hashes[f as usize],
            );
            let group = match entry {
                Entry::Occupied(o) => o.get().0,
                Entry::Vacant(v) => {
                    let group = first.len() as u32;
                    first.push(row as u32);
                    v.insert((group, row as u32));
                    group
                }
            };
            of_row.push(group);
        }
        ChunkGroups { of_row, first }
    }

    /// Each row its own group (keys that cannot be grouped on their values).
    pub fn each_row(rows: usize) -> ChunkGroups {
        let rows: Vec<u32> = (0..rows as u32).collect();
        ChunkGroups {
            of_row: rows.clone(),
            first: rows,
        }
    }

    pub fn len(&self) -> usize {
        self.first.len()
    }
}

/// Chunks whose keys are not grouped after one with more than three keys
/// per four rows.
const PAUSE: u32 = 64;

/// Keys that hardly repeat within a chunk gain nothing from grouping:
/// after such a chunk, the next [`PAUSE`] chunks are not grouped.
#[derive(Default)]
pub(super) struct GroupingPause(u32);

impl GroupingPause {
    /// The chunk's rows grouped by `keys`; None while paused, or for keys
    /// that cannot be grouped on their values.
    pub fn groups(&mut self, keys: &[ArrayRef], rows: usize) -> Option<ChunkGroups> {
        if self.0 > 0 {
            self.0 -= 1;
            return None;
        }
        let groups = ChunkGroups::of_keys(keys, rows)?;
        if groups.len() * 4 > rows * 3 {
            self.0 = PAUSE;
        }
        Some(groups)
    }
}

/// A chunk's rows folded per group: each group's net rows (retractions
/// count -1) and each aggregate's fold.
pub(super) struct ChunkFold {
    pub groups: ChunkGroups,
    pub net: Vec<i64>,
    pub partials: Vec<Partial>,
}

impl ChunkFold {
    /// Folds the rows of `groups` (`ops`: their change kinds, None when all
    /// are inserts) for aggregates of `kinds` over `args`.
    pub fn new(groups: ChunkGroups, kinds: &[FoldKind], args: &[Arg], ops: Option<&[Op]>) -> Self {
        let mut net = vec![0i64; groups.len()];
        for (row, &g) in groups.of_row.iter().enumerate() {
            net[g as usize] += ops.map_or(1, |o| o[row].sign());
        }
        let partials = kinds
            .iter()
            .zip(args)
            .map(|(&kind, arg)| {
                let mut p = Partial::of(kind, groups.len());
                p.fold(arg, &groups.of_row, ops);
                p
            })
            .collect();
        ChunkFold {
            groups,
            net,
            partials,
        }
    }
}

/// What one aggregate folds into, chosen by its call alone (see
/// [`crate::plan::AggCall::folds`]), for a local aggregate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum FoldKind {
    Count,
    Sum,
    Extreme { max: bool },
}

impl FoldKind {
    pub fn of(call: &AggCall, append_only: bool) -> Option<FoldKind> {
        if !call.folds(append_only) {
            return None;
        }
        Some(match call.kind {
            AggKind::Count => FoldKind::Count,
            AggKind::Sum => FoldKind::Sum,
            AggKind::Min => FoldKind::Extreme { max: false },
            AggKind::Max => FoldKind::Extreme { max: true },
            AggKind::Avg => return None,
        })
    }

    /// The columns of its fold in a partial row, named after aggregate `i`:
    /// a count; a sum and the count of inputs summed; an extreme (NULL:
    /// no input).
    pub fn fields(self, i: usize) -> Vec<Field> {
        let int = |name: String, nullable| Field::new(name, DataType::Int64, nullable);
        match self {
            FoldKind::Count => vec![int(format!("a{i}_count"), false)],
            FoldKind::Sum => vec![
                int(format!("a{i}_sum"), false),
                int(format!("a{i}_n"), false),
            ],
            FoldKind::Extreme { .. } => vec![int(format!("a{i}_best"), true)],
        }
    }
}

/// One aggregate's folds as a local aggregate sent them, read back.
pub(super) enum Folds<'a> {
    Count(&'a [i64]),
    Sum(&'a [i64], &'a [i64]),
    Extreme(&'a Int64Array),
}

impl<'a> Folds<'a> {
    /// Each aggregate's folds in partial rows whose aggregate columns
    /// start at `columns[0]`, the aggregates being of `kinds`.
    pub fn read(
        kinds: &[FoldKind],
        columns: &'a [ArrayRef],
    ) -> Result<Vec<Folds<'a>>, RuntimeError> {
        let int = |i: usize| -> Result<&'a Int64Array, RuntimeError> {
            columns
                .get(i)
                .and_then(|c| c.as_primitive_opt::<Int64Type>())
                .ok_or_else(|| RuntimeError::Internal("partial rows of another layout".into()))
        };
        let mut at = 0;
        let mut folds = Vec::with_capacity(kinds.len());
        for kind in kinds {
            folds.push(match kind {
                FoldKind::Count => Folds::Count(int(at)?.values()),
                FoldKind::Sum => {
                    at += 1;
                    Folds::Sum(int(at - 1)?.values(), int(at)?.values())
                }
                FoldKind::Extreme { .. } => Folds::Extreme(int(at)?),
            });
            at += 1;
        }
        Ok(folds)
    }

    /// Row `row`'s fold (None: nothing to add).
    pub fn at(&self, row: usize) -> Option<Folded> {
        match self {
            Folds::Count(n) => Some(Folded::Count(n[row])),
            Folds::Sum(sum, n) => Some(Folded::Sum(sum[row], n[row])),
            Folds::Extreme(best) => best.is_valid(row).then(|| Folded::Extreme(best.value(row))),
        }
    }
}

/// One aggregate folded over a chunk's groups.
pub(super) enum Partial {
    /// Net inputs counted.
    Count(Vec<i64>),
    /// Wrapping sum and net count of the inputs.
    Sum { sum: Vec<i64>, n: Vec<i64> },
    /// The smallest or largest input (append-only input only).
    Extreme { max: bool, best: Vec<Option<i64>> },
}

impl Partial {
    /// An empty fold of `kind` over `groups` groups.
    pub fn of(kind: FoldKind, groups: usize) -> Partial {
        match kind {
            FoldKind::Count => Partial::Count(vec![0; groups]),
            FoldKind::Sum => Partial::Sum {
                sum: vec![0; groups],
                n: vec![0; groups],
            },
            FoldKind::Extreme { max } => Partial::Extreme {
                max,
                best: vec![None; groups],
            },
        }
    }

    /// Whether group `g`'s fold adds nothing.
    pub fn is_empty(&self, g: usize) -> bool {
        match self {
            Partial::Count(n) => n[g] == 0,
            Partial::Sum { sum, n } => sum[g] == 0 && n[g] == 0,
            Partial::Extreme { best, .. } => best[g].is_none(),
        }
    }

    /// The folds of groups `keep`, in the columns of [`FoldKind::fields`].
    pub fn columns(&self, keep: &[u32]) -> Vec<ArrayRef> {
        let of = |v: &[i64]| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(
                keep.iter().map(|&g| v[g as usize]),
            ))
        };
        match self {
            Partial::Count(n) => vec![of(n)],
            Partial::Sum { sum, n } => vec![of(sum), of(n)],
            Partial::Extreme { best, .. } => vec![Arc::new(Int64Array::from_iter(
                keep.iter().map(|&g| best[g as usize]),
            ))],
        }
    }

    /// Folds the chunk's rows (`ops`: their change kinds, None when all
    /// are inserts) into their groups, skipping the rows `arg` does not
    /// aggregate, as [`Accumulator::update_at`] does.
    pub fn fold(&mut self, arg: &Arg, of_row: &[u32], ops: Option<&[Op]>) {
        let plain = arg.all_valid() && ops.is_none();
        match self {
            Partial::Count(n) if plain => {
                for &g in of_row {
                    n[g as usize] += 1;
                }
            }
            Partial::Count(n) => each(arg, of_row, ops, |_, g, sign| n[g] += sign),
            Partial::Sum { sum, n } => {
                let v = arg
                    .int64s()
                    .expect("a SUM, MIN or MAX that folds has BIGINT arguments");
                if plain {
                    for (&g, &v) in of_row.iter().zip(v) {
                        let g = g as usize;
                        sum[g] = sum[g].wrapping_add(v);
                        n[g] += 1;
                    }
                } else {
                    each(arg, of_row, ops, |row, g, sign| {
                        sum[g] = sum[g].wrapping_add(v[row].wrapping_mul(sign));
                        n[g] += sign;
                    });
                }
            }
            Partial::Extreme { max, best } => {
                let v = arg
                    .int64s()
                    .expect("a SUM, MIN or MAX that folds has BIGINT arguments");
                let max = *max;
                each(arg, of_row, ops, |row, g, _| {
                    let v = v[row];
                    best[g] = Some(match best[g] {
                        Some(b) if (max && b >= v) || (!max && b <= v) => b,
                        _ => v,
                    });
                });
            }
        }
    }

    /// Adds group `g`'s fold to its accumulator.
    pub fn apply(&self, g: usize, acc: &mut Accumulator) -> Result<(), RuntimeError> {
        acc.add_folded(match self {
            Partial::Count(n) => Folded::Count(n[g]),
            Partial::Sum { sum, n } => Folded::Sum(sum[g], n[g]),
            Partial::Extreme { best, .. } => match best[g] {
                Some(v) => Folded::Extreme(v),
                None => return Ok(()),
            },
        })
    }
}

/// One group's fold of one chunk.
pub(super) enum Folded {
    Count(i64),
    /// Wrapping sum, net inputs.
    Sum(i64, i64),
    Extreme(i64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        BooleanArray, Int64Array, StringArray, TimestampMillisecondArray,
    };
    use std::sync::Arc;

    fn ints(v: &[i64]) -> ArrayRef {
        Arc::new(Int64Array::from(v.to_vec()))
    }

    #[test]
    fn rows_are_grouped_by_all_key_values_in_order_of_first_row() {
        let k = ints(&[1, 2, 1, 1, 2, 3]);
        let ws: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![
            10, 10, 10, 20, 10, 10,
        ]));
        let groups = ChunkGroups::of_keys(&[k, ws], 6).unwrap();
        assert_eq!(groups.of_row, vec![0, 1, 0, 2, 1, 3]);
        assert_eq!(groups.first, vec![0, 1, 3, 5]);
        // No key (a global aggregate): one group.
        let global = ChunkGroups::of_keys(&[], 3).unwrap();
        assert_eq!((global.of_row, global.first), (vec![0, 0, 0], vec![0]));
    }

    #[test]
    fn every_way_of_grouping_agrees_with_grouping_the_key_tuples() {
        // Key columns of every kind the grouping tells apart: constant,
        // a narrow range (table), a wide one or extremes (hash), negative.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut kind = |k: u64, rows: usize| -> Vec<i64> {
            (0..rows)
                .map(|_| match k {
                    0 => 42,
                    1 => next(1000) as i64,
                    2 => next(30) as i64 - 15,
                    3 => (next(5) as i64) * (1 << 40),
                    4 => [i64::MIN, i64::MAX, 0][next(3) as usize],
                    _ => next(4 * rows as u64 + 1) as i64 + 7,
                })
                .collect()
        };
        for rows in [0, 1, 5, 300, 4096] {
            for kinds in [
                &[0][..],
                &[1],
                &[2],
                &[3],
                &[4],
                &[5],
                &[1, 0, 0],
                &[0, 2],
                &[1, 2],
                &[4, 0, 1],
            ] {
                let columns: Vec<Vec<i64>> = kinds.iter().map(|&k| kind(k, rows)).collect();
                let keys: Vec<ArrayRef> = columns.iter().map(|c| ints(c)).collect();
                let got = ChunkGroups::of_keys(&keys, rows).unwrap();
                // Groups numbered in order of first row, found by the tuples.
                let mut seen = std::collections::HashMap::new();
                let mut first = Vec::new();
                let of_row: Vec<u32> = (0..rows)
                    .map(|row| {
                        let tuple: Vec<i64> = columns.iter().map(|c| c[row]).collect();
                        *seen.entry(tuple).or_insert_with(|| {
                            first.push(row as u32);
                            first.len() as u32 - 1
                        })
                    })
                    .collect();
                assert_eq!(got.of_row, of_row, "{rows} rows of {kinds:?}");
                assert_eq!(got.first, first, "{rows} rows of {kinds:?}");
            }
        }
    }

    #[test]
    fn keys_with_nulls_or_of_other_types_go_row_by_row() {
        let nulls: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None]));
        assert_eq!(ChunkGroups::of_keys(&[nulls], 2), None);
        let text: ArrayRef = Arc::new(StringArray::from(vec!["a", "a"]));
        assert_eq!(ChunkGroups::of_keys(&[ints(&[1, 1]), text], 2), None);
    }

    #[test]
    fn folds_skip_nulls_and_filtered_rows_and_subtract_retractions() {
        let v: ArrayRef = Arc::new(Int64Array::from(vec![
            Some(5),
            None,
            Some(7),
            Some(-2),
            Some(4),
        ]));
        let keep = BooleanArray::from(vec![true, true, true, true, false]);
        let arg = Arg::new(Some(&v)).with_filter(Some(&keep));
        let of_row = [0, 0, 1, 0, 1];
        let ops = [Op::Insert, Op::Insert, Op::Insert, Op::Delete, Op::Insert];
        let fresh = |kind| match kind {
            0 => Accumulator::Count(0),
            _ => Accumulator::SumInt { sum: 0, n: 0 },
        };
        // Group 0: +5, NULL (skipped), -(-2); group 1: +7, 4 filtered out.
        let mut count = Partial::of(FoldKind::Count, 2);
        count.fold(&arg, &of_row, Some(&ops));
        let mut sum = Partial::of(FoldKind::Sum, 2);
        sum.fold(&arg, &of_row, Some(&ops));
        let (mut c0, mut s0, mut s1) = (fresh(0), fresh(1), fresh(1));
        count.apply(0, &mut c0).unwrap();
        sum.apply(0, &mut s0).unwrap();
        sum.apply(1, &mut s1).unwrap();
        assert!(matches!(c0, Accumulator::Count(0)));
        assert!(matches!(s0, Accumulator::SumInt { sum: 7, n: 0 }));
        assert!(matches!(s1, Accumulator::SumInt { sum: 7, n: 1 }));
    }

    #[test]
    fn extremes_fold_to_the_best_value_of_each_group() {
        let v = ints(&[3, 9, -4, 6]);
        let arg = Arg::new(Some(&v));
        let max = Accumulator::ExtremeInt {
            max: true,
            best: Some(8),
        };
        let mut p = Partial::of(FoldKind::Extreme { max: true }, 2);
        p.fold(&arg, &[0, 1, 0, 1], None);
        let (mut a, mut b) = (max.clone(), max);
        p.apply(0, &mut a).unwrap();
        p.apply(1, &mut b).unwrap();
        // Group 0 saw 3 and -4 (8 stays), group 1 saw 9 and 6.
        assert!(matches!(a, Accumulator::ExtremeInt { best: Some(8), .. }));
        assert!(matches!(b, Accumulator::ExtremeInt { best: Some(9), .. }));
        // Extremes that can be retracted keep every value: no fold.
        let call = AggCall {
            kind: AggKind::Max,
            args: vec![],
            distinct: false,
            filter: None,
            output_type: DataType::Int64,
        };
        assert!(FoldKind::of(&call, false).is_none());
    }
}
