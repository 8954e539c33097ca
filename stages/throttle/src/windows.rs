//! Window arithmetic: quiet hours in a time zone, and the count of a cap's window.
//!
//! Pure functions, property-tested: quiet hours across midnight, DST gaps and overlaps; fixed
//! and sliding windows never letting more than the limit through.

use herald_schemas::{Timestamp, WindowKind};
use jiff::civil::{Date, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use serde::{Deserialize, Serialize};

/// When the quiet hours `start`–`end` (wall-clock times in `tz`; `end` before `start` wraps
/// past midnight) that contain `now` end; `None` when `now` is outside them.
///
/// DST: the window is wall-clock time. An `end` that falls in a gap (the clock jumps over it)
/// ends the window when the clock jumps; an `end` that occurs twice (the clock goes back) ends
/// it at the first occurrence after `now`.
pub fn quiet_until(now: Timestamp, tz: &TimeZone, start: Time, end: Time) -> Option<Timestamp> {
    let local = now.to_zoned(tz.clone());
    let (date, time) = (local.date(), local.time());
    let end_date = if start < end {
        if time < start || time >= end {
            return None;
        }
        date
    } else if time >= start {
        date.tomorrow().ok()?
    } else if time < end {
        date
    } else {
        return None;
    };
    Some(first_after(now, tz, end_date, end))
}

/// The first instant after `now` at which the clock in `tz` reads `date` `time` (or, in a
/// gap, the instant the clock jumps past it).
fn first_after(now: Timestamp, tz: &TimeZone, date: Date, time: Time) -> Timestamp {
    let ambiguous = tz.to_ambiguous_timestamp(date.to_datetime(time));
    let mut candidates: Vec<Timestamp> = [ambiguous.earlier().ok(), ambiguous.later().ok()].into_iter().flatten().collect();
    candidates.sort();
    if let AmbiguousOffset::Gap { .. } = ambiguous.offset()
        && let Some(first) = candidates.first()
        && let Some(jump) = tz.following(*first).next()
    {
        // The clock never reads `time` that day: the first instant past it is the jump.
        candidates = vec![jump.timestamp()];
    }
    candidates.into_iter().find(|t| *t > now).unwrap_or_else(|| now + jiff::SignedDuration::from_secs(1))
}

/// The count of one cap's window, as stored in NATS (one key per cap and scope value).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// Fixed windows: the start of the window counted (Unix ms).
    #[serde(default)]
    pub w: i64,
    /// Deliveries let through in the window.
    #[serde(default)]
    pub n: u64,
    /// (delivery, Unix ms) of each delivery let through: all of them for a sliding window; for a
    /// fixed one up to [`LOG_MAX`], so a redelivered message is not counted twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<(u64, i64)>,
}

/// Most deliveries a fixed window remembers individually.
pub const LOG_MAX: usize = 1_000;

/// What a cap says about one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Counted now.
    Admitted,
    /// Counted before (the same delivery again): let through, not counted again.
    AlreadyAdmitted,
    /// Over the limit until this instant (Unix ms).
    Over { reopens_at: i64 },
}

/// The start of the fixed window of length `window_ms` that holds `now_ms`.
pub fn fixed_start(now_ms: i64, window_ms: i64) -> i64 {
    now_ms.div_euclid(window_ms.max(1)) * window_ms.max(1)
}

impl Counter {
    /// Forgets what lies outside the window that holds `now_ms`. Clocks of replicas (and the
    /// time a held message was received) may lag: a fixed window only ever moves forward, and a
    /// lagging `now` counts against the newer window already stored.
    pub fn prune(&mut self, kind: WindowKind, window_ms: i64, now_ms: i64) {
        match kind {
            WindowKind::Fixed => {
                let start = fixed_start(now_ms, window_ms);
                if start > self.w {
                    *self = Counter { w: start, n: 0, log: Vec::new() };
                }
            }
            WindowKind::Sliding => {
                self.log.retain(|(_, at)| *at > now_ms - window_ms);
                self.log.sort_by_key(|(_, at)| *at);
                self.n = self.log.len() as u64;
            }
        }
    }

