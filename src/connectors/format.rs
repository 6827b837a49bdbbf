//! Parsing CSV and JSON lines into Arrow batches, counting malformed rows.
//!
//! The records of a read lie in one buffer. Each is split into one optional
//! string per schema column, cut in place where no quote needs undoing (CSV
//! fields at the delimiters one scan of all the records found, `scan.rs`);
//! each column is then built from its strings: text as is, numbers with the
//! parsers Arrow's cast kernel uses, timestamps without a zone with a reader
//! of their common spelling that falls back to Arrow's (and agrees with it,
//! as a test checks), other types through the cast kernel itself (safe
//! mode), so the reading of every value is Arrow's. A record is malformed when it is not UTF-8, when
//! it cannot be split (bad JSON, wrong number of CSV fields, unterminated
//! quote), when a non-empty value fails to convert, or when a NOT NULL
//! column ends up NULL. Malformed records are counted, logged with their
//! position and dropped. A column the job does not read is checked the same
//! way but not kept: a column of type Null stands in its place.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::Utc;
use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, BooleanArray, LargeStringArray, PrimitiveBuilder, RecordBatch,
    StringArray, StringViewArray,
};
use datafusion::arrow::compute::kernels::cast_utils::{string_to_datetime, Parser as ArrowParse};
use datafusion::arrow::compute::{can_cast_types, cast_with_options, filter, CastOptions};
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, ArrowTimestampType, DataType, Field, Int64Type, SchemaRef, TimeUnit,
};

use super::file::mapped::MappedFile;
use super::{scan, with_unread_as_null, ConnectorError, SourceMetrics};
use column::{Column, Plain};

mod column;

/// How many records' values are parsed one column after another before
/// the next records (see [`Column::push`]).
const COLUMN_ROWS: usize = 64;

/// Most physical lines one CSV record (with quoted newlines) may span before
/// it is declared malformed, so that one stray quote cannot swallow a file.
pub(crate) const MAX_RECORD_LINES: usize = 1000;

/// The syntax of a file source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Csv { delimiter: char },
    Json,
}

impl Format {
    /// True when `record` ends inside a quoted CSV field, i.e. the record
    /// continues on the next line.
    pub(crate) fn incomplete(&self, record: &str) -> bool {
        match self {
            Format::Csv { delimiter } => {
                matches!(split_csv(record, *delimiter), Err(CsvError::Unterminated))
            }
            Format::Json => false,
        }
    }
}

/// Records read from one file: their bytes one after another, in a buffer
/// or a window of the mapped file, and where each record is in them.
#[derive(Default)]
pub(crate) struct Records {
    text: Text,
    /// The records, in order.
    pieces: Vec<Piece>,
    /// How many records the pieces hold.
    len: usize,
}

/// Some of [`Records`]: a run of lines, or one record read on its own.
#[derive(Debug, Clone, Copy)]
enum Piece {
    /// `count` records of one line each, the first on line `line`: the
    /// bytes `start..end`, which end with the last one's newline. Where each
    /// line ends is found only if the records are cut one by one.
    Lines {
        line: u64,
        start: usize,
        end: usize,
        count: usize,
    },
    One(Span),
}

/// Where the bytes of [`Records`] are.
enum Text {
    /// Read into a buffer of their own.
    Owned(Vec<u8>),
    /// `file.bytes()[start..end]`.
    Mapped {
        file: Arc<MappedFile>,
        start: usize,
        end: usize,
    },
}

impl Default for Text {
    fn default() -> Self {
        Text::Owned(Vec::new())
    }
}

impl Text {
    fn bytes(&self) -> &[u8] {
        match self {
            Text::Owned(data) => data,
            Text::Mapped { file, start, end } => &file.bytes()[*start..*end],
        }
    }
}

/// One record: its 1-based (first) line number and its bytes in
/// [`Records`]' buffer, without the line terminator.
#[derive(Debug, Clone, Copy)]
struct Span {
    line: u64,
    start: usize,
    end: usize,
}

impl Records {
    /// No records yet, to be read into `buffer` (emptied first).
    pub(crate) fn with_buffer(mut buffer: Vec<u8>) -> Self {
        buffer.clear();
        Records {
            text: Text::Owned(buffer),
            ..Records::default()
        }
    }

    /// No records yet, to be taken from `file` at byte `start` on (see
    /// [`Records::map_more`]).
    pub(crate) fn mapped(file: Arc<MappedFile>, start: usize) -> Self {
        Records {
            text: Text::Mapped {
                file,
                start,
                end: start,
            },
            ..Records::default()
        }
    }

    /// The buffer, to read other records into (an empty one for mapped
    /// records).
    pub(crate) fn into_buffer(self) -> Vec<u8> {
        match self.text {
            Text::Owned(data) => data,
            Text::Mapped { .. } => Vec::new(),
        }
    }

    pub(crate) fn data(&self) -> &[u8] {
        self.text.bytes()
    }

    /// The buffer, for the reader to append bytes to; None for mapped
    /// records.
    pub(crate) fn data_mut(&mut self) -> Option<&mut Vec<u8>> {
        match &mut self.text {
            Text::Owned(data) => Some(data),
            Text::Mapped { .. } => None,
        }
    }

    /// Takes up to `bytes` more of the mapped file, its pages mapped in;
    /// returns how many (0 at the end of the map, or for records in a
    /// buffer).
    pub(crate) fn map_more(&mut self, bytes: usize) -> usize {
        let Text::Mapped { file, end, .. } = &mut self.text else {
            return 0;
        };
        let to = file.bytes().len().min(end.saturating_add(bytes));
        let more = to - *end;
        if more > 0 {
            // A page past the file's end marks the map cut short, and the
            // reader fails the read.
            file.populate(*end, to);
            *end = to;
        }
        more
    }

    /// The records are of a mapped file that was cut short while mapped:
    /// some of their bytes may be zeros instead of the file's.
    pub(crate) fn cut_short(&self) -> bool {
        matches!(&self.text, Text::Mapped { file, .. } if file.cut_short())
    }

    /// The mapped file the records are of, and the byte after them.
    pub(crate) fn mapped_end(&self) -> Option<(Arc<MappedFile>, usize)> {
        match &self.text {
            Text::Mapped { file, end, .. } => Some((file.clone(), *end)),
            Text::Owned(_) => None,
        }
    }

