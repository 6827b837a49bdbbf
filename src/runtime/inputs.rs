//! The receiving side of an exchange: merges the channels from every
//! upstream subtask into one message stream. Watermarks advance to the
//! smallest of the inputs'; checkpoint barriers are aligned — an input that
//! delivered one is not read again until every input has delivered it
//! (exactly-once), or, without alignment, is read on (at-least-once);
//! either way a barrier is passed on once all inputs have sent it.
//!
//! Each source injects checkpoint barriers at once but holds a FLUSH barrier
//! until it has caught up, so inputs from different sources may deliver a
//! FLUSH barrier and a later checkpoint barrier in either order. FLUSH
//! barriers therefore never block an input: blocking on both kinds could
//! leave each input waiting behind the barrier the other has not sent yet.

use std::collections::BTreeMap;
use std::future::poll_fn;
use std::task::Poll;

use tokio::sync::mpsc;

use super::message::{Barrier, EventTime, Message};

pub struct Inputs {
    rx: Vec<mpsc::Receiver<Message>>,
    /// Per channel: which input of the operator it feeds (a join's side).
    sides: Vec<usize>,
    /// Holding back until the pending barrier is complete.
    blocked: Vec<bool>,
    ended: Vec<bool>,
    watermarks: Vec<EventTime>,
    emitted_watermark: EventTime,
    /// Barrier epoch → how many inputs have delivered it.
    barriers: BTreeMap<u64, (Barrier, usize)>,
    align: bool,
    /// Where the next read starts, so no input is starved.
    next: usize,
}

impl Inputs {
    #[cfg(test)]
    pub fn new(rx: Vec<mpsc::Receiver<Message>>, align: bool) -> Self {
        let sides = vec![0; rx.len()];
        Inputs::with_sides(rx, sides, align)
    }

    /// Channels feeding several inputs of the first operator: `sides[i]` is
    /// the input channel `i` feeds.
    pub fn with_sides(rx: Vec<mpsc::Receiver<Message>>, sides: Vec<usize>, align: bool) -> Self {
        let n = rx.len();
        debug_assert_eq!(sides.len(), n);
        Inputs {
            rx,
            sides,
            blocked: vec![false; n],
            ended: vec![false; n],
            watermarks: vec![EventTime::MIN; n],
            emitted_watermark: EventTime::MIN,
            barriers: BTreeMap::new(),
            align,
            next: 0,
        }
    }

    /// The next message of the merged stream; None once an upstream subtask
    /// has gone (the job is stopping or failed upstream).
    #[cfg(test)]
    pub async fn next(&mut self) -> Option<Message> {
        self.next_from().await.map(|(_, m)| m)
    }

    /// [`Inputs::next`] with the input its rows are from (watermarks,
    /// barriers and the end, merged over every channel, say 0).
    pub async fn next_from(&mut self) -> Option<(usize, Message)> {
        loop {
            let (i, msg) = poll_fn(|cx| {
                let n = self.rx.len();
                for k in 0..n {
                    let i = (self.next + k) % n;
                    if self.blocked[i] {
                        continue;
                    }
                    match self.rx[i].poll_recv(cx) {
                        Poll::Ready(Some(m)) => {
                            self.next = (i + 1) % n;
                            return Poll::Ready(Some((i, m)));
                        }
                        Poll::Ready(None) => return Poll::Ready(None),
                        Poll::Pending => {}
                    }
                }
                Poll::Pending
            })
            .await?;
            let side = match &msg {
                Message::Data(_) => self.sides[i],
                _ => 0,
            };
            if let Some(m) = self.accept(i, msg) {
                return Some((side, m));
            }
        }
    }

    /// Takes a message from input `i`; returns what the merged stream emits.
    fn accept(&mut self, i: usize, msg: Message) -> Option<Message> {
        match msg {
            Message::Data(_) => Some(msg),
            Message::Watermark(w) => {
                self.watermarks[i] = self.watermarks[i].max(w);
                self.advance()
            }
            Message::End => {
                self.ended[i] = true;
                self.watermarks[i] = EventTime::MAX;
                if self.ended.iter().all(|e| *e) {
                    Some(Message::End)
                } else {
                    self.advance()
                }
            }
            Message::Barrier(b) => {
                let n = self.rx.len();
                let entry = self.barriers.entry(b.epoch).or_insert((b, 0));
                entry.1 += 1;
                if entry.1 < n {
                    // Only a checkpoint needs the inputs aligned; a FLUSH
                    // barrier only needs everything before it on every input.
                    if self.align && b.checkpoint {
                        self.blocked[i] = true;
                    }
                    return None;
                }
                self.barriers.remove(&b.epoch);
                self.blocked.iter_mut().for_each(|x| *x = false);
                Some(Message::Barrier(b))
            }
        }
    }

