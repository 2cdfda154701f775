//! A WebSocket's queue of outgoing packets: its channel's task fills it, its connection task drains
//! it.
//!
//! It replaces a bounded `tokio::sync::mpsc` channel, which is built for many senders and costs about
//! 1.3 KB per idle connection (a cache-padded channel state and a first block of 32 slots). Here
//! there is exactly one producer and one consumer, so one small lock around a `VecDeque` and a
//! [`Notify`] suffice: an idle connection costs about a hundred bytes.
//!
//! The queue is bounded in packets ([`OUTBOUND_QUEUE`]) and in bytes ([`OUTBOUND_BYTES`]): a push
//! beyond either fails, and the channel drops the connection instead of buffering without limit for
//! a client that cannot keep up. (The batch the connection is writing at that moment is not
//! counted: a stalled client can hold up to about twice the byte bound.)

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use bytes::Bytes;

use crate::buffers::QuietStreak;

/// What a WebSocket task receives from its channel.
#[derive(Debug)]
pub enum Outbound {
    /// One packet as complete WebSocket frames, encoded once per broadcast and shared by all
    /// recipients (see [`crate::websocket_io`]).
    Frames(Bytes),
    Close {
        code: u16,
        reason: &'static str,
    },
}

impl Outbound {
    /// Payload bytes this puts on the wire, counted against the connection's queue limit.
    pub fn payload_len(&self) -> usize {
        match self {
            Outbound::Frames(frames) => frames.len(),
            Outbound::Close { reason, .. } => reason.len(),
        }
    }
}

/// Packets a WebSocket may have queued before it counts as too slow: the bound core puts on a
/// polling session's queue too.
pub const OUTBOUND_QUEUE: usize = switchboard_core::channel::MAX_QUEUED_PACKETS;
/// Payload bytes a WebSocket may have queued before it counts as too slow. A single packet is
/// always accepted into an empty queue, whatever its size (the channel's `max_payload` bounds it).
pub const OUTBOUND_BYTES: usize = switchboard_core::channel::MAX_QUEUED_BYTES;

struct Shared {
    state: Mutex<State>,
    /// Wakes the consumer; a notification sent while it is busy is kept for its next wait.
    ready: Notify,
    /// Signalled once, when the sender is dropped (see [`OutboxReceiver::released`]).
    released: Notify,
}

struct State {
    queue: VecDeque<Outbound>,
    /// Payload bytes in `queue`.
    queued_bytes: usize,
    /// The producer is gone: nothing more will come.
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding this lock; if it ever did, the queue is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A new queue: the channel keeps the [`OutboxSender`], the connection task the
/// [`OutboxReceiver`].
pub fn outbox() -> (OutboxSender, OutboxReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            queued_bytes: 0,
            closed: false,
        }),
        ready: Notify::new(),
        released: Notify::new(),
    });
    (
        OutboxSender(shared.clone()),
        OutboxReceiver {
            shared,
            quiet: QuietStreak::default(),
        },
    )
}

/// The channel's end. Dropping it tells the connection that nothing more will come.
pub struct OutboxSender(Arc<Shared>);

/// The queue is full: the connection is not keeping up.
#[derive(Debug)]
pub struct Full;

impl OutboxSender {
    /// Queues `outbound` without waiting.
    pub fn push(&self, outbound: Outbound) -> Result<(), Full> {
        let size = outbound.payload_len();
        {
            let mut state = self.0.lock();
            let over_bytes =
                !state.queue.is_empty() && state.queued_bytes.saturating_add(size) > OUTBOUND_BYTES;
            // A close always gets in, so the client learns the real reason.
            let close = matches!(outbound, Outbound::Close { .. });
            if !close && (state.queue.len() >= OUTBOUND_QUEUE || over_bytes) {
                return Err(Full);
            }
            state.queued_bytes += size;
            state.queue.push_back(outbound);
        }
        self.0.ready.notify_one();
        Ok(())
    }
}

impl Drop for OutboxSender {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.ready.notify_one();
        self.0.released.notify_one();
    }
}

impl std::fmt::Debug for OutboxSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxSender").finish_non_exhaustive()
    }
}

/// The connection task's end.
pub struct OutboxReceiver {
    shared: Arc<Shared>,
    quiet: QuietStreak,
}