    #[cfg(test)]
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.data_mut()
            .expect("records in a buffer")
            .extend_from_slice(bytes);
    }

    /// Adds the record at `data[start..end]`, first on line `line` (its line
    /// terminator, if any, is dropped).
    pub(crate) fn push(&mut self, line: u64, start: usize, end: usize) {
        let data = self.text.bytes();
        let mut end = end;
        if data[start..end].ends_with(b"\n") {
            end -= 1;
        }
        if data[start..end].ends_with(b"\r") {
            end -= 1;
        }
        self.pieces.push(Piece::One(Span { line, start, end }));
        self.len += 1;
    }

    /// Adds the records of one line each that start at `data[from..]`, the
    /// first on line `line`, up to `max` of them: each line up to a newline,
    /// and with `csv` none from the first quote on (a quoted field may hold
    /// a newline; the caller reads that record on its own). Returns the
    /// bytes taken; the records taken are the growth of [`Records::len`].
    pub(crate) fn push_lines(&mut self, from: usize, line: u64, max: usize, csv: bool) -> usize {
        let (count, bytes) = scan::lines(&self.text.bytes()[from..], csv, max);
        if count == 0 {
            return 0;
        }
        self.len += count;
        let end = from + bytes;
        match self.pieces.last_mut() {
            // Lines right after a run of lines continue it.
            Some(Piece::Lines {
                line: first,
                end: run_end,
                count: run,
                ..
            }) if *run_end == from && *first + *run as u64 == line => {
                *run_end = end;
                *run += count;
            }
            _ => self.pieces.push(Piece::Lines {
                line,
                start: from,
                end,
                count,
            }),
        }
        bytes
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The records as one run of lines, if they are: its first line number.
    fn lines(&self) -> Option<u64> {
        match self.pieces[..] {
            [Piece::Lines { line, .. }] => Some(line),
            _ => None,
        }
    }

    /// Where each record is (its line terminator left out), in order.
    fn spans(&self) -> Vec<Span> {
        let data = self.data();
        let mut spans = Vec::with_capacity(self.len);
        for piece in &self.pieces {
            match *piece {
                Piece::One(span) => spans.push(span),
                Piece::Lines {
                    line, start, end, ..
                } => {
                    let (mut line, mut start, run) = (line, start, start);
                    for newline in memchr::memchr_iter(b'\n', &data[run..end]) {
                        let newline = run + newline;
                        let end = match newline > start && data[newline - 1] == b'\r' {
                            true => newline - 1,
                            false => newline,
                        };
                        spans.push(Span { line, start, end });
                        (line, start) = (line + 1, newline + 1);
                    }
                }
            }
        }
        spans
    }

    /// The bytes of the records, from the first's start to the last's end
    /// (its line terminator left out), and the offset they start at.
    fn bytes(&self) -> Option<(usize, &[u8])> {
        let data = self.data();
        let first = match *self.pieces.first()? {
            Piece::Lines { start, .. } | Piece::One(Span { start, .. }) => start,
        };
        let last = match *self.pieces.last()? {
            Piece::One(span) => span.end,
            Piece::Lines { start, end, .. } => match end - 1 > start && data[end - 2] == b'\r' {
                true => end - 2,
                false => end - 1,
            },
        };
        Some((first, data.get(first..last)?))
    }

    /// The text of the records, checked as UTF-8 once for all of them (None
    /// if some record is not text), and the offset it starts at.
    fn text(&self) -> Option<(usize, &str)> {
        let (first, bytes) = self.bytes()?;
        Some((first, simdutf8::basic::from_utf8(bytes).ok()?))
    }

    /// Record `span`'s first line number and text, or why it is not text;
    /// sliced from `checked` (the text of all the records, known to be
    /// UTF-8, and the offset it starts at) when there is one.
    fn record<'a>(
        &'a self,
        s: Span,
        checked: Option<(usize, &'a str)>,
    ) -> (u64, Result<&'a str, String>) {
        let text = match checked {
            // Records start and end at line boundaries, which are ASCII: a
            // slice there is always at a character boundary.
            Some((base, text)) => Ok(&text[s.start - base..s.end - base]),
            None => std::str::from_utf8(&self.data()[s.start..s.end])
                .map_err(|e| format!("invalid UTF-8: {e}")),
        };
        (s.line, text)
    }

    #[cfg(test)]
    pub(crate) fn of_lines(lines: &[&str]) -> Self {
        let mut r = Records::default();
        for (i, l) in lines.iter().enumerate() {
            let start = r.data().len();
            r.extend(l.as_bytes());
            r.extend(b"\n");
            r.push(i as u64 + 1, start, r.data().len());
        }
        r
    }
}

/// Turns records into batches of one schema.
#[derive(Clone)]
pub(crate) struct Parser {
    stream: String,
    format: Format,
    schema: SchemaRef,
    /// Whether each column is built (else checked, and given as a column
    /// of type Null), and the schema of the batches made.
    read: Vec<bool>,
    output: SchemaRef,
    /// Column index by exact name, then by lower-cased name (JSON keys).
    exact: HashMap<String, usize>,
    folded: HashMap<String, usize>,
}

impl Parser {
    /// Fails if a column's type cannot be parsed from text.
    pub(crate) fn new(
        stream: &str,
        format: Format,
        schema: SchemaRef,
    ) -> Result<Self, ConnectorError> {
        for field in schema.fields() {
            let probe: ArrayRef = Arc::new(StringArray::from(vec!["0"]));
            let ok = can_cast_types(&DataType::Utf8, field.data_type())
                && cast_with_options(&probe, field.data_type(), &CastOptions::default()).is_ok();
            if !ok {
                return Err(ConnectorError::UnsupportedType {
                    connector: "file".to_string(),
                    column: field.name().clone(),
                    data_type: field.data_type().to_string(),
                });
            }
        }
        let mut exact = HashMap::new();
        let mut folded = HashMap::new();
        for (i, field) in schema.fields().iter().enumerate() {
            exact.entry(field.name().clone()).or_insert(i);
            folded.entry(field.name().to_lowercase()).or_insert(i);
        }
        Ok(Parser {
            stream: stream.to_string(),
            format,
            read: vec![true; schema.fields().len()],
            output: schema.clone(),
            schema,
            exact,
            folded,
        })
    }

    /// Builds only the columns flagged in `read` (any other length: all).
    /// The others are still checked, so a row is malformed or not whatever
    /// is read, and come out as columns of type Null.
    pub(crate) fn set_read_columns(&mut self, read: &[bool]) {
        if read.len() == self.schema.fields().len() {
            self.read = read.to_vec();
            self.output = with_unread_as_null(&self.schema, read);
        }
    }

    /// Parses `records` read from `path`. Returns the well-formed rows (or
    /// `None` if there are none), after counting them in `metrics.rows` and
    /// the others in `metrics.malformed`. Blank records are ignored.
    pub(crate) fn parse(
        &self,
        path: &str,
        records: &Records,
        metrics: &SourceMetrics,
    ) -> Result<Option<RecordBatch>, ConnectorError> {
        let width = self.schema.fields().len();
        // CSV text with an ASCII delimiter is cut at the structural bytes
        // found in one scan of all the records, which also tells whether
        // the text is ASCII, so UTF-8 needs no pass of its own.
        let (checked, scanned) = match (self.format, records.bytes()) {
            (Format::Csv { delimiter }, Some((first, bytes)))
                if delimiter.is_ascii() && bytes.len() < u32::MAX as usize =>
            {
                let mut positions = Vec::with_capacity(bytes.len() / 8);
                let structure = scan::structural(bytes, delimiter as u8, &mut positions);
                let text = match structure.ascii {
                    // SAFETY: ASCII bytes are valid UTF-8.
                    true => Some(unsafe { std::str::from_utf8_unchecked(bytes) }),
                    false => simdutf8::basic::from_utf8(bytes).ok(),
                };
                let scanned = text.is_some().then_some(Scanned {
                    delimiter: delimiter as u8,
                    positions,
                    breaks: structure.breaks,
                });
                (text.map(|text| (first, text)), scanned)
            }
            _ => (records.text(), None),
        };
        let whole = checked.map_or("", |(_, text)| text);
        let mut rows = Rows {
            parser: self,
            path,
            text: whole.as_bytes(),
            lines: Lines::Each(Vec::with_capacity(records.len())),
            keep: Vec::new(),
            malformed: 0,
        };
        // Every kept record's values, one record after another.
        let mut fields = Fields {
            text: whole,
            positions: None,
            spans: Vec::new(),
            owned: Vec::new(),
        };
        match &scanned {
            Some(scanned) if scanned.one_record_a_line(records, whole, width) => {
                let first = records.lines().expect("a run of lines");
                rows.lines = Lines::From {
                    first,
                    count: records.len(),
                };
                fields.positions = Some(&scanned.positions);
            }
            _ => {
                fields.spans.reserve(records.len() * width);
                let mut next = 0;
                for span in records.spans() {
                    let (line, text) = records.record(span, checked);
                    let before = fields.spans.len();
                    let split = match (text, &scanned) {
                        (Ok(text), _) if blank(text) => continue,
                        (Ok(text), Some(scanned)) => {
                            let at = (text.as_ptr() as usize - whole.as_ptr() as usize) as u32;
                            self.split_scanned(text, at, scanned, &mut next, &mut fields)
                        }
                        (Ok(text), None) => self.split(text, &mut fields),
                        (Err(reason), _) => Err(reason),
                    };
                    match split {
                        Ok(()) => {
                            if let Lines::Each(lines) = &mut rows.lines {
                                lines.push(line);
                            }
                        }
                        Err(reason) => {
                            fields.spans.truncate(before);
                            rows.malformed += 1;
                            self.warn(path, line, &reason);
                        }
                    }
                }
            }
        }

        rows.keep = vec![true; rows.lines.len()];
        let kept = rows.lines.len();
        let mut columns: Vec<Column> = (self.schema.fields().iter().zip(&self.read))
            .map(|(field, &read)| Column::new(field, read, kept))
            .collect();
        let checked: Vec<usize> = (0..width).filter(|&c| columns[c].checks()).collect();
        // A few records at a time, column by column: their text stays in
        // the nearest cache from one column to the next.
        for start in (0..kept).step_by(COLUMN_ROWS) {
            let block = start..kept.min(start + COLUMN_ROWS);
            for &c in &checked {
                let plain = fields.positions.map(|positions| Plain {
                    positions,
                    stride: width,
                    field: c,
                });
                columns[c].push(
                    &mut rows,
                    block.clone(),
                    |r| fields.get(r * width + c),
                    plain,
                );
            }
        }
        let mut arrays = columns
            .into_iter()
            .map(|column| column.finish(&mut rows))
            .collect::<Result<Vec<_>, _>>()?;

        metrics.add_malformed(rows.malformed);
        let good = rows.keep.iter().filter(|k| **k).count();
        if good == 0 {
            return Ok(None);
        }
        if good < rows.keep.len() {
            let mask = BooleanArray::from(rows.keep);
            arrays = arrays
                .iter()
                .map(|a| filter(a, &mask))
                .collect::<Result<_, _>>()?;
        }
        metrics.rows.fetch_add(good as u64, Ordering::Relaxed);
        Ok(Some(RecordBatch::try_new(self.output.clone(), arrays)?))
    }

