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
//! | `batch.size` | most rows per batch | `1024` |
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
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    Array, ArrayRef, Int64Array, LargeStringArray, RecordBatch, RecordBatchOptions, StringArray,
    StringViewArray, TimestampMillisecondArray,
};
use datafusion::arrow::compute::{can_cast_types, cast};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use nexmark::config::NexmarkConfig;
use nexmark::event::{Auction, Bid, Event, EventType, Person};
use nexmark::EventGenerator;
use serde_json::json;

use super::options::invalid;
use super::{ConnectorError, ConnectorOptions, Poll, SourceMetrics, SourceReader};

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
const DEFAULT_BATCH_SIZE: u64 = 1024;
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

fn ints(values: impl Iterator<Item = usize>, data_type: &DataType) -> Result<ArrayRef, ConnectorError> {
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
fn times(values: impl Iterator<Item = u64>, data_type: &DataType) -> Result<ArrayRef, ConnectorError> {
    let array = TimestampMillisecondArray::from_iter_values(values.map(|v| v as i64));
    let array = match data_type {
        DataType::Timestamp(_, tz) => array.with_timezone_opt(tz.clone()),
        _ => array,
    };
    cast_to(Arc::new(array), data_type)
}

/// Reads one table of the Nexmark event sequence.
pub(crate) struct NexmarkReader {
    schema: SchemaRef,
    table: Table,
    /// For each declared column, its index in the table's standard schema.
    columns: Vec<usize>,
    config: NexmarkConfig,
    /// Generator events in all, if bounded.
    total: Option<u64>,
    /// Generator events per second, if limited.
    rate: Option<f64>,
    batch_size: u64,
    /// Generator events consumed: every event before this one has been
    /// returned (if of this table) or skipped.
    event: u64,
    /// Yields this table's events from `event` on.
    generator: EventGenerator,
    /// When rate limiting started, and the event number then.
    clock: Option<(Instant, u64)>,
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
        let rate = match options.get(RATE) {
            None => None,
            Some(value) => {
                let rate = value
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| r.is_finite() && *r >= 0.0)
                    .ok_or_else(|| {
                        invalid(RATE, format!("expected events per second, got '{value}'"))
                    })?;
                (rate > 0.0).then_some(rate)
            }
        };
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
            columns.push(index);
        }

        let generator = Self::generator(&config, table, 0);
        Ok(NexmarkReader {
            schema,
            table,
            columns,
            config,
            total,
            rate,
            batch_size,
            event: 0,
            generator,
            clock: None,
            metrics,
        })
    }

    /// A generator of `table`'s events from generator event `event` on.
    fn generator(config: &NexmarkConfig, table: Table, event: u64) -> EventGenerator {
        EventGenerator::new(config.clone())
            .with_type_filter(table.event_type())
            .with_offset(table.count_before(event))
    }

    /// Generator events that may be produced now: all before the returned
    /// number (or `Err(wait)`, if too few are due yet).
    fn due(&mut self, next: u64) -> Result<u64, Duration> {
        let Some(rate) = self.rate else {
            return Ok(u64::MAX);
        };
        let now = Instant::now();
        let (t0, e0) = *self.clock.get_or_insert((now, self.event));
        let elapsed = now.duration_since(t0).as_secs_f64();
        // Event e0 + k is due at k / rate seconds.
        let due = e0.saturating_add((elapsed * rate) as u64).saturating_add(1);
        // Wait for about 10 ms worth of events, so that a fast rate does not
        // produce tiny batches and a slow one is still prompt.
        let mut target = next.saturating_add(((rate / 100.0) as u64).min(self.batch_size));
        if let Some(total) = self.total {
            target = target.min(total.saturating_sub(1)).max(next);
        }
        if due > target {
            return Ok(due);
        }
        let at = target.saturating_sub(e0) as f64 / rate;
        // Rounded up, so that the events are due when polled again.
        let micros = ((at - elapsed) * 1e6).ceil().clamp(1_000.0, 3.6e9);
        Err(Duration::from_micros(micros as u64))
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
    let parsed = cast(&text, &DataType::Timestamp(TimeUnit::Millisecond, None)).map_err(|_| bad())?;
    let parsed = parsed
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .filter(|a| a.is_valid(0))
        .ok_or_else(bad)?;
    u64::try_from(parsed.value(0)).map_err(|_| bad())
}

impl SourceReader for NexmarkReader {
    fn poll(&mut self) -> Result<Poll, ConnectorError> {
        let mut next = self.generator.global_offset();
        let end = self.total.unwrap_or(u64::MAX);
        if next >= end {
            self.event = self.event.max(end);
            return Ok(Poll::End);
        }
        let due = match self.due(next) {
            Ok(due) => due.min(end),
            Err(wait) => return Ok(Poll::Idle(wait)),
        };
        let mut rows = Rows::new(self.table, self.batch_size.min(1 << 16) as usize);
        while next < due && (rows.len() as u64) < self.batch_size {
            let event = self.generator.next().expect("the generator never ends");
            rows.push(event);
            self.event = next + 1;
            next = self.generator.global_offset();
        }
        // `due` is past `next`, so the loop took at least one event.
        debug_assert!(rows.len() > 0);
        let arrays = self
            .schema
            .fields()
            .iter()
            .zip(&self.columns)
            .map(|(field, &index)| rows.column(index, field.data_type()))
            .collect::<Result<Vec<_>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
        let batch = RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options)?;
        self.metrics
            .rows
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        Ok(Poll::Batch(batch))
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
        self.generator = Self::generator(&self.config, self.table, event);
        self.clock = None;
        Ok(())
    }

    fn always_available(&self) -> bool {
        self.total.is_none() && self.rate.is_none()
    }
}
