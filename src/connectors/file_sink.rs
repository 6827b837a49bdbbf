//! The file sink of a view (`CREATE SINK ... FROM view`): its changes as
//! JSON lines, each with its change kind in `op`. Exactly once by
//! truncation: a checkpoint records the file's length after fsync; on
//! recovery the file is cut back to the committed length and the replayed
//! changes are written again. Also the row formats every file sink writes.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::csv::WriterBuilder;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::json::LineDelimitedWriter;

use super::{ConnectorError, ConnectorOptions};

/// How a sink file writes rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkFormat {
    /// JSON lines, each with its change kind in `op`.
    Changes,
    /// JSON lines of the rows alone.
    Json,
    /// CSV records without a header.
    Csv { delimiter: u8 },
}

impl SinkFormat {
    pub(super) fn extension(self) -> &'static str {
        match self {
            SinkFormat::Changes | SinkFormat::Json => "jsonl",
            SinkFormat::Csv { .. } => "csv",
        }
    }
}

/// An open sink file.
pub struct FileSink {
    path: PathBuf,
    format: SinkFormat,
    out: BufWriter<File>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ConnectorError + '_ {
    move |source| ConnectorError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Checks a sink's options: `connector = 'file'`, `path`, `format = 'json'`.
pub fn sink_path(options: &ConnectorOptions) -> Result<PathBuf, ConnectorError> {
    if options.connector()? != "file" {
        return Err(ConnectorError::UnknownConnector(format!(
            "{} (sinks support 'file')",
            options.connector()?
        )));
    }
    let format = options.get("format").unwrap_or("json").to_ascii_lowercase();
    if !matches!(format.as_str(), "json" | "jsonl" | "json-lines") {
        return Err(ConnectorError::InvalidOption {
            option: "format".into(),
            message: format!("sinks write 'json' (lines), not '{format}'"),
        });
    }
    Ok(PathBuf::from(options.require("path")?))
}

impl FileSink {
    /// Starts a new sink file (an existing file is replaced).
    pub fn create(path: &Path, format: SinkFormat) -> Result<FileSink, ConnectorError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let file = File::create(path).map_err(io(path))?;
        Ok(FileSink {
            path: path.to_path_buf(),
            format,
            out: BufWriter::new(file),
        })
    }

    /// Reopens a sink file after a restart, cut back to its committed length.
    pub fn resume(
        path: &Path,
        committed: u64,
        format: SinkFormat,
    ) -> Result<FileSink, ConnectorError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io(path))?;
        let len = file.metadata().map_err(io(path))?.len();
        if len < committed {
            return Err(ConnectorError::InvalidOffset(format!(
                "sink file {} has {len} bytes but {committed} were committed: it was changed outside Weir",
                path.display()
            )));
        }
        file.set_len(committed).map_err(io(path))?;
        file.seek(SeekFrom::End(0)).map_err(io(path))?;
        Ok(FileSink {
            path: path.to_path_buf(),
            format,
            out: BufWriter::new(file),
        })
    }

    /// Writes rows; `ops` are their change kinds, written by a changes sink.
    pub fn write(&mut self, batch: &RecordBatch, ops: &[&str]) -> Result<(), ConnectorError> {
        write_rows(&mut self.out, self.format, batch, ops)
    }

    /// Makes everything written durable; returns the file's length, the
    /// position a recovery cuts back to.
    pub fn commit(&mut self) -> Result<u64, ConnectorError> {
        let path = self.path.clone();
        self.out.flush().map_err(io(&path))?;
        let file = self.out.get_ref();
        let meta = file.metadata().map_err(io(&path))?;
        if !meta.is_file() {
            // A pipe or device cannot be cut back on recovery.
            return Err(ConnectorError::InvalidOption {
                option: "path".into(),
                message: format!(
                    "{} is not a regular file: a sink's checkpoint records the file's length \
                     and recovery cuts the file back to it",
                    path.display()
                ),
            });
        }
        file.sync_data().map_err(io(&path))?;
        Ok(meta.len())
    }
}

/// Writes rows in `format` (`ops`: their change kinds, for a changes sink).
pub(super) fn write_rows(
    out: &mut impl Write,
    format: SinkFormat,
    batch: &RecordBatch,
    ops: &[&str],
) -> Result<(), ConnectorError> {
    match format {
        SinkFormat::Changes => {
            let mut fields = vec![Field::new("op", DataType::Utf8, false)];
            fields.extend(batch.schema().fields().iter().map(|f| f.as_ref().clone()));
            let mut columns = vec![Arc::new(StringArray::from(ops.to_vec())) as _];
            columns.extend(batch.columns().iter().cloned());
            let tagged = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
            let mut w = LineDelimitedWriter::new(out);
            w.write(&tagged)?;
            w.finish()?;
        }
        SinkFormat::Json => {
            let mut w = LineDelimitedWriter::new(out);
            w.write(batch)?;
            w.finish()?;
        }
        SinkFormat::Csv { delimiter } => {
            // Timestamps as Flink's CSV writes them (and Weir's reader reads).
            let mut w = WriterBuilder::new()
                .with_header(false)
                .with_delimiter(delimiter)
                .with_timestamp_format("%Y-%m-%d %H:%M:%S%.f".to_string())
                .build(out);
            w.write(batch)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;

    fn batch(v: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(v.to_vec()))]).unwrap()
    }

    #[test]
    fn resume_cuts_back_to_the_committed_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut s = FileSink::create(&path, SinkFormat::Changes).unwrap();
        s.write(&batch(&[1, 2]), &["insert", "insert"]).unwrap();
        let committed = s.commit().unwrap();
        s.write(&batch(&[2, 3]), &["update_before", "update_after"])
            .unwrap();
        s.commit().unwrap();
        drop(s);
        let mut s = FileSink::resume(&path, committed, SinkFormat::Changes).unwrap();
        s.write(&batch(&[9]), &["delete"]).unwrap();
        s.commit().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"op\":\"insert\",\"n\":1}\n{\"op\":\"insert\",\"n\":2}\n{\"op\":\"delete\",\"n\":9}\n"
        );
        assert!(FileSink::resume(&path, 10_000, SinkFormat::Changes).is_err());
    }
}
