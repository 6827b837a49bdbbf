//! The `nexmark` connector: the standard Nexmark auction generator (the
//! `nexmark` crate, a port of the reference Java generator used by Flink's
//! and RisingWave's Nexmark benchmarks).
//!
//! The generator produces one sequence of events, in the reference
//! proportions of 1 person to 3 auctions to 46 bids in every 50 events. A
//! stream reads one table of it: its reader walks the same sequence and keeps
//! the events of its table, so that `person`, `auction` and `bid` streams
//! declared with the same options see consistent data (bids refer to
//! auctions and people that the other streams produce), as in the reference.
//!
//! Event number `n` (0-based, across all three tables) is a pure function of
//! `n` and the options: output does not depend on batching or timing, and
//! the offset `{"event": n}` (the number of generator events consumed) is
//! restored exactly by `seek`.
//!
//! Unthrottled (`nexmark.rate` 0), a stream's batches are made ahead of the
//! job on as many threads as the job's parallelism, and at parallelism 1 by
//! the job too when it would wait (`ahead`); throttled, the job makes each
//! batch when it is due.
//!
//! Options:
//!
//! | option | meaning | default |
//! | --- | --- | --- |
//! | `nexmark.table` | `person`, `auction` or `bid` (required) | |
//! | `nexmark.events` | generator events in all (all three tables); the stream ends after them | unbounded |
//! | `nexmark.rate` | generator events per second of wall-clock time (all tables); `0` = as fast as possible | `0` |
//! | `nexmark.event-rate` | generator events per second of *event time*: event `n` is stamped `base-time + n / event-rate` | `10000` (the reference) |
//! | `nexmark.base-time` | timestamp of event 0, as `'2024-01-01 00:00:00'` (UTC) or milliseconds since the epoch | `2024-01-01 00:00:00` |
//! | `nexmark.active-people` | people considered active for new auctions and bids | `1000` |
//! | `nexmark.in-flight-auctions` | average auctions open at a time | `100` |
//! | `batch.size` | most rows per batch | `4096` (as the file connector) |
//!
//! Columns are those of the standard schema (Flink's `nexmark` connector),
//! matched by name, case-insensitively; a stream may declare any subset in
//! any order, with any type Arrow can cast to:
//!
//! - `person(id, name, email_address, credit_card, city, state, date_time, extra)`
//! - `auction(id, item_name, description, initial_bid, reserve, date_time, expires, seller, category, extra)`
//! - `bid(auction, bidder, price, channel, url, date_time, extra)`
//!
//! Ids and prices are `BIGINT`, `date_time` and `expires` `TIMESTAMP(3)`,
//! the rest `VARCHAR`. Event time (`date_time`) never decreases; the
//! reference queries declare `WATERMARK FOR date_time AS date_time -
//! INTERVAL '4' SECOND`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ::nexmark::config::NexmarkConfig;
use ::nexmark::event::{Auction, Bid, Event, EventType, Person};
use ::nexmark::EventGenerator;
use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, Int64Array, LargeStringArray, RecordBatch, RecordBatchOptions,
    StringArray, StringViewArray, TimestampMillisecondArray,
};
use datafusion::arrow::compute::{can_cast_types, cast};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use serde_json::json;

use super::pacer::Pacer;
use ahead::Ahead;

mod ahead;

use super::options::invalid;
use super::{
    with_unread_as_null, ConnectorError, ConnectorOptions, Poll, SourceMetrics, SourceReader,
};

const TABLE: &str = "nexmark.table";
const EVENTS: &str = "nexmark.events";
const RATE: &str = "nexmark.rate";
const EVENT_RATE: &str = "nexmark.event-rate";
const BASE_TIME: &str = "nexmark.base-time";
const ACTIVE_PEOPLE: &str = "nexmark.active-people";
const IN_FLIGHT_AUCTIONS: &str = "nexmark.in-flight-auctions";
const OPTIONS: &[&str] = &[
    TABLE,
    EVENTS,
    RATE,
    EVENT_RATE,
    BASE_TIME,
    ACTIVE_PEOPLE,
    IN_FLIGHT_AUCTIONS,
];
const DEFAULT_BATCH_SIZE: u64 = 4096;
/// 2024-01-01 00:00:00 UTC, in milliseconds since the epoch.
const DEFAULT_BASE_TIME: u64 = 1_704_067_200_000;

/// Person, auction and bid events in every [`BLOCK`] generator events.
const PROPORTIONS: [u64; 3] = [1, 3, 46];
const BLOCK: u64 = 50;

/// Whether the stream ends: `nexmark.events` is set.
pub(crate) fn is_bounded(options: &ConnectorOptions) -> Result<bool, ConnectorError> {
    Ok(options.get_u64(&[EVENTS])?.is_some())
}

/// The native type of a column of the standard schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
    Time,
}

impl Kind {
    fn data_type(self) -> DataType {
        match self {
            Kind::Int => DataType::Int64,
            Kind::Text => DataType::Utf8,
            Kind::Time => DataType::Timestamp(TimeUnit::Millisecond, None),
        }
    }
}

