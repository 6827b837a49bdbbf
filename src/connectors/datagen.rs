//! The `datagen` connector: deterministic, seeded rows.
//!
//! Every value is a pure function of (`seed`, column name, row number),
//! computed with the splitmix64 mixer, so the output does not depend on
//! batching or timing and `seek` to a row number restores it exactly.

mod column;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::SchemaRef;
use serde_json::json;

use self::column::{Column, Props};
use super::options::invalid;
use super::pacer::Pacer;
use super::{ConnectorError, ConnectorOptions, Poll, SourceMetrics, SourceReader};

const ROWS_KEYS: &[&str] = &["rows", "number-of-rows"];
const RATE_KEYS: &[&str] = &["rate", "rows-per-second"];
const DEFAULT_BATCH_SIZE: u64 = 1024;

/// Whether the generator ends: a row count, or a sequence with an end.
pub(crate) fn is_bounded(options: &ConnectorOptions) -> Result<bool, ConnectorError> {
    if options.get_u64(ROWS_KEYS)?.is_some() {
        return Ok(true);
    }
    Ok(options.iter().any(|(key, value)| {
        key.strip_prefix("fields.")
            .and_then(|rest| rest.strip_suffix(".kind"))
            .is_some_and(|column| {
                value.trim().eq_ignore_ascii_case("sequence")
                    && options.get(&format!("fields.{column}.end")).is_some()
            })
    }))
}

/// Generates rows of a `datagen` source.
pub(crate) struct DatagenReader {
    schema: SchemaRef,
    columns: Vec<Column>,
    /// Rows in all, if bounded (by `rows` or a sequence's end).
    total: Option<u64>,
    /// Rows per second, if limited.
    pacer: Option<Pacer>,
    batch_size: u64,
    /// The next row number.
    row: u64,
    metrics: Arc<SourceMetrics>,
}

impl DatagenReader {
    pub(crate) fn new(
        options: &ConnectorOptions,
        schema: SchemaRef,
        metrics: Arc<SourceMetrics>,
    ) -> Result<Self, ConnectorError> {
        let seed = match options.get("seed") {
            None => 0,
            Some(v) => {
                let v = v.trim();
                v.parse::<u64>()
                    .or_else(|_| v.parse::<i64>().map(|s| s as u64))
                    .map_err(|_| invalid("seed", format!("expected an integer, got '{v}'")))?
            }
        };
        let rows = options.get_u64(ROWS_KEYS)?;
        let pacer = Pacer::from_options(options, RATE_KEYS, "rows")?;
        let batch_size = options
            .get_u64(&["batch.size"])?
            .unwrap_or(DEFAULT_BATCH_SIZE);
        if batch_size == 0 {
            return Err(invalid("batch.size", "must be greater than zero"));
        }

        let fields = schema.fields();
        let mut props = vec![Props::new(); fields.len()];
        for (key, value) in options.iter() {
            let Some(rest) = key.strip_prefix("fields.") else {
                continue;
            };
            let Some((column, prop)) = rest.rsplit_once('.') else {
                return Err(invalid(key, "expected fields.<column>.<property>"));
            };
            let Some(index) = fields
                .iter()
                .position(|f| f.name().to_lowercase() == column)
            else {
                let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
                return Err(invalid(
                    key,
                    format!(
                        "no column '{column}' in the stream (columns: {})",
                        names.join(", ")
                    ),
                ));
            };
            props[index].insert(prop.to_string(), (key.to_string(), value.to_string()));
        }
        let mut columns = Vec::with_capacity(fields.len());
        let mut total = rows;
        for (field, props) in fields.iter().zip(&props) {
            let (column, limit) = Column::new(field, props, seed)?;
            total = match (total, limit) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            columns.push(column);
        }
        Ok(DatagenReader {
            schema,
            columns,
            total,
            pacer,
            batch_size,
            row: 0,
            metrics,
        })
    }

    /// Rows `[from, from + n)`.
    fn batch(&self, from: u64, n: u64) -> Result<RecordBatch, ConnectorError> {
        let rows = from..from.saturating_add(n);
        let arrays = self
            .columns
            .iter()
            .map(|c| c.array(rows.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(n as usize));
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            arrays,
            &options,
        )?)
    }
}

