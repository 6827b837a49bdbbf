//! Values too large for RocksDB's write path, kept as files of their own in
//! the store's `files/` directory. A value written through the store's log
//! is copied four times (write batch, log, memtable, then a blob file at the
//! flush); a file is written once, streamed from its encoder, and synced
//! before the epoch that refers to it commits. The store then holds only a
//! reference under the value's key: the file's name, length and CRC-32, so
//! a missing, cut or damaged file is found when the store is verified, as a
//! damaged table file would be.
//!
//! A file may also hold several values one after another (an epoch's
//! blocks of operator state, see [`write_parts`]): each reference then
//! names its value's offset too, and its CRC-32 is of that value alone.
//!
//! Files are never rewritten. One that no reference names (written for an
//! epoch that never committed, or whose values were all deleted) is removed
//! when the store is verified on open, or by [`sweep_prefixed`]; a job's
//! files go with the job.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::direct::NewFile;
use super::{io, StateError};

/// The directory, inside the store's, holding the files.
pub const DIR: &str = "files";

/// How a stored reference starts; no Arrow IPC stream (the values stored
/// inline) does, since those begin with a 0xFFFFFFFF continuation marker.
const MAGIC: &[u8] = b"weir-file\0";

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct FileRef {
    name: String,
    len: u64,
    crc: u32,
    /// Where the value starts, in a file of several; none for a file that
    /// is the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
}

impl FileRef {
    /// The value to store: the magic bytes and the reference.
    fn stored(&self) -> Vec<u8> {
        let mut value = MAGIC.to_vec();
        value.extend(serde_json::to_vec(self).expect("serialisable"));
        value
    }
}

/// Whether a stored value is a reference to a file.
pub fn is_ref(value: &[u8]) -> bool {
    value.starts_with(MAGIC)
}

fn parse(key: &[u8], value: &[u8]) -> Result<FileRef, StateError> {
    serde_json::from_slice(&value[MAGIC.len()..]).map_err(|e| StateError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        message: format!("bad file reference: {e}"),
    })
}

/// The file name for the value under `key`: the key in hex, so that a
/// job's files share its key prefix's name.
pub fn name_of(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes the file `name` in `dir` with `write`, syncs it and the
/// directory, and returns the reference to store in its place.
pub fn write(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&mut dyn Write) -> Result<(), StateError>,
) -> Result<(Vec<u8>, u64), StateError> {
    let (path, file) = create(dir, name)?;
    let mut out = Summed {
        inner: BufWriter::with_capacity(1 << 20, file),
        crc: crc32fast::Hasher::new(),
        len: 0,
    };
    write(&mut out)?;
    let file = out.inner.into_inner().map_err(|e| StateError::Io {
        path: path.display().to_string(),
        source: e.into_error(),
    })?;
    sync(dir, &path, &file)?;
    let reference = FileRef {
        name: name.to_string(),
        len: out.len,
        crc: out.crc.finalize(),
        offset: None,
    };
    Ok((reference.stored(), out.len))
}

/// Writes `parts` one after another as the file `name` in `dir` (each
/// written straight from its buffer), syncs it and the directory, and
/// returns the reference to store for each part.
pub fn write_parts(dir: &Path, name: &str, parts: &[&[u8]]) -> Result<Vec<Vec<u8>>, StateError> {
    let path = remove_leftover(dir, name)?;
    // Past the page cache: read again only by a restore.
    let mut file = NewFile::create(&path).map_err(io(&path))?;
    file.write_parts(parts).map_err(io(&path))?;
    let mut offset = 0;
    let mut refs = Vec::with_capacity(parts.len());
    for part in parts {
        let len = part.len() as u64;
        refs.push(
            FileRef {
                name: name.to_string(),
                len,
                crc: crc32fast::hash(part),
                offset: Some(offset),
            }
            .stored(),
        );
        offset += len;
    }
    sync(dir, &path, &file.file)?;
    Ok(refs)
}