    /// Cuts the CSV record `record`, at offset `at` of `fields.text`, at the
    /// delimiters among the structural `positions` of that text (`next`:
    /// the first one not yet passed). A record holding a quote or a newline
    /// is split by [`split_csv`] instead.
    fn split_scanned(
        &self,
        record: &str,
        at: u32,
        scanned: &Scanned,
        next: &mut usize,
        fields: &mut Fields<'_>,
    ) -> Result<(), String> {
        let (delimiter, positions) = (scanned.delimiter, &scanned.positions);
        let end = at + record.len() as u32;
        while positions.get(*next).is_some_and(|&p| p < at) {
            *next += 1;
        }
        let bytes = fields.text.as_bytes();
        let first = fields.spans.len();
        let mut start = at;
        let mut plain = true;
        while let Some(&p) = positions.get(*next).filter(|&&p| p < end) {
            *next += 1;
            if bytes[p as usize] == delimiter {
                fields.spans.push((start, p));
                start = p + 1;
            } else {
                plain = false;
            }
        }
        if plain {
            fields.spans.push((start, end));
        } else {
            fields.spans.truncate(first);
            self.split(record, fields)?;
        }
        self.field_count(fields.spans.len() - first)
    }

    fn field_count(&self, found: usize) -> Result<(), String> {
        let width = self.schema.fields().len();
        if found != width {
            return Err(format!("expected {width} fields, found {found}"));
        }
        Ok(())
    }

    /// Appends one value per schema column to `fields`, or says why the
    /// record is malformed (then `fields` may hold some of its values).
    fn split(&self, text: &str, fields: &mut Fields<'_>) -> Result<(), String> {
        let width = self.schema.fields().len();
        match self.format {
            Format::Csv { delimiter } => {
                let values = split_csv(text, delimiter).map_err(|e| e.to_string())?;
                self.field_count(values.len())?;
                for v in values {
                    fields.push_owned(v.map(Cow::into_owned));
                }
                Ok(())
            }
            Format::Json => {
                let value: serde_json::Value =
                    serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
                let serde_json::Value::Object(object) = value else {
                    return Err("a JSON line must be an object".to_string());
                };
                let mut values = vec![None; width];
                for (key, value) in object {
                    let index = self
                        .exact
                        .get(&key)
                        .or_else(|| self.folded.get(&key.to_lowercase()));
                    if let Some(&index) = index {
                        values[index] = json_text(value);
                    }
                }
                for v in values {
                    fields.push_owned(v);
                }
                Ok(())
            }
        }
    }

    fn warn(&self, path: &str, line: u64, reason: &str) {
        tracing::warn!(
            stream = %self.stream,
            "skipping malformed row at {path}:{line}: {reason}"
        );
    }
}

/// The structural bytes of a batch's CSV text (see [`scan::structural`]).
struct Scanned {
    delimiter: u8,
    positions: Vec<u32>,
    /// How many of them are quotes and newlines.
    breaks: usize,
}

impl Scanned {
    /// Whether `records`, whose text this is a scan of, are one run of
    /// plain lines of `width` (at least two) fields each: then value `i`
    /// (field `i % width` of record `i / width`) lies between positions
    /// `i - 1` and `i`, and the records need no cutting.
    ///
    /// So it is when the breaks are the `n - 1` newlines between the `n`
    /// lines, each is position `width - 1` of its record, and none follows
    /// a `\r`: every other position is a delimiter, each record has
    /// `width - 1` of them (so none is blank), and no value holds a quote
    /// or a line terminator.
    fn one_record_a_line(&self, records: &Records, text: &str, width: usize) -> bool {
        let n = records.len();
        if records.lines().is_none()
            || width < 2
            || n == 0
            || self.breaks != n - 1
            || self.positions.len() != n * width - 1
        {
            return false;
        }
        let bytes = text.as_bytes();
        (0..n - 1).all(|r| {
            let newline = self.positions[r * width + width - 1] as usize;
            bytes[newline] == b'\n' && bytes[newline - 1] != b'\r'
        })
    }
}

/// The values of the records split so far, one per schema column each:
/// between structural positions where the records are plain lines
/// (`positions`), else spans of the batch's text where no quote needed
/// undoing and owned strings otherwise.
struct Fields<'a> {
    text: &'a str,
    /// Value `i` is `text[positions[i - 1] + 1..positions[i]]` (from the
    /// start for the first, to the end for the last).
    positions: Option<&'a [u32]>,
    /// `text[start..end]`, or with `start == OWNED` the value `owned[end]`.
    spans: Vec<(u32, u32)>,
    owned: Vec<Option<String>>,
}

const OWNED: u32 = u32::MAX;

impl Fields<'_> {
    /// Value `i`; an empty span (an empty unquoted field) is NULL.
    #[inline]
    fn get(&self, i: usize) -> Option<&str> {
        let span = match self.positions {
            Some(positions) => (
                i.checked_sub(1).map_or(0, |before| positions[before] + 1),
                positions.get(i).copied().unwrap_or(self.text.len() as u32),
            ),
            None => self.spans[i],
        };
        match span {
            (OWNED, index) => self.owned[index as usize].as_deref(),
            (start, end) if start == end => None,
            (start, end) => {
                let (start, end) = (start as usize, end as usize);
                assert!(start <= end && end <= self.text.len());
                debug_assert!(self.text.is_char_boundary(start) && self.text.is_char_boundary(end));
                // SAFETY: within `text`, just checked; and at character
                // boundaries: a span not owned is cut by `split_scanned`
                // between ASCII bytes (its record's ends, which are line
                // ends, and ASCII delimiters), never inside a character.
                Some(unsafe { self.text.get_unchecked(start..end) })
            }
        }
    }

    fn push_owned(&mut self, value: Option<String>) {
        self.spans.push((OWNED, self.owned.len() as u32));
        self.owned.push(value);
    }
}

/// The records of one parse being turned into columns: which are still
/// well-formed, and the count of those that are not.
struct Rows<'p> {
    parser: &'p Parser,
    path: &'p str,
    /// The text the values are cut from (where they are not owned).
    text: &'p [u8],
    /// First line of each split record.
    lines: Lines,
    keep: Vec<bool>,
    malformed: u64,
}

/// The first line of each record split: one line each from `first` on
/// (a run of plain lines), or as listed.
enum Lines {
    From { first: u64, count: usize },
    Each(Vec<u64>),
}

impl Lines {
    fn len(&self) -> usize {
        match self {
            Lines::From { count, .. } => *count,
            Lines::Each(lines) => lines.len(),
        }
    }

    fn of(&self, row: usize) -> u64 {
        match self {
            Lines::From { first, .. } => first + row as u64,
            Lines::Each(lines) => lines[row],
        }
    }
}

