//! Lifecycle webhooks: what happened in a channel (occupied, vacated, a socket connected or left, a
//! client event named in the configuration), posted to the backend in batches, never holding up a
//! client.
//!
//! Events wait in a bounded queue. A batch leaves a short moment after the first event (so that a
//! burst goes in one POST), one batch at a time; a failed batch is retried, with the same call id,
//! after a growing delay, then dropped. An event that finds the queue full is dropped. Every drop is
//! counted and reported for the host to log.

use std::collections::VecDeque;

use serde_json::Value;

/// Events that may wait at once; more are dropped.
pub const MAX_QUEUED: usize = 1_000;
/// Bytes of JSON that may wait at once (client events carry their arguments); more are dropped.
pub const MAX_QUEUED_BYTES: usize = 4 * 1024 * 1024;
/// Events per POST at most.
pub const MAX_BATCH: usize = 100;
/// How long the first event of a batch waits for others.
pub const BATCH_DELAY_MS: u64 = 50;
/// Attempts at one batch before it is dropped.
pub const MAX_ATTEMPTS: u32 = 8;
/// The first retry's delay; each next one doubles, up to [`MAX_RETRY_DELAY_MS`].
pub const FIRST_RETRY_DELAY_MS: u64 = 250;
pub const MAX_RETRY_DELAY_MS: u64 = 30_000;

/// A batch on its way, or waiting to be tried again.
#[derive(Debug)]
pub(crate) struct Batch {
    /// The call id the backend sees, the same for every attempt, so it can deduplicate.
    pub call_id: String,
    pub events: Vec<Value>,
    pub attempts: u32,
}

#[derive(Debug, Default)]
pub(crate) struct Webhooks {
    /// Events waiting for a batch, with their size in bytes.
    queue: VecDeque<(Value, usize)>,
    queued_bytes: usize,
    /// The batch being sent or waiting for its retry.
    pub batch: Option<Batch>,
    /// The host call of the batch in flight.
    pub in_flight: Option<u64>,
    /// When the next POST may leave: the batch delay, or a retry's.
    pub send_at: Option<u64>,
    /// Events dropped so far (queue full, or a batch out of attempts).
    pub dropped: u64,
    /// Events dropped because the queue was full since the host was last told.
    pub dropped_unreported: u64,
}

/// What the layer above must do after a change.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    Nothing,
    /// Wake at this time to send.
    SendAt(u64),
}

