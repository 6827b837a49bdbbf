//! The operator trait and chains of operators that pass messages without a channel hop.

use super::chunk::Chunk;
use super::message::{Barrier, EventTime, Message};
use super::RuntimeError;

/// A streaming operator. Each handler appends what it emits to `out`; the
/// defaults forward control messages unchanged, so an operator overrides only
/// what it needs.
pub trait Operator: Send {
    fn name(&self) -> &'static str;

    fn process(&mut self, chunk: Chunk, out: &mut Vec<Message>) -> Result<(), RuntimeError>;

    fn on_watermark(&mut self, wm: EventTime, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        out.push(Message::Watermark(wm));
        Ok(())
    }

    fn on_barrier(&mut self, barrier: Barrier, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        out.push(Message::Barrier(barrier));
        Ok(())
    }

    fn on_end(&mut self, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        out.push(Message::End);
        Ok(())
    }

    /// Dispatches one message to its handler.
    fn handle(&mut self, msg: Message, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        match msg {
            Message::Data(c) if c.is_empty() => Ok(()),
            Message::Data(c) => self.process(c, out),
            Message::Watermark(w) => self.on_watermark(w, out),
            Message::Barrier(b) => self.on_barrier(b, out),
            Message::End => self.on_end(out),
        }
    }
}

/// Operators run back to back in one task (Flink's chaining).
pub struct Chain {
    ops: Vec<Box<dyn Operator>>,
    buffers: Vec<Vec<Message>>,
}

impl Chain {
    pub fn new(ops: Vec<Box<dyn Operator>>) -> Chain {
        let buffers = ops.iter().map(|_| Vec::new()).collect();
        Chain { ops, buffers }
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.ops.iter().map(|o| o.name()).collect()
    }

    /// Pushes a message through every operator; returns what the last one emitted.
    pub fn push(&mut self, msg: Message, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        let mut input = vec![msg];
        for (op, buf) in self.ops.iter_mut().zip(self.buffers.iter_mut()) {
            buf.clear();
            for m in input.drain(..) {
                op.handle(m, buf)?;
            }
            std::mem::swap(&mut input, buf);
        }
        out.append(&mut input);
        Ok(())
    }
}