const PERSON: &[(&str, Kind)] = &[
    ("id", Kind::Int),
    ("name", Kind::Text),
    ("email_address", Kind::Text),
    ("credit_card", Kind::Text),
    ("city", Kind::Text),
    ("state", Kind::Text),
    ("date_time", Kind::Time),
    ("extra", Kind::Text),
];

const AUCTION: &[(&str, Kind)] = &[
    ("id", Kind::Int),
    ("item_name", Kind::Text),
    ("description", Kind::Text),
    ("initial_bid", Kind::Int),
    ("reserve", Kind::Int),
    ("date_time", Kind::Time),
    ("expires", Kind::Time),
    ("seller", Kind::Int),
    ("category", Kind::Int),
    ("extra", Kind::Text),
];

const BID: &[(&str, Kind)] = &[
    ("auction", Kind::Int),
    ("bidder", Kind::Int),
    ("price", Kind::Int),
    ("channel", Kind::Text),
    ("url", Kind::Text),
    ("date_time", Kind::Time),
    ("extra", Kind::Text),
];

/// One of the three tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Table {
    Person,
    Auction,
    Bid,
}

impl Table {
    fn parse(value: &str) -> Result<Self, ConnectorError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "person" => Ok(Table::Person),
            "auction" => Ok(Table::Auction),
            "bid" => Ok(Table::Bid),
            _ => Err(invalid(
                TABLE,
                format!("expected 'person', 'auction' or 'bid', got '{value}'"),
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Table::Person => "person",
            Table::Auction => "auction",
            Table::Bid => "bid",
        }
    }

    fn columns(self) -> &'static [(&'static str, Kind)] {
        match self {
            Table::Person => PERSON,
            Table::Auction => AUCTION,
            Table::Bid => BID,
        }
    }

    fn event_type(self) -> EventType {
        match self {
            Table::Person => EventType::Person,
            Table::Auction => EventType::Auction,
            Table::Bid => EventType::Bid,
        }
    }

    /// The positions `[lo, hi)` of this table's events in each block.
    fn span(self) -> (u64, u64) {
        let [p, a, b] = PROPORTIONS;
        match self {
            Table::Person => (0, p),
            Table::Auction => (p, p + a),
            Table::Bid => (p + a, p + a + b),
        }
    }

    /// How many of the first `events` generator events are of this table.
    fn count_before(self, events: u64) -> u64 {
        let (lo, hi) = self.span();
        (events / BLOCK) * (hi - lo) + (events % BLOCK).clamp(lo, hi) - lo
    }
}

/// Events of one table, gathered for a batch.
enum Rows {
    Person(Vec<Person>),
    Auction(Vec<Auction>),
    Bid(Vec<Bid>),
}

impl Rows {
    fn new(table: Table, capacity: usize) -> Self {
        match table {
            Table::Person => Rows::Person(Vec::with_capacity(capacity)),
            Table::Auction => Rows::Auction(Vec::with_capacity(capacity)),
            Table::Bid => Rows::Bid(Vec::with_capacity(capacity)),
        }
    }

    fn len(&self) -> usize {
        match self {
            Rows::Person(v) => v.len(),
            Rows::Auction(v) => v.len(),
            Rows::Bid(v) => v.len(),
        }
    }

    fn push(&mut self, event: Event) {
        match (self, event) {
            (Rows::Person(v), Event::Person(e)) => v.push(e),
            (Rows::Auction(v), Event::Auction(e)) => v.push(e),
            (Rows::Bid(v), Event::Bid(e)) => v.push(e),
            // The generator is filtered by type.
            (_, e) => unreachable!("nexmark generator returned a {:?}", e.event_type()),
        }
    }

    /// Column `index` of the table's standard schema, as `data_type`.
    fn column(&self, index: usize, data_type: &DataType) -> Result<ArrayRef, ConnectorError> {
        match self {
            Rows::Person(v) => match index {
                0 => ints(v.iter().map(|e| e.id), data_type),
                1 => texts(v.iter().map(|e| e.name.as_str()), data_type),
                2 => texts(v.iter().map(|e| e.email_address.as_str()), data_type),
                3 => texts(v.iter().map(|e| e.credit_card.as_str()), data_type),
                4 => texts(v.iter().map(|e| e.city.as_str()), data_type),
                5 => texts(v.iter().map(|e| e.state.as_str()), data_type),
                6 => times(v.iter().map(|e| e.date_time), data_type),
                _ => texts(v.iter().map(|e| e.extra.as_str()), data_type),
            },
            Rows::Auction(v) => match index {
                0 => ints(v.iter().map(|e| e.id), data_type),
                1 => texts(v.iter().map(|e| e.item_name.as_str()), data_type),
                2 => texts(v.iter().map(|e| e.description.as_str()), data_type),
                3 => ints(v.iter().map(|e| e.initial_bid), data_type),
                4 => ints(v.iter().map(|e| e.reserve), data_type),
                5 => times(v.iter().map(|e| e.date_time), data_type),
                6 => times(v.iter().map(|e| e.expires), data_type),
                7 => ints(v.iter().map(|e| e.seller), data_type),
                8 => ints(v.iter().map(|e| e.category), data_type),
                _ => texts(v.iter().map(|e| e.extra.as_str()), data_type),
            },
            Rows::Bid(v) => match index {
                0 => ints(v.iter().map(|e| e.auction), data_type),
                1 => ints(v.iter().map(|e| e.bidder), data_type),
                2 => ints(v.iter().map(|e| e.price), data_type),
                3 => texts(v.iter().map(|e| e.channel.as_str()), data_type),
                4 => texts(v.iter().map(|e| e.url.as_str()), data_type),
                5 => times(v.iter().map(|e| e.date_time), data_type),
                _ => texts(v.iter().map(|e| e.extra.as_str()), data_type),
            },
        }
    }
}

