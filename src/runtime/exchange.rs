//! The sending side of an exchange between stages: rows routed to the
//! subtask owning their key group (or all to one subtask), watermarks,
//! barriers and the end of input sent to every subtask. Channels are bounded,
//! so a slow stage slows the ones before it down to the source.

use std::sync::Arc;

use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use tokio::sync::mpsc;

use super::chunk::{Chunk, Op};
use super::message::Message;
use super::operators::evaluate;
use super::RuntimeError;
use crate::state::{key_groups, subtask_of, RowCodec};

/// Messages a channel between two subtasks holds before its sender waits.
pub const CHANNEL_CAPACITY: usize = 8;

/// Decides which downstream subtask each row goes to: the owner of the key
/// group of its key, encoded exactly as the keyed operator encodes its state
/// keys (so restored state and routed rows agree on the owner).
pub struct Partitioner {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    codec: RowCodec,
    parallelism: usize,
}

impl Partitioner {
    pub fn new(
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        key_schema: SchemaRef,
        parallelism: usize,
    ) -> Result<Self, RuntimeError> {
        Ok(Partitioner {
            exprs,
            codec: RowCodec::new(key_schema)?,
            parallelism,
        })
    }

    /// The rows of `chunk` for each subtask (empty chunks left out).
    pub fn split(&self, chunk: &Chunk) -> Result<Vec<(usize, Chunk)>, RuntimeError> {
        let keys = evaluate(&self.exprs, &chunk.batch)?;
        let encoded = self.codec.rows(&keys)?;
        let mut rows: Vec<Vec<u32>> = vec![Vec::new(); self.parallelism];
        let groups = key_groups(encoded.iter().map(|key| key.data()));
        for (i, kg) in groups.into_iter().enumerate() {
            rows[subtask_of(kg, self.parallelism)].push(i as u32);
        }
        let mut out = Vec::new();
        for (subtask, indices) in rows.into_iter().enumerate() {
            if indices.is_empty() {
                continue;
            }
            if indices.len() == chunk.num_rows() {
                out.push((subtask, chunk.clone()));
                continue;
            }
            let ops: Option<Vec<Op>> = chunk
                .ops
                .as_ref()
                .map(|ops| indices.iter().map(|&i| ops[i as usize]).collect());
            let batch = take_record_batch(&chunk.batch, &UInt32Array::from(indices))?;
            out.push((
                subtask,
                match ops {
                    Some(ops) => Chunk::with_ops(batch, ops),
                    None => Chunk::inserts(batch),
                },
            ));
        }
        Ok(out)
    }
}

/// One upstream subtask's channels to every subtask of the next stage.
pub struct Outputs {
    senders: Vec<mpsc::Sender<Message>>,
    /// None: a single downstream subtask takes everything.
    partitioner: Option<Partitioner>,
}

impl Outputs {
    pub fn new(senders: Vec<mpsc::Sender<Message>>, partitioner: Option<Partitioner>) -> Self {
        Outputs {
            senders,
            partitioner,
        }
    }

    pub async fn send(&mut self, msg: Message) -> Result<(), RuntimeError> {
        match (msg, &self.partitioner) {
            (Message::Data(c), Some(p)) if self.senders.len() > 1 => {
                for (subtask, part) in p.split(&c)? {
                    Self::deliver(&self.senders[subtask], Message::Data(part)).await?;
                }
            }
            (Message::Data(c), _) => Self::deliver(&self.senders[0], Message::Data(c)).await?,
            (other, _) => {
                for s in &self.senders {
                    Self::deliver(s, other.clone()).await?;
                }
            }
        }
        Ok(())
    }

    async fn deliver(to: &mpsc::Sender<Message>, msg: Message) -> Result<(), RuntimeError> {
        to.send(msg)
            .await
            .map_err(|_| RuntimeError::Internal("the next stage of the job has ended".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::key_group;
    use datafusion::arrow::array::{AsArray, Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::physical_expr::expressions::Column;
    use std::time::Duration;

    fn chunk(keys: &[i64]) -> Chunk {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(keys.to_vec()))]).unwrap();
        let ops = keys
            .iter()
            .map(|k| if k % 2 == 0 { Op::Insert } else { Op::Delete })
            .collect();
        Chunk::with_ops(batch, ops)
    }

    fn partitioner(parallelism: usize) -> Partitioner {
        let key_schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        Partitioner::new(vec![Arc::new(Column::new("k", 0))], key_schema, parallelism).unwrap()
    }

    #[test]
    fn rows_go_to_the_owner_of_their_key_group_with_their_change_kind() {
        let keys: Vec<i64> = (0..200).map(|i| i % 23).collect();
        let p = partitioner(3);
        let codec = RowCodec::new(Arc::new(Schema::new(vec![Field::new(
            "k",
            DataType::Int64,
            false,
        )])))
        .unwrap();
        let mut seen = 0;
        for (subtask, part) in p.split(&chunk(&keys)).unwrap() {
            let k = part.batch.column(0).as_primitive::<Int64Type>();
            seen += k.len();
            for i in 0..k.len() {
                let v = k.value(i);
                // The owner as the aggregate's state key gives it.
                let enc = codec
                    .encode(&[Arc::new(Int64Array::from(vec![v])) as _])
                    .unwrap();
                assert_eq!(subtask_of(key_group(&enc[0]), 3), subtask);
                let op = if v % 2 == 0 { Op::Insert } else { Op::Delete };
                assert_eq!(part.op(i), op);
            }
        }
        assert_eq!(seen, keys.len(), "every row goes somewhere, once");
    }

    #[tokio::test]
    async fn a_full_channel_makes_the_sender_wait() {
        let (tx, mut rx) = mpsc::channel(CHANNEL_CAPACITY);
        let mut out = Outputs::new(vec![tx], None);
        for i in 0..CHANNEL_CAPACITY as i64 {
            out.send(Message::Data(chunk(&[i]))).await.unwrap();
        }
        // Nobody reads: the next send waits instead of buffering.
        let blocked = tokio::time::timeout(
            Duration::from_millis(100),
            out.send(Message::Data(chunk(&[99]))),
        )
        .await;
        assert!(blocked.is_err(), "a send into a full channel must wait");
        rx.recv().await.unwrap();
        tokio::time::timeout(
            Duration::from_secs(5),
            out.send(Message::Data(chunk(&[100]))),
        )
        .await
        .expect("room again once the receiver reads")
        .unwrap();
    }
}
