//! Hybrid logical clock: versions that follow wall time but never go backwards.
//!
//! The clock is sans-IO: callers pass the current wall time in microseconds. A writer's next
//! version is `max(now, last + 1, highest observed + 1)`, so a writer whose clock steps back, or
//! that has seen a newer version written by another writer, still produces a higher version.

use crate::types::{Version, WriterId};

/// A hybrid logical clock owned by one writer.
#[derive(Debug, Clone)]
pub struct HybridClock {
    writer: WriterId,
    last_micros: u64,
}

impl HybridClock {
    /// A clock for `writer` that has issued nothing yet.
    pub fn new(writer: WriterId) -> Self {
        Self {
            writer,
            last_micros: 0,
        }
    }

    /// The next version: strictly greater than every version this clock issued or observed.
    pub fn tick(&mut self, now_micros: u64) -> Version {
        self.last_micros = now_micros.max(self.last_micros.saturating_add(1));
        Version {
            clock_micros: self.last_micros,
            writer: self.writer,
        }
    }

    /// Takes note of a version seen elsewhere so the next tick lands above it.
    pub fn observe(&mut self, seen: Version) {
        self.last_micros = self.last_micros.max(seen.clock_micros);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_strictly_increasing_even_if_time_goes_back() {
        let mut clock = HybridClock::new(WriterId(1));
        let a = clock.tick(1_000);
        let b = clock.tick(900);
        let c = clock.tick(900);
        assert!(a < b && b < c);
        assert_eq!(a.clock_micros, 1_000);
    }

    #[test]
    fn observed_versions_are_overtaken() {
        let mut clock = HybridClock::new(WriterId(1));
        let seen = Version {
            clock_micros: 5_000,
            writer: WriterId(99),
        };
        clock.observe(seen);
        assert!(clock.tick(10) > seen);
    }
}