/// `array` as `data_type`, cast only if it differs.
fn cast_to(array: ArrayRef, data_type: &DataType) -> Result<ArrayRef, ConnectorError> {
    if array.data_type() == data_type {
        Ok(array)
    } else {
        Ok(cast(&array, data_type)?)
    }
}

fn ints(
    values: impl Iterator<Item = usize>,
    data_type: &DataType,
) -> Result<ArrayRef, ConnectorError> {
    let array = Int64Array::from_iter_values(values.map(|v| v as i64));
    cast_to(Arc::new(array), data_type)
}

/// Strings built directly in the declared string type; other types by cast.
fn texts<'a>(
    values: impl Iterator<Item = &'a str>,
    data_type: &DataType,
) -> Result<ArrayRef, ConnectorError> {
    Ok(match data_type {
        DataType::Utf8View => Arc::new(StringViewArray::from_iter_values(values)),
        DataType::LargeUtf8 => Arc::new(LargeStringArray::from_iter_values(values)),
        _ => cast_to(Arc::new(StringArray::from_iter_values(values)), data_type)?,
    })
}

/// Milliseconds since the epoch (UTC). A declared time zone is kept: the
/// instants are the same in every zone.
fn times(
    values: impl Iterator<Item = u64>,
    data_type: &DataType,
) -> Result<ArrayRef, ConnectorError> {
    let array = TimestampMillisecondArray::from_iter_values(values.map(|v| v as i64));
    let array = match data_type {
        DataType::Timestamp(_, tz) => array.with_timezone_opt(tz.clone()),
        _ => array,
    };
    cast_to(Arc::new(array), data_type)
}

/// Makes batches of one table's events: what a batch holds depends only on
/// the event it starts at, so batches can be made on any thread.
#[derive(Clone)]
struct Maker {
    table: Table,
    /// The declared columns.
    schema: SchemaRef,
    /// For each declared column, its index in the table's standard schema,
    /// or None when the job does not read it.
    columns: Vec<Option<usize>>,
    /// The schema of the batches made (unread columns as type Null).
    output: SchemaRef,
    batch_size: u64,
}

