//! Rate limiting for generator sources: item `n` (counted from when pacing
//! started) is due at `n / rate` seconds; a poll waits for about 10 ms worth
//! of items, so a fast rate does not produce tiny batches and a slow one is
//! still prompt.

use std::time::{Duration, Instant};

use super::options::invalid;
use super::{ConnectorError, ConnectorOptions};

/// Paces a source at `rate` items per second.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    rate: f64,
    /// When pacing started, and the item number then.
    clock: Option<(Instant, u64)>,
}

impl Pacer {
    /// The pacer for the first of `keys` that is set: `None` when absent or 0.
    pub(crate) fn from_options(
        options: &ConnectorOptions,
        keys: &[&str],
        unit: &str,
    ) -> Result<Option<Pacer>, ConnectorError> {
        let Some((key, value)) = options.find(keys) else {
            return Ok(None);
        };
        let rate = value
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|r| r.is_finite() && *r >= 0.0)
            .ok_or_else(|| invalid(key, format!("expected {unit} per second, got '{value}'")))?;
        Ok((rate > 0.0).then_some(Pacer { rate, clock: None }))
    }

    /// Starts over from the next item (after a seek).
    pub(crate) fn reset(&mut self) {
        self.clock = None;
    }

    /// With `next` the next item and at most `cap` items wanted now: every
    /// item before the returned number is due, or `Err(wait)` when too few are.
    /// `origin` is the position pacing counts from when it (re)starts.
    pub(crate) fn due(&mut self, origin: u64, next: u64, cap: u64) -> Result<u64, Duration> {
        let now = Instant::now();
        let (t0, n0) = *self.clock.get_or_insert((now, origin));
        let elapsed = now.duration_since(t0).as_secs_f64();
        let due = n0
            .saturating_add((elapsed * self.rate) as u64)
            .saturating_add(1);
        let want = ((self.rate / 100.0) as u64).clamp(1, cap.max(1));
        let target = next.saturating_add(want - 1);
        if due > target {
            return Ok(due);
        }
        let at = target.saturating_sub(n0) as f64 / self.rate;
        // Rounded up, so that the items are due when polled again.
        let micros = ((at - elapsed) * 1e6).ceil().clamp(1_000.0, 3.6e9);
        Err(Duration::from_micros(micros as u64))
    }
}
