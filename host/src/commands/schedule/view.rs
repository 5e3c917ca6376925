//! `stowage schedule get`'s table and `describe`'s text.

use k8s_openapi::jiff::Timestamp;
use stowage_api::schedule::SchedulePhase;
use stowage_api::Schedule;

use crate::commands::describe::{header, Sections};
use crate::commands::output::{from_now, time, Table};
use crate::commands::selector;

pub fn table(schedules: &[Schedule], now: Timestamp) -> String {
    let mut table =
        Table::new(&["NAME", "STATUS", "SCHEDULE", "PAUSED", "NEXT RUN", "LAST BACKUP", "BACKUP TTL", "SELECTOR"]);
    for s in schedules {
        table.row(vec![
            s.metadata.name.clone().unwrap_or_default(),
            phase(s),
            s.spec.schedule.clone(),
            s.spec.paused.to_string(),
            next_run(s, now),
            last_backup(s, now),
            s.spec.template.ttl.clone(),
            selector::format(s.spec.template.label_selector.as_ref()),
        ]);
    }
    table.render()
}

fn phase(s: &Schedule) -> String {
    match s.status.as_ref().and_then(|st| st.phase) {
        Some(p) => format!("{p:?}"),
        None => "New".to_string(),
    }
}

fn next_run(s: &Schedule, now: Timestamp) -> String {
    if s.spec.paused {
        return "<paused>".to_string();
    }
    let next = s.status.as_ref().and_then(|st| st.next_run.as_ref());
    match next {
        Some(t) if t.0 <= now => "due".to_string(),
        Some(_) => format!("in {}", from_now(next, now)),
        None => "n/a".to_string(),
    }
}

fn last_backup(s: &Schedule, now: Timestamp) -> String {
    match s.status.as_ref().and_then(|st| st.last_backup.as_ref()) {
        Some(t) => from_now(Some(t), now),
        None => "n/a".to_string(),
    }
}

