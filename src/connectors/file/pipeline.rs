//! The file source's threads: one reads the files and cuts records into
//! batches, which wait in a short queue to be parsed; the job takes them
//! back in the order they were read.
//!
//! With N decoding threads, N parsing threads take the batches as they
//! come. With one, there is no parsing thread: the reading thread and the
//! job share the parsing, each as it has time. The reading thread parses
//! while the queue is full, the batch the job will come to last; the job
//! parses the next batch it wants if nobody has started it, instead of
//! waiting. So the job's operators run beside the reading, and neither
//! thread idles while the other has parsing to do; had the reading thread
//! taken the first batch waiting, the job would wait for the very batch
//! it wants next. (With N threads, the job and the reading thread helping
//! as well was measured no faster: two cores were already busy.)

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use datafusion::arrow::array::RecordBatch;

use super::mapped::MappedFile;
use super::{Batch, Cursor, Next, Position, Scanner};
use crate::connectors::format::Parser;
use crate::connectors::{ConnectorError, SourceMetrics};

/// What the pipeline gives back, in the order the files were read.
pub(super) enum Done {
    /// A batch of file `name`'s records up to `end`, parsed (`None`: only
    /// malformed or blank lines), with the rows found well-formed and
    /// malformed in it (not counted anywhere yet), and for mapped records
    /// the map and the byte after them.
    Parsed {
        name: String,
        end: Position,
        batch: Result<Option<RecordBatch>, ConnectorError>,
        rows: u64,
        malformed: u64,
        mapped: Option<(Arc<MappedFile>, usize)>,
    },
    /// Following and caught up: the reading thread waits for
    /// [`Pipeline::look_again`].
    CaughtUp,
    /// Everything read (not following); the reading thread has stopped.
    End,
    /// Reading failed; the reading thread has stopped.
    Failed(ConnectorError),
}

/// One place in the queue, in the order read.
enum Slot {
    /// Cut, not yet taken to be parsed.
    Cut(Batch),
    /// Being parsed by some thread.
    Parsing,
    Done(Done),
}

/// The batches read ahead and not yet taken by the job, and the buffers
/// to read into again.
struct Queue {
    slots: VecDeque<Slot>,
    /// The sequence number of `slots[0]` (batches taken by the job so far).
    first: u64,
    /// Most slots at a time: what is read ahead is bounded.
    capacity: usize,
    spares: Vec<Vec<u8>>,
    /// The job dropped the pipeline: every thread stops.
    closed: bool,
    /// The reading thread has stopped (or died): nothing more will come.
    reader_gone: bool,
}

/// The queue, and a signal for each kind of waiting on it, so that a change
/// wakes only the threads it concerns. Closing the pipeline signals all.
struct Shared {
    queue: Mutex<Queue>,
    /// A batch was cut: the parsing threads wait for one.
    cut: Condvar,
    /// A batch was parsed, or the reading thread stopped: the job waits.
    parsed: Condvar,
    /// The job took a batch: the reading thread waits for room.
    taken: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, signal: &Condvar, queue: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        signal.wait(queue).unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops every thread at its next look at the queue.
    fn close(&self) {
        self.lock().closed = true;
        self.cut.notify_all();
        self.parsed.notify_all();
        self.taken.notify_all();
    }

    /// Parses the batch in slot `seq` (which must be [`Slot::Cut`]) with
    /// the lock released, and puts the result in its place.
    fn parse<'a>(
        &'a self,
        mut queue: MutexGuard<'a, Queue>,
        seq: u64,
        parser: &Parser,
    ) -> MutexGuard<'a, Queue> {
        let at = (seq - queue.first) as usize;
        let Slot::Cut(batch) = std::mem::replace(&mut queue.slots[at], Slot::Parsing) else {
            unreachable!("only a cut batch is taken to be parsed");
        };
        drop(queue);
        let (done, buffer) = finish(parser, batch);
        let mut queue = self.lock();
        // Only the job removes slots, and only done ones: `seq` is still there.
        let at = (seq - queue.first) as usize;
        queue.slots[at] = Slot::Done(done);
        queue.spares.push(buffer);
        // The job waits for the first batch only.
        if at == 0 {
            self.parsed.notify_one();
        }
        queue
    }
}