impl OutboxReceiver {
    /// Waits until something is queued and returns all of it; `None` once the sender is gone and
    /// everything it queued has been taken.
    ///
    /// The queue's buffer itself is handed over; give it back with [`OutboxReceiver::recycle`].
    pub async fn recv_all(&mut self) -> Option<VecDeque<Outbound>> {
        loop {
            {
                let mut state = self.shared.lock();
                if !state.queue.is_empty() {
                    state.queued_bytes = 0;
                    return Some(std::mem::take(&mut state.queue));
                }
                if state.closed {
                    return None;
                }
            }
            self.shared.ready.notified().await;
        }
    }

    /// Resolves once the channel has let go of this connection (closed it, or dropped it as too
    /// slow). A connection task blocked writing to a client that does not read uses this to stop
    /// waiting for it.
    pub async fn released(&self) {
        loop {
            if self.shared.lock().closed {
                return;
            }
            self.shared.released.notified().await;
        }
    }

    /// Returns the buffer of a batch of `used` packets, emptied, for the next pushes, so a busy
    /// connection does not allocate per wake-up (see `buffers.rs` for when it shrinks).
    pub fn recycle(&mut self, mut batch: VecDeque<Outbound>, used: usize) {
        const KEEP: usize = 8;
        batch.clear();
        if let Some(capacity) = self.quiet.after_use(batch.capacity(), used, KEEP) {
            batch.shrink_to(capacity);
        }
        let mut state = self.shared.lock();
        if state.queue.capacity() == 0 {
            state.queue = batch;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(code: u16) -> Outbound {
        Outbound::Close {
            code,
            reason: "test",
        }
    }

    fn codes(batch: &VecDeque<Outbound>) -> Vec<u16> {
        batch
            .iter()
            .map(|outbound| match outbound {
                Outbound::Close { code, .. } => *code,
                Outbound::Frames(_) => 0,
            })
            .collect()
    }

    #[tokio::test]
    async fn delivers_in_order_then_reports_the_sender_gone() {
        let (sender, mut receiver) = outbox();
        sender.push(close(1)).unwrap();
        sender.push(close(2)).unwrap();
        assert_eq!(codes(&receiver.recv_all().await.unwrap()), [1, 2]);
        sender.push(close(3)).unwrap();
        drop(sender);
        // What was queued before the sender went still arrives.
        assert_eq!(codes(&receiver.recv_all().await.unwrap()), [3]);
        assert!(receiver.recv_all().await.is_none());
    }

    #[tokio::test]
    async fn wakes_a_waiting_receiver() {
        let (sender, mut receiver) = outbox();
        let waiter = tokio::spawn(async move { codes(&receiver.recv_all().await.unwrap()) });
        tokio::task::yield_now().await;
        sender.push(close(7)).unwrap();
        assert_eq!(waiter.await.unwrap(), [7]);
    }

    fn text_of(len: usize) -> Outbound {
        Outbound::Frames(bytes::Bytes::from(vec![b'x'; len]))
    }

    #[tokio::test]
    async fn refuses_beyond_its_byte_bound_but_takes_one_large_packet() {
        let (sender, mut receiver) = outbox();
        // One packet larger than the whole bound still goes through an empty queue.
        sender.push(text_of(OUTBOUND_BYTES + 1)).unwrap();
        assert!(sender.push(text_of(1)).is_err());
        receiver.recv_all().await.unwrap();
        // Emptied: room again, up to the bound.
        sender.push(text_of(OUTBOUND_BYTES / 2)).unwrap();
        sender.push(text_of(OUTBOUND_BYTES / 2)).unwrap();
        assert!(sender.push(text_of(1)).is_err());
    }

    #[tokio::test]
    async fn reports_its_release_once_the_sender_is_gone() {
        let (sender, receiver) = outbox();
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(20), receiver.released()).await;
        assert!(early.is_err());
        drop(sender);
        receiver.released().await;
        // And every time after.
        receiver.released().await;
    }

    #[test]
    fn refuses_beyond_its_packet_bound() {
        let (sender, _receiver) = outbox();
        for _ in 0..OUTBOUND_QUEUE {
            sender.push(text_of(1)).unwrap();
        }
        assert!(sender.push(text_of(1)).is_err());
        // A close still gets in.
        sender.push(close(1)).unwrap();
    }
}
