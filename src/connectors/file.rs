//! The `file` connector: CSV or JSON lines from a file or a directory, read to the end or followed.
//!
//! `path` names one file or a directory (its regular files, by name, skipping
//! names that start with `.` or `_`). Files are read incrementally from a
//! byte offset; a poll returns at most `batch.size` records from one file
//! (default 4,096 per thread decoding them). Files are read and parsed
//! ahead of the job on threads of the source's own (`pipeline`).
//! When following, only newline-terminated lines are read, and a caught-up
//! source rescans the path every `source.monitor-interval` for appended
//! lines and new files. The offset records, per file name, the byte offset
//! and the number of lines consumed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use serde_json::json;

pub(crate) mod mapped;
mod pipeline;

use super::format::{Format, Parser, Records, MAX_RECORD_LINES};
use super::options::invalid;
use super::{ConnectorError, ConnectorOptions, Poll, SourceMetrics, SourceReader};
use mapped::MappedFile;
use pipeline::{Done, Pipeline};

const DEFAULT_BATCH_SIZE: u64 = 4096;
/// Bytes read from a file at a time, at least and at most.
const READ_MIN: u64 = 64 * 1024;
const READ_MAX: u64 = 8 * 1024 * 1024;
/// Files with at least this many bytes left to read are mapped rather than
/// read (a map costs two system calls and a page fault or so; a read, a
/// copy of every byte).
const MAP_MIN: u64 = 64 * 1024;
const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
const INTERVAL_KEYS: &[&str] = &["source.monitor-interval", "monitor-interval"];

/// Whether the source stops at the end of the data present (no following).
pub(crate) fn is_bounded(options: &ConnectorOptions) -> Result<bool, ConnectorError> {
    Ok(follow_interval(options)?.is_none())
}

/// How often to look for new data, or `None` when not following.
fn follow_interval(options: &ConnectorOptions) -> Result<Option<Duration>, ConnectorError> {
    let interval = options.get_duration(INTERVAL_KEYS)?;
    if let (Some((key, _)), Some(Duration::ZERO)) = (options.find(INTERVAL_KEYS), interval) {
        return Err(invalid(key, "must be greater than zero"));
    }
    let follow = options.get_bool(&["follow"])?.unwrap_or(interval.is_some());
    Ok(follow.then(|| interval.unwrap_or(DEFAULT_INTERVAL)))
}

fn format(options: &ConnectorOptions) -> Result<Format, ConnectorError> {
    let name = match options.get("format") {
        Some(f) => f.trim().to_ascii_lowercase(),
        // Without `format`, go by the extension of `path`.
        None => {
            let path = options.get("path").unwrap_or_default().to_ascii_lowercase();
            match Path::new(&path).extension().and_then(|e| e.to_str()) {
                Some("csv") => "csv".to_string(),
                Some("json" | "jsonl" | "ndjson") => "json".to_string(),
                _ => return Err(ConnectorError::MissingOption("format".to_string())),
            }
        }
    };
    match name.as_str() {
        "csv" => {
            let delimiter = csv_delimiter(options)?;
            Ok(Format::Csv { delimiter })
        }
        "json" | "jsonl" | "json-lines" | "ndjson" => Ok(Format::Json),
        _ => Err(invalid(
            "format",
            format!("expected 'csv' or 'json', got '{name}'"),
        )),
    }
}

/// The CSV field delimiter (`csv.field-delimiter`, `\t` or `tab` for a tab):
/// one character, not a quote or a line end.
pub(super) fn csv_delimiter(options: &ConnectorOptions) -> Result<char, ConnectorError> {
    let keys = ["csv.field-delimiter", "delimiter"];
    let Some((key, value)) = options.find(&keys) else {
        return Ok(',');
    };
    let value = match value {
        "\\t" | "tab" => "\t",
        v => v,
    };
    let mut chars = value.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c != '"' && c != '\n' && c != '\r' => Ok(c),
        _ => Err(invalid(
            key,
            "expected a single character (not a quote or newline)",
        )),
    }
}

/// Where reading of one file stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Position {
    /// Bytes consumed.
    offset: u64,
    /// Lines consumed (the next record starts on line `line + 1`).
    line: u64,
}

/// What to read and how: the path, the syntax of its records and how many
/// make a batch. Shared by the job's reader and its reading thread.
#[derive(Clone)]
struct Scanner {
    root: PathBuf,
    header: bool,
    format: Format,
    follow: Option<Duration>,
    batch_size: usize,
    /// Files with fewer bytes than this left are read rather than mapped.
    map_min: u64,
}

