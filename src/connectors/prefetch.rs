//! Reading a source's next batch on a thread of its own while the job works
//! on the last one.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use super::{ConnectorError, Poll, SourceMetrics, SourceReader};

/// Wraps a reader that a thread of its own polls one batch ahead: the job's
/// poll takes the batch read meanwhile and asks for the next. What the job
/// sees is what the reader alone would give, in the same order:
/// - [`SourceReader::offset`] is the position after the last batch
///   *returned*, not the one read ahead, so a checkpoint never covers rows
///   the job has not had;
/// - the counters of rows and malformed rows rise when a batch is returned
///   (the reader counts into counters of its own, passed on here);
/// - a poll that found nothing is never returned from ahead: the data may
///   have grown since (and a FLUSH taken on it would miss rows written
///   before it), so the job's poll then reads again.
pub struct Prefetch {
    requests: Sender<Request>,
    replies: Receiver<Reply>,
    /// A poll was asked for and its reply not taken yet.
    pending: bool,
    /// The position after the last batch returned.
    offset: serde_json::Value,
    /// The reader's own counters as of the last reply taken.
    seen: Counts,
    /// The job's counters.
    metrics: Arc<SourceMetrics>,
    always_available: bool,
}

enum Request {
    Poll,
    Seek(serde_json::Value),
}

/// What the reading thread did, with the reader's position and counters after.
struct Reply {
    outcome: Outcome,
    offset: serde_json::Value,
    counts: Counts,
}

enum Outcome {
    Polled(Result<Poll, ConnectorError>),
    Sought(Result<(), ConnectorError>),
}

#[derive(Clone, Copy, Default)]
struct Counts {
    rows: u64,
    malformed: u64,
}

impl Counts {
    fn of(m: &SourceMetrics) -> Self {
        Counts {
            rows: m.rows.load(Ordering::Relaxed),
            malformed: m.malformed.load(Ordering::Relaxed),
        }
    }
}

impl Prefetch {
    /// Moves `reader`, which counts into `own`, to a thread of its own;
    /// what it counts reaches `metrics` as its batches are returned.
    pub fn new(
        mut reader: Box<dyn SourceReader>,
        own: Arc<SourceMetrics>,
        metrics: Arc<SourceMetrics>,
    ) -> Self {
        let offset = reader.offset();
        let seen = Counts::of(&own);
        let always_available = reader.always_available();
        let (requests, inbox) = channel::<Request>();
        let (outbox, replies) = channel();
        // The thread ends when this wrapper (its request sender) is dropped.
        std::thread::Builder::new()
            .name("weir-source".into())
            .spawn(move || {
                for request in inbox {
                    let outcome = match request {
                        Request::Poll => Outcome::Polled(reader.poll()),
                        Request::Seek(to) => Outcome::Sought(reader.seek(&to)),
                    };
                    let reply = Reply {
                        outcome,
                        offset: reader.offset(),
                        counts: Counts::of(&own),
                    };
                    if outbox.send(reply).is_err() {
                        break;
                    }
                }
            })
            .expect("spawning a source thread");
        Prefetch {
            requests,
            replies,
            pending: false,
            offset,
            seen,
            metrics,
            always_available,
        }
    }

    fn ask(&mut self, request: Request) -> Result<(), ConnectorError> {
        self.requests.send(request).map_err(|_| stopped())
    }

    /// The reply to the last request. `count`: pass its counts on to the
    /// job (else they belong to a batch dropped unseen).
    fn reply(&mut self, count: bool) -> Result<Reply, ConnectorError> {
        let reply = self.replies.recv().map_err(|_| stopped())?;
        if count {
            let m = &self.metrics;
            m.rows
                .fetch_add(reply.counts.rows - self.seen.rows, Ordering::Relaxed);
            m.malformed.fetch_add(
                reply.counts.malformed - self.seen.malformed,
                Ordering::Relaxed,
            );
        }
        self.seen = reply.counts;
        Ok(reply)
    }
}

fn stopped() -> ConnectorError {
    ConnectorError::ReaderStopped
}

impl SourceReader for Prefetch {
    fn poll(&mut self) -> Result<Poll, ConnectorError> {
        loop {
            // Read ahead: a poll from before the job asked.
            let ahead = std::mem::take(&mut self.pending);
            if !ahead {
                self.ask(Request::Poll)?;
            }
            let reply = self.reply(true)?;
            // Rows read and found malformed moved the position, whatever
            // came back.
            self.offset = reply.offset;
            let Outcome::Polled(polled) = reply.outcome else {
                return Err(stopped());
            };
            match polled {
                Ok(Poll::Idle(_)) if ahead => continue,
                Ok(Poll::Batch(batch)) => {
                    self.ask(Request::Poll)?;
                    self.pending = true;
                    return Ok(Poll::Batch(batch));
                }
                other => return other,
            }
        }
    }

    fn offset(&self) -> serde_json::Value {
        self.offset.clone()
    }

