//! What a job writes besides its view: where an INSERT INTO's rows go
//! (a connector table's options read as a sink), and the writers the job's
//! last task feeds and commits at each checkpoint.

use std::io::Write;
use std::path::PathBuf;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

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
    /// `print`: each change on the server's standard output, as Flink's
    /// print connector writes it (`[identifier> ]+I[v1, v2]`).
    Print { identifier: Option<String> },
}

/// A connector table's options read as an INSERT INTO target.
pub fn sink_target(options: &ConnectorOptions) -> Result<SinkTarget, ConnectorError> {
    match options.connector()?.as_str() {
        "blackhole" => Ok(SinkTarget::Blackhole),
        "print" => Ok(SinkTarget::Print {
            identifier: options.get("print-identifier").map(str::to_string),
        }),
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
            message: format!("'{other}' cannot be written to (INSERT INTO writes 'filesystem', 'blackhole' and 'print' tables)"),
        }),
    }
}

/// The CSV field delimiter as a byte (as the reader reads the option).
fn csv_delimiter(options: &ConnectorOptions) -> Result<u8, ConnectorError> {
    let c = super::file::csv_delimiter(options)?;
    u8::try_from(c).ok().filter(u8::is_ascii).ok_or_else(|| {
        invalid(
            options
                .find(&["csv.field-delimiter", "delimiter"])
                .map_or("delimiter", |(k, _)| k),
            "a sink writes a single ASCII character",
        )
    })
}

/// A sink writer a job feeds.
pub enum SinkWriter {
    /// One file, cut back to its committed length on recovery.
    File(FileSink),
    /// Part files published once committed.
    Parts(PartSink),
    /// Lines on an output (the server's standard output), not exactly once.
    Print(PrintSink),
}

impl SinkWriter {
    pub fn write(&mut self, batch: &RecordBatch, ops: &[&str]) -> Result<(), ConnectorError> {
        match self {
            SinkWriter::File(f) => f.write(batch, ops),
            SinkWriter::Parts(p) => p.write(batch, ops),
            SinkWriter::Print(p) => p.write(batch, ops),
        }
    }

    /// At a checkpoint: makes what was written durable. Returns what the
    /// checkpoint records (a file's length, or the last complete part), and
    /// a part to publish once the checkpoint has committed.
    pub fn commit(&mut self) -> Result<(u64, Option<Publish>), ConnectorError> {
        match self {
            SinkWriter::File(f) => Ok((f.commit()?, None)),
            SinkWriter::Parts(p) => p.roll(),
            SinkWriter::Print(p) => {
                p.out.flush().map_err(|source| ConnectorError::Io {
                    path: "standard output".into(),
                    source,
                })?;
                Ok((0, None))
            }
        }
    }
}

/// Flink's print connector: a line per change, its kind as Flink shows it
/// (`+I`, `-U`, `+U`, `-D`), then the row's values.
pub struct PrintSink {
    identifier: Option<String>,
    out: Box<dyn Write + Send>,
}

impl PrintSink {
    pub fn new(identifier: Option<String>, out: Box<dyn Write + Send>) -> Self {
        PrintSink { identifier, out }
    }

    fn write(&mut self, batch: &RecordBatch, ops: &[&str]) -> Result<(), ConnectorError> {
        let options = FormatOptions::default().with_null("NULL");
        let columns = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        let io = |source| ConnectorError::Io {
            path: "standard output".into(),
            source,
        };
        for row in 0..batch.num_rows() {
            let kind = match ops.get(row).copied() {
                Some("delete") => "-D",
                Some("update_before") => "-U",
                Some("update_after") => "+U",
                _ => "+I",
            };
            let values: Vec<String> = columns.iter().map(|c| c.value(row).to_string()).collect();
            let line = match &self.identifier {
                Some(id) => format!("{id}> {kind}[{}]\n", values.join(", ")),
                None => format!("{kind}[{}]\n", values.join(", ")),
            };
            self.out.write_all(line.as_bytes()).map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::{Arc, Mutex};

    /// A shared buffer to print into.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn print_writes_changes_as_flink_does() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None, Some(1)])),
                Arc::new(StringArray::from(vec![Some("a"), Some("b"), None])),
            ],
        )
        .unwrap();
        let buffer = Buffer::default();
        let mut sink =
            SinkWriter::Print(PrintSink::new(Some("out".into()), Box::new(buffer.clone())));
        sink.write(&batch, &["insert", "update_before", "update_after"])
            .unwrap();
        assert_eq!(sink.commit().unwrap().0, 0);
        assert_eq!(
            String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap(),
            "out> +I[1, a]\nout> -U[NULL, b]\nout> +U[1, NULL]\n"
        );
    }
}