/// Where reading stands: the files of the last scan and the position reached
/// in each.
#[derive(Default)]
struct Cursor {
    /// Files known from the last scan (name, path, length then), by name;
    /// `None` until the first read.
    files: Option<Vec<(String, PathBuf, u64)>>,
    /// Index into `files` of the next file to read.
    index: usize,
    positions: BTreeMap<String, Position>,
    /// The file last mapped, while it is the same file of the same length.
    mapped: Option<Mapped>,
}

/// A mapped file and what it was mapped as.
struct Mapped {
    path: PathBuf,
    /// Device and inode: the same file, not another one renamed in its place.
    id: (u64, u64),
    len: u64,
    file: Arc<MappedFile>,
}

/// A batch of records of file `name` (at `path`), up to `end`.
struct Batch {
    name: String,
    path: PathBuf,
    end: Position,
    records: Records,
}

/// What reading on from a [`Cursor`] found.
enum Next {
    Records(Batch),
    /// Following, and nothing new since a scan made by this read.
    CaughtUp,
    /// Not following, and everything read.
    End,
}

/// Reads the files of a `file` source.
pub(crate) struct FileReader {
    scanner: Scanner,
    /// `batch.size` was not given: it scales with the decoding threads.
    default_batch_size: bool,
    parser: Arc<Parser>,
    metrics: Arc<SourceMetrics>,
    /// The position after the last batch returned, per file.
    positions: BTreeMap<String, Position>,
    /// Threads parsing batches.
    threads: usize,
    /// The threads reading and parsing ahead, from `positions` on; started
    /// by the first poll.
    pipeline: Option<Pipeline>,
    /// The pipeline has ended (not following).
    ended: bool,
}

impl FileReader {
    /// A reader of an existing file or directory.
    pub(crate) fn new(
        stream: &str,
        options: &ConnectorOptions,
        schema: SchemaRef,
        metrics: Arc<SourceMetrics>,
    ) -> Result<Self, ConnectorError> {
        let reader = Self::unchecked(stream, options, schema, metrics)?;
        let root = &reader.scanner.root;
        std::fs::metadata(root).map_err(|source| ConnectorError::Io {
            path: root.display().to_string(),
            source,
        })?;
        Ok(reader)
    }

    /// A reader whose options are checked but whose path may not exist yet.
    pub(crate) fn unchecked(
        stream: &str,
        options: &ConnectorOptions,
        schema: SchemaRef,
        metrics: Arc<SourceMetrics>,
    ) -> Result<Self, ConnectorError> {
        let root = PathBuf::from(options.require("path")?);
        let format = format(options)?;
        let header = options
            .get_bool(&["csv.header", "header"])?
            .unwrap_or(false);
        let explicit = options.get_u64(&["batch.size"])?;
        let batch_size = explicit.unwrap_or(DEFAULT_BATCH_SIZE);
        if batch_size == 0 {
            return Err(invalid("batch.size", "must be greater than zero"));
        }
        Ok(FileReader {
            scanner: Scanner {
                root,
                header,
                format,
                follow: follow_interval(options)?,
                batch_size: usize::try_from(batch_size).unwrap_or(usize::MAX),
                map_min: MAP_MIN,
            },
            default_batch_size: explicit.is_none(),
            parser: Arc::new(Parser::new(stream, format, schema)?),
            metrics,
            positions: BTreeMap::new(),
            threads: 1,
            pipeline: None,
            ended: false,
        })
    }

    /// Takes the next batch the pipeline parsed, starting it first if need
    /// be. Says it is caught up only after a scan made during this call,
    /// so that a FLUSH taken on it sees what was written before it.
    fn poll_pipeline(&mut self) -> Result<Poll, ConnectorError> {
        if self.ended {
            return Ok(Poll::End);
        }
        let pipeline = match &mut self.pipeline {
            Some(pipeline) => pipeline,
            none => {
                let cursor = Cursor::at(self.positions.clone());
                let scanner = self.scanner.clone();
                let parser = self.parser.clone();
                none.insert(Pipeline::start(scanner, cursor, parser, self.threads)?)
            }
        };
        let mut looked = pipeline.waiting();
        if looked {
            pipeline.look_again()?;
        }
        loop {
            let failed = match pipeline.take() {
                Ok(Done::CaughtUp) if !looked => {
                    pipeline.look_again()?;
                    looked = true;
                    continue;
                }
                Ok(Done::CaughtUp) => return Ok(Poll::Idle(self.scanner.interval())),
                Ok(Done::Parsed {
                    name,
                    end,
                    batch: Ok(batch),
                    rows,
                    malformed,
                    mapped,
                }) => {
                    if let Some((file, end)) = mapped {
                        file.taken_to(end);
                    }
                    self.metrics.rows.fetch_add(rows, Ordering::Relaxed);
                    self.metrics.add_malformed(malformed);
                    self.positions.insert(name, end);
                    // A batch of only malformed or blank lines is passed
                    // over: saying idle would release a FLUSH early.
                    match batch {
                        Some(batch) => return Ok(Poll::Batch(batch)),
                        None => continue,
                    }
                }
                Ok(Done::End) => {
                    self.ended = true;
                    self.pipeline = None;
                    return Ok(Poll::End);
                }
                Ok(Done::Parsed { batch: Err(e), .. } | Done::Failed(e)) | Err(e) => e,
            };
            // Its threads have stopped; a poll after a failure starts again
            // from the last batch returned.
            self.pipeline = None;
            return Err(failed);
        }
    }
}