pub fn describe(s: &Schedule, now: Timestamp) -> String {
    let status = s.status.clone().unwrap_or_default();
    let name = s.metadata.name.clone().unwrap_or_default();
    let mut out = Sections::default();
    out.push(header(&s.metadata));
    let mut phase_line = phase(s);
    if status.phase == Some(SchedulePhase::FailedValidation) {
        phase_line.push_str(&format!("\n{}", status.validation_errors.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n")));
    }
    out.fields(&[("Phase", phase_line), ("Paused", s.spec.paused.to_string())]);
    let skip = match s.spec.skip_immediately {
        Some(v) => v.to_string(),
        None => "true (default: the first backup waits for the first due time)".to_string(),
    };
    let owner = s.spec.use_owner_references_in_backup == Some(true);
    out.fields(&[
        ("Schedule", s.spec.schedule.clone()),
        ("Skip immediately", skip),
        ("Backups owned by schedule", owner.to_string()),
        ("Retention", retention(s)),
    ]);
    let t = &s.spec.template;
    let list = |v: &[String], all: &str| if v.is_empty() { all.to_string() } else { v.join(", ") };
    out.push(format!(
        "Backup Template:\n{}",
        crate::commands::output::aligned(
            2,
            &[
                ("Included namespaces", list(&t.included_namespaces, "*")),
                ("Excluded namespaces", list(&t.excluded_namespaces, "<none>")),
                ("Included resources", list(&t.included_resources, "*")),
                ("Excluded resources", list(&t.excluded_resources, "<none>")),
                ("Label selector", selector::format(t.label_selector.as_ref())),
                ("Storage location", t.storage_location.clone().unwrap_or_else(|| "<default>".into())),
                ("TTL", t.ttl.clone()),
                ("Extensions", list(&t.extensions, "<none>")),
            ]
        )
    ));
    out.fields(&[
        ("Next run", match status.next_run.as_ref() {
            Some(_) if s.spec.paused => "<paused>".to_string(),
            Some(t) => format!("{} (in {})", time(Some(t)), from_now(Some(t), now)),
            None if s.spec.paused => "<paused>".to_string(),
            None => "<n/a>".to_string(),
        }),
        ("Last backup", match status.last_backup.as_ref() {
            Some(t) => format!("{} ({name}-{})", time(Some(t)), t.0.strftime("%Y%m%d%H%M%S")),
            None => "<none yet>".to_string(),
        }),
        ("Last skipped", match status.last_skipped.as_ref() {
            Some(t) => format!("{} (the previous backup was still running)", time(Some(t))),
            None => "<never>".to_string(),
        }),
    ]);
    out.push(format!("Backups: stowage backup get -l stowage.io/schedule-name={name}"));
    out.finish()
}

fn retention(s: &Schedule) -> String {
    let Some(r) = &s.spec.retention else { return "TTL only".to_string() };
    let rules = [
        ("last", r.keep_last),
        ("hourly", r.keep_hourly),
        ("daily", r.keep_daily),
        ("weekly", r.keep_weekly),
        ("monthly", r.keep_monthly),
    ];
    let parts: Vec<String> = rules.iter().filter_map(|(k, v)| v.map(|n| format!("keep {k} {n}"))).collect();
    if parts.is_empty() {
        "TTL only".to_string()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use stowage_api::schedule::Retention;
    use stowage_api::{ScheduleSpec, ScheduleStatus};

    fn schedule(name: &str, expr: &str, paused: bool, status: ScheduleStatus) -> Schedule {
        let mut s = Schedule::new(name, ScheduleSpec { schedule: expr.into(), paused, ..Default::default() });
        s.status = Some(status);
        s
    }

    #[test]
    fn golden_table() {
        let now: Timestamp = "2026-05-01T12:00:00Z".parse().unwrap();
        let t = |s: &str| Some(Time(s.parse().unwrap()));
        let enabled = ScheduleStatus {
            phase: Some(SchedulePhase::Enabled),
            next_run: t("2026-05-02T03:00:00Z"),
            last_backup: t("2026-05-01T03:00:00Z"),
            ..Default::default()
        };
        let text = table(
            &[
                schedule("nightly", "0 3 * * *", false, enabled.clone()),
                schedule("paused", "@every 1h", true, ScheduleStatus { phase: Some(SchedulePhase::Enabled), ..Default::default() }),
            ],
            now,
        );
        assert_eq!(
            text,
            "NAME      STATUS    SCHEDULE    PAUSED   NEXT RUN   LAST BACKUP   BACKUP TTL   SELECTOR\n\
             nightly   Enabled   0 3 * * *   false    in 15h     9h ago        720h         <none>\n\
             paused    Enabled   @every 1h   true     <paused>   n/a           720h         <none>\n"
        );
    }

    #[test]
    fn describe_shows_the_state_and_how_to_list_backups() {
        let now: Timestamp = "2026-05-01T12:00:00Z".parse().unwrap();
        let mut s = schedule("nightly", "0 3 * * *", false, ScheduleStatus {
            phase: Some(SchedulePhase::Enabled),
            last_backup: Some(Time("2026-05-01T03:00:00Z".parse().unwrap())),
            ..Default::default()
        });
        s.spec.retention = Some(Retention { keep_daily: Some(30), ..Default::default() });
        let text = describe(&s, now);
        assert!(text.contains("Last backup:"), "{text}");
        assert!(text.contains("2026-05-01 03:00:00 +0000 UTC (nightly-20260501030000)"), "{text}");
        assert!(text.contains("keep daily 30"), "{text}");
        assert!(text.contains("stowage backup get -l stowage.io/schedule-name=nightly"), "{text}");
        let bad = schedule("bad", "0 3 * *", false, ScheduleStatus {
            phase: Some(SchedulePhase::FailedValidation),
            validation_errors: vec!["spec.schedule \"0 3 * *\": ...".into()],
            ..Default::default()
        });
        assert!(describe(&bad, now).contains("FailedValidation\n"), "{}", describe(&bad, now));
    }
}
