//! Nexmark batches made ahead of the job on threads of their own. A batch
//! is a pure function of the event it starts at, so with N threads thread
//! `i` makes batches `i`, `i + N`, `i + 2N`, … into a short channel of its
//! own, and the job takes them back from the channels in turn: in order,
//! the same batches one thread would make.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use ::nexmark::EventGenerator;
use datafusion::arrow::array::RecordBatch;

use super::Maker;
use crate::connectors::ConnectorError;

/// Batches a thread may have made and the job not yet taken.
const DEPTH: usize = 2;

enum Made {
    /// A batch, and the generator events consumed once it is taken.
    Batch(RecordBatch, u64),
    /// No event is left before the end.
    End,
    Failed(ConnectorError),
}

/// The threads making batches and what they made, in order.
pub(super) struct Ahead {
    made: Vec<Receiver<Made>>,
    /// The batch to take next.
    next: usize,
    ended: bool,
}

impl Ahead {
    /// Starts `threads` threads making the batches of `generator`'s events
    /// from where it stands, up to generator event `end`.
    pub(super) fn start(
        maker: &Maker,
        generator: EventGenerator,
        end: u64,
        threads: usize,
    ) -> Result<Self, ConnectorError> {
        let mut made = Vec::with_capacity(threads);
        for first in 0..threads {
            let (tx, rx) = sync_channel(DEPTH);
            let (maker, generator) = (maker.clone(), generator.clone());
            std::thread::Builder::new()
                .name("weir-nexmark".into())
                .spawn(move || make_loop(&maker, &generator, end, first, threads, &tx))
                .map_err(|source| ConnectorError::Io {
                    path: "a nexmark generating thread".into(),
                    source,
                })?;
            made.push(rx);
        }
        Ok(Ahead {
            made,
            next: 0,
            ended: false,
        })
    }

    /// The next batch and the generator events consumed with it; None at
    /// the end. Waits for the thread making it.
    pub(super) fn take(&mut self) -> Result<Option<(RecordBatch, u64)>, ConnectorError> {
        if self.ended {
            return Ok(None);
        }
        let from = &self.made[self.next % self.made.len()];
        match from.recv() {
            Ok(Made::Batch(batch, consumed)) => {
                self.next += 1;
                Ok(Some((batch, consumed)))
            }
            Ok(Made::End) => {
                self.ended = true;
                Ok(None)
            }
            Ok(Made::Failed(e)) => Err(e),
            // The thread died (it ends only after saying why otherwise).
            Err(_) => Err(ConnectorError::ReaderStopped),
        }
    }
}

/// Makes batches `first`, `first + step`, … until the end, or until the
/// job lets go of the channel (dropped: a seek, the job's end).
fn make_loop(
    maker: &Maker,
    generator: &EventGenerator,
    end: u64,
    first: usize,
    step: usize,
    tx: &SyncSender<Made>,
) {
    let start = generator.offset();
    for k in (first..).step_by(step) {
        let row = start + k as u64 * maker.batch_size;
        let mut generator = generator.clone().with_offset(row);
        let made = match maker.make(&mut generator, end) {
            Ok(Some((batch, consumed))) => Made::Batch(batch, consumed),
            Ok(None) => Made::End,
            Err(e) => Made::Failed(e),
        };
        let last = !matches!(made, Made::Batch(..));
        if tx.send(made).is_err() || last {
            return;
        }
    }
}