impl Webhooks {
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.batch.is_none()
    }

    /// Queues an event of `size` bytes. Returns whether it was dropped because the queue is full.
    pub fn push(&mut self, event: Value, size: usize, now: u64) -> (bool, Next) {
        if self.queue.len() >= MAX_QUEUED || self.queued_bytes + size > MAX_QUEUED_BYTES {
            self.dropped += 1;
            self.dropped_unreported += 1;
            return (true, Next::Nothing);
        }
        self.queued_bytes += size;
        self.queue.push_back((event, size));
        if self.batch.is_none() && self.send_at.is_none() {
            let at = now + BATCH_DELAY_MS;
            self.send_at = Some(at);
            return (false, Next::SendAt(at));
        }
        (false, Next::Nothing)
    }

    /// The batch to send now, if it is time and none is in flight: a new one from the queue, or
    /// the one waiting for its retry. `new_call_id` names a new batch.
    pub fn due_batch(&mut self, now: u64, new_call_id: impl FnOnce() -> String) -> Option<&Batch> {
        if self.in_flight.is_some() || self.send_at.is_none_or(|at| at > now) {
            return None;
        }
        self.send_at = None;
        if self.batch.is_none() {
            if self.queue.is_empty() {
                return None;
            }
            let take = self.queue.len().min(MAX_BATCH);
            let mut events = Vec::with_capacity(take);
            for (event, size) in self.queue.drain(..take) {
                self.queued_bytes -= size;
                events.push(event);
            }
            self.batch = Some(Batch {
                call_id: new_call_id(),
                events,
                attempts: 0,
            });
        }
        let batch = self.batch.as_mut()?;
        batch.attempts += 1;
        Some(batch)
    }

    /// The batch in flight was delivered.
    pub fn delivered(&mut self, now: u64) -> Next {
        self.in_flight = None;
        self.batch = None;
        if self.queue.is_empty() {
            return Next::Nothing;
        }
        let at = now + BATCH_DELAY_MS;
        self.send_at = Some(at);
        Next::SendAt(at)
    }

    /// The batch in flight failed. Returns how many events were dropped with it (0 while it has
    /// attempts left), and when to try again.
    pub fn failed(&mut self, now: u64) -> (usize, Next) {
        self.in_flight = None;
        let Some(batch) = &self.batch else {
            return (0, Next::Nothing);
        };
        if batch.attempts >= MAX_ATTEMPTS {
            let dropped = batch.events.len();
            self.dropped += dropped as u64;
            self.batch = None;
            return (dropped, self.delivered_next(now));
        }
        let delay = FIRST_RETRY_DELAY_MS
            .saturating_mul(1 << (batch.attempts - 1).min(16))
            .min(MAX_RETRY_DELAY_MS);
        let at = now + delay;
        self.send_at = Some(at);
        (0, Next::SendAt(at))
    }

    fn delivered_next(&mut self, now: u64) -> Next {
        if self.queue.is_empty() {
            return Next::Nothing;
        }
        let at = now + BATCH_DELAY_MS;
        self.send_at = Some(at);
        Next::SendAt(at)
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use serde_json::json;

    #[test]
    fn a_burst_goes_in_one_batch_and_failures_back_off_then_give_up() {
        let mut hooks = Webhooks::default();
        assert_eq!(
            hooks.push(json!(1), 1, 0),
            (false, Next::SendAt(BATCH_DELAY_MS))
        );
        for n in 2..=5 {
            assert_eq!(hooks.push(json!(n), 1, 10), (false, Next::Nothing));
        }
        assert!(hooks.due_batch(BATCH_DELAY_MS - 1, || "x".into()).is_none());
        let batch = hooks.due_batch(BATCH_DELAY_MS, || "call-1".into()).unwrap();
        assert_eq!(batch.events.len(), 5);
        hooks.in_flight = Some(1);
        // Each failure waits twice as long; the call id stays, for the backend to deduplicate.
        let mut now = 100;
        let mut last_delay = 0;
        for attempt in 1..MAX_ATTEMPTS {
            let (dropped, next) = hooks.failed(now);
            assert_eq!(dropped, 0);
            let Next::SendAt(at) = next else {
                panic!("a retry is scheduled");
            };
            assert!(
                at - now > last_delay || at - now == MAX_RETRY_DELAY_MS,
                "attempt {attempt}"
            );
            last_delay = at - now;
            now = at;
            let batch = hooks
                .due_batch(now, || unreachable!("the batch is retried"))
                .unwrap();
            assert_eq!(batch.call_id, "call-1");
            assert_eq!(batch.attempts, attempt + 1);
            hooks.in_flight = Some(1);
        }
        let (dropped, _) = hooks.failed(now);
        assert_eq!(dropped, 5);
        assert_eq!(hooks.dropped, 5);
        assert!(hooks.is_idle());
    }

    #[test]
    fn the_queue_is_bounded_in_events_and_bytes() {
        let mut hooks = Webhooks::default();
        for n in 0..MAX_QUEUED {
            assert!(!hooks.push(json!(n), 1, 0).0);
        }
        assert!(hooks.push(json!("one too many"), 1, 0).0);
        assert_eq!((hooks.dropped, hooks.dropped_unreported), (1, 1));
        // Batches take at most MAX_BATCH, and free their room in the queue.
        let batch = hooks.due_batch(BATCH_DELAY_MS, || "c".into()).unwrap();
        assert_eq!(batch.events.len(), MAX_BATCH);
        assert!(!hooks.push(json!("room again"), 1, 0).0);

        let mut hooks = Webhooks::default();
        assert!(!hooks.push(json!("big"), MAX_QUEUED_BYTES - 10, 0).0);
        assert!(hooks.push(json!("too big"), 11, 0).0);
        assert!(!hooks.push(json!("fits"), 10, 0).0);
    }
}
