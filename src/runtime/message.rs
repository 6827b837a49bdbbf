//! The messages operators exchange: data, event time, checkpoint barriers, end of input.

use super::chunk::Chunk;

/// Event time in nanoseconds since the Unix epoch. Watermarks and window
/// bounds are compared in this unit whatever the column's own unit.
pub type EventTime = i64;

/// A barrier flowing from sources to sinks. Every operator handles it after
/// all data before it and before all data after it; sinks acknowledge it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    /// Monotonically increasing per job.
    pub epoch: u64,
    /// Whether operators snapshot their state for this epoch (a checkpoint),
    /// or only pass it on (a FLUSH marker).
    pub checkpoint: bool,
}

/// What flows on a channel between operators.
#[derive(Debug, Clone)]
pub enum Message {
    /// Rows and their change kinds.
    Data(Chunk),
    /// No row with an event time before this will follow.
    Watermark(EventTime),
    /// A checkpoint or flush barrier.
    Barrier(Barrier),
    /// Bounded input finished; acts as the final watermark.
    End,
}
