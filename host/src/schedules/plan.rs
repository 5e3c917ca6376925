//! What a schedule should do now: the pure decision, from its cadence, what its status records
//! and the clock. The controller only carries it out.
//!
//! - A run is identified by its due time; the backup it makes is named after it, so two servers
//!   (or one that restarted half-way) computing the same run create the same name and only one
//!   create succeeds.
//! - Runs are counted from an anchor: the schedule's creation, or the moment it was last seen
//!   unpaused. A new or unpaused schedule waits for its first due time unless
//!   `skipImmediately: false`, which takes a backup at the anchor.
//! - Runs missed while no server was running are made up by exactly one backup, for the latest
//!   missed due time.
//! - A run due while the schedule's previous backup is still running is skipped (recorded),
//!   never queued: the next due time is computed as if it had run.

use jiff::Timestamp;

use super::cadence::Cadence;

/// What the schedule's status and spec say, as the decision needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScheduleState {
    /// The schedule's name: its backups are named after it.
    pub name: String,
    /// The schedule's creation, or when it was last seen unpaused (whichever is later).
    pub anchor: Timestamp,
    /// The due time of the last run taken or skipped.
    pub last_run: Option<Timestamp>,
    pub paused: bool,
    pub skip_immediately: bool,
    /// The schedule's backups still running (not in a terminal phase).
    pub running: Vec<String>,
}

/// What to do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Paused: nothing is due.
    Paused,
    /// Nothing due yet; look again at `next`.
    Wait { next: Timestamp },
    /// Create the backup for the run due at `due`; the one after is due at `next`.
    Take { due: Timestamp, next: Option<Timestamp> },
    /// The run due at `due` is skipped: the previous backup is still running.
    Skip { due: Timestamp, next: Option<Timestamp> },
    /// The expression never matches again (e.g. `0 0 30 2 *`).
    Never,
}

pub fn decide(cadence: &Cadence, state: &ScheduleState, now: Timestamp) -> Decision {
    if state.paused {
        return Decision::Paused;
    }
    let anchor = state.anchor;
    let ran_since_anchor = state.last_run.is_some_and(|last| last >= anchor);
    let due = if !ran_since_anchor && !state.skip_immediately {
        anchor
    } else {
        let reference = state.last_run.filter(|_| ran_since_anchor).unwrap_or(anchor);
        let Some(first) = cadence.next_after(reference, anchor) else { return Decision::Never };
        if first > now {
            return Decision::Wait { next: first };
        }
        // However many runs were missed, one backup stands for them: the latest.
        cadence.last_at_or_before(now, anchor, first).unwrap_or(first)
    };
    let next = cadence.next_after(due.max(now), anchor);
    // The run's own backup running means the run was taken (the create will say it exists).
    let own = backup_name(&state.name, due);
    match state.running.iter().any(|b| *b != own) {
        true => Decision::Skip { due, next },
        false => Decision::Take { due, next },
    }
}

/// The name of the backup a run creates: `<schedule>-<YYYYMMDDhhmmss>`, in UTC.
pub fn backup_name(schedule: &str, due: Timestamp) -> String {
    format!("{schedule}-{}", due.strftime("%Y%m%d%H%M%S"))
}