impl Scanner {
    /// How long a caught-up follower waits before looking again.
    fn interval(&self) -> Duration {
        self.follow.unwrap_or(DEFAULT_INTERVAL)
    }

    /// Lists the files to read, sorted by name.
    fn scan(&self) -> Result<Vec<(String, PathBuf, u64)>, ConnectorError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| ConnectorError::Io { path, source }
        };
        let meta = std::fs::metadata(&self.root).map_err(io(&self.root))?;
        if !meta.is_dir() {
            let name = self.root.file_name().map_or_else(
                || self.root.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            return Ok(vec![(name, self.root.clone(), meta.len())]);
        }
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(io(&self.root))? {
            let entry = entry.map_err(io(&self.root))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            // Follows symlinks; an entry that vanished meanwhile is skipped.
            match std::fs::metadata(entry.path()) {
                Ok(m) if m.is_file() => files.push((name, entry.path(), m.len())),
                _ => {}
            }
        }
        files.sort();
        Ok(files)
    }

    /// Reads up to `batch_size` records of `path` from `start`: through a
    /// map of the file (kept in `mapped` for the next read) when enough of
    /// it is left, else into `buffer`. Returns them and the position after
    /// them.
    fn read(
        &self,
        path: &Path,
        start: Position,
        buffer: Vec<u8>,
        mapped: &mut Option<Mapped>,
    ) -> Result<(Records, Position), ConnectorError> {
        let io = |source| ConnectorError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        let len = meta.len();
        if len < start.offset {
            return Err(ConnectorError::Truncated {
                path: path.display().to_string(),
                len,
                offset: start.offset,
            });
        }
        if len == start.offset {
            return Ok((Records::with_buffer(buffer), start));
        }
        let id = (meta.dev(), meta.ino());
        let map = match mapped {
            Some(m) if m.path == path && m.id == id && m.len == len => Some(m.file.clone()),
            _ if len - start.offset < self.map_min => None,
            _ => MappedFile::map(&file, len).inspect(|map| {
                *mapped = Some(Mapped {
                    path: path.to_path_buf(),
                    id,
                    len,
                    file: map.clone(),
                });
            }),
        };
        let mut records = match map {
            Some(map) => Records::mapped(map, start.offset as usize),
            None => {
                file.seek(SeekFrom::Start(start.offset)).map_err(io)?;
                Records::with_buffer(buffer)
            }
        };
        let mut pos = start;
        // Bytes of the buffer taken into records (or skipped as the header).
        let mut taken = 0;
        let mut eof = false;
        let csv = matches!(self.format, Format::Csv { .. });
        while records.len() < self.batch_size {
            // Lines that are whole records, many at a time; then one record
            // by the way below (a quoted one, a header, or the last of the
            // bytes read, which may be cut short).
            if !(self.header && pos.line == 0) {
                let before = records.len();
                let bytes = records.push_lines(taken, pos.line + 1, self.batch_size - before, csv);
                taken += bytes;
                pos.offset += bytes as u64;
                pos.line += (records.len() - before) as u64;
                if records.len() == self.batch_size {
                    break;
                }
            }
            let (end, lines) = match self.record_end(&records.data()[taken..]) {
                Some((bytes, lines)) => (taken + bytes, lines),
                None if !eof => {
                    // Read about what the records still wanted take, judging
                    // by those read so far.
                    let wanted = (self.batch_size - records.len()) as u64;
                    let per_record = (taken as u64 / records.len().max(1) as u64).max(64);
                    let bytes = (wanted * per_record).clamp(READ_MIN, READ_MAX);
                    eof = match records.data_mut() {
                        Some(data) => {
                            // Room for all of it first: reading to the end of
                            // a full buffer would grow it by copying what it
                            // holds.
                            data.reserve(bytes as usize);
                            (&mut file).take(bytes).read_to_end(data).map_err(io)? == 0
                        }
                        None => records.map_more(bytes as usize) == 0,
                    };
                    continue;
                }
                None => {
                    // The end of the data: the rest is a record if the
                    // source is bounded, and waits for its end otherwise.
                    let rest = &records.data()[taken..];
                    if rest.is_empty() || self.follow.is_some() {
                        break;
                    }
                    let newlines = memchr::memchr_iter(b'\n', rest).count();
                    (
                        taken + rest.len(),
                        newlines + usize::from(!rest.ends_with(b"\n")),
                    )
                }
            };
            let first_line = pos.line + 1;
            pos.offset += (end - taken) as u64;
            pos.line += lines as u64;
            let record_start = std::mem::replace(&mut taken, end);
            if self.header && first_line == 1 {
                continue;
            }
            records.push(first_line, record_start, end);
        }
        if records.cut_short() {
            return Err(ConnectorError::CutShort {
                path: path.display().to_string(),
            });
        }
        Ok((records, pos))
    }

    /// The length in bytes and lines of the complete record at the start of
    /// `data`: up to a line end, or several while a CSV quote is open (at
    /// most [`MAX_RECORD_LINES`]). None if its end is not in `data`.
    fn record_end(&self, data: &[u8]) -> Option<(usize, usize)> {
        let mut end = 0;
        let mut lines = 0;
        let mut quoted = false;
        loop {
            // One pass finds the line end and notes a quote on the way.
            let at = end + memchr::memchr2(b'\n', b'"', &data[end..])?;
            end = if data[at] == b'"' {
                quoted = true;
                at + 1 + memchr::memchr(b'\n', &data[at + 1..])?
            } else {
                at
            } + 1;
            lines += 1;
            let open_quote = quoted
                && matches!(self.format, Format::Csv { .. })
                && lines < MAX_RECORD_LINES
                && self
                    .format
                    .incomplete(&String::from_utf8_lossy(&data[..end]));
            if !open_quote {
                return Some((end, lines));
            }
        }
    }
}

