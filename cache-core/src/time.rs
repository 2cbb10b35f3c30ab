//! The clock: nanoseconds since the cache was built, on tokio's clock.
//!
//! tokio's `Instant` is std's outside a runtime and follows
//! `tokio::time::pause()`/`advance()` inside one, so TTL tests (ours and our
//! users') run on paused time instead of sleeping.

use std::time::Duration;
#[cfg(feature = "persist")]
use std::time::SystemTime;

use tokio::time::Instant;

/// A deadline that never comes.
pub(crate) const NEVER: u64 = u64::MAX;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock { epoch: Instant::now() }
    }

    /// Nanoseconds since the epoch; never `NEVER`.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        let ns = Instant::now().saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(ns).unwrap_or(NEVER - 1).min(NEVER - 1)
    }

    /// The deadline `ttl` after `now`; `NEVER` when it does not fit the clock.
    #[inline]
    pub(crate) fn deadline(now: u64, ttl: Option<Duration>) -> u64 {
        match ttl {
            None => NEVER,
            Some(ttl) => u64::try_from(ttl.as_nanos()).ok().and_then(|ttl| now.checked_add(ttl)).unwrap_or(NEVER),
        }
    }

    /// The clock and the wall clock read together, to turn deadlines into
    /// wall-clock times (persistence): read once per snapshot, not once
    /// per entry.
    #[cfg(feature = "persist")]
    pub(crate) fn walls(self) -> Walls {
        Walls { now: self.now(), wall: SystemTime::now() }
    }

    /// The time left at `now` until a wall-clock expiry: `None` for
    /// "never", `Some(ZERO)` when it has passed.
    #[cfg(feature = "persist")]
    pub(crate) fn remaining(expires_at: Option<SystemTime>, now: SystemTime) -> Option<Duration> {
        expires_at.map(|at| at.duration_since(now).unwrap_or(Duration::ZERO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ttl_too_large_for_the_clock_saturates_to_never() {
        assert_eq!(Clock::deadline(5, Some(Duration::MAX)), NEVER);
        assert_eq!(Clock::deadline(5, Some(Duration::from_nanos(u64::MAX - 5))), NEVER);
        assert_eq!(Clock::deadline(5, Some(Duration::from_nanos(10))), 15);
        assert_eq!(Clock::deadline(5, None), NEVER);
    }
}

/// [`Clock::walls`]: one instant on both clocks.
#[cfg(feature = "persist")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Walls {
    now: u64,
    wall: SystemTime,
}

#[cfg(feature = "persist")]
impl Walls {
    /// The wall-clock time of a deadline; `None` for "never".
    pub(crate) fn at(self, deadline: u64) -> Option<SystemTime> {
        let Walls { now, wall } = self;
        if deadline == NEVER {
            return None;
        }
        Some(if deadline >= now {
            wall.checked_add(Duration::from_nanos(deadline - now)).unwrap_or(wall)
        } else {
            wall.checked_sub(Duration::from_nanos(now - deadline)).unwrap_or(wall)
        })
    }
}