/// Backup names must stay label values (63 characters): the schedule's name leaves room for
/// the 15-character stamp.
pub const MAX_SCHEDULE_NAME: usize = 63 - 15;

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// A fake clock driving a schedule the way the controller does: decide, record, advance.
    struct Sim {
        cadence: Cadence,
        state: ScheduleState,
        taken: Vec<String>,
        skipped: Vec<String>,
    }

    impl Sim {
        fn new(expr: &str, created: &str, skip_immediately: bool) -> Sim {
            let state = ScheduleState { name: "nightly".into(), anchor: ts(created), skip_immediately, ..Default::default() };
            Sim { cadence: Cadence::parse(expr).unwrap(), state, taken: vec![], skipped: vec![] }
        }

        /// One reconcile at `now`; returns the decision.
        fn tick(&mut self, now: &str) -> Decision {
            let d = decide(&self.cadence, &self.state, ts(now));
            match &d {
                Decision::Take { due, .. } => {
                    self.taken.push(backup_name("nightly", *due));
                    self.state.last_run = Some(*due);
                }
                Decision::Skip { due, .. } => {
                    self.skipped.push(due.to_string());
                    self.state.last_run = Some(*due);
                }
                _ => {}
            }
            d
        }

        /// Reconciles every `step` seconds from `from` to `to`, as a running server would.
        fn run(&mut self, from: &str, to: &str, step: i64) {
            let mut t = ts(from);
            while t <= ts(to) {
                self.tick(&t.to_string());
                t = t.checked_add(jiff::SignedDuration::from_secs(step)).unwrap();
            }
        }
    }

    #[test]
    fn a_new_schedule_waits_for_its_first_due_time_by_default() {
        let mut s = Sim::new("0 3 * * *", "2026-05-01T10:00:00Z", true);
        assert_eq!(s.tick("2026-05-01T10:00:00Z"), Decision::Wait { next: ts("2026-05-02T03:00:00Z") });
        s.run("2026-05-01T10:00:00Z", "2026-05-03T04:00:00Z", 60);
        assert_eq!(s.taken, ["nightly-20260502030000", "nightly-20260503030000"]);
    }

    #[test]
    fn skip_immediately_false_takes_one_backup_at_creation() {
        let mut s = Sim::new("@every 2s", "2026-05-01T10:00:00Z", false);
        s.run("2026-05-01T10:00:00Z", "2026-05-01T10:00:05Z", 1);
        assert_eq!(s.taken, ["nightly-20260501100000", "nightly-20260501100002", "nightly-20260501100004"]);
    }

    #[test]
    fn downtime_gives_exactly_one_catch_up_backup() {
        let mut s = Sim::new("0 * * * *", "2026-05-01T00:30:00Z", true);
        s.run("2026-05-01T00:30:00Z", "2026-05-01T02:10:00Z", 60);
        assert_eq!(s.taken.len(), 2, "{:?}", s.taken);
        // Down from 02:10 to 07:20: five runs missed, one backup for the latest.
        s.run("2026-05-01T07:20:00Z", "2026-05-01T07:59:00Z", 60);
        assert_eq!(s.taken[2..], ["nightly-20260501070000"]);
        s.run("2026-05-01T08:00:00Z", "2026-05-01T08:00:00Z", 60);
        assert_eq!(s.taken[3..], ["nightly-20260501080000"]);
    }

    #[test]
    fn catch_up_decision_names_the_latest_missed_run_and_the_next_one() {
        let s = Sim::new("@daily", "2026-05-01T00:00:00Z", true);
        let mut state = s.state.clone();
        state.last_run = Some(ts("2026-05-02T00:00:00Z"));
        let d = decide(&s.cadence, &state, ts("2026-05-05T09:00:00Z"));
        assert_eq!(d, Decision::Take { due: ts("2026-05-05T00:00:00Z"), next: Some(ts("2026-05-06T00:00:00Z")) });
    }

    #[test]
    fn a_run_due_while_the_previous_backup_runs_is_skipped_not_queued() {
        let mut s = Sim::new("@every 10s", "2026-05-01T10:00:00Z", true);
        s.run("2026-05-01T10:00:00Z", "2026-05-01T10:00:10Z", 1);
        assert_eq!(s.taken.len(), 1);
        s.state.running = vec!["nightly-20260501100010".into()];
        s.run("2026-05-01T10:00:11Z", "2026-05-01T10:00:25Z", 1);
        assert_eq!(s.skipped, ["2026-05-01T10:00:20Z"]);
        s.state.running.clear();
        s.run("2026-05-01T10:00:26Z", "2026-05-01T10:00:30Z", 1);
        assert_eq!(s.taken[1..], ["nightly-20260501100030"], "the schedule goes on: never stuck");
    }

    #[test]
    fn pausing_stops_runs_and_unpausing_does_not_back_fill() {
        let mut s = Sim::new("0 * * * *", "2026-05-01T00:30:00Z", true);
        s.run("2026-05-01T00:30:00Z", "2026-05-01T01:30:00Z", 60);
        assert_eq!(s.taken.len(), 1);
        s.state.paused = true;
        assert_eq!(s.tick("2026-05-01T02:00:00Z"), Decision::Paused);
        s.run("2026-05-01T01:30:00Z", "2026-05-01T05:30:00Z", 60);
        assert_eq!(s.taken.len(), 1);
        // Unpaused at 05:30 (the controller moves the anchor): nothing for 02:00..05:00.
        s.state.paused = false;
        s.state.anchor = ts("2026-05-01T05:30:00Z");
        assert_eq!(s.tick("2026-05-01T05:30:00Z"), Decision::Wait { next: ts("2026-05-01T06:00:00Z") });
        s.run("2026-05-01T05:30:00Z", "2026-05-01T06:00:00Z", 60);
        assert_eq!(s.taken[1..], ["nightly-20260501060000"]);
    }

    #[test]
    fn unpausing_with_skip_immediately_false_takes_one_backup_then() {
        let mut s = Sim::new("@daily", "2026-05-01T00:30:00Z", false);
        s.run("2026-05-01T00:30:00Z", "2026-05-01T00:31:00Z", 60);
        assert_eq!(s.taken, ["nightly-20260501003000"]);
        s.state.anchor = ts("2026-05-03T12:00:00Z");
        s.run("2026-05-03T12:00:00Z", "2026-05-03T12:05:00Z", 60);
        assert_eq!(s.taken[1..], ["nightly-20260503120000"]);
    }

    #[test]
    fn the_runs_own_backup_running_is_not_an_overlap() {
        let mut s = Sim::new("@every 10s", "2026-05-01T10:00:00Z", true);
        s.state.running = vec!["nightly-20260501100010".into()];
        let d = decide(&s.cadence, &s.state, ts("2026-05-01T10:00:10Z"));
        assert!(matches!(d, Decision::Take { .. }), "{d:?}");
    }

    #[test]
    fn two_servers_with_the_same_state_name_the_same_backup() {
        let a = Sim::new("*/5 * * * *", "2026-05-01T00:00:00Z", true);
        let d1 = decide(&a.cadence, &a.state, ts("2026-05-01T00:05:00Z"));
        let d2 = decide(&a.cadence, &a.state, ts("2026-05-01T00:05:03Z"));
        assert_eq!(d1, d2, "the run's name does not depend on when a server looks");
    }

    #[test]
    fn dst_in_the_schedule_zone_keeps_one_run_a_day() {
        let mut s = Sim::new("CRON_TZ=Europe/Paris 30 2 * * *", "2026-10-23T00:00:00Z", true);
        s.run("2026-10-23T00:00:00Z", "2026-10-27T00:00:00Z", 300);
        // Local 02:30 is 00:30Z in summer time and 01:30Z after clocks go back on the 25th.
        assert_eq!(
            s.taken,
            ["nightly-20261023003000", "nightly-20261024003000", "nightly-20261025003000", "nightly-20261026013000"]
        );
    }

    #[test]
    fn never_matching_expressions_wait_forever() {
        let s = Sim::new("0 0 30 2 *", "2026-05-01T00:00:00Z", true);
        assert_eq!(decide(&s.cadence, &s.state, ts("2026-05-01T00:00:00Z")), Decision::Never);
    }
}