impl Queue {
    /// The sequence number of the first batch waiting to be parsed.
    fn first_cut(&self) -> Option<u64> {
        let at = self.slots.iter().position(|s| matches!(s, Slot::Cut(_)))?;
        Some(self.first + at as u64)
    }

    /// The sequence number of the last batch waiting to be parsed: the one
    /// the job will come to last.
    fn last_cut(&self) -> Option<u64> {
        let at = self.slots.iter().rposition(|s| matches!(s, Slot::Cut(_)))?;
        Some(self.first + at as u64)
    }
}

/// The threads reading and parsing ahead of the job. Dropping this stops
/// them (each at its next look at the queue).
pub(super) struct Pipeline {
    shared: Arc<Shared>,
    parser: Arc<Parser>,
    look: Sender<()>,
    /// The job parses a batch nobody has started (one decoding thread).
    helps: bool,
    /// The last result taken was [`Done::CaughtUp`].
    waiting: bool,
}

impl Pipeline {
    /// Starts reading from `cursor`, with `threads` decoding threads: for
    /// one, the reading thread and the job parse; for N, N parsing threads
    /// besides.
    pub(super) fn start(
        scanner: Scanner,
        cursor: Cursor,
        parser: Arc<Parser>,
        threads: usize,
    ) -> Result<Self, ConnectorError> {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                slots: VecDeque::new(),
                first: 0,
                // A batch in hand and two waiting per thread, and one
                // more: less read ahead was measured slower at 2 threads.
                capacity: 3 * threads + 1,
                spares: Vec::new(),
                closed: false,
                reader_gone: false,
            }),
            cut: Condvar::new(),
            parsed: Condvar::new(),
            taken: Condvar::new(),
        });
        let (look, looks) = channel();
        // Made first: if a thread cannot be started, dropping it stops the
        // ones that were.
        let pipeline = Pipeline {
            shared: shared.clone(),
            parser: parser.clone(),
            look,
            helps: threads == 1,
            waiting: false,
        };
        let failed = |source| ConnectorError::Io {
            path: scanner.root.display().to_string(),
            source,
        };
        if threads > 1 {
            for _ in 0..threads {
                let (shared, parser) = (shared.clone(), parser.clone());
                spawn("weir-parse", move || parse_loop(&shared, &parser)).map_err(failed)?;
            }
        }
        let reader = scanner.clone();
        let read = move || read_loop(&reader, cursor, &shared, &parser, looks, threads == 1);
        spawn("weir-read", read).map_err(failed)?;
        Ok(pipeline)
    }

    /// The next result, parsing it here if no thread has started on it,
    /// else waiting for it.
    pub(super) fn take(&mut self) -> Result<Done, ConnectorError> {
        let shared = &*self.shared;
        let mut queue = shared.lock();
        let done = loop {
            match queue.slots.front() {
                Some(Slot::Done(_)) => {
                    let Some(Slot::Done(done)) = queue.slots.pop_front() else {
                        unreachable!("the front slot is done");
                    };
                    queue.first += 1;
                    shared.taken.notify_one();
                    break done;
                }
                Some(Slot::Cut(_)) if self.helps => {
                    let seq = queue.first;
                    queue = shared.parse(queue, seq, &self.parser);
                }
                Some(Slot::Cut(_) | Slot::Parsing) => queue = shared.wait(&shared.parsed, queue),
                None if queue.reader_gone => return Err(ConnectorError::ReaderStopped),
                None => queue = shared.wait(&shared.parsed, queue),
            }
        };
        self.waiting = matches!(done, Done::CaughtUp);
        Ok(done)
    }

    /// Whether the reading thread waits, caught up, for a word to look again.
    pub(super) fn waiting(&self) -> bool {
        self.waiting
    }

    /// Has the reading thread, caught up, scan the files again.
    pub(super) fn look_again(&mut self) -> Result<(), ConnectorError> {
        self.waiting = false;
        self.look
            .send(())
            .map_err(|_| ConnectorError::ReaderStopped)
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.shared.close();
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
}

