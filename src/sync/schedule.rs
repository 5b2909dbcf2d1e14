//! When scheduled sync runs: every occurrence of a cron pattern (in UTC) opens a window of a fixed
//! length during which sync may run (DESIGN.md §6, "When").

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

use crate::registry::echo;

/// A cron pattern plus the length of the sync window each occurrence opens.
#[derive(Clone)]
pub struct Schedule {
    pattern: String,
    cron: Cron,
    window: Duration,
    span: TimeDelta,
}

impl Schedule {
    /// Parses a cron pattern (5 fields, or 6 with leading seconds, or `@hourly`-style nicknames);
    /// the error says what was wrong and what is accepted.
    pub fn new(cron: &str, window: Duration) -> Result<Self, String> {
        let pattern = cron.trim();
        let fields = pattern.split_whitespace().count();
        if !pattern.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(format!(
                "'{}' has {fields} fields; use 5 (minute hour day-of-month month day-of-week, \
                 e.g. */5 * * * *) or 6 with leading seconds",
                echo(pattern)
            ));
        }
        let parsed = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(pattern)
            .map_err(|e| {
                format!(
                    "'{}' is not a cron pattern like */5 * * * * ({e})",
                    echo(pattern)
                )
            })?;
        if window.is_zero() {
            return Err("the window must be longer than zero".into());
        }
        let span = TimeDelta::from_std(window)
            .map_err(|_| format!("the window {window:?} is too long"))?;
        // A pattern without years repeats within 400 years, so one that has no occurrence after
        // 2000-01-01 (within croner's search limit) never fires at all, e.g. `0 0 31 2 *`.
        let reference = DateTime::<Utc>::from_timestamp(946_684_800, 0).unwrap_or_default();
        parsed.find_next_occurrence(&reference, true).map_err(|_| {
            format!(
                "'{}' never fires (check the day-of-month and month fields)",
                echo(pattern)
            )
        })?;
        Ok(Schedule {
            pattern: pattern.to_owned(),
            cron: parsed,
            window,
            span,
        })
    }

    /// The cron pattern as configured.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// How long each occurrence's sync window stays open.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The end of the window `now` is in (start inclusive, end exclusive), or `None` outside every
    /// window; when windows overlap, the latest end.
    pub fn current_window(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Ends grow with starts, so the latest occurrence at or before `now` has the latest end,
        // and if `now` is past that end it is past every earlier one too: one backward search is
        // exact however often the pattern fires and however long the window is.
        let start = self
            .cron
            .find_previous_occurrence(&whole_second(now), true)
            .ok()?;
        let end = start.checked_add_signed(self.span)?;
        (start <= now && now < end).then_some(end)
    }

    /// The next occurrence strictly after `now` (when the next window opens), if any.
    pub fn next_start(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Occurrences fall on whole seconds, so "after the whole second" is "after now".
        self.cron
            .find_next_occurrence(&whole_second(now), false)
            .ok()
    }
}

/// `t` without its fraction of a second (croner keeps fractions in what it returns).
fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern && self.window == other.window
    }
}

