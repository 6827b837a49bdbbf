//! What a job writes besides its view: where an INSERT INTO's rows go
//! (a connector table's options read as a sink), and the writers the job's
//! last task feeds and commits at each checkpoint.

use std::path::PathBuf;

use datafusion::arrow::array::RecordBatch;

use super::file_sink::{FileSink, SinkFormat};
use super::options::invalid;
use super::part_sink::{PartSink, Publish};
use super::{ConnectorError, ConnectorOptions};

/// Where an INSERT INTO a connector table writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkTarget {
    /// `blackhole`: every row is dropped (Flink's connector for measuring).
    Blackhole,
    /// `filesystem` (or `file`): part files in the directory `path`, as
    /// Flink writes them; each INSERT INTO writes its own.
    Files { dir: PathBuf, format: SinkFormat },
}

/// A connector table's options read as an INSERT INTO target.
pub fn sink_target(options: &ConnectorOptions) -> Result<SinkTarget, ConnectorError> {
    match options.connector()?.as_str() {
        "blackhole" => Ok(SinkTarget::Blackhole),
        "file" => {
            let dir = PathBuf::from(options.require("path")?);
            let format = match options.get("format").map(str::to_ascii_lowercase) {
                Some(f) if f == "csv" => SinkFormat::Csv {
                    delimiter: csv_delimiter(options)?,
                },
                Some(f) if matches!(f.as_str(), "json" | "jsonl" | "json-lines" | "ndjson") => {
                    SinkFormat::Json
                }
                Some(f) => return Err(invalid("format", format!("expected 'csv' or 'json', got '{f}'"))),
                None => return Err(ConnectorError::MissingOption("format".into())),
            };
            Ok(SinkTarget::Files { dir, format })
        }
        other => Err(ConnectorError::InvalidOption {
            option: "connector".into(),
            message: format!("'{other}' cannot be written to (INSERT INTO writes 'filesystem' and 'blackhole' tables)"),
        }),
    }
}

/// The CSV field delimiter as a byte (the reader checks the same option).
fn csv_delimiter(options: &ConnectorOptions) -> Result<u8, ConnectorError> {
    let keys = ["csv.field-delimiter", "delimiter"];
    match options.find(&keys) {
        None => Ok(b','),
        Some((_, "\\t" | "tab")) => Ok(b'\t'),
        Some((key, v)) => match v.as_bytes() {
            [b] if v.is_ascii() && !matches!(b, b'"' | b'\n' | b'\r') => Ok(*b),
            _ => Err(invalid(
                key,
                "a sink writes a single ASCII character (not a quote or newline)",
            )),
        },
    }
}

/// A sink writer a job feeds.
pub enum SinkWriter {
    /// One file, cut back to its committed length on recovery.
    File(FileSink),
    /// Part files published once committed.
    Parts(PartSink),
}

impl SinkWriter {
    pub fn write(&mut self, batch: &RecordBatch, ops: &[&str]) -> Result<(), ConnectorError> {
        match self {
            SinkWriter::File(f) => f.write(batch, ops),
            SinkWriter::Parts(p) => p.write(batch, ops),
        }
    }

    /// At a checkpoint: makes what was written durable. Returns what the
    /// checkpoint records (a file's length, or the last complete part), and
    /// a part to publish once the checkpoint has committed.
    pub fn commit(&mut self) -> Result<(u64, Option<Publish>), ConnectorError> {
        match self {
            SinkWriter::File(f) => Ok((f.commit()?, None)),
            SinkWriter::Parts(p) => p.roll(),
        }
    }
}
