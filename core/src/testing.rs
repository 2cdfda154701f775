//! Helpers for tests of this crate and of the hosts. Not for production: ids from
//! [`SequenceRandom`] are predictable.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::channel::{Output, RandomSource, StoreOp, StoredState};

/// A deterministic [`RandomSource`] (SplitMix64), so tests see the same ids on every run.
#[derive(Debug, Clone)]
pub struct SequenceRandom {
    state: u64,
}

impl SequenceRandom {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl RandomSource for SequenceRandom {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// A recovery store in memory: what a durable host (SQLite natively, a Durable Object's storage)
/// keeps of [`StoreOp`]s, handed back as the [`StoredState`] it would load at start.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    pub epoch: Option<String>,
    pub events: BTreeMap<u64, Bytes>,
    /// Socket records by pid.
    pub sockets: BTreeMap<String, String>,
}

impl MemoryStore {
    /// Applies one batch of writes, in order.
    pub fn apply(&mut self, ops: &[StoreOp]) {
        for op in ops {
            match op {
                StoreOp::SetEpoch(epoch) => self.epoch = Some(epoch.clone()),
                StoreOp::PutEvent { seq, record } => {
                    self.events.insert(*seq, record.clone());
                }
                StoreOp::DeleteEventsThrough { seq } => {
                    self.events = self.events.split_off(&(seq + 1));
                }
                StoreOp::PutSocket { pid, record } => {
                    self.sockets.insert(pid.clone(), record.clone());
                }
                StoreOp::DeleteSocket { pid } => {
                    self.sockets.remove(pid);
                }
            }
        }
    }

    /// Applies every [`Output::Store`] among `outputs`.
    pub fn apply_all(&mut self, outputs: &[Output]) {
        for output in outputs {
            if let Output::Store(ops) = output {
                self.apply(ops);
            }
        }
    }

    pub fn state(&self) -> StoredState {
        StoredState {
            epoch: self.epoch.clone(),
            events: self
                .events
                .iter()
                .map(|(seq, record)| (*seq, record.clone()))
                .collect(),
            sockets: self
                .sockets
                .iter()
                .map(|(pid, record)| (pid.clone(), record.clone()))
                .collect(),
        }
    }
}