impl Eq for Schedule {}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("pattern", &self.pattern)
            .field("window", &self.window)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 14, h, m, s).unwrap()
    }

    fn sched(p: &str, secs: u64) -> Schedule {
        Schedule::new(p, Duration::from_secs(secs)).unwrap()
    }

    #[test]
    fn five_and_six_fields() {
        let s = sched("*/5 * * * *", 60);
        assert_eq!(s.pattern(), "*/5 * * * *");
        assert_eq!(s.window(), Duration::from_secs(60));
        assert_eq!(s.next_start(at(10, 3, 0)), Some(at(10, 5, 0)));
        let s = sched("30 */5 * * * *", 10);
        assert_eq!(s.next_start(at(10, 3, 0)), Some(at(10, 5, 30)));
        assert_eq!(s.current_window(at(10, 5, 35)), Some(at(10, 5, 40)));
        assert_eq!(s.current_window(at(10, 5, 29)), None);
        assert_eq!(
            sched("@hourly", 60).next_start(at(10, 3, 0)),
            Some(at(11, 0, 0))
        );
    }

    #[test]
    fn rejects_bad_patterns() {
        let w = Duration::from_secs(60);
        for p in [
            "",
            "* * * *",
            "0 0 * * * * 2030",
            "61 * * * *",
            "fast",
            "@reboot",
            "0 0 31 2 *",
        ] {
            let e = Schedule::new(p, w).unwrap_err();
            assert!(!e.is_empty(), "{p}");
        }
        assert!(Schedule::new("0 0 * * * * 2030", w)
            .unwrap_err()
            .contains("7 fields"));
        assert!(Schedule::new("0 0 31 2 *", w)
            .unwrap_err()
            .contains("never fires"));
        assert!(Schedule::new("* * * * *", Duration::ZERO).is_err());
        assert!(Schedule::new("* * * * *", Duration::from_secs(u64::MAX)).is_err());
        // Leap days do fire.
        assert!(Schedule::new("0 0 29 2 *", w).is_ok());
    }

    #[test]
    fn window_boundaries() {
        let s = sched("0 * * * *", 600);
        assert_eq!(s.current_window(at(10, 0, 0)), Some(at(10, 10, 0)));
        assert_eq!(s.current_window(at(10, 9, 59)), Some(at(10, 10, 0)));
        let just_before_end = at(10, 9, 59) + TimeDelta::milliseconds(999);
        assert_eq!(s.current_window(just_before_end), Some(at(10, 10, 0)));
        assert_eq!(s.current_window(at(10, 10, 0)), None);
        assert_eq!(s.current_window(at(9, 59, 59)), None);
        let just_before_start = at(10, 0, 0) - TimeDelta::milliseconds(1);
        assert_eq!(s.current_window(just_before_start), None);
        assert_eq!(s.next_start(at(10, 0, 0)), Some(at(11, 0, 0)));
        assert_eq!(s.next_start(at(9, 59, 59)), Some(at(10, 0, 0)));
        assert_eq!(s.next_start(just_before_start), Some(at(10, 0, 0)));
    }

    #[test]
    fn overlapping_windows_give_the_latest_end() {
        // Every 10 minutes, 25-minute windows: at 10:22 the 10:00, 10:10 and 10:20 windows are open.
        let s = sched("*/10 * * * *", 25 * 60);
        assert_eq!(s.current_window(at(10, 22, 0)), Some(at(10, 45, 0)));
        assert_eq!(s.current_window(at(10, 20, 0)), Some(at(10, 45, 0)));
        assert_eq!(s.current_window(at(10, 19, 59)), Some(at(10, 35, 0)));
    }

    #[test]
    fn every_second_with_an_hour_window() {
        let s = sched("* * * * * *", 3600);
        let now = at(10, 30, 15) + TimeDelta::milliseconds(500);
        assert_eq!(s.current_window(now), Some(at(11, 30, 15)));
        assert_eq!(s.next_start(now), Some(at(10, 30, 16)));
    }

    #[test]
    fn long_windows_and_sparse_patterns() {
        // Daily at 02:00 with a 2-day window: always open, ending two days after the last 02:00.
        let s = sched("0 2 * * *", 2 * 86_400);
        assert_eq!(
            s.current_window(at(1, 0, 0)),
            Some(Utc.with_ymd_and_hms(2024, 5, 15, 2, 0, 0).unwrap())
        );
        // Yearly with a 1-day window.
        let s = sched("0 0 1 1 *", 86_400);
        let jan1 = Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap();
        assert_eq!(
            s.current_window(jan1),
            Some(Utc.with_ymd_and_hms(2025, 1, 2, 0, 0, 0).unwrap())
        );
        assert_eq!(s.current_window(at(12, 0, 0)), None);
    }

    /// The backward search agrees with a brute-force scan of every minute.
    #[test]
    fn agrees_with_brute_force() {
        let start = Utc.with_ymd_and_hms(2024, 2, 20, 0, 0, 0).unwrap();
        for p in [
            "*/7 3-5 * * *",
            "15 10 * * MON-FRI",
            "0 12 L * *",
            "0 9 * * 5#L",
        ] {
            let s = sched(p, 90 * 60);
            let mut last: Option<DateTime<Utc>> = None;
            let mut open = 0;
            for m in 0..(45 * 24 * 60) {
                let now = start + TimeDelta::minutes(m);
                if s.cron.is_time_matching(&now).unwrap() {
                    last = Some(now);
                }
                let want = last
                    .map(|o| o + TimeDelta::minutes(90))
                    .filter(|end| now < *end);
                assert_eq!(s.current_window(now), want, "{p} at {now}");
                open += usize::from(want.is_some());
            }
            assert!(open > 0, "{p} never opened");
        }
    }
}
