//! The narrow times an entry keeps: its deadline as nanoseconds on the
//! store's monotonic clock ([`Tick`]), its creation and update times as
//! nanoseconds since the Unix epoch ([`WallTime`]).
//!
//! Eight bytes each where `Instant` and `SystemTime` take sixteen, with no
//! precision lost (the API shows milliseconds, snapshots keep nanoseconds):
//! an entry sits inline in a B-tree node that runs about half full, so each
//! byte of it costs the store nearly two per secret (docs/BENCHMARKS.md,
//! "Memory per secret: where the bytes go").

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// A point on the store's monotonic clock: nanoseconds since the store's
/// `epoch` (its creation), enough for 584 years.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Tick(pub(super) u64);

impl Tick {
    /// `at` on the clock that started at `epoch` (0 before it).
    pub(super) fn at(epoch: Instant, at: Instant) -> Tick {
        let since = at.saturating_duration_since(epoch).as_nanos();
        Tick(u64::try_from(since).unwrap_or(u64::MAX))
    }

    /// The instant this tick stands for.
    pub(super) fn instant(self, epoch: Instant) -> Instant {
        epoch + Duration::from_nanos(self.0)
    }

    /// `ttl` after this tick. `ttl` is bounded by --max-ttl long before this
    /// could overflow; it saturates (584 years on) rather than wrap.
    pub(super) fn after(self, ttl: Duration) -> Tick {
        let ttl = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
        Tick(self.0.saturating_add(ttl))
    }

    /// The wall-clock time of this tick, given that `now` is `wall_now`.
    pub(super) fn wall_clock(self, now: Tick, wall_now: SystemTime) -> SystemTime {
        if self >= now {
            wall_now + Duration::from_nanos(self.0 - now.0)
        } else {
            wall_now - Duration::from_nanos(now.0 - self.0)
        }
    }
}

/// A wall-clock time in nanoseconds since the Unix epoch: exact from 1970
/// to 2554, clamped outside (a store writes the present; a snapshot's
/// times come from a store).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct WallTime(u64);

impl WallTime {
    /// The nanoseconds since 1970 (what an entry keeps in an atomic).
    pub(super) fn nanos(self) -> u64 {
        self.0
    }

    pub(super) fn from_nanos(nanos: u64) -> WallTime {
        WallTime(nanos)
    }
}

impl From<SystemTime> for WallTime {
    fn from(time: SystemTime) -> WallTime {
        let nanos = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        WallTime(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

impl From<WallTime> for SystemTime {
    fn from(time: WallTime) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(time.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_times_round_trip_to_the_nanosecond() {
        let now = SystemTime::now();
        assert_eq!(SystemTime::from(WallTime::from(now)), now);
        let odd = SystemTime::UNIX_EPOCH + Duration::new(1_767_225_600, 123_456_789);
        assert_eq!(SystemTime::from(WallTime::from(odd)), odd);
        let before_1970 = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(
            SystemTime::from(WallTime::from(before_1970)),
            SystemTime::UNIX_EPOCH
        );
    }

    #[test]
    fn ticks_count_from_the_epoch_and_map_to_the_wall_clock() {
        let epoch = Instant::now();
        let later = epoch + Duration::from_millis(1_500);
        let tick = Tick::at(epoch, later);
        assert_eq!(tick, Tick(1_500_000_000));
        assert_eq!(tick.instant(epoch), later);
        assert_eq!(Tick::at(later, epoch), Tick(0), "before the epoch");
        assert_eq!(Tick(u64::MAX - 1).after(Duration::MAX), Tick(u64::MAX));
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let deadline = tick.after(Duration::from_secs(2));
        assert_eq!(
            deadline.wall_clock(tick, wall),
            wall + Duration::from_secs(2)
        );
        assert_eq!(
            tick.wall_clock(deadline, wall),
            wall - Duration::from_secs(2)
        );
    }
}