impl SourceReader for DatagenReader {
    fn poll(&mut self) -> Result<Poll, ConnectorError> {
        let mut n = self.batch_size;
        if let Some(total) = self.total {
            if self.row >= total {
                return Ok(Poll::End);
            }
            n = n.min(total - self.row);
        }
        if let Some(pacer) = &mut self.pacer {
            match pacer.due(self.row, self.row, n) {
                Ok(due) => n = n.min(due.saturating_sub(self.row)),
                Err(wait) => return Ok(Poll::Idle(wait)),
            }
        }
        let batch = self.batch(self.row, n)?;
        self.row = self.row.saturating_add(n);
        self.metrics.rows.fetch_add(n, Ordering::Relaxed);
        Ok(Poll::Batch(batch))
    }

    fn offset(&self) -> serde_json::Value {
        json!({ "row": self.row })
    }

    fn seek(&mut self, offset: &serde_json::Value) -> Result<(), ConnectorError> {
        let row = offset.get("row").and_then(|r| r.as_u64()).ok_or_else(|| {
            ConnectorError::InvalidOffset(format!("expected {{\"row\": n}}, got {offset}"))
        })?;
        if self.total.is_some_and(|total| row > total) {
            return Err(ConnectorError::InvalidOffset(format!(
                "row {row} is past the end ({} rows)",
                self.total.unwrap_or_default()
            )));
        }
        self.row = row;
        if let Some(p) = &mut self.pacer {
            p.reset();
        }
        Ok(())
    }

    fn always_available(&self) -> bool {
        self.total.is_none() && self.pacer.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Decimal128Array, Int64Array, StringArray};
    use datafusion::arrow::compute::{cast, concat_batches};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::time::Duration;

    fn options(pairs: &[(&str, &str)]) -> ConnectorOptions {
        ConnectorOptions::of("datagen", pairs)
    }

    fn reader(schema: &SchemaRef, pairs: &[(&str, &str)]) -> Result<DatagenReader, ConnectorError> {
        DatagenReader::new(
            &options(pairs),
            schema.clone(),
            Arc::new(SourceMetrics::new()),
        )
    }