/// The path of file `name` in `dir`, with no file there: a leftover of the
/// same name (an epoch that never committed) may be hard-linked into a
/// retained copy, so it is removed, never written over.
fn remove_leftover(dir: &Path, name: &str) -> Result<PathBuf, StateError> {
    let path = dir.join(name);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
        _ => Ok(path),
    }
}

/// A new file `name` in `dir` (see [`remove_leftover`]).
fn create(dir: &Path, name: &str) -> Result<(PathBuf, File), StateError> {
    let path = remove_leftover(dir, name)?;
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io(&path))?;
    Ok((path, file))
}

/// Syncs a written file and the directory that names it.
fn sync(dir: &Path, path: &Path, file: &File) -> Result<(), StateError> {
    file.sync_all().map_err(io(path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// The content of the file a reference under `key` names, checked against
/// its length and checksum.
pub fn read(dir: &Path, key: &[u8], value: &[u8]) -> Result<Vec<u8>, StateError> {
    let r = parse(key, value)?;
    let path = dir.join(&r.name);
    let mut bytes = Vec::with_capacity(r.len as usize);
    // A whole file is read one byte past its length, to find it longer.
    let past = u64::from(r.offset.is_none());
    open_at(&path, &r)
        .and_then(|f| f.take(r.len + past).read_to_end(&mut bytes))
        .map_err(io(&path))?;
    check(&path, &r, bytes.len() as u64, crc32fast::hash(&bytes))?;
    Ok(bytes)
}

/// The file a reference names, open at its value.
fn open_at(path: &Path, r: &FileRef) -> std::io::Result<File> {
    let mut file = File::open(path)?;
    if let Some(offset) = r.offset {
        file.seek(SeekFrom::Start(offset))?;
    }
    Ok(file)
}

/// Checks the file (or the part of one) a reference under `key` names
/// without keeping its content; returns the file's name.
pub fn verify(dir: &Path, key: &[u8], value: &[u8]) -> Result<String, StateError> {
    let r = parse(key, value)?;
    let path = dir.join(&r.name);
    let file = open_at(&path, &r).map_err(io(&path))?;
    // Only the part's own bytes, where it is one of several.
    let mut file = file.take(r.offset.map_or(u64::MAX, |_| r.len));
    let mut buf = vec![0u8; 1 << 20];
    let mut crc = crc32fast::Hasher::new();
    let mut len = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(&path)(e)),
        };
        crc.update(&buf[..n]);
        len += n as u64;
    }
    check(&path, &r, len, crc.finalize())?;
    Ok(r.name)
}

fn check(path: &Path, r: &FileRef, len: u64, crc: u32) -> Result<(), StateError> {
    if len != r.len || crc != r.crc {
        return Err(StateError::Corrupt {
            key: path.display().to_string(),
            message: format!(
                "file of {len} bytes with CRC-32 {crc:08x}, but the store expects {} bytes with {:08x}",
                r.len, r.crc
            ),
        });
    }
    Ok(())
}

/// Removes the files in `dir` not in `keep`.
pub fn sweep(dir: &Path, keep: &HashSet<String>) -> Result<(), StateError> {
    remove_where(dir, |name| !keep.contains(name))
}

/// Removes the files in `dir` whose names start with `prefix` and are not
/// in `keep`.
pub fn sweep_prefixed(dir: &Path, prefix: &str, keep: &HashSet<String>) -> Result<(), StateError> {
    remove_where(dir, |name| name.starts_with(prefix) && !keep.contains(name))
}

/// The name of the file a stored reference names (`None` for a value
/// that is not a reference).
pub fn referenced(key: &[u8], value: &[u8]) -> Result<Option<String>, StateError> {
    if !is_ref(value) {
        return Ok(None);
    }
    Ok(Some(parse(key, value)?.name))
}