    /// Counts `delivery` at `now_ms` if the window has room (after [`prune`](Self::prune)).
    pub fn admit(&mut self, kind: WindowKind, limit: u32, window_ms: i64, delivery: u64, now_ms: i64) -> Admission {
        self.prune(kind, window_ms, now_ms);
        if self.log.iter().any(|(d, _)| *d == delivery) {
            return Admission::AlreadyAdmitted;
        }
        let limit = u64::from(limit.max(1));
        if self.n >= limit {
            let reopens_at = match kind {
                WindowKind::Fixed => self.w + window_ms,
                // Enough of the oldest must age out to leave room for one more.
                WindowKind::Sliding => {
                    let index = usize::try_from(self.n - limit).unwrap_or(0);
                    self.log.get(index).map_or(now_ms + 1, |(_, at)| at + window_ms)
                }
            };
            return Admission::Over { reopens_at };
        }
        self.n += 1;
        if kind == WindowKind::Sliding || self.log.len() < LOG_MAX {
            self.log.push((delivery, now_ms));
        }
        Admission::Admitted
    }

    /// Takes back a delivery counted by [`admit`](Self::admit) (another cap refused it).
    pub fn release(&mut self, delivery: u64) -> bool {
        let before = self.log.len();
        self.log.retain(|(d, _)| *d != delivery);
        let removed = before != self.log.len();
        if removed {
            self.n = self.n.saturating_sub(1);
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use jiff::civil::time;
    use proptest::prelude::*;

    use super::*;

    const ZONES: [&str; 8] = [
        "UTC",
        "Asia/Seoul",
        "America/New_York",
        "Europe/Berlin",
        "Australia/Lord_Howe", // 30-minute DST shift
        "Asia/Kathmandu",      // +05:45
        "America/Santiago",    // DST in the southern summer
        "Pacific/Chatham",     // +12:45/+13:45
    ];

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn examples() {
        let seoul = TimeZone::get("Asia/Seoul").unwrap();
        // 23:30 in Seoul, quiet 22:00–07:00: until 07:00 the next day.
        assert_eq!(quiet_until(at("2026-03-10T14:30:00Z"), &seoul, time(22, 0, 0, 0), time(7, 0, 0, 0)), Some(at("2026-03-10T22:00:00Z")));
        // 03:00 in Seoul: until 07:00 the same day.
        assert_eq!(quiet_until(at("2026-03-10T18:00:00Z"), &seoul, time(22, 0, 0, 0), time(7, 0, 0, 0)), Some(at("2026-03-10T22:00:00Z")));
        // 12:00 in Seoul: not quiet.
        assert_eq!(quiet_until(at("2026-03-10T03:00:00Z"), &seoul, time(22, 0, 0, 0), time(7, 0, 0, 0)), None);
        // The window ends at `end` exactly: not quiet then.
        assert_eq!(quiet_until(at("2026-03-10T22:00:00Z"), &seoul, time(22, 0, 0, 0), time(7, 0, 0, 0)), None);
        // New York, the night the clocks go forward (2026-03-08 02:00 → 03:00), quiet 01:00–02:30:
        // 02:30 never happens; the window ends when the clock jumps, at 03:00 EDT = 07:00Z.
        let ny = TimeZone::get("America/New_York").unwrap();
        assert_eq!(quiet_until(at("2026-03-08T06:30:00Z"), &ny, time(1, 0, 0, 0), time(2, 30, 0, 0)), Some(at("2026-03-08T07:00:00Z")));
        // The night they go back (2026-11-01 02:00 EDT → 01:00 EST), quiet 00:30–01:30: at the
        // second 01:10 (EST, 06:10Z) the window ends at the second 01:30 (06:30Z).
        assert_eq!(quiet_until(at("2026-11-01T06:10:00Z"), &ny, time(0, 30, 0, 0), time(1, 30, 0, 0)), Some(at("2026-11-01T06:30:00Z")));
    }

    fn arb_time() -> impl Strategy<Value = Time> {
        (0i8..24, 0i8..60).prop_map(|(h, m)| time(h, m, 0, 0))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Inside the window the answer is a later instant up to which it stays quiet and at
        /// which it is not; outside, the local time is outside the window.
        #[test]
        fn quiet_hours_end_when_they_say(
            zone in 0usize..ZONES.len(),
            // 2020–2032, where every zone above has DST transitions or offset changes.
            seconds in 1_577_836_800i64..1_988_150_400,
            start in arb_time(),
            end in arb_time(),
        ) {
            prop_assume!(start != end);
            let tz = TimeZone::get(ZONES[zone]).unwrap();
            let now = Timestamp::from_second(seconds).unwrap();
            let local = now.to_zoned(tz.clone()).time();
            let inside = if start < end { local >= start && local < end } else { local >= start || local < end };
            match quiet_until(now, &tz, start, end) {
                None => prop_assert!(!inside, "{now} is {local} in {} and inside {start}–{end}", ZONES[zone]),
                Some(until) => {
                    prop_assert!(inside, "{now} is {local}, outside {start}–{end}");
                    prop_assert!(until > now);
                    prop_assert!(until.duration_since(now) <= jiff::SignedDuration::from_hours(26), "{now} → {until}");
                    prop_assert!(quiet_until(until, &tz, start, end).is_none(), "still quiet at {until}");
                    for k in 1..8i64 {
                        let probe = now + jiff::SignedDuration::from_nanos(until.duration_since(now).as_nanos() as i64 * k / 8);
                        prop_assert!(quiet_until(probe, &tz, start, end).is_some(), "a gap in the window at {probe}");
                    }
                }
            }
        }

        /// However deliveries arrive, no window ever holds more than the limit, and a refused
        /// delivery is told a reopening time after now at which there is room.
        #[test]
        fn windows_never_let_more_than_the_limit_through(
            sliding in any::<bool>(),
            limit in 1u32..8,
            window_ms in 1_000i64..100_000,
            gaps in proptest::collection::vec((0i64..40_000, 0i64..3_000), 1..120),
        ) {
            let kind = if sliding { WindowKind::Sliding } else { WindowKind::Fixed };
            let mut counter = Counter::default();
            let mut admitted: Vec<i64> = Vec::new();
            let mut clock = 1_700_000_000_000i64;
            for (i, (gap, lag)) in gaps.iter().enumerate() {
                clock += gap;
                // Another replica's clock, or a message received a while ago: up to 3 s behind.
                let now = clock - lag;
                let mut this_one = false;
                match counter.admit(kind, limit, window_ms, i as u64, now) {
                    Admission::Admitted => {
                        // Counted in the window the counter holds (never an older one).
                        admitted.push(if sliding { now } else { counter.w });
                        this_one = true;
                    }
                    Admission::AlreadyAdmitted => prop_assert!(false, "a new delivery cannot be known"),
                    Admission::Over { reopens_at } => {
                        prop_assert!(reopens_at > now);
                        let mut later = counter.clone();
                        prop_assert_eq!(later.admit(kind, limit, window_ms, 1_000_000, reopens_at), Admission::Admitted, "room at {}", reopens_at);
                        let mut earlier = counter.clone();
                        let just_before = earlier.admit(kind, limit, window_ms, 1_000_001, reopens_at - 1);
                        prop_assert!(matches!(just_before, Admission::Over { .. }), "no room before {}", reopens_at);
                    }
                }
                // The same delivery again is never counted twice.
                if this_one {
                    prop_assert_eq!(counter.admit(kind, limit, window_ms, i as u64, now), Admission::AlreadyAdmitted);
                }
                let in_window = match kind {
                    WindowKind::Fixed => admitted.iter().filter(|w| **w == counter.w).count(),
                    WindowKind::Sliding => counter.log.len(),
                };
                prop_assert!(in_window <= limit as usize, "{} in the window, limit {}", in_window, limit);
                if !sliding {
                    // Every fixed window ever counted holds at most the limit.
                    let mut per_window = std::collections::BTreeMap::<i64, usize>::new();
                    for w in &admitted {
                        *per_window.entry(*w).or_default() += 1;
                    }
                    prop_assert!(per_window.values().all(|n| *n <= limit as usize), "{:?}", per_window);
                }
            }
        }
    }

    #[test]
    fn release_gives_the_room_back() {
        let mut counter = Counter::default();
        assert_eq!(counter.admit(WindowKind::Fixed, 1, 60_000, 1, 0), Admission::Admitted);
        assert!(matches!(counter.admit(WindowKind::Fixed, 1, 60_000, 2, 1), Admission::Over { reopens_at: 60_000 }));
        assert!(counter.release(1));
        assert_eq!(counter.admit(WindowKind::Fixed, 1, 60_000, 2, 2), Admission::Admitted);
    }
}
