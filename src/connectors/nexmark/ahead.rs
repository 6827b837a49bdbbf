//! Nexmark batches made ahead of the job on threads of their own. A batch
//! is a pure function of the event it starts at, so the threads claim
//! batch numbers in turn, make them in any order, and the job takes them
//! back in order: the same batches one thread would make.
//!
//! With one thread, the job makes the first unclaimed batch itself when
//! the one it wants is not made yet, instead of waiting: a job with little
//! to do after the source (a filter into a blackhole) then generates beside
//! the thread, and a busy one, whose batches are ready when it comes for
//! them, leaves the generating to it. (The file source shares its parsing
//! the same way.)

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use ::nexmark::EventGenerator;
use datafusion::arrow::array::RecordBatch;

use super::Maker;
use crate::connectors::ConnectorError;

enum Made {
    /// A batch, and the generator events consumed once it is taken.
    Batch(RecordBatch, u64),
    /// No event is left before the end.
    End,
    Failed(ConnectorError),
}

/// What is made and claimed.
struct Queue {
    /// Batches made and not yet taken, by number.
    made: BTreeMap<usize, Made>,
    /// The first batch nobody has claimed.
    unclaimed: usize,
    /// The batch the job takes next.
    next: usize,
    /// A batch came out as the end (or failed): later ones would too.
    finished: bool,
    /// The job let go: every thread stops.
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// A batch was made: the job waits.
    made: Condvar,
    /// The job took a batch (or let go): the threads wait for room.
    room: Condvar,
    /// Most batches claimed ahead of the job.
    capacity: usize,
    maker: Maker,
    /// Stands at the first batch; batch `k` starts `k` batch sizes on.
    generator: EventGenerator,
    end: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes batch `k`.
    fn make(&self, k: usize) -> Made {
        let row = self.generator.offset() + k as u64 * self.maker.batch_size;
        let mut generator = self.generator.clone().with_offset(row);
        match self.maker.make(&mut generator, self.end) {
            Ok(Some((batch, consumed))) => Made::Batch(batch, consumed),
            Ok(None) => Made::End,
            Err(e) => Made::Failed(e),
        }
    }
}

/// The threads making batches and what they made, in order.
pub(super) struct Ahead {
    shared: Arc<Shared>,
    /// The job makes the next batch itself when nobody claimed it.
    helps: bool,
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
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                made: BTreeMap::new(),
                unclaimed: 0,
                next: 0,
                finished: false,
                closed: false,
            }),
            made: Condvar::new(),
            room: Condvar::new(),
            capacity: 2 * threads + 1,
            maker: maker.clone(),
            generator,
            end,
        });
        let ahead = Ahead {
            shared: shared.clone(),
            helps: threads == 1,
            ended: false,
        };
        for _ in 0..threads {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("weir-nexmark".into())
                .spawn(move || make_loop(&shared))
                .map_err(|source| ConnectorError::Io {
                    path: "a nexmark generating thread".into(),
                    source,
                })?;
        }
        Ok(ahead)
    }

    /// The next batch and the generator events consumed with it; None at
    /// the end. Waits for the thread making it, or makes it.
    pub(super) fn take(&mut self) -> Result<Option<(RecordBatch, u64)>, ConnectorError> {
        if self.ended {
            return Ok(None);
        }
        let shared = &*self.shared;
        let mut q = shared.lock();
        let made = loop {
            let next = q.next;
            if let Some(made) = q.made.remove(&next) {
                break made;
            }
            // Rather than wait, make the first batch nobody has claimed
            // (the next one, or one after the thread's).
            if self.helps && !q.finished && q.unclaimed < next + shared.capacity {
                let k = q.unclaimed;
                q.unclaimed += 1;
                drop(q);
                let made = shared.make(k);
                q = shared.lock();
                q.finished |= !matches!(made, Made::Batch(..));
                if k == next {
                    break made;
                }
                q.made.insert(k, made);
                continue;
            }
            q = shared.made.wait(q).unwrap_or_else(PoisonError::into_inner);
        };
        q.next += 1;
        drop(q);
        shared.room.notify_all();
        match made {
            Made::Batch(batch, consumed) => Ok(Some((batch, consumed))),
            Made::End => {
                self.ended = true;
                Ok(None)
            }
            Made::Failed(e) => Err(e),
        }
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.room.notify_all();
    }
}

/// A batch a thread claimed: if the thread dies making it, the job hears
/// of it instead of waiting for it.
struct Claim<'a> {
    shared: &'a Shared,
    k: Option<usize>,
}

impl Claim<'_> {
    fn fill(&mut self, made: Made) {
        let k = self.k.take().expect("filled once");
        let mut q = self.shared.lock();
        q.finished |= !matches!(made, Made::Batch(..));
        q.made.insert(k, made);
        drop(q);
        self.shared.made.notify_all();
        self.shared.room.notify_all();
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.k.is_some() {
            self.fill(Made::Failed(ConnectorError::ReaderStopped));
        }
    }
}

/// Claims the first unclaimed batch while there is room ahead of the job,
/// makes it, and again, until the end or until the job lets go.
fn make_loop(shared: &Shared) {
    loop {
        let mut q = shared.lock();
        while !q.closed && !q.finished && q.unclaimed >= q.next + shared.capacity {
            q = shared.room.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
        if q.closed || q.finished {
            return;
        }
        let k = q.unclaimed;
        q.unclaimed += 1;
        drop(q);
        let mut claim = Claim { shared, k: Some(k) };
        let made = shared.make(k);
        claim.fill(made);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn dropping_stops_every_thread_of_an_endless_stream() {
        let reader = crate::connectors::nexmark::tests::bid_reader();
        for threads in [1, 3] {
            let generator = reader.generator_at(0);
            let mut ahead = Ahead::start(&reader.maker, generator, u64::MAX, threads).unwrap();
            for _ in 0..5 {
                assert!(ahead.take().unwrap().is_some());
            }
            let shared = Arc::downgrade(&ahead.shared);
            drop(ahead);
            let since = Instant::now();
            while shared.upgrade().is_some() {
                assert!(
                    since.elapsed() < Duration::from_secs(10),
                    "{threads} threads"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}