/// Removes the files in `dir` whose names start with `prefix`.
pub fn remove_prefixed(dir: &Path, prefix: &str) -> Result<(), StateError> {
    remove_where(dir, |name| name.starts_with(prefix))
}

fn remove_where(dir: &Path, doomed: impl Fn(&str) -> bool) -> Result<(), StateError> {
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path: PathBuf = entry.map_err(io(dir))?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(&doomed)
        {
            fs::remove_file(&path).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// Hard-links (or, across file systems, copies) every file of `from` into
/// `to`, which is created: files are never rewritten, so links are copies.
pub fn link_all(from: &Path, to: &Path) -> Result<(), StateError> {
    fs::create_dir_all(to).map_err(io(to))?;
    if !from.exists() {
        return Ok(());
    }
    for entry in fs::read_dir(from).map_err(io(from))? {
        let src = entry.map_err(io(from))?.path();
        let Some(name) = src.file_name() else {
            continue;
        };
        let dst = to.join(name);
        if fs::hard_link(&src, &dst).is_err() {
            fs::copy(&src, &dst).map_err(io(&src))?;
        }
    }
    Ok(())
}

/// A writer that sums what passes through it.
struct Summed<W> {
    inner: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> Write for Summed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(dir: &Path, name: &str, text: &'static str) -> Vec<u8> {
        write(dir, name, |w| {
            w.write_all(text.as_bytes()).map_err(io(Path::new(name)))
        })
        .unwrap()
        .0
    }

    /// A file written again under the same name is a new file: a link to
    /// the old one (in a retained copy) keeps the old content, and each
    /// reference reads back what it was written with.
    #[test]
    fn a_rewrite_never_changes_a_linked_file() {
        let dir = tempfile::tempdir().unwrap();
        let (live, copy) = (dir.path().join("live"), dir.path().join("copy"));
        fs::create_dir_all(&live).unwrap();
        let first = put(&live, "seg", "first");
        link_all(&live, &copy).unwrap();
        let second = put(&live, "seg", "second, longer");
        assert_eq!(read(&copy, b"k", &first).unwrap(), b"first");
        assert_eq!(read(&live, b"k", &second).unwrap(), b"second, longer");
        // The old reference does not match the new file.
        assert!(read(&live, b"k", &first).is_err());
        assert_eq!(verify(&copy, b"k", &first).unwrap(), "seg");
    }

    /// Parts of one file each read back by their own reference; damage in
    /// one is found in that one only. A sweep keeps the referenced files
    /// of its prefix and leaves other prefixes alone.
    #[test]
    fn parts_of_a_file_are_read_and_checked_each_alone() {
        let dir = tempfile::tempdir().unwrap();
        let parts: [&[u8]; 3] = [b"first", b"", b"third part"];
        let refs = write_parts(dir.path(), "ab", &parts).unwrap();
        for (r, part) in refs.iter().zip(parts) {
            assert_eq!(read(dir.path(), b"k", r).unwrap(), part);
            assert_eq!(verify(dir.path(), b"k", r).unwrap(), "ab");
        }
        let path = dir.path().join("ab");
        let mut bytes = fs::read(&path).unwrap();
        assert_eq!(bytes, b"firstthird part");
        bytes[7] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert_eq!(read(dir.path(), b"k", &refs[0]).unwrap(), b"first");
        assert!(read(dir.path(), b"k", &refs[2]).is_err());
        assert!(verify(dir.path(), b"k", &refs[2]).is_err());
        write_parts(dir.path(), "ac", &parts).unwrap();
        write_parts(dir.path(), "b", &parts).unwrap();
        let keep = HashSet::from(["ab".to_string()]);
        sweep_prefixed(dir.path(), "a", &keep).unwrap();
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["ab", "b"]);
        assert_eq!(referenced(b"k", &refs[0]).unwrap().as_deref(), Some("ab"));
        assert_eq!(referenced(b"k", b"inline").unwrap(), None);
    }
}
