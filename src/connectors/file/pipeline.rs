//! The file source's threads: one reads the files and cuts records into
//! batches; with one decoding thread it parses them too, with N it deals
//! them to N parsing threads in turn. The job takes the batches back in the
//! order they were read, while the next ones are read and parsed.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;

use super::{Batch, Cursor, Next, Position, Scanner};
use crate::connectors::format::Parser;
use crate::connectors::{ConnectorError, SourceMetrics};

/// What the pipeline gives back, in the order the files were read.
pub(super) enum Done {
    /// A batch of file `name`'s records up to `end`, parsed (`None`: only
    /// malformed or blank lines), with the rows found well-formed and
    /// malformed in it (not counted anywhere yet).
    Parsed {
        name: String,
        end: Position,
        batch: Result<Option<RecordBatch>, ConnectorError>,
        rows: u64,
        malformed: u64,
    },
    /// Following and caught up: the reading thread waits for
    /// [`Pipeline::look_again`].
    CaughtUp,
    /// Everything read (not following); the threads have stopped.
    End,
    /// Reading failed; the threads have stopped.
    Failed(ConnectorError),
}

/// What the reading thread hands a parsing thread.
enum Work {
    Parse(Batch),
    /// Passed on as it is, in its place in the order.
    Pass(Done),
}

/// The threads reading and parsing ahead of the job. Each parsing thread
/// holds at most one batch to parse and one parsed, so what is read ahead
/// is bounded. Dropping this stops the threads (each at its next hand-over).
pub(super) struct Pipeline {
    /// Each parsing thread's results; batch `i` comes from `i % N`.
    results: Vec<Receiver<Done>>,
    next: usize,
    look: Sender<()>,
    /// The last result taken was [`Done::CaughtUp`].
    waiting: bool,
}

impl Pipeline {
    /// Starts reading from `cursor`, decoding on `threads` threads: the
    /// reading thread alone for one, else as many parsing threads.
    pub(super) fn start(
        scanner: Scanner,
        cursor: Cursor,
        parser: Arc<Parser>,
        threads: usize,
    ) -> Result<Self, ConnectorError> {
        let root = scanner.root.display().to_string();
        let failed = |source| ConnectorError::Io {
            path: root.clone(),
            source,
        };
        let (deal, spares, results) = if threads <= 1 {
            let (outbox, parsed) = sync_channel(1);
            let deal = Deal::Parse(parser, outbox);
            (deal, Spares::Own(Vec::new()), vec![parsed])
        } else {
            let (spare_out, spares) = channel();
            let mut work = Vec::with_capacity(threads);
            let mut results = Vec::with_capacity(threads);
            for _ in 0..threads {
                let (to_parse, inbox) = sync_channel(1);
                let (outbox, parsed) = sync_channel(1);
                let parser = parser.clone();
                let spare_out = spare_out.clone();
                spawn("weir-parse", move || {
                    parse_loop(&parser, inbox, outbox, spare_out)
                })
                .map_err(failed)?;
                work.push(to_parse);
                results.push(parsed);
            }
            (Deal::Hand(work), Spares::Returned(spares), results)
        };
        let (look, looks) = channel();
        let read = move || read_loop(&scanner, cursor, deal, spares, looks);
        spawn("weir-read", read).map_err(failed)?;
        Ok(Pipeline {
            results,
            next: 0,
            look,
            waiting: false,
        })
    }

    /// The next result, waiting for it.
    pub(super) fn take(&mut self) -> Result<Done, ConnectorError> {
        let from = &self.results[self.next % self.results.len()];
        let done = from.recv().map_err(|_| ConnectorError::ReaderStopped)?;
        self.next += 1;
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

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
}

/// Where the reading thread's batches go.
enum Deal {
    /// Parsed here, to the job.
    Parse(Arc<Parser>, SyncSender<Done>),
    /// To the parsing threads in turn.
    Hand(Vec<SyncSender<Work>>),
}

/// Buffers to read into again.
enum Spares {
    /// The last one parsed here.
    Own(Vec<u8>),
    /// Those the parsing threads send back.
    Returned(Receiver<Vec<u8>>),
}

impl Spares {
    fn take(&mut self) -> Vec<u8> {
        match self {
            Spares::Own(buffer) => std::mem::take(buffer),
            Spares::Returned(from) => from.try_recv().unwrap_or_default(),
        }
    }
}

/// Reads batches of records and parses them or deals them to the parsing
/// threads in turn, until the end, a failure, or the job no longer
/// listening. Caught up, waits for a word to look again.
fn read_loop(
    scanner: &Scanner,
    mut cursor: Cursor,
    deal: Deal,
    mut spares: Spares,
    looks: Receiver<()>,
) {
    let turns = match &deal {
        Deal::Parse(..) => 1,
        Deal::Hand(work) => work.len(),
    };
    for turn in (0..turns).cycle() {
        let (next, last) = match cursor.next(scanner, spares.take()) {
            Ok(Next::Records(batch)) => (Work::Parse(batch), false),
            Ok(Next::CaughtUp) => (Work::Pass(Done::CaughtUp), false),
            Ok(Next::End) => (Work::Pass(Done::End), true),
            Err(e) => (Work::Pass(Done::Failed(e)), true),
        };
        let caught_up = matches!(next, Work::Pass(Done::CaughtUp));
        let sent = match &deal {
            Deal::Parse(parser, outbox) => {
                let (done, buffer) = finish(parser, next);
                if let (Spares::Own(spare), Some(buffer)) = (&mut spares, buffer) {
                    *spare = buffer;
                }
                outbox.send(done).is_ok()
            }
            Deal::Hand(work) => work[turn].send(next).is_ok(),
        };
        if !sent || last {
            return;
        }
        if caught_up && looks.recv().is_err() {
            return;
        }
    }
}

/// Parses the batches handed to one thread and returns each buffer for the
/// reading thread to read into again.
fn parse_loop(
    parser: &Parser,
    inbox: Receiver<Work>,
    outbox: SyncSender<Done>,
    spare_out: Sender<Vec<u8>>,
) {
    for work in inbox {
        let (done, buffer) = finish(parser, work);
        if let Some(buffer) = buffer {
            // The reading thread may have stopped: then it is dropped.
            let _ = spare_out.send(buffer);
        }
        if outbox.send(done).is_err() {
            return;
        }
    }
}

/// What a piece of work comes to: a batch parsed, with the rows found
/// well-formed and malformed counted apart, and its records' buffer.
fn finish(parser: &Parser, work: Work) -> (Done, Option<Vec<u8>>) {
    match work {
        Work::Parse(Batch {
            name,
            path,
            end,
            records,
        }) => {
            let counts = SourceMetrics::new();
            let batch = parser.parse(&path.display().to_string(), &records, &counts);
            let done = Done::Parsed {
                name,
                end,
                batch,
                rows: counts.rows.load(Ordering::Relaxed),
                malformed: counts.malformed.load(Ordering::Relaxed),
            };
            (done, Some(records.into_buffer()))
        }
        Work::Pass(done) => (done, None),
    }
}