    fn seek(&mut self, offset: &serde_json::Value) -> Result<(), ConnectorError> {
        if std::mem::take(&mut self.pending) {
            // The batch read ahead is from before the seek: dropped.
            self.reply(false)?;
        }
        self.ask(Request::Seek(offset.clone()))?;
        let reply = self.reply(false)?;
        self.offset = reply.offset;
        match reply.outcome {
            Outcome::Sought(result) => result,
            Outcome::Polled(_) => Err(stopped()),
        }
    }

    fn always_available(&self) -> bool {
        self.always_available
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use parking_lot::Mutex;
    use serde_json::json;
    use std::time::Duration;

    /// A source of the numbers below `available`, a batch of `step` per
    /// poll, counting each in its metrics.
    struct Numbers {
        next: i64,
        step: i64,
        available: Arc<Mutex<i64>>,
        end: Option<i64>,
        metrics: Arc<SourceMetrics>,
    }

    impl SourceReader for Numbers {
        fn poll(&mut self) -> Result<Poll, ConnectorError> {
            let available = *self.available.lock();
            if self.end == Some(self.next) {
                return Ok(Poll::End);
            }
            if self.next >= available {
                return Ok(Poll::Idle(Duration::from_millis(1)));
            }
            let to = (self.next + self.step).min(available);
            let values: Vec<i64> = (self.next..to).collect();
            self.next = to;
            self.metrics
                .rows
                .fetch_add(values.len() as u64, Ordering::Relaxed);
            let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
            let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values))])?;
            Ok(Poll::Batch(batch))
        }

        fn offset(&self) -> serde_json::Value {
            json!(self.next)
        }

        fn seek(&mut self, offset: &serde_json::Value) -> Result<(), ConnectorError> {
            self.next = offset
                .as_i64()
                .ok_or_else(|| ConnectorError::InvalidOffset(offset.to_string()))?;
            Ok(())
        }
    }

    fn numbers(
        available: i64,
        end: Option<i64>,
    ) -> (Prefetch, Arc<Mutex<i64>>, Arc<SourceMetrics>) {
        let own = Arc::new(SourceMetrics::new());
        let available = Arc::new(Mutex::new(available));
        let reader = Numbers {
            next: 0,
            step: 10,
            available: available.clone(),
            end,
            metrics: own.clone(),
        };
        let metrics = Arc::new(SourceMetrics::new());
        (
            Prefetch::new(Box::new(reader), own, metrics.clone()),
            available,
            metrics,
        )
    }

    fn values(polled: Poll) -> Vec<i64> {
        let Poll::Batch(batch) = polled else {
            panic!("expected a batch, got {polled:?}");
        };
        let column = batch.column(0).as_any().downcast_ref::<Int64Array>();
        column.expect("Int64").values().to_vec()
    }

    #[test]
    fn batches_offsets_and_counts_are_those_of_the_batches_returned() {
        let (mut reader, _, metrics) = numbers(25, Some(25));
        assert_eq!(reader.offset(), json!(0));
        assert_eq!(values(reader.poll().unwrap()), (0..10).collect::<Vec<_>>());
        // The next batch is read ahead by now, but not yet returned.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(reader.offset(), json!(10));
        assert_eq!(metrics.rows.load(Ordering::Relaxed), 10);
        assert_eq!(values(reader.poll().unwrap()), (10..20).collect::<Vec<_>>());
        assert_eq!(values(reader.poll().unwrap()), (20..25).collect::<Vec<_>>());
        assert_eq!(reader.offset(), json!(25));
        assert_eq!(metrics.rows.load(Ordering::Relaxed), 25);
        assert!(matches!(reader.poll().unwrap(), Poll::End));
    }

    #[test]
    fn nothing_found_ahead_is_read_again() {
        let (mut reader, available, _) = numbers(10, None);
        assert_eq!(values(reader.poll().unwrap()), (0..10).collect::<Vec<_>>());
        // The read ahead finds nothing; rows arrive after it.
        std::thread::sleep(Duration::from_millis(20));
        *available.lock() = 15;
        assert_eq!(values(reader.poll().unwrap()), (10..15).collect::<Vec<_>>());
        // Caught up: an empty poll asked for now is returned.
        assert!(matches!(reader.poll().unwrap(), Poll::Idle(_)));
    }

    #[test]
    fn a_seek_drops_the_batch_read_ahead() {
        let (mut reader, _, metrics) = numbers(100, None);
        assert_eq!(values(reader.poll().unwrap()), (0..10).collect::<Vec<_>>());
        assert_eq!(values(reader.poll().unwrap()), (10..20).collect::<Vec<_>>());
        reader.seek(&json!(5)).unwrap();
        assert_eq!(reader.offset(), json!(5));
        assert_eq!(values(reader.poll().unwrap()), (5..15).collect::<Vec<_>>());
        // 20 rows returned, then 10 again after the seek; the 10 read ahead
        // and dropped are not counted.
        assert_eq!(metrics.rows.load(Ordering::Relaxed), 30);
        assert!(reader.seek(&json!("x")).is_err());
    }
}
