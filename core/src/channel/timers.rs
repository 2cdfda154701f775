//! Deadlines by typed name.
//!
//! Each key has at most one deadline. Setting a key again moves its deadline; the heap entry left
//! behind by the move is skipped when it comes up, and the heap is compacted when such leftovers
//! outnumber live entries, so a deadline moved at every pong cannot grow it without bound.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::Hash;

use super::FastMap;

#[derive(Debug)]
pub(crate) struct TimerQueue<K> {
    deadlines: FastMap<K, u64>,
    heap: BinaryHeap<Reverse<(u64, K)>>,
}

impl<K> Default for TimerQueue<K> {
    fn default() -> Self {
        Self {
            deadlines: FastMap::default(),
            heap: BinaryHeap::new(),
        }
    }
}

impl<K: Copy + Eq + Hash + Ord> TimerQueue<K> {
    /// Sets (or moves) the deadline of `key`.
    pub fn set(&mut self, key: K, at: u64) {
        if self.deadlines.insert(key, at) == Some(at) {
            return;
        }
        self.heap.push(Reverse((at, key)));
        if self.heap.len() > 2 * self.deadlines.len() + 64 {
            self.heap = self
                .deadlines
                .iter()
                .map(|(key, at)| Reverse((*at, *key)))
                .collect();
        }
    }

    /// Sets the deadline of `key`, or cancels it for `None`.
    pub fn set_or_cancel(&mut self, key: K, at: Option<u64>) {
        match at {
            Some(at) => self.set(key, at),
            None => self.cancel(key),
        }
    }

    pub fn cancel(&mut self, key: K) {
        self.deadlines.remove(&key);
    }

    pub fn get(&self, key: K) -> Option<u64> {
        self.deadlines.get(&key).copied()
    }

    /// The earliest deadline.
    pub fn next(&mut self) -> Option<u64> {
        while let Some(Reverse((at, key))) = self.heap.peek() {
            if self.deadlines.get(key) == Some(at) {
                return Some(*at);
            }
            self.heap.pop();
        }
        None
    }

    /// Removes and returns a key whose deadline is at or before `now`, earliest first.
    pub fn pop_due(&mut self, now: u64) -> Option<K> {
        loop {
            let Reverse((at, key)) = *self.heap.peek()?;
            if at > now {
                return None;
            }
            self.heap.pop();
            if self.deadlines.get(&key) == Some(&at) {
                self.deadlines.remove(&key);
                return Some(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn keys_fire_once_at_their_latest_deadline() {
        let mut timers = TimerQueue::default();
        timers.set(1u32, 100);
        timers.set(2, 50);
        timers.set(1, 30);
        assert_eq!(timers.next(), Some(30));
        assert_eq!(timers.pop_due(40), Some(1));
        assert_eq!(timers.pop_due(40), None);
        assert_eq!(timers.next(), Some(50));
        timers.cancel(2);
        assert_eq!(timers.next(), None);
        assert!(timers.deadlines.is_empty());
    }

    #[test]
    fn moving_one_deadline_again_and_again_keeps_the_heap_small() {
        let mut timers = TimerQueue::default();
        for at in 0..10_000u64 {
            timers.set(7u32, 1_000_000 + at);
        }
        assert!(timers.heap.len() <= 2 + 64, "{}", timers.heap.len());
        assert_eq!(timers.next(), Some(1_000_000 + 9_999));
    }
}
