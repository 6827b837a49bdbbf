//! Source connectors: `datagen`, `nexmark` and `file` (CSV, JSON lines), behind one
//! pull-based [`SourceReader`] trait the runtime drives.

mod computed;
mod datagen;
mod file;
mod file_sink;
mod format;
mod nexmark;
mod options;
mod pacer;
mod part_sink;
mod scan;
mod sink;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

pub use computed::{Computed, ComputedReader};
pub use file_sink::{sink_path, FileSink, SinkFormat};
pub use options::{parse_duration, ConnectorOptions};
pub use part_sink::{PartSink, Publish};
pub use sink::{sink_target, PrintSink, SinkTarget, SinkWriter};

/// Errors raised while configuring or reading a source.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error(
        "unknown connector '{0}' (expected 'datagen', 'nexmark', 'file', 'blackhole' or 'print')"
    )]
    UnknownConnector(String),
    #[error(
        "connector '{0}' only writes: use its table as an INSERT INTO target, not as a source"
    )]
    WriteOnly(String),
    #[error("missing option '{0}'")]
    MissingOption(String),
    #[error("invalid value for option '{option}': {message}")]
    InvalidOption { option: String, message: String },
    #[error("unsupported column type {data_type} for column '{column}' in connector {connector}")]
    UnsupportedType {
        connector: String,
        column: String,
        data_type: String,
    },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid source offset: {0}")]
    InvalidOffset(String),
    #[error(
        "{path} has {len} bytes, fewer than its recorded offset {offset} (truncated or replaced?)"
    )]
    Truncated { path: String, len: u64, offset: u64 },
    #[error("{path} was cut short while being read (truncated?)")]
    CutShort { path: String },
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error("computing a column: {0}")]
    Computed(String),
    #[error("the source's reading threads stopped")]
    ReaderStopped,
}

/// What one poll of a source produced.
#[derive(Debug)]
pub enum Poll {
    /// Rows in the stream's schema (never empty).
    Batch(RecordBatch),
    /// Nothing available now (rate limit, or following a file that has not
    /// grown); poll again after this long.
    Idle(Duration),
    /// A bounded source has delivered everything.
    End,
}

/// A source partition, pulled by the runtime. Reading is synchronous and
/// quick per call (at most one batch), so a reader can be driven from an
/// async task between other messages (barriers, shutdown).
pub trait SourceReader: Send {
    /// Reads the next batch. Malformed input rows are counted in the
    /// source's metrics, logged with their position and skipped; they never
    /// make this return an error. Errors are for the source as a whole
    /// (e.g. its file vanished).
    fn poll(&mut self) -> Result<Poll, ConnectorError>;

    /// The position after the last row returned, for checkpoints.
    fn offset(&self) -> serde_json::Value;

    /// Continues after a position returned earlier by [`SourceReader::offset`].
    fn seek(&mut self, offset: &serde_json::Value) -> Result<(), ConnectorError>;

    /// True for a generator whose data is always available (an unbounded,
    /// unthrottled datagen): a FLUSH is taken at the next batch boundary
    /// instead of waiting for the source to catch up, which it never would.
    fn always_available(&self) -> bool {
        false
    }

    /// How many threads the reader may use to decode its input (rows keep
    /// their order whatever the number). Readers that do not decode ignore it.
    fn set_decode_threads(&mut self, _threads: usize) {}

    /// Which columns of the schema the job reads (one flag per column). A
    /// reader may then return the others as `DataType::Null` columns, after
    /// checking them as usual: which rows are malformed does not change.
    /// Readers that build every column ignore it.
    fn set_read_columns(&mut self, _read: &[bool]) {}
}