/// Marks the reading thread gone when it returns or unwinds, so that a
/// job waiting for more hears of it.
struct ReaderGone<'a>(&'a Shared);

impl Drop for ReaderGone<'_> {
    fn drop(&mut self) {
        self.0.lock().reader_gone = true;
        self.0.parsed.notify_all();
    }
}

/// Reads batches of records into the queue until the end, a failure, or
/// the pipeline closing; while the queue is full, parses what waits in it
/// if it `helps` (there is no parsing thread), else waits for room.
/// Caught up, waits for a word to look again.
fn read_loop(
    scanner: &Scanner,
    mut cursor: Cursor,
    shared: &Shared,
    parser: &Parser,
    looks: Receiver<()>,
    helps: bool,
) {
    let _gone = ReaderGone(shared);
    loop {
        let buffer = shared.lock().spares.pop().unwrap_or_default();
        let (slot, last) = match cursor.next(scanner, buffer) {
            Ok(Next::Records(batch)) => (Slot::Cut(batch), false),
            Ok(Next::CaughtUp) => (Slot::Done(Done::CaughtUp), false),
            Ok(Next::End) => (Slot::Done(Done::End), true),
            Err(e) => (Slot::Done(Done::Failed(e)), true),
        };
        let caught_up = matches!(slot, Slot::Done(Done::CaughtUp));
        let mut queue = shared.lock();
        while !queue.closed && queue.slots.len() >= queue.capacity {
            // The job parses from the front: the reading thread takes the
            // batch it will want last, so that it does not wait for one the
            // reading thread has started.
            queue = match queue.last_cut().filter(|_| helps) {
                Some(seq) => shared.parse(queue, seq, parser),
                None => shared.wait(&shared.taken, queue),
            };
        }
        if queue.closed {
            return;
        }
        // The job waits for an empty queue to fill, and for a batch to be
        // parsed: a batch cut is for the parsing threads.
        if queue.slots.is_empty() {
            shared.parsed.notify_one();
        }
        if matches!(slot, Slot::Cut(_)) {
            shared.cut.notify_one();
        }
        queue.slots.push_back(slot);
        drop(queue);
        if last || (caught_up && looks.recv().is_err()) {
            return;
        }
    }
}

/// Parses the batches waiting in the queue, the first first, until the
/// pipeline closes.
fn parse_loop(shared: &Shared, parser: &Parser) {
    let mut queue = shared.lock();
    while !queue.closed {
        queue = match queue.first_cut() {
            Some(seq) => shared.parse(queue, seq, parser),
            None => shared.wait(&shared.cut, queue),
        };
    }
}

