//! The `filesystem` sink of an INSERT INTO, written as Flink writes one:
//! rows as CSV or JSON lines in part files of a directory. A part is
//! written hidden (`.part-<sink>-<n>.<ext>.inprogress`, which readers of
//! the directory skip), rolled at each checkpoint, and published under its
//! final name (`part-<sink>-<n>.<ext>`, numbered so names sort in commit
//! order) once that checkpoint has committed. A reader of the directory
//! therefore sees committed rows only. Recovery publishes the last committed
//! part if a crash left it hidden, and deletes later, uncommitted ones (the
//! job replays their rows).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;

use super::file_sink::{write_rows, SinkFormat};
use super::ConnectorError;

fn io(path: &Path) -> impl Fn(std::io::Error) -> ConnectorError + '_ {
    move |source| ConnectorError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A complete part to publish once its checkpoint has committed.
#[derive(Debug)]
pub struct Publish {
    hidden: PathBuf,
    visible: PathBuf,
}

impl Publish {
    /// Gives the part its final name, durably.
    pub fn publish(self) -> Result<(), ConnectorError> {
        std::fs::rename(&self.hidden, &self.visible).map_err(io(&self.hidden))?;
        sync_dir(&self.visible)
    }
}

/// Makes a rename in the directory of `path` durable.
fn sync_dir(path: &Path) -> Result<(), ConnectorError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// The part files of one sink in a directory.
pub struct PartSink {
    dir: PathBuf,
    sink: u64,
    format: SinkFormat,
    /// The number of the part being written (or to be, on the next row).
    part: u64,
    out: Option<BufWriter<File>>,
}

impl PartSink {
    /// Opens sink `sink`'s parts in `dir` (created if missing). `committed`:
    /// the last part a committed checkpoint holds (None: a new sink).
    pub fn open(
        dir: &Path,
        sink: u64,
        format: SinkFormat,
        committed: Option<u64>,
    ) -> Result<PartSink, ConnectorError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let s = PartSink {
            dir: dir.to_path_buf(),
            sink,
            format,
            part: committed.unwrap_or(0) + 1,
            out: None,
        };
        if let Some(last) = committed.filter(|&n| n > 0) {
            let hidden = s.hidden(last);
            if hidden.exists() {
                // Committed, but the crash came before it was published.
                Publish {
                    hidden,
                    visible: s.visible(last),
                }
                .publish()?;
            }
        }
        // Parts of checkpoints that never committed.
        let prefix = format!(".part-{sink}-");
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let number = name
                .strip_prefix(&prefix)
                .and_then(|rest| rest.split('.').next())
                .and_then(|n| n.parse::<u64>().ok());
            if number.is_some_and(|n| n >= s.part) {
                std::fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
            }
        }
        Ok(s)
    }

    fn name(&self, part: u64) -> String {
        format!("part-{}-{part:09}.{}", self.sink, self.format.extension())
    }

    fn hidden(&self, part: u64) -> PathBuf {
        self.dir.join(format!(".{}.inprogress", self.name(part)))
    }

    fn visible(&self, part: u64) -> PathBuf {
        self.dir.join(self.name(part))
    }

    pub fn write(&mut self, batch: &RecordBatch, ops: &[&str]) -> Result<(), ConnectorError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let out = match &mut self.out {
            Some(out) => out,
            None => {
                let path = self.hidden(self.part);
                let file = File::create(&path).map_err(io(&path))?;
                self.out.insert(BufWriter::new(file))
            }
        };
        write_rows(out, self.format, batch, ops)
    }

    /// At a checkpoint: the part being written is complete and durable.
    /// Returns the last complete part (for the checkpoint to record) and the
    /// part to publish once the checkpoint commits (none if no row came).
    pub fn roll(&mut self) -> Result<(u64, Option<Publish>), ConnectorError> {
        let Some(out) = self.out.take() else {
            return Ok((self.part - 1, None));
        };
        let path = self.hidden(self.part);
        let file = out.into_inner().map_err(|e| io(&path)(e.into_error()))?;
        file.sync_data().map_err(io(&path))?;
        let publish = Publish {
            hidden: path,
            visible: self.visible(self.part),
        };
        self.part += 1;
        Ok((self.part - 1, Some(publish)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::io::Write;
    use std::sync::Arc;

    fn batch(v: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(v.to_vec()))]).unwrap()
    }

    /// The directory's file names and contents, sorted by name.
    fn files(dir: &Path) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let text = std::fs::read_to_string(e.path()).unwrap();
                (e.file_name().to_string_lossy().into_owned(), text)
            })
            .collect();
        v.sort();
        v
    }

    const CSV: SinkFormat = SinkFormat::Csv { delimiter: b',' };

    #[test]
    fn parts_appear_once_published_and_recovery_keeps_only_committed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("out");
        let mut s = PartSink::open(&d, 7, CSV, None).unwrap();
        s.write(&batch(&[1, 2]), &[]).unwrap();
        // Written, not yet visible under a readable name.
        let names: Vec<String> = files(&d).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, [".part-7-000000001.csv.inprogress"]);
        let (last, publish) = s.roll().unwrap();
        assert_eq!(last, 1);
        publish.unwrap().publish().unwrap();
        // A checkpoint with no row rolls nothing.
        assert!(matches!(s.roll().unwrap(), (1, None)));
        s.write(&batch(&[3]), &[]).unwrap();
        let (last, publish) = s.roll().unwrap();
        assert_eq!(last, 2);
        // The checkpoint recording part 2 committed, but the crash came
        // before its rename; part 3 was being written.
        drop(publish);
        s.write(&batch(&[4]), &[]).unwrap();
        s.out.as_mut().unwrap().flush().unwrap();
        drop(s);
        let mut s = PartSink::open(&d, 7, CSV, Some(2)).unwrap();
        assert_eq!(
            files(&d),
            vec![
                ("part-7-000000001.csv".into(), "1\n2\n".into()),
                ("part-7-000000002.csv".into(), "3\n".into()),
            ]
        );
        // The replayed row goes to part 3 again.
        s.write(&batch(&[4]), &[]).unwrap();
        let (last, publish) = s.roll().unwrap();
        assert_eq!(last, 3);
        publish.unwrap().publish().unwrap();
        assert_eq!(files(&d)[2], ("part-7-000000003.csv".into(), "4\n".into()));
        // Had the checkpoint of part 2 not committed, recovery from part 1
        // drops part 2 (hidden) and writes it again.
        let mut s = PartSink::open(&d, 8, CSV, None).unwrap();
        s.write(&batch(&[5]), &[]).unwrap();
        s.roll().unwrap().1.unwrap().publish().unwrap();
        s.write(&batch(&[6]), &[]).unwrap();
        let _unpublished = s.roll().unwrap();
        drop(s);
        PartSink::open(&d, 8, CSV, Some(1)).unwrap();
        let names: Vec<String> = files(&d).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "part-7-000000001.csv",
                "part-7-000000002.csv",
                "part-7-000000003.csv",
                "part-8-000000001.csv"
            ]
        );
    }
}