impl Rows<'_> {
    /// Row `row` is malformed (counted and logged once, at its first fault).
    fn reject(&mut self, row: usize, reason: impl FnOnce() -> String) {
        if std::mem::replace(&mut self.keep[row], false) {
            self.malformed += 1;
            self.parser.warn(self.path, self.lines.of(row), &reason());
        }
    }

    /// One column from its text values, for the types [`Column`] does not
    /// build itself. Text and numbers are parsed straight from the text,
    /// with the parsers Arrow's cast kernel uses; other types go through
    /// the cast kernel (safe mode). Non-text values ignore surrounding
    /// blanks and are NULL when empty.
    fn column<'a>(
        &mut self,
        field: &Field,
        values: impl Iterator<Item = Option<&'a str>>,
    ) -> Result<ArrayRef, ConnectorError> {
        use datafusion::arrow::datatypes as t;
        let array: ArrayRef = match field.data_type() {
            DataType::Utf8 => Arc::new(StringArray::from_iter(values)),
            DataType::LargeUtf8 => Arc::new(LargeStringArray::from_iter(values)),
            DataType::Utf8View => Arc::new(StringViewArray::from_iter(values)),
            DataType::Int64 => self.numbers::<t::Int64Type>(field, values),
            DataType::Int32 => self.numbers::<t::Int32Type>(field, values),
            DataType::Int16 => self.numbers::<t::Int16Type>(field, values),
            DataType::Int8 => self.numbers::<t::Int8Type>(field, values),
            DataType::Float64 => self.numbers::<t::Float64Type>(field, values),
            DataType::Float32 => self.numbers::<t::Float32Type>(field, values),
            _ => return self.cast(field, values),
        };
        if !field.is_nullable() {
            for row in 0..array.len() {
                if array.is_null(row) {
                    self.reject(row, || not_null(field));
                }
            }
        }
        Ok(array)
    }

    /// A column nobody reads, checked as [`Rows::column`] checks it (by
    /// building it and dropping it). A Null column stands for it.
    fn check<'a>(
        &mut self,
        field: &Field,
        values: impl Iterator<Item = Option<&'a str>>,
    ) -> Result<ArrayRef, ConnectorError> {
        self.column(field, values)?;
        Ok(new_null_array(&DataType::Null, self.keep.len()))
    }

    /// Numbers, read as the cast kernel reads them.
    fn numbers<'a, T: ArrowPrimitiveType + ArrowParse>(
        &mut self,
        field: &Field,
        values: impl Iterator<Item = Option<&'a str>>,
    ) -> ArrayRef {
        self.parsed::<T>(field, values, T::parse)
    }

    /// A column of `T` parsed value by value; a value that does not parse
    /// makes its row malformed.
    fn parsed<'a, T: ArrowPrimitiveType>(
        &mut self,
        field: &Field,
        values: impl Iterator<Item = Option<&'a str>>,
        mut parse: impl FnMut(&str) -> Option<T::Native>,
    ) -> ArrayRef {
        let mut out = PrimitiveBuilder::<T>::with_capacity(self.keep.len());
        for (row, v) in values.enumerate() {
            let v = v.map(trim).filter(|v| !v.is_empty());
            match v.map(|v| (v, parse(v))) {
                None => out.append_null(),
                Some((_, Some(x))) => out.append_value(x),
                Some((v, None)) => {
                    out.append_null();
                    self.reject(row, || cannot_parse(field, v));
                }
            }
        }
        Arc::new(out.finish().with_data_type(field.data_type().clone()))
    }

    /// A column through Arrow's cast kernel from text.
    fn cast<'a>(
        &mut self,
        field: &Field,
        values: impl Iterator<Item = Option<&'a str>>,
    ) -> Result<ArrayRef, ConnectorError> {
        let input: StringArray = values
            .map(|v| v.map(str::trim).filter(|v| !v.is_empty()))
            .collect();
        let output = cast_with_options(&input, field.data_type(), &CastOptions::default())?;
        for row in 0..output.len() {
            if output.is_valid(row) {
                continue;
            }
            if input.is_valid(row) {
                self.reject(row, || cannot_parse(field, input.value(row)));
            } else if !field.is_nullable() {
                self.reject(row, || not_null(field));
            }
        }
        Ok(output)
    }
}

/// The record holds only whitespace (or nothing); at once when it starts
/// with a visible ASCII character.
fn blank(text: &str) -> bool {
    match text.as_bytes().first() {
        None => true,
        Some(b) if b.is_ascii_graphic() => false,
        Some(_) => text.trim().is_empty(),
    }
}

/// `v` without surrounding whitespace; at once when it starts and ends
/// with an ASCII character that is not whitespace (the common case).
fn trim(v: &str) -> &str {
    let plain = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii() && !b.is_ascii_whitespace());
    if plain(v.as_bytes().first()) && plain(v.as_bytes().last()) {
        v
    } else {
        v.trim()
    }
}

/// A BIGINT as Arrow's cast kernel reads it: up to 16 plain digits in a
/// slice of `text` (the batch's records) eight at a time, up to 18 (which
/// cannot overflow) a digit at a time, anything else by Arrow's parser.
fn int64(text: &[u8], v: &str) -> Option<i64> {
    if let Some(n) = plain_digits(text, v) {
        return Some(n);
    }
    let b = v.as_bytes();
    if (1..=18).contains(&b.len()) {
        let mut n = 0i64;
        for &c in b {
            let digit = c.wrapping_sub(b'0');
            if digit > 9 {
                return Int64Type::parse(v);
            }
            n = n * 10 + i64::from(digit);
        }
        return Some(n);
    }
    Int64Type::parse(v)
}