    fn all_types() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("small", DataType::Int16, true),
            Field::new("i", DataType::Int32, true),
            Field::new("f32", DataType::Float32, true),
            Field::new("f64", DataType::Float64, true),
            Field::new("amount", DataType::Decimal128(10, 2), true),
            Field::new("name", DataType::Utf8, true),
            Field::new("view", DataType::Utf8View, true),
            Field::new("flag", DataType::Boolean, true),
            Field::new("day", DataType::Date32, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new(
                "tz",
                DataType::Timestamp(TimeUnit::Microsecond, Some("+02:00".into())),
                true,
            ),
        ]))
    }

    /// Reads until End (or `limit` rows), concatenated.
    fn read_all(r: &mut DatagenReader, limit: usize) -> RecordBatch {
        let mut batches = Vec::new();
        let mut n = 0;
        while n < limit {
            match r.poll().unwrap() {
                Poll::Batch(b) => {
                    assert_eq!(b.schema(), r.schema);
                    assert!(b.num_rows() > 0);
                    n += b.num_rows();
                    batches.push(b);
                }
                Poll::End => break,
                Poll::Idle(_) => panic!("unthrottled datagen idled"),
            }
        }
        concat_batches(&r.schema, &batches).unwrap()
    }

    fn int64s(batch: &RecordBatch, column: usize) -> Vec<Option<i64>> {
        let c = cast(batch.column(column), &DataType::Int64).unwrap();
        c.as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .iter()
            .collect()
    }

    #[test]
    fn deterministic_whatever_the_batch_size() {
        let schema = all_types();
        let opts = [
            ("rows", "100"),
            ("seed", "42"),
            ("fields.name.null-rate", "0.3"),
        ];
        let mut small =
            reader(&schema, &[opts.as_slice(), &[("batch.size", "7")]].concat()).unwrap();
        let mut large = reader(&schema, &opts).unwrap();
        let a = read_all(&mut small, usize::MAX);
        let b = read_all(&mut large, usize::MAX);
        assert_eq!(a.num_rows(), 100);
        assert_eq!(a, b);
        assert!(matches!(small.poll().unwrap(), Poll::End));
        assert_eq!(small.offset(), json!({"row": 100}));
        assert_eq!(small.metrics.rows.load(Ordering::Relaxed), 100);

        let mut other_seed = reader(&schema, &[("rows", "100"), ("seed", "43")]).unwrap();
        let c = read_all(&mut other_seed, usize::MAX);
        assert_ne!(int64s(&a, 0), int64s(&c, 0));
        // Same seed and column name, other columns: the same values.
        let only_id = Arc::new(Schema::new(vec![Field::new("ID", DataType::Int64, false)]));
        let mut r = reader(&only_id, &[("rows", "100"), ("seed", "42")]).unwrap();
        assert_eq!(int64s(&read_all(&mut r, usize::MAX), 0), int64s(&a, 0));
    }

    #[test]
    fn seek_restores_exactly() {
        let schema = all_types();
        let mut r = reader(&schema, &[("batch.size", "10")]).unwrap();
        assert!(r.always_available());
        let first = read_all(&mut r, 30);
        assert_eq!(r.offset(), json!({"row": 30}));
        let mut again = reader(&schema, &[("batch.size", "5")]).unwrap();
        again.seek(&json!({"row": 20})).unwrap();
        let rest = read_all(&mut again, 10);
        assert_eq!(rest, first.slice(20, 10));
        assert!(matches!(
            again.seek(&json!({"rows": 1})),
            Err(ConnectorError::InvalidOffset(_))
        ));
        let mut bounded = reader(&schema, &[("rows", "5")]).unwrap();
        assert!(bounded.seek(&json!({"row": 5})).is_ok());
        assert!(matches!(bounded.poll().unwrap(), Poll::End));
        assert!(matches!(
            bounded.seek(&json!({"row": 6})),
            Err(ConnectorError::InvalidOffset(_))
        ));
    }

    #[test]
    fn sequence_ends_the_source() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("label", DataType::Utf8, false),
            Field::new("price", DataType::Decimal128(6, 2), false),
        ]));
        let opts = [
            ("fields.id.kind", "sequence"),
            ("fields.id.start", "5"),
            ("fields.id.end", "9"),
            ("fields.label.kind", "sequence"),
            ("fields.label.start", "100"),
            ("fields.price.kind", "sequence"),
            ("fields.price.start", "-1"),
            ("fields.price.end", "9999"),
            ("batch.size", "3"),
        ];
        assert!(is_bounded(&options(&opts)).unwrap());
        let mut r = reader(&schema, &opts).unwrap();
        assert!(!r.always_available());
        let Poll::Batch(b) = r.poll().unwrap() else {
            panic!()
        };
        assert_eq!(int64s(&b, 0), vec![Some(5), Some(6), Some(7)]);
        let Poll::Batch(b) = r.poll().unwrap() else {
            panic!()
        };
        assert_eq!(int64s(&b, 0), vec![Some(8), Some(9)]);
        let labels = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(
            labels.iter().collect::<Vec<_>>(),
            vec![Some("103"), Some("104")]
        );
        let prices = b
            .column(2)
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .unwrap();
        assert_eq!(prices.values(), &[200, 300]); // 2.00, 3.00
        assert!(matches!(r.poll().unwrap(), Poll::End));
        assert_eq!(r.offset(), json!({"row": 5}));

        // `rows` below the sequence length wins (Flink's `number-of-rows`).
        let mut r = reader(
            &schema,
            &[opts.as_slice(), &[("number-of-rows", "2")]].concat(),
        )
        .unwrap();
        assert_eq!(
            int64s(&read_all(&mut r, usize::MAX), 0),
            vec![Some(5), Some(6)]
        );

        // A sequence of a narrow type needs an end; Int64 does not.
        let err = reader(&schema, &[("fields.id.kind", "sequence")]).err();
        assert!(matches!(err, Some(ConnectorError::MissingOption(o)) if o == "fields.id.end"));
        let wide = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let seq = [("fields.n.kind", "sequence"), ("fields.n.start", "-2")];
        assert!(!is_bounded(&options(&seq)).unwrap());
        let mut r = reader(&wide, &[seq.as_slice(), &[("batch.size", "3")]].concat()).unwrap();
        assert!(r.always_available());
        assert_eq!(
            int64s(&read_all(&mut r, 3), 0),
            vec![Some(-2), Some(-1), Some(0)]
        );
    }

    #[test]
    fn timestamps_step_from_start() {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
            Field::new(
                "epoch",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                false,
            ),
            Field::new(
                "secs",
                DataType::Timestamp(TimeUnit::Second, Some("UTC".into())),
                false,
            ),
        ]));
        let mut r = reader(
            &schema,
            &[
                ("fields.ts.start", "2024-01-01 00:00:00"),
                ("fields.ts.step", "100 ms"),
                ("fields.secs.kind", "timestamp"),
                ("fields.secs.start", "2024-01-01T00:00:10Z"),
                ("fields.secs.step", "2 minutes"),
                ("rows", "3"),
            ],
        )
        .unwrap();
        let b = read_all(&mut r, usize::MAX);
        assert_eq!(b.schema(), schema);
        // 2024-01-01 00:00:00 UTC is 1_704_067_200 s after the epoch.
        assert_eq!(
            int64s(&b, 0),
            vec![
                Some(1_704_067_200_000),
                Some(1_704_067_200_100),
                Some(1_704_067_200_200)
            ]
        );
        assert_eq!(
            int64s(&b, 1),
            vec![Some(0), Some(1_000_000_000), Some(2_000_000_000)]
        );
        assert_eq!(
            int64s(&b, 2),
            vec![
                Some(1_704_067_210),
                Some(1_704_067_330),
                Some(1_704_067_450)
            ]
        );
        r.seek(&json!({"row": 1})).unwrap();
        let Poll::Batch(b) = r.poll().unwrap() else {
            panic!()
        };
        assert_eq!(
            int64s(&b, 0),
            vec![Some(1_704_067_200_100), Some(1_704_067_200_200)]
        );
    }

    #[test]
    fn rate_limit_yields_idle() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let mut r = reader(&schema, &[("rows-per-second", "2")]).unwrap();
        assert!(!r.always_available());
        // The first row is due at once, the next 500 ms later.
        let Poll::Batch(b) = r.poll().unwrap() else {
            panic!()
        };
        assert_eq!(b.num_rows(), 1);
        let Poll::Idle(wait) = r.poll().unwrap() else {
            panic!()
        };
        assert!(
            wait > Duration::from_millis(250) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        std::thread::sleep(wait);
        let Poll::Batch(b) = r.poll().unwrap() else {
            panic!()
        };
        // One row, unless this thread was held up for another 500 ms.
        assert!(b.num_rows() >= 1);
        assert_eq!(r.offset(), json!({"row": 1 + b.num_rows()}));

        // A fast rate waits for about 10 ms worth of rows, never a whole batch.
        let mut r = reader(&schema, &[("rate", "1000"), ("batch.size", "1000000")]).unwrap();
        assert!(matches!(r.poll().unwrap(), Poll::Idle(d) if d <= Duration::from_millis(10)));
        std::thread::sleep(Duration::from_millis(30));
        let Poll::Batch(b) = r.poll().unwrap() else {
            panic!()
        };
        assert!((10..100_000).contains(&b.num_rows()), "{}", b.num_rows());
        // Rate 0 means unlimited.
        assert!(reader(&schema, &[("rate", "0")])
            .unwrap()
            .always_available());
    }

    #[test]
    fn bad_options_name_the_option() {
        let schema = all_types();
        let option_of = |pairs: &[(&str, &str)]| match reader(&schema, pairs) {
            Err(ConnectorError::InvalidOption { option, .. }) => option,
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("accepted {pairs:?}"),
        };
        assert_eq!(
            option_of(&[("fields.nope.kind", "random")]),
            "fields.nope.kind"
        );
        assert_eq!(option_of(&[("fields.id", "random")]), "fields.id");
        assert_eq!(option_of(&[("fields.id.kind", "dice")]), "fields.id.kind");
        assert_eq!(
            option_of(&[("fields.small.max", "40000")]),
            "fields.small.max"
        );
        assert_eq!(option_of(&[("rows", "-1")]), "rows");
        assert_eq!(option_of(&[("number-of-rows", "x")]), "number-of-rows");
        assert_eq!(option_of(&[("rate", "fast")]), "rate");
        assert_eq!(option_of(&[("rows-per-second", "-5")]), "rows-per-second");
        assert_eq!(option_of(&[("seed", "1.5")]), "seed");
        assert_eq!(option_of(&[("batch.size", "0")]), "batch.size");
        let odd = Arc::new(Schema::new(vec![Field::new("b", DataType::Binary, true)]));
        assert!(matches!(
            reader(&odd, &[]),
            Err(ConnectorError::UnsupportedType { .. })
        ));
        // Column names match case-insensitively; negative seeds are accepted.
        let mixed = Arc::new(Schema::new(vec![Field::new(
            "Price",
            DataType::Int64,
            true,
        )]));
        assert!(reader(&mixed, &[("fields.price.min", "1"), ("seed", "-7")]).is_ok());
        // Through the public entry points.
        let opts = options(&[("fields.nope.min", "1")]);
        assert!(crate::connectors::validate(&opts, &schema).is_err());
        assert!(crate::connectors::validate(&options(&[]), &schema).is_ok());
        assert!(!crate::connectors::is_bounded(&options(&[])).unwrap());
        assert!(crate::connectors::is_bounded(&options(&[("number-of-rows", "1")])).unwrap());
    }

    #[test]
    fn empty_schema_still_counts_rows() {
        let empty = Arc::new(Schema::empty());
        let mut r = reader(&empty, &[("rows", "3")]).unwrap();
        assert_eq!(read_all(&mut r, usize::MAX).num_rows(), 3);
    }
}