impl Maker {
    /// The next batch of `generator`'s events before generator event `due`
    /// (at most `batch_size` rows), and the generator events consumed by
    /// then; None when no event comes before `due`.
    fn make(
        &self,
        generator: &mut EventGenerator,
        due: u64,
    ) -> Result<Option<(RecordBatch, u64)>, ConnectorError> {
        let mut next = generator.global_offset();
        if next >= due {
            return Ok(None);
        }
        let mut rows = Rows::new(self.table, self.batch_size.min(1 << 16) as usize);
        let mut consumed = next;
        while next < due && (rows.len() as u64) < self.batch_size {
            rows.push(generator.next().expect("the generator never ends"));
            consumed = next + 1;
            next = generator.global_offset();
        }
        let arrays = self
            .schema
            .fields()
            .iter()
            .zip(&self.columns)
            .map(|(field, &index)| match index {
                Some(index) => rows.column(index, field.data_type()),
                None => Ok(new_null_array(&DataType::Null, rows.len())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
        let batch = RecordBatch::try_new_with_options(self.output.clone(), arrays, &options)?;
        Ok(Some((batch, consumed)))
    }
}

/// Reads one table of the Nexmark event sequence.
pub(crate) struct NexmarkReader {
    maker: Maker,
    config: NexmarkConfig,
    /// Generator events in all, if bounded.
    total: Option<u64>,
    /// Generator events per second, if limited.
    pacer: Option<Pacer>,
    /// Generator events consumed: every event before this one has been
    /// returned (if of this table) or skipped.
    event: u64,
    /// Yields this table's events from `event` on (a paced stream).
    generator: EventGenerator,
    /// Threads making batches ahead of the job (an unpaced stream), and
    /// how many to start.
    ahead: Option<Ahead>,
    threads: usize,
    metrics: Arc<SourceMetrics>,
}

impl NexmarkReader {
    pub(crate) fn new(
        options: &ConnectorOptions,
        schema: SchemaRef,
        metrics: Arc<SourceMetrics>,
    ) -> Result<Self, ConnectorError> {
        for (key, _) in options.iter() {
            if key.starts_with("nexmark.") && !OPTIONS.contains(&key) {
                return Err(invalid(
                    key,
                    format!("unknown option (expected one of {})", OPTIONS.join(", ")),
                ));
            }
        }
        let table = Table::parse(options.require(TABLE)?)?;
        let total = options.get_u64(&[EVENTS])?;
        let pacer = Pacer::from_options(options, &[RATE], "events")?;
        let batch_size = options
            .get_u64(&["batch.size"])?
            .unwrap_or(DEFAULT_BATCH_SIZE);
        if batch_size == 0 {
            return Err(invalid("batch.size", "must be greater than zero"));
        }

        let mut config = NexmarkConfig {
            base_time: DEFAULT_BASE_TIME,
            ..NexmarkConfig::default()
        };
        if let Some(event_rate) = positive(options, EVENT_RATE)? {
            config.first_rate = event_rate;
            config.next_rate = event_rate;
        }
        if let Some(value) = options.get(BASE_TIME) {
            config.base_time = parse_base_time(value)?;
        }
        if let Some(n) = positive(options, ACTIVE_PEOPLE)? {
            config.active_people = n;
        }
        if let Some(n) = positive(options, IN_FLIGHT_AUCTIONS)? {
            config.in_flight_auctions = n;
        }

        let standard = table.columns();
        let mut columns = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let name = field.name();
            let Some(index) = standard
                .iter()
                .position(|(c, _)| c.eq_ignore_ascii_case(name))
            else {
                let names: Vec<&str> = standard.iter().map(|(c, _)| *c).collect();
                return Err(invalid(
                    TABLE,
                    format!(
                        "the nexmark {} table has no column '{name}' (columns: {})",
                        table.name(),
                        names.join(", ")
                    ),
                ));
            };
            if !can_cast_types(&standard[index].1.data_type(), field.data_type()) {
                return Err(ConnectorError::UnsupportedType {
                    connector: "nexmark".to_string(),
                    column: name.clone(),
                    data_type: field.data_type().to_string(),
                });
            }
            columns.push(Some(index));
        }

        let generator = Self::generator(&config, table, 0);
        Ok(NexmarkReader {
            maker: Maker {
                output: schema.clone(),
                schema,
                table,
                columns,
                batch_size,
            },
            config,
            total,
            pacer,
            event: 0,
            generator,
            ahead: None,
            threads: 1,
            metrics,
        })
    }

    /// A generator of `table`'s events from generator event `event` on.
    fn generator(config: &NexmarkConfig, table: Table, event: u64) -> EventGenerator {
        EventGenerator::new(config.clone())
            .with_type_filter(table.event_type())
            .with_offset(table.count_before(event))
    }

    /// A generator of this stream's events from generator event `event` on.
    #[cfg(test)]
    fn generator_at(&self, event: u64) -> EventGenerator {
        Self::generator(&self.config, self.maker.table, event)
    }

    /// Generator events that may be produced now: all before the returned
    /// number (or `Err(wait)`, if too few are due yet).
    fn due(&mut self, next: u64) -> Result<u64, Duration> {
        let Some(pacer) = &mut self.pacer else {
            return Ok(u64::MAX);
        };
        let remaining = self.total.map_or(u64::MAX, |t| t.saturating_sub(next));
        pacer.due(self.event, next, self.maker.batch_size.min(remaining))
    }
}

/// A positive integer option.
fn positive(options: &ConnectorOptions, key: &str) -> Result<Option<usize>, ConnectorError> {
    match options.get_u64(&[key])? {
        Some(0) => Err(invalid(key, "must be greater than zero")),
        Some(n) => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        None => Ok(None),
    }
}

/// Milliseconds since the epoch, or a timestamp (UTC) Arrow can parse.
fn parse_base_time(value: &str) -> Result<u64, ConnectorError> {
    let value = value.trim();
    if let Ok(ms) = value.parse::<u64>() {
        return Ok(ms);
    }
    let bad = || {
        invalid(
            BASE_TIME,
            format!(
                "expected a timestamp such as '2024-01-01 00:00:00' or milliseconds since the epoch, got '{value}'"
            ),
        )
    };
    let text: ArrayRef = Arc::new(StringArray::from(vec![value]));
    let parsed =
        cast(&text, &DataType::Timestamp(TimeUnit::Millisecond, None)).map_err(|_| bad())?;
    let parsed = parsed
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .filter(|a| a.is_valid(0))
        .ok_or_else(bad)?;
    u64::try_from(parsed.value(0)).map_err(|_| bad())
}

impl SourceReader for NexmarkReader {
    fn poll(&mut self) -> Result<Poll, ConnectorError> {
        let end = self.total.unwrap_or(u64::MAX);
        let made = match self.pacer {
            None => {
                let ahead = match &mut self.ahead {
                    Some(ahead) => ahead,
                    None => {
                        let generator = Self::generator(&self.config, self.maker.table, self.event);
                        let ahead = Ahead::start(&self.maker, generator, end, self.threads)?;
                        self.ahead.insert(ahead)
                    }
                };
                ahead.take()?
            }
            Some(_) => {
                let next = self.generator.global_offset();
                let due = match self.due(next) {
                    Ok(due) => due.min(end),
                    Err(wait) if next < end => return Ok(Poll::Idle(wait)),
                    Err(_) => end,
                };
                self.maker.make(&mut self.generator, due)?
            }
        };
        let Some((batch, consumed)) = made else {
            self.event = self.event.max(end);
            return Ok(Poll::End);
        };
        self.event = consumed;
        let rows = batch.num_rows() as u64;
        self.metrics.rows.fetch_add(rows, Ordering::Relaxed);
        Ok(Poll::Batch(batch))
    }

    fn set_read_columns(&mut self, read: &[bool]) {
        let m = &mut self.maker;
        if read.len() == m.columns.len() {
            m.output = with_unread_as_null(&m.schema, read);
            for (column, &r) in m.columns.iter_mut().zip(read) {
                *column = column.filter(|_| r);
            }
            // Batches made ahead have every column.
            self.ahead = None;
        }
    }

    fn set_decode_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
        self.ahead = None;
    }

    fn offset(&self) -> serde_json::Value {
        json!({ "event": self.event })
    }

    fn seek(&mut self, offset: &serde_json::Value) -> Result<(), ConnectorError> {
        let event = offset
            .get("event")
            .and_then(|e| e.as_u64())
            .ok_or_else(|| {
                ConnectorError::InvalidOffset(format!("expected {{\"event\": n}}, got {offset}"))
            })?;
        if let Some(total) = self.total.filter(|total| event > *total) {
            return Err(ConnectorError::InvalidOffset(format!(
                "event {event} is past the end ({total} events)"
            )));
        }
        self.event = event;
        self.generator = Self::generator(&self.config, self.maker.table, event);
        // What the threads made ahead is from before the seek.
        self.ahead = None;
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
pub(super) mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int32Array};
    use datafusion::arrow::compute::concat_batches;
    use datafusion::arrow::datatypes::{Field, Int64Type, Schema, TimestampMillisecondType};

    fn options(pairs: &[(&str, &str)]) -> ConnectorOptions {
        ConnectorOptions::of("nexmark", pairs)
    }

    fn reader(schema: &SchemaRef, pairs: &[(&str, &str)]) -> Result<NexmarkReader, ConnectorError> {
        NexmarkReader::new(
            &options(pairs),
            schema.clone(),
            Arc::new(SourceMetrics::new()),
        )
    }

    /// A reader of the whole bid table.
    pub(super) fn bid_reader() -> NexmarkReader {
        reader(&schema(Table::Bid), &[("nexmark.table", "bid")]).unwrap()
    }

    fn schema(table: Table) -> SchemaRef {
        let fields = table.columns().iter().map(|(name, kind)| {
            let data_type = match kind {
                Kind::Text => DataType::Utf8View,
                other => other.data_type(),
            };
            Field::new(*name, data_type, true)
        });
        Arc::new(Schema::new(fields.collect::<Vec<_>>()))
    }

    /// Reads until End (or `limit` rows), concatenated.
    fn read_all(r: &mut NexmarkReader, limit: usize) -> RecordBatch {
        let mut batches = Vec::new();
        let mut n = 0;
        while n < limit {
            match r.poll().unwrap() {
                Poll::Batch(b) => {
                    assert_eq!(b.schema(), r.maker.output);
                    assert!(b.num_rows() > 0);
                    n += b.num_rows();
                    batches.push(b);
                }
                Poll::End => break,
                Poll::Idle(_) => panic!("unthrottled nexmark idled"),
            }
        }
        concat_batches(&r.maker.output, &batches).unwrap()
    }

    fn int64s(batch: &RecordBatch, column: &str) -> Vec<i64> {
        let c = cast(batch.column_by_name(column).unwrap(), &DataType::Int64).unwrap();
        c.as_primitive::<Int64Type>().values().to_vec()
    }

    #[test]
    fn tables_in_the_reference_proportions() {
        for (table, name, rows) in [
            (Table::Person, "person", 100),
            (Table::Auction, "auction", 300),
            (Table::Bid, "bid", 4600),
        ] {
            let opts = [("nexmark.table", name), ("nexmark.events", "5000")];
            assert!(is_bounded(&options(&opts)).unwrap());
            let mut r = reader(&schema(table), &opts).unwrap();
            assert!(!r.always_available());
            let b = read_all(&mut r, usize::MAX);
            assert_eq!(b.num_rows(), rows, "{name}");
            assert_eq!(r.metrics.rows.load(Ordering::Relaxed), rows as u64);
            assert!(matches!(r.poll().unwrap(), Poll::End));
            assert_eq!(r.offset(), json!({"event": 5000}));
            // Event time never decreases; event n is at n / 10 ms (10,000
            // events per second of event time).
            let times = int64s(&b, "date_time");
            assert!(times.windows(2).all(|w| w[0] <= w[1]));
            assert_eq!(
                times[0] - DEFAULT_BASE_TIME as i64,
                (table.span().0 / 10) as i64
            );
            assert!(*times.last().unwrap() <= DEFAULT_BASE_TIME as i64 + 500);
        }
        // Every 50 events: ids of people and auctions count up from 1000.
        let mut people = reader(
            &schema(Table::Person),
            &[("nexmark.table", "person"), ("nexmark.events", "5000")],
        )
        .unwrap();
        let ids = int64s(&read_all(&mut people, usize::MAX), "id");
        assert_eq!(ids, (1000..1100).collect::<Vec<_>>());
        let mut auctions = reader(
            &schema(Table::Auction),
            &[("nexmark.table", "auction"), ("nexmark.events", "5000")],
        )
        .unwrap();
        let auctions = read_all(&mut auctions, usize::MAX);
        assert_eq!(int64s(&auctions, "id"), (1000..1300).collect::<Vec<_>>());
        // Sellers and bidders are people, bids are for auctions that exist
        // (or are about to: the generator leads by a few ids).
        assert!(int64s(&auctions, "seller")
            .iter()
            .all(|s| (1000..1110).contains(s)));
        let mut bids = reader(
            &schema(Table::Bid),
            &[("nexmark.table", "bid"), ("nexmark.events", "5000")],
        )
        .unwrap();
        let bids = read_all(&mut bids, usize::MAX);
        assert!(int64s(&bids, "auction")
            .iter()
            .all(|a| (1000..1310).contains(a)));
        assert!(int64s(&bids, "bidder")
            .iter()
            .all(|b| (1000..1110).contains(b)));
    }

    #[test]
    fn the_reference_first_event() {
        // The nexmark crate's own test of event 0, at our base time.
        let mut r = reader(&schema(Table::Person), &[("nexmark.table", "person")]).unwrap();
        assert!(r.always_available());
        let b = read_all(&mut r, 1);
        let text = |c: &str| {
            b.column_by_name(c)
                .unwrap()
                .as_string_view()
                .value(0)
                .to_string()
        };
        assert_eq!(int64s(&b, "id")[0], 1000);
        assert_eq!(text("name"), "vicky noris");
        assert_eq!(text("email_address"), "yplkvgz@qbxfg.com");
        assert_eq!(text("credit_card"), "7878 5821 1864 2539");
        assert_eq!(text("city"), "cheyenne");
        assert_eq!(text("state"), "az");
        assert_eq!(int64s(&b, "date_time")[0], DEFAULT_BASE_TIME as i64);
    }

    #[test]
    fn unread_columns_come_as_null_the_others_unchanged() {
        let opts = [("nexmark.table", "bid"), ("nexmark.events", "3000")];
        let mut all = reader(&schema(Table::Bid), &opts).unwrap();
        let mut some = reader(&schema(Table::Bid), &opts).unwrap();
        // auction, price and date_time.
        some.set_read_columns(&[true, false, true, false, false, true, false]);
        let a = read_all(&mut all, usize::MAX);
        let b = read_all(&mut some, usize::MAX);
        assert!(a.num_rows() > 0);
        assert_eq!(a.num_rows(), b.num_rows());
        for i in 0..a.num_columns() {
            if [0, 2, 5].contains(&i) {
                assert_eq!(a.column(i), b.column(i));
            } else {
                assert_eq!(b.column(i).data_type(), &DataType::Null);
            }
        }
    }

    #[test]
    fn deterministic_whatever_the_batch_size() {
        for (table, name) in [
            (Table::Person, "person"),
            (Table::Auction, "auction"),
            (Table::Bid, "bid"),
        ] {
            let opts = [("nexmark.table", name), ("nexmark.events", "3000")];
            let mut small = reader(
                &schema(table),
                &[opts.as_slice(), &[("batch.size", "7")]].concat(),
            )
            .unwrap();
            let mut large = reader(&schema(table), &opts).unwrap();
            let a = read_all(&mut small, usize::MAX);
            let b = read_all(&mut large, usize::MAX);
            assert!(a.num_rows() > 0);
            assert_eq!(a, b, "{name}");
        }
    }

    #[test]
    fn the_same_batches_and_offsets_whatever_the_threads() {
        // Made ahead on 1 to 3 threads, or one at a time under a pace too
        // fast to wait for: the same batches, each followed by the same offset.
        let opts = [
            ("nexmark.table", "bid"),
            ("nexmark.events", "2000"),
            ("batch.size", "7"),
        ];
        let read = |threads: usize, paced: bool| {
            let rate = [("nexmark.rate", "1000000000")];
            let pairs = [opts.as_slice(), if paced { &rate[..] } else { &[] }].concat();
            let mut r = reader(&schema(Table::Bid), &pairs).unwrap();
            r.set_decode_threads(threads);
            let mut out = Vec::new();
            loop {
                match r.poll().unwrap() {
                    Poll::Batch(b) => out.push((b, r.offset())),
                    Poll::Idle(d) => std::thread::sleep(d),
                    Poll::End => break,
                }
            }
            assert_eq!(r.offset(), json!({"event": 2000}));
            out
        };
        let one = read(1, true);
        assert_eq!(one.len(), (2000 / 50 * 46usize).div_ceil(7));
        for threads in [1, 2, 3] {
            assert!(read(threads, false) == one, "{threads} threads");
        }
        // A seek drops what was made ahead from before it.
        let mut r = reader(&schema(Table::Bid), &opts).unwrap();
        r.set_decode_threads(2);
        for _ in 0..5 {
            r.poll().unwrap();
        }
        r.seek(&one[1].1).unwrap();
        let Poll::Batch(b) = r.poll().unwrap() else {
            panic!()
        };
        assert_eq!((b, r.offset()), one[2].clone());
    }

    #[test]
    fn seek_restores_exactly() {
        let bid = schema(Table::Bid);
        let mut r = reader(&bid, &[("nexmark.table", "bid"), ("batch.size", "10")]).unwrap();
        let mut offsets = Vec::new();
        let mut batches = Vec::new();
        for _ in 0..3 {
            let Poll::Batch(b) = r.poll().unwrap() else {
                panic!()
            };
            batches.push(b);
            offsets.push(r.offset());
        }
        // 10 bids are events 4..14; 20 are 4..24 (46 bids per 50 events).
        assert_eq!(offsets[0], json!({"event": 14}));
        assert_eq!(offsets[1], json!({"event": 24}));
        let mut again = reader(&bid, &[("nexmark.table", "bid"), ("batch.size", "3")]).unwrap();
        again.seek(&offsets[0]).unwrap();
        let rest = read_all(&mut again, 20);
        assert_eq!(
            rest.slice(0, 20),
            concat_batches(&bid, &batches[1..]).unwrap()
        );

        // Any event number: the rest of the sequence from there.
        let mut full =
            reader(&bid, &[("nexmark.table", "bid"), ("nexmark.events", "500")]).unwrap();
        let full = read_all(&mut full, usize::MAX);
        for event in [0, 3, 4, 49, 50, 53, 54, 123, 499, 500] {
            let mut r =
                reader(&bid, &[("nexmark.table", "bid"), ("nexmark.events", "500")]).unwrap();
            r.seek(&json!({"event": event})).unwrap();
            let skipped = Table::Bid.count_before(event) as usize;
            let rest = read_all(&mut r, usize::MAX);
            assert_eq!(
                rest,
                full.slice(skipped, full.num_rows() - skipped),
                "from {event}"
            );
            assert_eq!(r.offset(), json!({"event": 500}));
        }
        let mut r = reader(&bid, &[("nexmark.table", "bid"), ("nexmark.events", "500")]).unwrap();
        assert!(matches!(
            r.seek(&json!({"event": 501})),
            Err(ConnectorError::InvalidOffset(_))
        ));
        assert!(matches!(
            r.seek(&json!({"row": 1})),
            Err(ConnectorError::InvalidOffset(_))
        ));
        // A person stream past its last person (event 450) ends at the total.
        let mut p = reader(
            &schema(Table::Person),
            &[("nexmark.table", "person"), ("nexmark.events", "500")],
        )
        .unwrap();
        p.seek(&json!({"event": 451})).unwrap();
        assert!(matches!(p.poll().unwrap(), Poll::End));
        assert_eq!(p.offset(), json!({"event": 500}));
    }

    #[test]
    fn columns_by_name_any_subset_and_castable_type() {
        let subset = Arc::new(Schema::new(vec![
            Field::new(
                "DATE_TIME",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("Price", DataType::Int32, false),
            Field::new("channel", DataType::Utf8, true),
            Field::new("url", DataType::LargeUtf8, true),
        ]));
        let mut r = reader(
            &subset,
            &[("nexmark.table", "BID"), ("nexmark.events", "100")],
        )
        .unwrap();
        let b = read_all(&mut r, usize::MAX);
        assert_eq!(b.num_rows(), 92);
        let mut whole = reader(
            &schema(Table::Bid),
            &[("nexmark.table", "bid"), ("nexmark.events", "100")],
        )
        .unwrap();
        let whole = read_all(&mut whole, usize::MAX);
        let prices: Vec<i32> = b
            .column(1)
            .as_any()
            .downcast_ref::<Int32Array>()
            .unwrap()
            .values()
            .to_vec();
        assert_eq!(
            prices.iter().map(|&p| i64::from(p)).collect::<Vec<_>>(),
            int64s(&whole, "price")
        );
        let micros = b
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(
            micros.values()[0],
            whole
                .column_by_name("date_time")
                .unwrap()
                .as_primitive::<TimestampMillisecondType>()
                .values()[0]
                * 1000
        );
        assert_eq!(
            b.column(2).as_string::<i32>().value(0),
            whole
                .column_by_name("channel")
                .unwrap()
                .as_string_view()
                .value(0)
        );

        let unknown = Arc::new(Schema::new(vec![Field::new(
            "seller",
            DataType::Int64,
            true,
        )]));
        let err = reader(&unknown, &[("nexmark.table", "bid")])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("no column 'seller'") && err.contains("auction, bidder, price"),
            "{err}"
        );
        let odd = Arc::new(Schema::new(vec![Field::new(
            "date_time",
            DataType::Boolean,
            true,
        )]));
        assert!(matches!(
            reader(&odd, &[("nexmark.table", "bid")]),
            Err(ConnectorError::UnsupportedType { .. })
        ));
        // No columns at all still counts rows.
        let empty = Arc::new(Schema::empty());
        let mut r = reader(
            &empty,
            &[("nexmark.table", "auction"), ("nexmark.events", "100")],
        )
        .unwrap();
        assert_eq!(read_all(&mut r, usize::MAX).num_rows(), 6);
    }

    #[test]
    fn generator_options() {
        let bid = schema(Table::Bid);
        let mut r = reader(
            &bid,
            &[
                ("nexmark.table", "bid"),
                ("nexmark.events", "100"),
                ("nexmark.event-rate", "1000"),
                ("nexmark.base-time", "2020-02-02 02:02:02"),
            ],
        )
        .unwrap();
        let times = int64s(&read_all(&mut r, usize::MAX), "date_time");
        // 1,000 events per second: event n is at n ms; the first bid is event 4.
        assert_eq!(times[0], 1_580_608_922_000 + 4);
        assert_eq!(*times.last().unwrap(), 1_580_608_922_000 + 99);
        let mut r = reader(
            &bid,
            &[("nexmark.table", "bid"), ("nexmark.base-time", "1000")],
        )
        .unwrap();
        assert_eq!(int64s(&read_all(&mut r, 1), "date_time")[0], 1000);
        for opts in [
            &[("nexmark.active-people", "10")][..],
            &[("nexmark.in-flight-auctions", "5")][..],
        ] {
            let mut r = reader(
                &bid,
                &[
                    &[("nexmark.table", "bid"), ("nexmark.events", "5000")][..],
                    opts,
                ]
                .concat(),
            )
            .unwrap();
            let mut d = reader(
                &bid,
                &[("nexmark.table", "bid"), ("nexmark.events", "5000")],
            )
            .unwrap();
            assert_ne!(read_all(&mut r, usize::MAX), read_all(&mut d, usize::MAX));
        }
    }

    #[test]
    fn rate_limit_yields_idle() {
        let bid = schema(Table::Bid);
        let mut r = reader(&bid, &[("nexmark.table", "bid"), ("nexmark.rate", "100")]).unwrap();
        assert!(!r.always_available());
        // Event 0 (a person) is due at once, the first bid (event 4) 40 ms later.
        let Poll::Idle(wait) = r.poll().unwrap() else {
            panic!()
        };
        assert!(
            wait > Duration::from_millis(20) && wait <= Duration::from_millis(40),
            "{wait:?}"
        );
        std::thread::sleep(wait);
        let Poll::Batch(b) = r.poll().unwrap() else {
            panic!()
        };
        assert!(b.num_rows() >= 1);
        // A fast rate waits for about 10 ms worth of events.
        let mut r = reader(
            &bid,
            &[
                ("nexmark.table", "bid"),
                ("nexmark.rate", "100000"),
                ("batch.size", "100000"),
            ],
        )
        .unwrap();
        assert!(matches!(r.poll().unwrap(), Poll::Idle(d) if d <= Duration::from_millis(11)));
        std::thread::sleep(Duration::from_millis(30));
        let Poll::Batch(b) = r.poll().unwrap() else {
            panic!()
        };
        assert!((1000..50_000).contains(&b.num_rows()), "{}", b.num_rows());
        assert!(
            reader(&bid, &[("nexmark.table", "bid"), ("nexmark.rate", "0")])
                .unwrap()
                .always_available()
        );
        // A bounded, throttled stream still ends.
        let mut r = reader(
            &bid,
            &[
                ("nexmark.table", "bid"),
                ("nexmark.rate", "100000"),
                ("nexmark.events", "60"),
            ],
        )
        .unwrap();
        let mut rows = 0;
        loop {
            match r.poll().unwrap() {
                Poll::Batch(b) => rows += b.num_rows(),
                Poll::Idle(d) => std::thread::sleep(d),
                Poll::End => break,
            }
        }
        assert_eq!(rows, 46 + 6);
    }

    #[test]
    fn bad_options_name_the_option() {
        let bid = schema(Table::Bid);
        let option_of = |pairs: &[(&str, &str)]| match reader(&bid, pairs) {
            Err(ConnectorError::InvalidOption { option, .. }) => option,
            Err(ConnectorError::MissingOption(option)) => option,
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("accepted {pairs:?}"),
        };
        let t = ("nexmark.table", "bid");
        assert_eq!(option_of(&[]), "nexmark.table");
        assert_eq!(option_of(&[("nexmark.table", "bids")]), "nexmark.table");
        assert_eq!(option_of(&[t, ("nexmark.events", "-1")]), "nexmark.events");
        assert_eq!(option_of(&[t, ("nexmark.rate", "fast")]), "nexmark.rate");
        assert_eq!(
            option_of(&[t, ("nexmark.event-rate", "0")]),
            "nexmark.event-rate"
        );
        assert_eq!(
            option_of(&[t, ("nexmark.base-time", "yesterday")]),
            "nexmark.base-time"
        );
        assert_eq!(option_of(&[t, ("nexmark.tps", "10")]), "nexmark.tps");
        assert_eq!(option_of(&[t, ("batch.size", "0")]), "batch.size");
        // Through the public entry points.
        let opts = options(&[t, ("nexmark.events", "10")]);
        assert!(crate::connectors::validate(&opts, &bid).is_ok());
        assert!(crate::connectors::is_bounded(&opts).unwrap());
        assert!(!crate::connectors::is_bounded(&options(&[t])).unwrap());
        let err = crate::connectors::validate(&options(&[("connector", "nexmarc")]), &bid)
            .err()
            .unwrap();
        assert!(err.to_string().contains("'nexmark'"), "{err}");
    }
}