/// The machine's cores (1 if unknown): what a source may decode on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `schema` with the columns not flagged in `read` as nullable columns of
/// type Null (all kept when `read` has another length), for a batch whose
/// unread columns are left out in place.
pub fn with_unread_as_null(schema: &SchemaRef, read: &[bool]) -> SchemaRef {
    if read.len() != schema.fields().len() || !read.contains(&false) {
        return schema.clone();
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .zip(read)
        .map(|(f, &r)| match r {
            true => f.as_ref().clone(),
            false => Field::new(f.name(), DataType::Null, true),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Counters for one stream, shared by its readers and shown by SHOW STREAMS and /metrics.
#[derive(Debug, Default)]
pub struct SourceMetrics {
    /// Rows accepted from the source (well-formed).
    pub rows: AtomicU64,
    /// Rows that could not be parsed and were skipped.
    pub malformed: AtomicU64,
    /// Rows behind the watermark.
    pub late: AtomicU64,
    /// Current watermark in nanoseconds since the epoch (`i64::MIN` before any row).
    pub watermark: AtomicI64,
}

impl SourceMetrics {
    pub fn new() -> Self {
        SourceMetrics {
            watermark: AtomicI64::new(i64::MIN),
            ..Default::default()
        }
    }

    /// Raises this stream-wide view of the counters to a reader's. Every
    /// reader of a stream reads the same rows and finds the same ones late or
    /// malformed, so the stream's counts are the furthest reader's.
    pub fn merge_from(&self, reader: &SourceMetrics) {
        self.rows
            .fetch_max(reader.rows.load(Ordering::Relaxed), Ordering::Relaxed);
        self.malformed
            .fetch_max(reader.malformed.load(Ordering::Relaxed), Ordering::Relaxed);
        self.late
            .fetch_max(reader.late.load(Ordering::Relaxed), Ordering::Relaxed);
        self.watermark
            .fetch_max(reader.watermark.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    pub fn add_malformed(&self, n: u64) {
        self.malformed.fetch_add(n, Ordering::Relaxed);
    }
}

/// Connectors a table can only be written to (an INSERT INTO target).
const WRITE_ONLY: &[&str] = &["blackhole", "print"];

/// Whether a connector table can only be written to.
pub fn is_write_only(options: &ConnectorOptions) -> bool {
    options
        .connector()
        .is_ok_and(|c| WRITE_ONLY.contains(&c.as_str()))
}

/// Checks options and column types at CREATE time, so a bad stream is
/// refused then. A file source's path need not exist yet: a table may be
/// written (by INSERT INTO) before it is read, and reading it checks then.
pub fn validate(options: &ConnectorOptions, schema: &SchemaRef) -> Result<(), ConnectorError> {
    if is_write_only(options) {
        return Ok(());
    }
    if options.connector()? == "file" {
        return file::FileReader::unchecked(
            "validate",
            options,
            schema.clone(),
            Arc::new(SourceMetrics::new()),
        )
        .map(|_| ());
    }
    open(
        "validate",
        options,
        schema.clone(),
        Arc::new(SourceMetrics::new()),
    )
    .map(|_| ())
}

/// Whether the source ends by itself (a datagen with a row count, or a file
/// source that does not follow new data).
pub fn is_bounded(options: &ConnectorOptions) -> Result<bool, ConnectorError> {
    match options.connector()?.as_str() {
        "datagen" => datagen::is_bounded(options),
        "file" => file::is_bounded(options),
        "nexmark" => nexmark::is_bounded(options),
        c if WRITE_ONLY.contains(&c) => Ok(true),
        other => Err(ConnectorError::UnknownConnector(other.to_string())),
    }
}

/// Opens a stream whose stored columns are `stored`, and which adds
/// `computed` ones to make `schema` (none: `stored` is the schema).
pub fn open_stream(
    stream: &str,
    options: &ConnectorOptions,
    stored: SchemaRef,
    computed: &Arc<[Computed]>,
    schema: SchemaRef,
    metrics: Arc<SourceMetrics>,
) -> Result<Box<dyn SourceReader>, ConnectorError> {
    let reader = open(stream, options, stored, metrics)?;
    Ok(match computed.is_empty() {
        true => reader,
        false => Box::new(ComputedReader::new(reader, computed.clone(), schema)),
    })
}

/// Opens a reader for `stream` from its `WITH (...)` options. `schema` is the
/// stream's declared columns; every batch the reader returns has exactly it.
pub fn open(
    stream: &str,
    options: &ConnectorOptions,
    schema: SchemaRef,
    metrics: Arc<SourceMetrics>,
) -> Result<Box<dyn SourceReader>, ConnectorError> {
    match options.connector()?.as_str() {
        "datagen" => Ok(Box::new(datagen::DatagenReader::new(
            options, schema, metrics,
        )?)),
        "file" => Ok(Box::new(file::FileReader::new(
            stream, options, schema, metrics,
        )?)),
        "nexmark" => Ok(Box::new(nexmark::NexmarkReader::new(
            options, schema, metrics,
        )?)),
        c if WRITE_ONLY.contains(&c) => Err(ConnectorError::WriteOnly(c.to_string())),
        other => Err(ConnectorError::UnknownConnector(other.to_string())),
    }
}