/// `v` if it is 1 to 16 ASCII digits in `text`: read from the whole 8-byte
/// words of `text` that end where `v` ends (the bytes before `v` in the
/// first word counted as zeros). None for anything else, or when `v` is not
/// part of `text` or starts in its first 8 (or 16) bytes.
fn plain_digits(text: &[u8], v: &str) -> Option<i64> {
    // Where `v` is in `text`, if it is (an owned value is elsewhere).
    let at = (v.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
    let end = at.checked_add(v.len())?;
    digits_in(text, at, end)
}

/// `text[start..end]` as [`plain_digits`] reads it: if it is 1 to 16 ASCII
/// digits, read from the whole 8-byte words of `text` that end at `end`.
#[inline]
fn digits_in(text: &[u8], start: usize, end: usize) -> Option<i64> {
    if end > text.len() {
        return None;
    }
    let len = end.checked_sub(start)?;
    let word = |end: usize, digits: usize| -> Option<u64> {
        let bytes: [u8; 8] = text.get(end.checked_sub(8)?..end)?.try_into().ok()?;
        eight_digits(u64::from_le_bytes(bytes), digits)
    };
    let n = match len {
        1..=8 => word(end, len)?,
        9..=16 => word(end - 8, len - 8)? * 100_000_000 + word(end, 8)?,
        _ => return None,
    };
    Some(n as i64)
}

/// The number the last `digits` (1 to 8) bytes of `word` spell, if they are
/// all ASCII digits (`word`: 8 bytes of text, the first in its lowest byte).
/// Pairs of digits, then fours, then all eight are combined with one
/// multiplication each, all eight lanes at once.
fn eight_digits(word: u64, digits: usize) -> Option<u64> {
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    let number = !0u64 << (8 * (8 - digits));
    let word = (word & number) | (ZEROS & !number);
    // Every byte 0x30..=0x39: its high half 3, and still 3 with 6 added.
    let high = (word & HIGH) | ((word.wrapping_add(0x0606_0606_0606_0606) & HIGH) >> 4);
    if high != 0x3333_3333_3333_3333 {
        return None;
    }
    let values = word - ZEROS;
    let pairs = values.wrapping_mul(10).wrapping_add(values >> 8);
    let fours = (pairs & 0x0000_00FF_0000_00FF).wrapping_mul(100 + (1_000_000 << 32));
    let rest = ((pairs >> 16) & 0x0000_00FF_0000_00FF).wrapping_mul(1 + (10_000 << 32));
    Some(fours.wrapping_add(rest) >> 32)
}

/// A timestamp without a time zone, as Arrow's cast kernel reads it (the
/// common spelling without its general parser).
/// `last`: the last date and second read.
fn naive<T: ArrowTimestampType>(v: &str, last: &mut LastTime) -> Option<i64> {
    let Some((seconds, nanos)) = common_datetime(v, last) else {
        let datetime = string_to_datetime(&Utc, v).ok()?.naive_utc();
        return T::from_naive_datetime(datetime, None);
    };
    // As chrono counts a time in each unit (`timestamp_millis` and the
    // like): whole seconds scaled, plus the fraction truncated to the unit.
    match T::UNIT {
        TimeUnit::Second => Some(seconds),
        TimeUnit::Millisecond => Some(seconds * 1_000 + i64::from(nanos / 1_000_000)),
        TimeUnit::Microsecond => Some(seconds * 1_000_000 + i64::from(nanos / 1_000)),
        // Before 1970 the fraction is taken from the next second up, so
        // that the earliest nanosecond i64 holds does not overflow on the way.
        TimeUnit::Nanosecond if seconds < 0 && nanos > 0 => (seconds + 1)
            .checked_mul(1_000_000_000)?
            .checked_add(i64::from(nanos) - 1_000_000_000),
        TimeUnit::Nanosecond => seconds
            .checked_mul(1_000_000_000)?
            .checked_add(i64::from(nanos)),
    }
}

/// `YYYY-MM-DD HH:MM:SS` (or with `T`), with up to nine digits of a
/// fraction of a second, as seconds since 1970-01-01 00:00:00 and
/// nanoseconds; None for any other text and any date or time chrono would
/// refuse, which is then left to Arrow's parser (so that the outcome is
/// always Arrow's).
fn common_datetime(v: &str, last: &mut LastTime) -> Option<(i64, u32)> {
    let b = v.as_bytes();
    let punctuated = b.len() >= 19
        && b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b' ' | b'T')
        && b[13] == b':'
        && b[16] == b':';
    if !punctuated {
        return None;
    }
    let number = |digits: &[u8]| {
        digits.iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    // The fraction's digits from the 8 bytes that end the text (the 9th,
    // if any, on its own), all at once.
    const SCALE: [u32; 9] = [
        100_000_000,
        10_000_000,
        1_000_000,
        100_000,
        10_000,
        1_000,
        100,
        10,
        1,
    ];
    let nanos = match b.len() {
        19 => 0,
        len @ 21..=29 if b[19] == b'.' => {
            let digits = len - 20;
            let last: [u8; 8] = b[len - 8..].try_into().ok()?;
            let low = eight_digits(u64::from_le_bytes(last), digits.min(8))? as u32;
            match digits {
                9 => number(&b[20..21])? * 100_000_000 + low,
                _ => low * SCALE[digits - 1],
            }
        }
        _ => return None,
    };
    if let Some((second, seconds)) = &last.second {
        if second[..] == b[..19] {
            return Some((*seconds, nanos));
        }
    }
    let days = match &last.date {
        Some((date, days)) if date[..] == b[..10] => *days,
        _ => {
            let (year, month, day) = (number(&b[0..4])?, number(&b[5..7])?, number(&b[8..10])?);
            if !(1..=12).contains(&month) || !(1..=days_in_month(year, month)).contains(&day) {
                return None;
            }
            let days = days_from_civil(i64::from(year), month, day);
            last.date = Some((b[..10].try_into().ok()?, days));
            days
        }
    };
    let (hour, minute, second) = (
        number(&b[11..13])?,
        number(&b[14..16])?,
        number(&b[17..19])?,
    );
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let seconds = days * 86_400 + i64::from(hour * 3_600 + minute * 60 + second);
    last.second = Some((b[..19].try_into().ok()?, seconds));
    Some((seconds, nanos))
}

/// The last date and second a column's timestamps were read at, as written
/// (`YYYY-MM-DD` and `YYYY-MM-DD HH:MM:SS`), and their day and second
/// numbers: a column's values mostly share their date, and in a stream
/// often their second.
#[derive(Default)]
struct LastTime {
    date: Option<([u8; 10], i64)>,
    second: Option<([u8; 19], i64)>,
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar
/// (month 1–12): counted in 400-year eras from 0000-03-01, so that a leap
/// day ends its year.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn cannot_parse(field: &Field, value: &str) -> String {
    format!(
        "column '{}': cannot parse {:?} as {}",
        field.name(),
        value,
        field.data_type()
    )
}

fn not_null(field: &Field) -> String {
    format!("column '{}' is NOT NULL but has no value", field.name())
}

/// A JSON value as the text Arrow will cast: strings as they are, other
/// scalars in their JSON spelling, nested values as JSON text.
fn json_text(value: serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum CsvError {
    Unterminated,
    AfterQuote(char),
}

impl std::fmt::Display for CsvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CsvError::Unterminated => write!(f, "unterminated quoted field"),
            CsvError::AfterQuote(c) => {
                write!(f, "unexpected character {c:?} after a closing quote")
            }
        }
    }
}

