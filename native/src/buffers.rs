//! When a reused buffer gives memory back.
//!
//! Connection buffers are reused between wake-ups, so a busy connection does not allocate each time.
//! Shrinking after every quiet use would reallocate constantly under bursty load; never shrinking
//! would leave every connection that once saw a burst holding its peak size. So a buffer shrinks
//! only after several uses in a row have needed a small part of it.

/// Consecutive small uses after which a buffer shrinks.
const QUIET_USES: u8 = 8;

/// Counts consecutive uses that needed less than a quarter of a buffer.
#[derive(Debug, Default)]
pub struct QuietStreak(u8);

impl QuietStreak {
    /// Called after each use of a buffer of `capacity` that held `used` at its fullest; returns the
    /// capacity to shrink to when it is time (never below `keep`).
    pub fn after_use(&mut self, capacity: usize, used: usize, keep: usize) -> Option<usize> {
        if capacity <= keep || used.saturating_mul(4) >= capacity {
            self.0 = 0;
            return None;
        }
        self.0 += 1;
        if self.0 < QUIET_USES {
            return None;
        }
        self.0 = 0;
        Some(keep.max(used))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinks_only_after_a_run_of_small_uses() {
        let mut streak = QuietStreak::default();
        for _ in 1..QUIET_USES {
            assert_eq!(streak.after_use(8192, 100, 512), None);
        }
        assert_eq!(streak.after_use(8192, 100, 512), Some(512));
    }

    #[test]
    fn a_large_use_restarts_the_count() {
        let mut streak = QuietStreak::default();
        for _ in 1..QUIET_USES {
            streak.after_use(8192, 100, 512);
        }
        assert_eq!(streak.after_use(8192, 4096, 512), None);
        assert_eq!(streak.after_use(8192, 100, 512), None);
    }

    #[test]
    fn small_buffers_are_kept() {
        let mut streak = QuietStreak::default();
        for _ in 0..4 * QUIET_USES {
            assert_eq!(streak.after_use(512, 1, 512), None);
        }
    }
}