    fn advance(&mut self) -> Option<Message> {
        let low = self
            .watermarks
            .iter()
            .copied()
            .min()
            .unwrap_or(EventTime::MIN);
        if low > self.emitted_watermark && low != EventTime::MAX {
            self.emitted_watermark = low;
            return Some(Message::Watermark(low));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::chunk::Chunk;
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn data(v: i64) -> Message {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![v]))]).unwrap();
        Message::Data(Chunk::inserts(batch))
    }

    fn value(m: &Message) -> Option<i64> {
        match m {
            Message::Data(c) => Some(
                c.batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .value(0),
            ),
            _ => None,
        }
    }

    fn barrier(epoch: u64) -> Message {
        Message::Barrier(Barrier {
            epoch,
            checkpoint: true,
        })
    }

    fn pair() -> (Vec<mpsc::Sender<Message>>, Vec<mpsc::Receiver<Message>>) {
        (0..2).map(|_| mpsc::channel(16)).unzip()
    }

    #[tokio::test]
    async fn aligned_barriers_hold_back_an_input_until_all_delivered() {
        let (tx, rx) = pair();
        let mut inputs = Inputs::new(rx, true);
        tx[0].send(data(1)).await.unwrap();
        tx[0].send(barrier(1)).await.unwrap();
        tx[0].send(data(2)).await.unwrap();
        tx[1].send(data(10)).await.unwrap();
        let mut got = Vec::new();
        for _ in 0..2 {
            got.push(value(&inputs.next().await.unwrap()));
        }
        got.sort();
        assert_eq!(got, vec![Some(1), Some(10)]);
        // Input 0 is blocked behind its barrier: its row 2 must wait.
        tx[1].send(data(11)).await.unwrap();
        assert_eq!(value(&inputs.next().await.unwrap()), Some(11));
        tx[1].send(barrier(1)).await.unwrap();
        assert!(matches!(
            inputs.next().await.unwrap(),
            Message::Barrier(Barrier { epoch: 1, .. })
        ));
        assert_eq!(value(&inputs.next().await.unwrap()), Some(2));
    }

    #[tokio::test]
    async fn a_flush_barrier_and_a_later_checkpoint_may_come_in_either_order() {
        let (tx, rx) = pair();
        let mut inputs = Inputs::new(rx, true);
        let flush = Message::Barrier(Barrier {
            epoch: 5,
            checkpoint: false,
        });
        // Input 0 caught up at once; input 1 injected the checkpoint first.
        tx[0].send(flush.clone()).await.unwrap();
        tx[0].send(barrier(6)).await.unwrap();
        tx[1].send(barrier(6)).await.unwrap();
        tx[1].send(flush).await.unwrap();
        let mut got = Vec::new();
        for _ in 0..2 {
            match tokio::time::timeout(std::time::Duration::from_secs(5), inputs.next()).await {
                Ok(Some(Message::Barrier(b))) => got.push(b.epoch),
                other => panic!("expected a barrier, got {other:?}"),
            }
        }
        got.sort();
        assert_eq!(got, vec![5, 6]);
    }

    #[tokio::test]
    async fn without_alignment_rows_after_a_barrier_pass_before_it() {
        let (tx, rx) = pair();
        let mut inputs = Inputs::new(rx, false);
        tx[0].send(barrier(1)).await.unwrap();
        tx[0].send(data(2)).await.unwrap();
        assert_eq!(value(&inputs.next().await.unwrap()), Some(2));
        tx[1].send(barrier(1)).await.unwrap();
        assert!(matches!(inputs.next().await.unwrap(), Message::Barrier(_)));
    }

    #[tokio::test]
    async fn watermark_is_the_smallest_input_and_end_needs_every_input() {
        let (tx, rx) = pair();
        let mut inputs = Inputs::new(rx, true);
        tx[0].send(Message::Watermark(50)).await.unwrap();
        tx[1].send(Message::Watermark(30)).await.unwrap();
        tx[1].send(Message::Watermark(70)).await.unwrap();
        assert!(matches!(
            inputs.next().await.unwrap(),
            Message::Watermark(30)
        ));
        assert!(matches!(
            inputs.next().await.unwrap(),
            Message::Watermark(50)
        ));
        tx[0].send(Message::End).await.unwrap();
        tx[1].send(data(5)).await.unwrap();
        assert!(matches!(
            inputs.next().await.unwrap(),
            Message::Watermark(70)
        ));
        assert_eq!(value(&inputs.next().await.unwrap()), Some(5));
        tx[1].send(Message::End).await.unwrap();
        assert!(matches!(inputs.next().await.unwrap(), Message::End));
        drop(tx);
        assert!(inputs.next().await.is_none());
    }
}