/// Splits one CSV record (RFC 4180: fields may be quoted with `"`, a quote
/// inside is doubled, quoted fields may hold delimiters and newlines). An
/// empty unquoted field is `None` (NULL); a quoted one is an empty string.
/// A quote inside an unquoted field is kept as an ordinary character.
fn split_csv(record: &str, delimiter: char) -> Result<Vec<Option<Cow<'_, str>>>, CsvError> {
    let mut fields = Vec::new();
    let mut rest = record;
    loop {
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut value = String::new();
            let mut tail = quoted;
            loop {
                let Some(end) = tail.find('"') else {
                    return Err(CsvError::Unterminated);
                };
                value.push_str(&tail[..end]);
                tail = &tail[end + 1..];
                match tail.strip_prefix('"') {
                    Some(after) => {
                        value.push('"');
                        tail = after;
                    }
                    None => break,
                }
            }
            fields.push(Some(Cow::Owned(value)));
            match tail.chars().next() {
                None => return Ok(fields),
                Some(c) if c == delimiter => rest = &tail[c.len_utf8()..],
                Some(c) => return Err(CsvError::AfterQuote(c)),
            }
        } else {
            let (field, tail) = match rest.find(delimiter) {
                Some(end) => (&rest[..end], Some(&rest[end + delimiter.len_utf8()..])),
                None => (rest, None),
            };
            fields.push((!field.is_empty()).then_some(Cow::Borrowed(field)));
            match tail {
                Some(tail) => rest = tail,
                None => return Ok(fields),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, Int64Array, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};

    fn csv(text: &str) -> Result<Vec<Option<String>>, CsvError> {
        split_csv(text, ',').map(|f| f.into_iter().map(|v| v.map(|v| v.into_owned())).collect())
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn csv_splitting() {
        assert_eq!(csv("a,b,c").unwrap(), vec![s("a"), s("b"), s("c")]);
        assert_eq!(csv("a,,c,").unwrap(), vec![s("a"), None, s("c"), None]);
        assert_eq!(csv("").unwrap(), vec![None]);
        assert_eq!(
            csv(r#""x, y","say ""hi""","""#).unwrap(),
            vec![s("x, y"), s(r#"say "hi""#), s("")]
        );
        assert_eq!(csv("\"a\nb\",c").unwrap(), vec![s("a\nb"), s("c")]);
        assert_eq!(csv(r#"5"x,y"#).unwrap(), vec![s(r#"5"x"#), s("y")]);
        assert_eq!(csv(r#""abc,d"#), Err(CsvError::Unterminated));
        assert_eq!(csv(r#""a"b,c"#), Err(CsvError::AfterQuote('b')));
        assert_eq!(
            split_csv("a;é;\"c;d\"", ';').unwrap(),
            vec![
                Some(Cow::Borrowed("a")),
                Some(Cow::Borrowed("é")),
                Some(Cow::Owned("c;d".to_string()))
            ]
        );
        assert!(Format::Csv { delimiter: ',' }.incomplete("1,\"abc"));
        assert!(!Format::Csv { delimiter: ',' }.incomplete("1,\"abc\""));
        assert!(!Format::Json.incomplete("{\"a\""));
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("price", DataType::Float64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]))
    }

    fn records(lines: &[&str]) -> Records {
        Records::of_lines(lines)
    }

    /// Column `i` of `batch` as its concrete array type.
    fn col<T: 'static>(batch: &RecordBatch, i: usize) -> &T {
        batch.column(i).as_any().downcast_ref::<T>().unwrap()
    }

    #[test]
    fn csv_rows_to_batch() {
        let parser = Parser::new("s", Format::Csv { delimiter: ',' }, schema()).unwrap();
        let metrics = SourceMetrics::new();
        let input = records(&[
            "1,apple,1.5,2024-01-01 00:00:05",
            "2,,,2024-01-01T00:00:05.250Z",
            "x,bad id,1,",                 // id not a number
            "3,too,few",                   // 3 fields
            ",no id,1,",                   // NOT NULL id missing
            "",                            // blank: ignored
            " 4 ,\" quoted, \",2e1,",      // blanks around a number are ignored
            "5,p,1.0,2024-13-01 00:00:00", // bad timestamp
        ]);
        let batch = parser.parse("f.csv", &input, &metrics).unwrap().unwrap();
        assert_eq!(batch.schema(), schema());
        assert_eq!(metrics.rows.load(Ordering::Relaxed), 3);
        assert_eq!(metrics.malformed.load(Ordering::Relaxed), 4);
        let ids = col::<Int64Array>(&batch, 0);
        assert_eq!(ids.values(), &[1, 2, 4]);
        let names = col::<StringArray>(&batch, 1);
        assert_eq!(
            names.iter().collect::<Vec<_>>(),
            vec![Some("apple"), None, Some(" quoted, ")]
        );
        let prices = col::<Float64Array>(&batch, 2);
        assert_eq!(
            prices.iter().collect::<Vec<_>>(),
            vec![Some(1.5), None, Some(20.0)]
        );
        let ts = col::<TimestampMillisecondArray>(&batch, 3);
        assert_eq!(
            ts.iter().collect::<Vec<_>>(),
            vec![Some(1_704_067_205_000), Some(1_704_067_205_250), None]
        );
    }

    /// CSV text that is not all ASCII: UTF-8 text is read as is, and a
    /// record that is not UTF-8 is malformed while the others are read.
    #[test]
    fn csv_text_beyond_ascii() {
        let parser = Parser::new("s", Format::Csv { delimiter: ',' }, schema()).unwrap();
        let metrics = SourceMetrics::new();
        let long = "é".repeat(40);
        let mut input = records(&["1,crème brûlée,1,", &format!("2,{long},2,")]);
        let batch = parser.parse("f.csv", &input, &metrics).unwrap().unwrap();
        let names = col::<StringArray>(&batch, 1);
        assert_eq!(names.value(0), "crème brûlée");
        assert_eq!(names.value(1), long);
        assert_eq!(metrics.malformed.load(Ordering::Relaxed), 0);
        // Line 3 is not UTF-8.
        let start = input.data().len();
        input.extend(b"3,caf\xe9,3,\n");
        input.push(3, start, input.data().len());
        let start = input.data().len();
        input.extend("4,naïve,4,\n".as_bytes());
        input.push(4, start, input.data().len());
        let batch = parser.parse("f.csv", &input, &metrics).unwrap().unwrap();
        assert_eq!(metrics.malformed.load(Ordering::Relaxed), 1);
        assert_eq!(col::<Int64Array>(&batch, 0).values(), &[1, 2, 4]);
        let names = col::<StringArray>(&batch, 1);
        assert_eq!(names.value(0), "crème brûlée");
        assert_eq!(names.value(2), "naïve");
    }

    #[test]
    fn scanned_records_with_quotes_line_breaks_and_long_fields() {
        let parser = Parser::new("s", Format::Csv { delimiter: ';' }, schema()).unwrap();
        let metrics = SourceMetrics::new();
        let long = "a".repeat(70);
        let first = format!("1;{long};2.5;");
        let input = records(&[
            &first,                                      // fields across 64-byte blocks
            "2;\"x;\"\"y\"\"\nz\";;2024-01-01 00:00:00", // quoted: delimiter, quotes, a line break
            "3;ab\"c;1;\r",                              // a quote inside a plain field; CRLF
            "4;\"\";;",                                  // quoted empty text is not NULL
            "5;x;1;2;3",                                 // 5 fields
            "6,x,1,",                                    // the wrong delimiter: 1 field
        ]);
        let batch = parser.parse("f.csv", &input, &metrics).unwrap().unwrap();
        assert_eq!(metrics.malformed.load(Ordering::Relaxed), 2);
        let ids = col::<Int64Array>(&batch, 0);
        assert_eq!(ids.values(), &[1, 2, 3, 4]);
        let names = col::<StringArray>(&batch, 1);
        assert_eq!(
            names.iter().collect::<Vec<_>>(),
            vec![
                Some(long.as_str()),
                Some("x;\"y\"\nz"),
                Some("ab\"c"),
                Some("")
            ]
        );
        let prices = col::<Float64Array>(&batch, 2);
        assert_eq!(
            prices.iter().collect::<Vec<_>>(),
            vec![Some(2.5), None, Some(1.0), None]
        );
    }

    #[test]
    fn scanned_split_agrees_with_the_record_splitter() {
        // Many records of text fields, some quoted around delimiters,
        // quotes and line breaks, some empty; each column must hold what
        // `split_csv` makes of its record alone.
        let schema = Arc::new(Schema::new(
            (0..4)
                .map(|i| Field::new(format!("c{i}"), DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        let parser = Parser::new("s", Format::Csv { delimiter: ',' }, schema).unwrap();
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        let lines: Vec<String> = (0..3000)
            .map(|_| {
                (0..4)
                    .map(|_| match next() % 7 {
                        0 => String::new(),
                        1 => format!("\"q,{}\"\"\n\"", next() % 100),
                        2 => format!("\"q,{}\"\"\"", next() % 100),
                        _ => "xyz".repeat(next() % 30),
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let metrics = SourceMetrics::new();
        let batch = parser
            .parse("f.csv", &records(&refs), &metrics)
            .unwrap()
            .unwrap();
        assert_eq!(batch.num_rows(), lines.len());
        for (row, line) in lines.iter().enumerate() {
            let expected = split_csv(line, ',').unwrap();
            for (c, value) in expected.iter().enumerate() {
                let column = batch
                    .column(c)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap();
                let got = column.is_valid(row).then(|| column.value(row));
                assert_eq!(got, value.as_deref(), "row {row}, column {c}: {line:?}");
            }
        }
    }

    #[test]
    fn plain_lines_are_cut_at_the_scanned_positions_and_others_one_by_one() {
        // Each batch's text columns must hold what `split_csv` makes of each
        // well-formed line alone, blank lines skipped and lines with another
        // field count malformed, whether or not the batch is plain lines.
        let text = |width: usize| {
            let fields = (0..width)
                .map(|i| Field::new(format!("c{i}"), DataType::Utf8, true))
                .collect::<Vec<_>>();
            Parser::new(
                "s",
                Format::Csv { delimiter: ',' },
                Arc::new(Schema::new(fields)),
            )
            .unwrap()
        };
        // Records as the file source reads them: `lines` (whole lines) as
        // a run, then `others` one by one; and what each record is.
        let read = |lines: &str, others: &[&str]| {
            let mut r = Records::default();
            r.extend(lines.as_bytes());
            assert_eq!(r.push_lines(0, 1, usize::MAX, true), lines.len());
            for other in others {
                let start = r.data().len();
                r.extend(other.as_bytes());
                r.extend(b"\n");
                r.push(r.len() as u64 + 1, start, r.data().len());
            }
            let mut each: Vec<String> = lines
                .split_terminator('\n')
                .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
                .collect();
            each.extend(others.iter().map(|o| o.to_string()));
            (r, each)
        };
        let cases = [
            (
                "plain lines",
                read("a,b,c\n,,\ndé,,f\n1,2,3\n", &[]),
                3,
                true,
            ),
            ("one line", read("a,b,c\n", &[]), 3, true),
            (
                "the last line ends in CR LF",
                read("a,b,c\nd,e,f\r\n", &[]),
                3,
                true,
            ),
            ("a blank line", read("a,b,c\n\nd,e,f\n", &[]), 3, false),
            (
                "a line of blanks",
                read("a,b,c\n   \nd,e,f\n", &[]),
                3,
                false,
            ),
            (
                "CR LF line ends",
                read("a,b,c\r\nd,e,f\r\ng,h,i\n", &[]),
                3,
                false,
            ),
            // One field short and one over: as many delimiters in all as
            // plain lines have.
            (
                "short then long",
                read("a,b\nc,d,e,f\ng,h,i\n", &[]),
                3,
                false,
            ),
            (
                "a quoted field",
                read("e,f,g\n", &["a,\"b,c\",d"]),
                3,
                false,
            ),
            (
                "a quoted line break",
                read("", &["a,\"b\nc\",d", "e,f,g"]),
                3,
                false,
            ),
            ("one column", read("a\n\nb\n", &[]), 1, false),
        ];
        for (name, (records, each), width, plain) in cases {
            let parser = text(width);
            let mut positions = Vec::new();
            let (_, bytes) = records.bytes().unwrap();
            let structure = scan::structural(bytes, b',', &mut positions);
            let scanned = Scanned {
                delimiter: b',',
                positions,
                breaks: structure.breaks,
            };
            let text = std::str::from_utf8(bytes).unwrap();
            assert_eq!(
                scanned.one_record_a_line(&records, text, width),
                plain,
                "{name}"
            );
            let metrics = SourceMetrics::new();
            let batch = parser.parse("f.csv", &records, &metrics).unwrap().unwrap();
            let mut row = 0;
            let mut malformed = 0;
            for line in &each {
                let values = split_csv(line, ',').unwrap();
                if blank(line) {
                    continue;
                }
                if values.len() != width {
                    malformed += 1;
                    continue;
                }
                for (c, value) in values.iter().enumerate() {
                    let column: &StringArray = col(&batch, c);
                    let got = column.is_valid(row).then(|| column.value(row));
                    let expected = value.as_deref().filter(|v| !v.is_empty());
                    assert_eq!(got, expected, "{name}: row {row}, column {c}");
                }
                row += 1;
            }
            assert_eq!(batch.num_rows(), row, "{name}");
            assert_eq!(
                metrics.malformed.load(Ordering::Relaxed),
                malformed,
                "{name}"
            );
        }
    }

    #[test]
    fn malformed_rows_are_told_by_their_line() {
        // Lines 5 to 7 of a file, the second malformed, read as a run of
        // lines (cut at the scanned positions) and with a record read on
        // its own after them (cut record by record); and a short row.
        #[derive(Clone, Default)]
        struct Log(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Log {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let parser = Parser::new("s", Format::Csv { delimiter: ',' }, schema).unwrap();
        for (lines, other, expected) in [
            ("1,a\nx,b\n3,c\n", None, "f.csv:6: "),
            ("1,a\nx,b\n3,c\n", Some("\"4\",d"), "f.csv:6: "),
            ("1,a\n2\n3,c\n", None, "f.csv:6: expected 2 fields, found 1"),
        ] {
            let log = Log::default();
            let writer = log.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish();
            let _default = tracing::subscriber::set_default(subscriber);
            let mut records = Records::default();
            records.extend(lines.as_bytes());
            records.push_lines(0, 5, usize::MAX, true);
            if let Some(other) = other {
                let start = records.data().len();
                records.extend(other.as_bytes());
                records.push(8, start, records.data().len());
            }
            let metrics = SourceMetrics::new();
            let batch = parser.parse("f.csv", &records, &metrics).unwrap().unwrap();
            assert_eq!(batch.num_rows(), records.len() - 1);
            assert_eq!(metrics.malformed.load(Ordering::Relaxed), 1);
            let logged = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
            assert_eq!(
                logged.matches("skipping malformed row").count(),
                1,
                "{logged}"
            );
            assert!(logged.contains(expected), "{lines:?}: {logged}");
        }
    }

    #[test]
    fn json_rows_to_batch() {
        let parser = Parser::new("s", Format::Json, schema()).unwrap();
        let metrics = SourceMetrics::new();
        let mut input = records(&[
            r#"{"id": 1, "NAME": "a", "price": 2, "ts": "2024-01-01 00:00:00.5", "extra": [1]}"#,
            r#"{"id": 2}"#,
            r#"{"id": 3, "price": "cheap"}"#,
            r#"{"id": 4, "name": {"k": true}, "price": null"#,
            r#"[1, 2]"#,
            r#"{"id": "7", "name": false, "price": 1e2}"#,
        ]);
        // Line 7 is not UTF-8.
        let start = input.data().len();
        input.extend(b"{\"id\": \xff}\n");
        input.push(7, start, input.data().len());
        let batch = parser.parse("f.json", &input, &metrics).unwrap().unwrap();
        assert_eq!(metrics.rows.load(Ordering::Relaxed), 3);
        assert_eq!(metrics.malformed.load(Ordering::Relaxed), 4);
        let ids = col::<Int64Array>(&batch, 0);
        assert_eq!(ids.values(), &[1, 2, 7]);
        let names = col::<StringArray>(&batch, 1);
        assert_eq!(
            names.iter().collect::<Vec<_>>(),
            vec![Some("a"), None, Some("false")]
        );
        let prices = col::<Float64Array>(&batch, 2);
        assert_eq!(
            prices.iter().collect::<Vec<_>>(),
            vec![Some(2.0), None, Some(100.0)]
        );
        let ts = col::<TimestampMillisecondArray>(&batch, 3);
        assert_eq!(
            ts.iter().collect::<Vec<_>>(),
            vec![Some(1_704_067_200_500), None, None]
        );
    }

    /// Values parsed straight from the text come out as Arrow's cast kernel
    /// makes them from the same (trimmed) text, NULLs and failures included.
    #[test]
    fn typed_columns_agree_with_the_cast_kernel() {
        let values = [
            "0",
            " 42 ",
            "-7",
            "+5",
            "9223372036854775807",
            "9223372036854775808",
            "1e3",
            "2.5",
            "-0.0",
            "NaN",
            "inf",
            "0x10",
            "",
            "  ",
            "abc",
            "1,5",
            "12abc",
            "2024-01-01 00:00:00",
            "2024-01-01T00:00:00.123",
            "2024-02-29 23:59:59.999999999",
            // The same second again, read from the last one's.
            "2024-02-29 23:59:59.5",
            "2024-02-29 23:59:59",
            "2024-02-29T23:59:59.25",
            "1969-12-31 23:59:59.9995",
            "1900-01-01 00:00:00.001",
            "2024-01-01 00:00:00Z",
            "2024-01-01T01:00:00+01:00",
            "2024-01-01",
            "2024-13-01 00:00:00",
            "1700000000",
            "2023-02-29 00:00:00",
            "2024-01-01 24:00:00",
            "2024-01-01 23:59:60",
            "2024-01-01 23:59:60.5",
            "2024-01-01 00:00:00.",
            "2024-01-01 00:00:00.1234567891",
            "2024-01-01 00:00:00.12345678",
            "2024-01-01 00:00:00.1a3",
            "2024-01-01 00:00:00.12345678a",
            "2024-01-01 00:00:00.a23456789",
            "2024-01-01 00:00:00.1234a6789",
            "2024-01-01 00:00:00 123",
            "2024-01-01t00:00:00",
            "0000-01-01 00:00:00",
            "9999-12-31 23:59:59.9",
            "2024-1-01 00:00:00",
            "2024-01-01 00:00:00 ",
            "2024-01-01 00:00:0a",
            "+024-01-01 00:00:00",
            "-9223372036854775808",
            "-9223372036854775809",
            "-123456789012345678",
            "0001",
            "-0",
            "-",
            "--1",
            "1-",
            "1 2",
            "1600-02-29 12:00:00",
            "1700-02-29 12:00:00",
            "2000-02-29 00:00:00.5",
            "2100-02-29 00:00:00",
            "1677-09-21 00:12:43.145224191",
            "1677-09-21 00:12:43.145224192",
            "2262-04-11 23:47:16.854775807",
            "2262-04-11 23:47:16.854775808",
            "0001-01-01 00:00:00",
            "1969-12-31 23:59:59.999999999",
            "2024-00-10 00:00:00",
            "2024-04-31 00:00:00",
            "2024-01-00 00:00:00",
            "2024-01-01 00:60:00",
        ];
        // And generated ones: dates and times in and out of range, numbers
        // of every length around the 18 digits read directly.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut generated = Vec::new();
        for _ in 0..3000 {
            // Runs of one year and month, with days repeated or not.
            let (year, month) = (next(10_000), next(14));
            for _ in 0..3 {
                generated.push(format!(
                    "{year:04}-{month:02}-{:02} {:02}:{:02}:{:02}.{}",
                    next(33),
                    next(25),
                    next(61),
                    next(61),
                    next(1_000_000_000)
                ));
            }
            let digits = 1 + next(20) as usize;
            let mut number: Vec<u8> = (0..digits).map(|_| b'0' + next(10) as u8).collect();
            generated.push(String::from_utf8(number.clone()).unwrap());
            // The same with one byte that is not a digit, anywhere.
            let at = next(digits as u64) as usize;
            number[at] = b"/:a -+.\xc3"[next(8) as usize];
            generated.push(String::from_utf8_lossy(&number).into_owned());
        }
        let separate: Vec<&str> = values
            .iter()
            .copied()
            .chain(generated.iter().map(String::as_str))
            .collect();
        // The same values cut from one text, as a batch's are: numbers of
        // up to 16 digits are then read from whole words of the text (but
        // not the first ones, too near its start).
        let joined = separate.join(",");
        let mut at = 0;
        let mut cut = Vec::new();
        for v in &separate {
            cut.push(&joined[at..at + v.len()]);
            at += v.len() + 1;
        }
        for (text, values) in [(&[][..], separate), (joined.as_bytes(), cut)] {
            typed_columns_agree(text, &values);
        }
    }

    fn typed_columns_agree(text: &[u8], values: &[&str]) {
        let types = [
            DataType::Int64,
            DataType::Int32,
            DataType::Int8,
            DataType::Float64,
            DataType::Float32,
            DataType::Timestamp(TimeUnit::Second, None),
            DataType::Timestamp(TimeUnit::Millisecond, None),
            DataType::Timestamp(TimeUnit::Microsecond, None),
            DataType::Timestamp(TimeUnit::Nanosecond, None),
        ];
        let trimmed: StringArray = values
            .iter()
            .map(|v| Some(v.trim()).filter(|v| !v.is_empty()))
            .collect();
        for data_type in types {
            let schema = Arc::new(Schema::new(vec![Field::new("v", data_type.clone(), true)]));
            let parser = Parser::new("s", Format::Json, schema.clone()).unwrap();
            let field = schema.field(0);
            let want = cast_with_options(&trimmed, &data_type, &CastOptions::default()).unwrap();
            // A row is malformed exactly where a value was there but did not parse.
            let failed: Vec<bool> = (0..values.len())
                .map(|i| trimmed.is_valid(i) && want.is_null(i))
                .collect();
            // Built by the column at once, by `Column` a few rows at a time,
            // and only checked by `Column`.
            // With `text`, `Column` also takes where the values lie in it,
            // as for a run of plain lines: each ends where the next's comma is.
            let (positions, hows): (Vec<u32>, &[&str]) = match text.is_empty() {
                true => (Vec::new(), &["column", "Column", "Column, checked"]),
                false => (
                    values
                        .iter()
                        .map(|v| (v.as_ptr() as usize - text.as_ptr() as usize + v.len()) as u32)
                        .collect(),
                    &[
                        "column",
                        "Column",
                        "Column, checked",
                        "Column, plain",
                        "Column, plain, checked",
                    ],
                ),
            };
            for &how in hows {
                let mut rows = Rows {
                    parser: &parser,
                    path: "f",
                    text,
                    lines: Lines::From {
                        first: 1,
                        count: values.len(),
                    },
                    keep: vec![true; values.len()],
                    malformed: 0,
                };
                let got = match how {
                    "column" => rows.column(field, values.iter().map(|v| Some(*v))).unwrap(),
                    _ => {
                        let read = !how.ends_with("checked");
                        let mut column = Column::new(field, read, values.len());
                        let plain = how.contains("plain").then(|| Plain {
                            positions: &positions[..positions.len() - 1],
                            stride: 1,
                            field: 0,
                        });
                        for start in (0..values.len()).step_by(7) {
                            let block = start..values.len().min(start + 7);
                            column.push(&mut rows, block, |r| Some(values[r]), plain);
                        }
                        column.finish(&mut rows).unwrap()
                    }
                };
                let rejected: Vec<bool> = rows.keep.iter().map(|k| !k).collect();
                assert_eq!(rejected, failed, "{data_type}, {how}");
                if how.ends_with("checked") {
                    assert_eq!(got.data_type(), &DataType::Null, "{data_type}, {how}");
                    continue;
                }
                if let Some(i) = (0..values.len()).find(|&i| got.slice(i, 1) != want.slice(i, 1)) {
                    panic!(
                        "{data_type}, {how}: {:?} read as {:?}, Arrow reads {:?}",
                        values[i],
                        got.slice(i, 1),
                        want.slice(i, 1)
                    );
                }
            }
        }
    }

    #[test]
    fn booleans_dates_and_decimals() {
        use datafusion::arrow::array::{Date32Array, Decimal128Array};
        let schema = Arc::new(Schema::new(vec![
            Field::new("ok", DataType::Boolean, true),
            Field::new("day", DataType::Date32, true),
            Field::new("amount", DataType::Decimal128(6, 2), true),
        ]));
        let parser = Parser::new("s", Format::Csv { delimiter: '\t' }, schema.clone()).unwrap();
        let metrics = SourceMetrics::new();
        let input = records(&[
            "true\t2024-01-02\t1.25",
            "false\t\t-3",
            "maybe\t2024-01-02\t1",
            "true\t2024-02-30\t1",
            "true\t2024-01-02\tlots",
        ]);
        let batch = parser.parse("f.tsv", &input, &metrics).unwrap().unwrap();
        assert_eq!(batch.schema(), schema);
        assert_eq!(metrics.rows.load(Ordering::Relaxed), 2);
        assert_eq!(metrics.malformed.load(Ordering::Relaxed), 3);
        let ok = col::<BooleanArray>(&batch, 0);
        assert_eq!(ok.iter().collect::<Vec<_>>(), vec![Some(true), Some(false)]);
        let day = col::<Date32Array>(&batch, 1);
        // 2024-01-02 is day 19_724 after the epoch.
        assert_eq!(day.iter().collect::<Vec<_>>(), vec![Some(19_724), None]);
        let amount = col::<Decimal128Array>(&batch, 2);
        assert_eq!(amount.values(), &[125, -300]);
    }

    #[test]
    fn unread_columns_are_checked_but_not_built() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("price", DataType::Float64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]));
        let mut parser = Parser::new("s", Format::Csv { delimiter: ',' }, schema).unwrap();
        parser.set_read_columns(&[false, false, true, false]);
        let metrics = SourceMetrics::new();
        let input = records(&[
            "1,a,1.5,2024-01-01 00:00:05",
            "x,b,2.5,",                    // id (unread) not a number
            "2,,3.5,",                     // NOT NULL name (unread) missing
            "3,c,4.5,2024-13-01 00:00:00", // ts (unread) not a time
            "4,d,5.5,",
            "5,e,6.5,,", // 5 fields
            ",f,7.5,",   // NOT NULL id (unread) missing
        ]);
        let batch = parser.parse("f.csv", &input, &metrics).unwrap().unwrap();
        assert_eq!(metrics.rows.load(Ordering::Relaxed), 2);
        assert_eq!(metrics.malformed.load(Ordering::Relaxed), 5);
        let types: Vec<&DataType> = batch
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.data_type())
            .collect();
        assert_eq!(
            types,
            [
                &DataType::Null,
                &DataType::Null,
                &DataType::Float64,
                &DataType::Null
            ]
        );
        let prices = col::<Float64Array>(&batch, 2);
        assert_eq!(prices.values(), &[1.5, 5.5]);
        assert_eq!(batch.column(0).len(), 2);
    }

    #[test]
    fn all_malformed_gives_none() {
        let parser = Parser::new("s", Format::Json, schema()).unwrap();
        let metrics = SourceMetrics::new();
        let out = parser
            .parse("f", &records(&["nope", "{}"]), &metrics)
            .unwrap();
        assert!(out.is_none());
        assert_eq!(metrics.malformed.load(Ordering::Relaxed), 2);
        assert_eq!(metrics.rows.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn unparseable_type_is_refused() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "m",
            DataType::Map(
                Arc::new(Field::new("e", DataType::Struct(Default::default()), false)),
                false,
            ),
            true,
        )]));
        assert!(matches!(
            Parser::new("s", Format::Json, schema),
            Err(ConnectorError::UnsupportedType { .. })
        ));
    }
}