/// What a batch comes to: parsed, with the rows found well-formed and
/// malformed counted apart, and its records' buffer. A parser that panics
/// fails the batch (the job sees the error) instead of leaving it parsing.
fn finish(parser: &Parser, batch: Batch) -> (Done, Vec<u8>) {
    let Batch {
        name,
        path,
        end,
        records,
    } = batch;
    let counts = SourceMetrics::new();
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        parser.parse(&path.display().to_string(), &records, &counts)
    }));
    let batch = match parsed {
        // Some bytes were zeros, not the file's: the batch is not the file's.
        _ if records.cut_short() => Err(ConnectorError::CutShort {
            path: path.display().to_string(),
        }),
        Ok(batch) => batch,
        Err(_) => Err(ConnectorError::ReaderStopped),
    };
    let done = Done::Parsed {
        name,
        end,
        batch,
        rows: counts.rows.load(Ordering::Relaxed),
        malformed: counts.malformed.load(Ordering::Relaxed),
        mapped: records.mapped_end(),
    };
    (done, records.into_buffer())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::format::{Format, Records};
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    fn parser() -> Arc<Parser> {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
        Arc::new(Parser::new("s", Format::Csv { delimiter: ',' }, schema).unwrap())
    }

    fn ids(done: Done) -> Vec<i64> {
        let Done::Parsed {
            batch: Ok(Some(batch)),
            ..
        } = done
        else {
            panic!("expected a parsed batch");
        };
        let column = batch.column(0).as_any().downcast_ref::<Int64Array>();
        column.unwrap().values().to_vec()
    }

    #[test]
    fn the_job_parses_in_order_what_no_thread_started() {
        // Three batches cut and left waiting, no thread to parse them and
        // the reading thread gone: the job parses each as it comes to it,
        // in the order read, then hears that nothing more will come.
        let mut slots = VecDeque::new();
        for b in 0..3 {
            let lines: Vec<String> = (0..4).map(|i| (b * 10 + i).to_string()).collect();
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            slots.push_back(Slot::Cut(Batch {
                name: "f".into(),
                path: PathBuf::from("f"),
                end: Position {
                    offset: b as u64,
                    line: 4 * b as u64,
                },
                records: Records::of_lines(&lines),
            }));
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                slots,
                first: 0,
                capacity: 3,
                spares: Vec::new(),
                closed: false,
                reader_gone: true,
            }),
            cut: Condvar::new(),
            parsed: Condvar::new(),
            taken: Condvar::new(),
        });
        let (look, _looks) = channel();
        let mut pipeline = Pipeline {
            shared,
            parser: parser(),
            look,
            helps: true,
            waiting: false,
        };
        for b in 0..3 {
            let want: Vec<i64> = (0..4).map(|i| b * 10 + i).collect();
            assert_eq!(ids(pipeline.take().unwrap()), want);
        }
        assert!(matches!(
            pipeline.take(),
            Err(ConnectorError::ReaderStopped)
        ));
        // Each buffer parsed was kept to read into again.
        assert_eq!(pipeline.shared.lock().spares.len(), 3);
    }

    #[test]
    fn parsing_threads_take_the_first_batch_waiting_and_the_reading_thread_the_last() {
        // Slots 7..12: parsed, cut, being parsed, cut, parsed. A parsing
        // thread (N decoding threads) takes the first cut one; the reading
        // thread, with the queue full at one decoding thread, takes the
        // last, which the job (parsing only the front slot) comes to last.
        let cut = |b: u64| {
            Slot::Cut(Batch {
                name: "f".into(),
                path: PathBuf::from("f"),
                end: Position { offset: b, line: b },
                records: Records::of_lines(&["1"]),
            })
        };
        let queue = Queue {
            slots: VecDeque::from([
                Slot::Done(Done::CaughtUp),
                cut(8),
                Slot::Parsing,
                cut(10),
                Slot::Done(Done::CaughtUp),
            ]),
            first: 7,
            capacity: 5,
            spares: Vec::new(),
            closed: false,
            reader_gone: false,
        };
        assert_eq!(queue.first_cut(), Some(8));
        assert_eq!(queue.last_cut(), Some(10));
        let none = Queue {
            slots: VecDeque::from([Slot::Parsing, Slot::Done(Done::End)]),
            ..queue
        };
        assert_eq!((none.first_cut(), none.last_cut()), (None, None));
    }

    #[test]
    fn dropping_the_pipeline_stops_its_threads() {
        // A file far longer than the queue holds: the threads wait, with
        // the queue full, for the job; once it drops the pipeline, every
        // one of them lets go of the queue.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        let text: String = (0..20_000).map(|i| format!("{i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        for threads in [1, 3] {
            let scanner = Scanner {
                root: path.clone(),
                header: false,
                format: Format::Csv { delimiter: ',' },
                follow: None,
                batch_size: 100,
                map_min: 0,
            };
            let cursor = Cursor::at(Default::default());
            let mut pipeline = Pipeline::start(scanner, cursor, parser(), threads).unwrap();
            assert_eq!(ids(pipeline.take().unwrap()), (0..100).collect::<Vec<_>>());
            let queue = Arc::downgrade(&pipeline.shared);
            drop(pipeline);
            let started = Instant::now();
            while queue.strong_count() > 0 {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "{} threads still hold the queue ({threads} decoding)",
                    queue.strong_count()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}
