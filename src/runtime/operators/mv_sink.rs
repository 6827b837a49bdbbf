//! The materialized-view sink: applies changes to the view's store and
//! reports barriers (FLUSH and checkpoint progress) to the job.

use std::sync::Arc;

use tokio::sync::watch;

use crate::runtime::chunk::Chunk;
use crate::runtime::message::{Barrier, Message};
use crate::runtime::operator::Operator;
use crate::runtime::RuntimeError;
use crate::state::MvStore;

pub struct MvSinkOp {
    /// The view's rows (`None`: the job only feeds its sinks).
    store: Option<Arc<MvStore>>,
    /// The last barrier epoch every row before it has been applied for.
    progress: Arc<watch::Sender<u64>>,
}

impl MvSinkOp {
    pub fn new(store: Option<Arc<MvStore>>, progress: Arc<watch::Sender<u64>>) -> Self {
        MvSinkOp { store, progress }
    }
}

impl Operator for MvSinkOp {
    fn name(&self) -> &'static str {
        match self.store {
            Some(_) => "MaterializeSink",
            None => "Sink",
        }
    }

    /// Replayed rows rebuild the view's rows as they were.
    fn is_pure(&self) -> bool {
        true
    }

    /// Applies the changes, and passes them on for the view's sinks.
    fn process(&mut self, chunk: Chunk, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        if let Some(store) = &self.store {
            store.apply(&chunk.batch, |i| chunk.op(i).is_addition())?;
        }
        out.push(Message::Data(chunk));
        Ok(())
    }

    fn on_watermark(&mut self, _wm: i64, _out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        Ok(())
    }

    /// A FLUSH barrier reaching the view means every row before it is applied.
    /// Checkpoint barriers may overtake a FLUSH barrier still waiting for the
    /// source to catch up, so they do not count.
    fn on_barrier(
        &mut self,
        barrier: Barrier,
        _out: &mut Vec<Message>,
    ) -> Result<(), RuntimeError> {
        if !barrier.checkpoint {
            self.progress.send_replace(barrier.epoch);
        }
        Ok(())
    }

    fn on_end(&mut self, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        out.push(Message::End);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn only_flush_barriers_report_progress() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let store = Arc::new(MvStore::new(schema, vec![], true).unwrap());
        let (tx, rx) = watch::channel(0u64);
        let mut sink = MvSinkOp::new(Some(store), Arc::new(tx));
        let mut out = Vec::new();
        sink.on_barrier(
            Barrier {
                epoch: 5,
                checkpoint: true,
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(
            *rx.borrow(),
            0,
            "a checkpoint barrier says nothing of a pending FLUSH"
        );
        sink.on_barrier(
            Barrier {
                epoch: 4,
                checkpoint: false,
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(*rx.borrow(), 4);
    }
}
