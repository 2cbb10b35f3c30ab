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
        Walls::new(self.now(), SystemTime::now())
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

    /// `unix_parts` is `at` then `duration_since(UNIX_EPOCH)`, carries
    /// included, for deadlines ahead, behind and never, and walls before
    /// the epoch.
    #[cfg(feature = "persist")]
    #[test]
    fn unix_parts_is_the_wall_clock_time_since_the_epoch() {
        let slow = |walls: Walls, deadline| walls.at(deadline).map(wall_clock_parts);
        let epoch = SystemTime::UNIX_EPOCH;
        for wall in [
            epoch + Duration::new(1_796_000_000, 123_456_789),
            epoch + Duration::new(1_700_000_000, 999_999_999),
            epoch + Duration::new(5, 0),
            epoch - Duration::new(3, 500),
        ] {
            for now in [0, 7, 1_000_000_000_000] {
                let walls = Walls::new(now, wall);
                for deadline in [
                    now,
                    now + 1,
                    now + 999_999_999,
                    now + 1_000_000_000,
                    now + 1_500_000_001,
                    NEVER - 1,
                    now.saturating_sub(2_000_000_001),
                    NEVER,
                ] {
                    assert_eq!(walls.unix_parts(deadline), slow(walls, deadline), "{wall:?} {now} {deadline}");
                }
            }
        }
    }
}

/// Seconds and nanoseconds since the Unix epoch; times before it count as
/// the epoch (long past).
#[cfg(feature = "persist")]
pub(crate) fn wall_clock_parts(at: SystemTime) -> (u64, u32) {
    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO);
    (since.as_secs(), since.subsec_nanos())
}

/// [`Clock::walls`]: one instant on both clocks.
#[cfg(feature = "persist")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Walls {
    now: u64,
    wall: SystemTime,
    /// `wall` since the Unix epoch, unless it is before it.
    unix: Option<Duration>,
}

#[cfg(feature = "persist")]
impl Walls {
    pub(crate) fn new(now: u64, wall: SystemTime) -> Self {
        Walls { now, wall, unix: wall.duration_since(SystemTime::UNIX_EPOCH).ok() }
    }

    /// The wall-clock time of a deadline as `(seconds, nanoseconds)` since
    /// the Unix epoch (`None` for "never"): what a snapshot record keeps.
    /// The same as `at` then `duration_since(UNIX_EPOCH)`, in integer
    /// arithmetic for a deadline still ahead: a save converts every
    /// entry's, and through `SystemTime` that was 8% of its work.
    #[inline]
    pub(crate) fn unix_parts(self, deadline: u64) -> Option<(u64, u32)> {
        const NANOS: u64 = 1_000_000_000;
        match self.unix {
            Some(unix) if deadline != NEVER && deadline >= self.now => {
                let ahead = deadline - self.now;
                let nanos = u64::from(unix.subsec_nanos()) + ahead % NANOS;
                Some((unix.as_secs() + ahead / NANOS + nanos / NANOS, (nanos % NANOS) as u32))
            }
            _ => self.at(deadline).map(wall_clock_parts),
        }
    }

    /// The wall-clock time of a deadline; `None` for "never".
    pub(crate) fn at(self, deadline: u64) -> Option<SystemTime> {
        let Walls { now, wall, .. } = self;
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