impl Cursor {
    /// Reading from `positions`, with the files not scanned yet.
    fn at(positions: BTreeMap<String, Position>) -> Self {
        Cursor {
            positions,
            ..Cursor::default()
        }
    }

    /// Reads the next batch of records, into `buffer`: on in the file at
    /// hand, then the next ones of the scan, then (following) in a new
    /// scan; caught up only if this call scanned.
    fn next(&mut self, scanner: &Scanner, buffer: Vec<u8>) -> Result<Next, ConnectorError> {
        let mut buffer = Some(buffer);
        let mut rescanned = false;
        loop {
            if self.files.is_none() {
                self.files = Some(scanner.scan()?);
                self.index = 0;
                rescanned = true;
            }
            let files = self.files.as_deref().unwrap_or_default();
            while let Some((name, path, len)) = files.get(self.index) {
                let start = self.positions.get(name).copied().unwrap_or_default();
                // Unchanged since the scan: nothing to read.
                if *len == start.offset {
                    self.index += 1;
                    continue;
                }
                let spare = buffer.take().unwrap_or_default();
                let (records, end) = scanner.read(path, start, spare, &mut self.mapped)?;
                if end == start {
                    buffer = Some(records.into_buffer());
                    self.index += 1;
                    continue;
                }
                self.positions.insert(name.clone(), end);
                return Ok(Next::Records(Batch {
                    name: name.clone(),
                    path: path.clone(),
                    end,
                    records,
                }));
            }
            match scanner.follow {
                None => return Ok(Next::End),
                Some(_) if rescanned => return Ok(Next::CaughtUp),
                Some(_) => self.files = None,
            }
        }
    }
}

