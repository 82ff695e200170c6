//! Protocol time, passed in by whoever drives a state machine.
//!
//! The state machines never read a clock: the daemons hand them the time of each event, and
//! the scenario tests hand them a virtual clock that jumps straight to the next deadline, so
//! an hour of protocol runs in microseconds and every run is the same.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A point in protocol time: milliseconds since an origin the driver chooses (its start).
///
/// Milliseconds are the finest unit WCCP speaks in (revision 1's Transmit_T), and a plain
/// number serialises readably in `show` output and test scripts. Arithmetic saturates, so no
/// input can make it panic.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Instant(u64);

impl Instant {
    /// The driver's origin.
    pub const ZERO: Instant = Instant(0);

    /// The instant `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Instant {
        Instant(ms)
    }

    /// The instant `s` seconds after the origin.
    pub const fn from_secs(s: u64) -> Instant {
        Instant(s.saturating_mul(1000))
    }

    /// Milliseconds since the origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, zero when `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(millis(d)))
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, d: Duration) -> Instant {
        Instant(self.0.saturating_sub(millis(d)))
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}

/// `d` scaled by `tenths / 10`: the drafts state timers as fractions of the Here-I-Am
/// interval (1.5 T, 2.5 T), which integer tenths express exactly.
pub fn tenths(d: Duration, tenths: u32) -> Duration {
    Duration::from_millis(millis(d).saturating_mul(u64::from(tenths)) / 10)
}

/// A small deterministic generator (xorshift64*) for timer jitter: the drafts ask for 10%
/// jitter on the multicast I-See-You, and a seeded generator keeps runs reproducible.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// A generator from `seed` (any value; 0 is remapped).
    pub fn new(seed: u64) -> Jitter {
        Jitter(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next value in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        if n == 0 {
            0
        } else {
            x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
        }
    }

    /// `d` moved by up to `percent`% either way.
    pub fn spread(&mut self, d: Duration, percent: u64) -> Duration {
        let ms = millis(d);
        let span = ms.saturating_mul(percent) / 100;
        let offset = self.below(span.saturating_mul(2).saturating_add(1));
        Duration::from_millis(ms.saturating_sub(span).saturating_add(offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_millis(5);
        assert_eq!(t - Duration::from_secs(1), Instant::ZERO);
        assert_eq!(
            Instant::from_millis(u64::MAX) + Duration::from_secs(1),
            Instant::from_millis(u64::MAX)
        );
        assert_eq!(t.saturating_since(Instant::from_secs(1)), Duration::ZERO);
        assert_eq!(
            tenths(Duration::from_secs(10), 25),
            Duration::from_millis(25_000)
        );
    }

    #[test]
    fn jitter_stays_in_range() {
        let mut j = Jitter::new(1);
        for _ in 0..1000 {
            let d = j.spread(Duration::from_secs(9), 10);
            assert!(d >= Duration::from_millis(8100) && d <= Duration::from_millis(9900));
        }
    }
}