impl SourceReader for FileReader {
    fn set_decode_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
        if self.default_batch_size {
            self.scanner.batch_size = DEFAULT_BATCH_SIZE as usize * self.threads;
        }
    }

    fn set_read_columns(&mut self, read: &[bool]) {
        Arc::make_mut(&mut self.parser).set_read_columns(read);
    }

    fn poll(&mut self) -> Result<Poll, ConnectorError> {
        self.poll_pipeline()
    }

    fn offset(&self) -> serde_json::Value {
        let files: serde_json::Map<String, serde_json::Value> = self
            .positions
            .iter()
            .map(|(name, p)| (name.clone(), json!({"offset": p.offset, "line": p.line})))
            .collect();
        json!({ "files": files })
    }

    fn seek(&mut self, offset: &serde_json::Value) -> Result<(), ConnectorError> {
        let bad = |what: &str| ConnectorError::InvalidOffset(format!("{what} in {offset}"));
        let files = offset
            .get("files")
            .and_then(|f| f.as_object())
            .ok_or_else(|| bad("expected an object {\"files\": {...}}"))?;
        let mut positions = BTreeMap::new();
        for (name, p) in files {
            let field = |f: &str| p.get(f).and_then(|v| v.as_u64());
            let (Some(offset), Some(line)) = (field("offset"), field("line")) else {
                return Err(bad(&format!("expected offset and line for file '{name}'")));
            };
            positions.insert(name.clone(), Position { offset, line });
        }
        for (name, path, len) in self.scanner.scan()? {
            if let Some(p) = positions.get(&name).filter(|p| p.offset > len) {
                return Err(ConnectorError::Truncated {
                    path: path.display().to_string(),
                    len,
                    offset: p.offset,
                });
            }
        }
        self.positions = positions;
        // What the threads read ahead is from before the seek.
        self.pipeline = None;
        self.ended = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::io::Write;
    use std::sync::atomic::Ordering;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    std::thread_local! {
        /// The `map_min` of the readers [`open`] makes.
        static MAP_MIN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    /// Runs `test` with readers that map every file, then with readers
    /// that read every file into buffers.
    fn both(test: impl Fn()) {
        for map_min in [0, u64::MAX] {
            MAP_MIN.with(|m| m.set(map_min));
            test();
        }
    }

    fn open(path: &Path, extra: &[(&str, &str)]) -> (FileReader, Arc<SourceMetrics>) {
        let mut options = ConnectorOptions::new([
            ("connector".to_string(), "file".to_string()),
            ("path".to_string(), path.display().to_string()),
        ]);
        for (k, v) in extra {
            options.insert(k, v);
        }
        let metrics = Arc::new(SourceMetrics::new());
        let mut reader = FileReader::new("s", &options, schema(), metrics.clone()).unwrap();
        reader.scanner.map_min = MAP_MIN.with(|m| m.get());
        (reader, metrics)
    }

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    type Row = (Option<i64>, Option<String>);

    fn rows(batch: &RecordBatch) -> Vec<Row> {
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        let names = batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        (0..batch.num_rows())
            .map(|i| {
                let id = ids.is_valid(i).then(|| ids.value(i));
                let name = names.is_valid(i).then(|| names.value(i).to_string());
                (id, name)
            })
            .collect()
    }

    /// Polls until End or Idle, returning all rows and the last poll.
    fn drain(reader: &mut FileReader) -> (Vec<Row>, Poll) {
        let mut out = Vec::new();
        loop {
            match reader.poll().unwrap() {
                Poll::Batch(b) => {
                    assert_eq!(b.schema(), schema());
                    out.extend(rows(&b));
                }
                other => return (out, other),
            }
        }
    }

    fn r(id: i64, name: &str) -> Row {
        (Some(id), Some(name.to_string()))
    }

    #[test]
    fn csv_without_header() {
        both(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("a.csv");
            write(
                &path,
                "1,one\n2,\"two, too\"\r\n3,\n4,\"say \"\"hi\"\"\"\n5,last",
            );
            let (mut reader, metrics) = open(&path, &[("format", "csv")]);
            let (got, end) = drain(&mut reader);
            assert!(matches!(end, Poll::End));
            assert_eq!(
                got,
                vec![
                    r(1, "one"),
                    r(2, "two, too"),
                    (Some(3), None),
                    r(4, "say \"hi\""),
                    r(5, "last")
                ]
            );
            assert_eq!(metrics.rows.load(Ordering::Relaxed), 5);
            assert_eq!(metrics.malformed.load(Ordering::Relaxed), 0);
            assert_eq!(
                reader.offset(),
                json!({"files": {"a.csv": {"offset": 44, "line": 5}}})
            );
        });
    }

    /// Records cut by the ends of reads: a file of several reads, quoted
    /// fields over several lines among them, CRLF line ends, read in
    /// batches of every size, comes out whole and in order.
    #[test]
    fn records_across_reads_and_batches() {
        both(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("big.csv");
            let mut text = String::new();
            let mut expected = Vec::new();
            let mut lines = 0;
            for i in 0..6000i64 {
                let name = match i % 7 {
                    0 => format!("quoted\nover\nthree lines {i}"),
                    3 => format!("{}-{i}", "x".repeat((i % 600) as usize)),
                    _ => format!("n{i}"),
                };
                let quoted = name.contains('\n');
                let field = if quoted {
                    format!("\"{name}\"")
                } else {
                    name.clone()
                };
                text.push_str(&format!("{i},{field}\r\n"));
                lines += 1 + name.matches('\n').count();
                expected.push(r(i, &name));
            }
            // The last record has no line end.
            text.push_str("6000,last");
            lines += 1;
            expected.push(r(6000, "last"));
            assert!(text.len() as u64 > 4 * READ_MIN, "several reads");
            write(&path, &text);
            // With more than one thread, each poll reads the next batch ahead.
            for threads in [1, 2, 3] {
                for batch in [None, Some("1"), Some("7"), Some("4096"), Some("100000")] {
                    let options: Vec<_> = batch.map(|b| ("batch.size", b)).into_iter().collect();
                    let (mut reader, metrics) = open(&path, &options);
                    reader.set_decode_threads(threads);
                    let (got, end) = drain(&mut reader);
                    let case = format!("batch.size {batch:?}, {threads} threads");
                    assert!(matches!(end, Poll::End));
                    assert_eq!(got.len(), expected.len(), "{case}");
                    assert_eq!(got, expected, "{case}");
                    assert_eq!(metrics.malformed.load(Ordering::Relaxed), 0);
                    assert_eq!(
                        reader.offset(),
                        json!({"files": {"big.csv": {"offset": text.len(), "line": lines}}}),
                        "{case}"
                    );
                }
            }
            // A seek back drops the batch read ahead.
            let (mut reader, _) = open(&path, &[("batch.size", "7")]);
            reader.set_decode_threads(2);
            assert!(matches!(reader.poll().unwrap(), Poll::Batch(_)));
            let after_first = reader.offset();
            for _ in 0..3 {
                assert!(matches!(reader.poll().unwrap(), Poll::Batch(_)));
            }
            reader.seek(&after_first).unwrap();
            let (got, _) = drain(&mut reader);
            assert_eq!(got, expected[7..]);
        });
    }

    #[test]
    fn csv_with_header_delimiter_and_multiline_field() {
        both(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("a.txt");
            write(&path, "id;name\n1;\"multi\nline\"\n2;b\n");
            let (mut reader, _) = open(
                &path,
                &[
                    ("format", "CSV"),
                    ("csv.header", "true"),
                    ("csv.field-delimiter", ";"),
                ],
            );
            let (got, _) = drain(&mut reader);
            assert_eq!(got, vec![r(1, "multi\nline"), r(2, "b")]);
            assert_eq!(reader.offset()["files"]["a.txt"]["line"], json!(4));
        });
    }

    #[test]
    fn csv_malformed_rows_are_counted_and_skipped() {
        both(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("bad.csv");
            write(
                &path,
                "1,a\n\
             two,b\n\
             3,c,extra\n\
             4\n\
             5,\"unclosed\" x\n\
             \n\
             6,f\n\
             7,\"never closed\n",
            );
            // Counted as the batches are returned, however they are cut and
            // however many threads parse them.
            for threads in [1, 3] {
                for batch in [None, Some("1"), Some("2")] {
                    let options: Vec<_> = batch.map(|b| ("batch.size", b)).into_iter().collect();
                    let (mut reader, metrics) = open(&path, &options);
                    reader.set_decode_threads(threads);
                    let (got, end) = drain(&mut reader);
                    let case = format!("batch.size {batch:?}, {threads} threads");
                    assert!(matches!(end, Poll::End), "{case}");
                    assert_eq!(got, vec![r(1, "a"), r(6, "f")], "{case}");
                    assert_eq!(metrics.rows.load(Ordering::Relaxed), 2, "{case}");
                    assert_eq!(metrics.malformed.load(Ordering::Relaxed), 5, "{case}");
                }
            }
        });
    }

    /// A batch of only malformed lines is not an idle poll: a FLUSH taken
    /// on it would return before the rows after it were read.
    #[test]
    fn batches_of_only_malformed_lines_are_passed_over() {
        both(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("bad.csv");
            write(&path, "x\ny\nz\n\n4,d\nw\n");
            for follow in [false, true] {
                let mut options = vec![("batch.size", "1")];
                if follow {
                    options.push(("source.monitor-interval", "50 ms"));
                }
                let (mut reader, metrics) = open(&path, &options);
                let Poll::Batch(b) = reader.poll().unwrap() else {
                    panic!("expected the row after the malformed lines")
                };
                assert_eq!(rows(&b), vec![r(4, "d")]);
                assert_eq!(metrics.malformed.load(Ordering::Relaxed), 3);
                let last = reader.poll().unwrap();
                match follow {
                    true => assert!(matches!(last, Poll::Idle(d) if !d.is_zero())),
                    false => assert!(matches!(last, Poll::End)),
                }
                assert_eq!(metrics.malformed.load(Ordering::Relaxed), 4);
            }
        });
    }

    #[test]
    fn json_lines_with_a_malformed_line() {
        both(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("a.jsonl");
            write(
            &path,
            "{\"id\": 1, \"Name\": \"x\"}\n{\"id\": 2,\n{\"name\": \"no id\"}\n{\"id\": \"3\", \"other\": 1}\n",
        );
            let (mut reader, metrics) = open(&path, &[("format", "json")]);
            let (got, _) = drain(&mut reader);
            assert_eq!(
                got,
                vec![r(1, "x"), (None, Some("no id".into())), (Some(3), None)]
            );
            assert_eq!(metrics.malformed.load(Ordering::Relaxed), 1);
            assert_eq!(metrics.rows.load(Ordering::Relaxed), 3);
        });
    }

    #[test]
    fn directory_in_name_order_skipping_hidden_files() {
        both(|| {
            let dir = tempfile::tempdir().unwrap();
            write(&dir.path().join("b.csv"), "3,c\n");
            write(&dir.path().join("a.csv"), "1,a\n2,b\n");
            write(&dir.path().join(".hidden.csv"), "9,h\n");
            write(&dir.path().join("_SUCCESS"), "");
            std::fs::create_dir(dir.path().join("sub")).unwrap();
            write(&dir.path().join("sub/c.csv"), "8,s\n");
            let (mut reader, _) = open(dir.path(), &[("format", "csv"), ("batch.size", "1")]);
            let (got, end) = drain(&mut reader);
            assert!(matches!(end, Poll::End));
            assert_eq!(got, vec![r(1, "a"), r(2, "b"), r(3, "c")]);
            assert_eq!(
                reader.offset(),
                json!({"files": {
                    "a.csv": {"offset": 8, "line": 2},
                    "b.csv": {"offset": 4, "line": 1}
                }})
            );
        });
    }

    #[test]
    fn batch_size_limits_rows_per_poll() {
        both(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("a.csv");
            write(&path, "1,a\n2,b\n3,c\n");
            let (mut reader, _) = open(&path, &[("batch.size", "2")]);
            let Poll::Batch(b) = reader.poll().unwrap() else {
                panic!()
            };
            assert_eq!(b.num_rows(), 2);
            let Poll::Batch(b) = reader.poll().unwrap() else {
                panic!()
            };
            assert_eq!(rows(&b), vec![r(3, "c")]);
            assert!(matches!(reader.poll().unwrap(), Poll::End));
        });
    }

    #[test]
    fn following_appended_lines_and_new_files() {
        both(|| {
            for threads in [1, 2] {
                following_with(threads);
            }
        });
    }

    /// With 2 threads the reader reads ahead: finding nothing at the end of
    /// a followed file must not hide what is appended after.
    #[test]
    fn following_a_file_that_grows_after_a_read_ahead() {
        both(|| {
            let dir = tempfile::tempdir().unwrap();
            let a = dir.path().join("a.csv");
            write(&a, "1,a\n");
            let (mut reader, _) = open(
                dir.path(),
                &[("format", "csv"), ("source.monitor-interval", "50 ms")],
            );
            reader.set_decode_threads(2);
            let Poll::Batch(b) = reader.poll().unwrap() else {
                panic!("expected a batch")
            };
            assert_eq!(rows(&b), vec![r(1, "a")]);
            append(&a, "2,b\n");
            let (got, _) = drain(&mut reader);
            assert_eq!(got, vec![r(2, "b")]);
        });
    }

    fn following_with(threads: usize) {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.csv");
        write(&a, "1,a\n2,partial");
        let (mut reader, _) = open(
            dir.path(),
            &[("format", "csv"), ("source.monitor-interval", "50 ms")],
        );
        reader.set_decode_threads(threads);
        assert!(!is_bounded(&ConnectorOptions::new([(
            "follow".to_string(),
            "true".to_string()
        )]))
        .unwrap());
        let (got, idle) = drain(&mut reader);
        assert_eq!(got, vec![r(1, "a")]);
        assert!(matches!(idle, Poll::Idle(d) if d == Duration::from_millis(50)));
        // Nothing new: idle again.
        assert!(matches!(reader.poll().unwrap(), Poll::Idle(_)));

        append(&a, "\n3,\"open\n");
        write(&dir.path().join("0.csv"), "0,new\n");
        let (got, idle) = drain(&mut reader);
        assert_eq!(got, vec![r(0, "new"), r(2, "partial")]);
        assert!(matches!(idle, Poll::Idle(_)));

        append(&a, "quote\"\n");
        let (got, _) = drain(&mut reader);
        assert_eq!(got, vec![r(3, "open\nquote")]);
        assert_eq!(
            reader.offset(),
            json!({"files": {
                "0.csv": {"offset": 6, "line": 1},
                "a.csv": {"offset": 29, "line": 4}
            }})
        );
    }

    #[test]
    fn seek_restores_and_rejects_truncated_files() {
        both(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("a.csv");
            write(&path, "id,name\n1,a\n2,b\n3,c\n");
            let (mut reader, _) = open(&path, &[("header", "true"), ("batch.size", "2")]);
            let Poll::Batch(b) = reader.poll().unwrap() else {
                panic!()
            };
            assert_eq!(rows(&b), vec![r(1, "a"), r(2, "b")]);
            let saved = reader.offset();
            assert_eq!(
                saved,
                json!({"files": {"a.csv": {"offset": 16, "line": 3}}})
            );

            let (mut again, _) = open(&path, &[("header", "true")]);
            again.seek(&saved).unwrap();
            let (got, end) = drain(&mut again);
            assert!(matches!(end, Poll::End));
            assert_eq!(got, vec![r(3, "c")]);

            let (mut other, _) = open(&path, &[]);
            let err = other.seek(&json!({"files": {"a.csv": {"offset": 999, "line": 1}}}));
            assert!(matches!(
                err,
                Err(ConnectorError::Truncated {
                    len: 20,
                    offset: 999,
                    ..
                })
            ));
            assert!(matches!(
                other.seek(&json!({"row": 1})),
                Err(ConnectorError::InvalidOffset(_))
            ));

            // Truncated while reading.
            reader.seek(&saved).unwrap();
            write(&path, "1,a\n");
            assert!(matches!(
                reader.poll(),
                Err(ConnectorError::Truncated { .. })
            ));
        });
    }

    #[test]
    fn a_file_cut_short_while_read_ahead_fails_the_read() {
        // The reading threads map the file and read ahead; cut short under
        // them, the file yields an error, never a SIGBUS or rows of zeros.
        for threads in [1, 2] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("a.csv");
            let text: String = (0..200_000).map(|i| format!("{i},n{i}\n")).collect();
            write(&path, &text);
            let (mut reader, _) = open(&path, &[("batch.size", "1000")]);
            reader.set_decode_threads(threads);
            let mut next = 0;
            let Poll::Batch(b) = reader.poll().unwrap() else {
                panic!("a first batch")
            };
            for (id, _) in rows(&b) {
                assert_eq!(id, Some(next));
                next += 1;
            }
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(0)
                .unwrap();
            let failed = loop {
                match reader.poll() {
                    Ok(Poll::Batch(b)) => {
                        for (id, name) in rows(&b) {
                            assert_eq!((id, name), r(next, &format!("n{next}")));
                            next += 1;
                        }
                    }
                    Ok(other) => panic!("the file was cut short, yet {other:?}"),
                    Err(e) => break e,
                }
            };
            assert!(
                matches!(
                    failed,
                    ConnectorError::CutShort { .. } | ConnectorError::Truncated { .. }
                ),
                "{failed}"
            );
            assert!(next < 200_000);
        }
    }

    #[test]
    fn bad_options_are_refused() {
        both(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("a.dat");
            write(&path, "");
            let open = |extra: &[(&str, &str)]| {
                let mut options =
                    ConnectorOptions::new([("path".to_string(), path.display().to_string())]);
                for (k, v) in extra {
                    options.insert(k, v);
                }
                FileReader::new("s", &options, schema(), Arc::new(SourceMetrics::new())).map(|_| ())
            };
            assert!(matches!(open(&[]), Err(ConnectorError::MissingOption(o)) if o == "format"));
            assert!(open(&[("format", "json")]).is_ok());
            let option_of = |e: Result<(), ConnectorError>| match e {
                Err(ConnectorError::InvalidOption { option, .. }) => option,
                other => panic!("{other:?}"),
            };
            assert_eq!(option_of(open(&[("format", "xml")])), "format");
            assert_eq!(
                option_of(open(&[("format", "csv"), ("delimiter", ";;")])),
                "delimiter"
            );
            assert_eq!(
                option_of(open(&[("format", "csv"), ("header", "yes")])),
                "header"
            );
            assert_eq!(
                option_of(open(&[
                    ("format", "csv"),
                    ("source.monitor-interval", "soon")
                ])),
                "source.monitor-interval"
            );
            assert_eq!(
                option_of(open(&[("format", "csv"), ("batch.size", "0")])),
                "batch.size"
            );
            let missing = ConnectorOptions::new([
                ("path".to_string(), "/nonexistent/weir".to_string()),
                ("format".to_string(), "csv".to_string()),
            ]);
            assert!(matches!(
                FileReader::new("s", &missing, schema(), Arc::new(SourceMetrics::new())),
                Err(ConnectorError::Io { .. })
            ));
        });
    }
}
