//! The overview page: every backup, restore, schedule, location and extension, and the plots.

use super::html::{
    badge, backup_link, count, duration, esc, optional, page, progress, restore_rows, short_digest, table, time, tone, Html,
    RESTORE_HEADERS,
};
use super::model::{BackupRow, Overview};
use super::plot::{self, Point};
use crate::commands::output::human_bytes;

/// The most backups and restores listed on the overview (the JSON has them all).
pub const MAX_ROWS: usize = 200;

fn backup_rows(rows: &[BackupRow]) -> Vec<Vec<Html>> {
    rows.iter()
        .map(|b| {
            vec![
                backup_link(&b.name),
                badge(&b.phase),
                optional(b.schedule.clone()),
                Html::from(b.storage_location.clone().unwrap_or_else(|| "default".into())),
                progress(b.items_backed_up, b.total_items),
                count(b.warnings, "warn"),
                count(b.errors, "bad"),
                time(b.started.as_ref()),
                optional(b.duration_seconds.map(duration)),
                optional(b.volume_bytes.map(|n| format!("{} ({} vol.)", human_bytes(n), b.volumes))),
            ]
        })
        .collect()
}

const BACKUP_HEADERS: [&str; 10] =
    ["Name", "Phase", "Schedule", "Location", "#Items", "#Warnings", "#Errors", "Started", "#Duration", "#Volume data"];

fn limited<T>(rows: &[T]) -> (&[T], Html) {
    if rows.len() <= MAX_ROWS {
        return (rows, Html::default());
    }
    let note = format!("The newest {MAX_ROWS} of {}; /api/overview.json has them all.", rows.len());
    (&rows[..MAX_ROWS], Html::trusted(format!("<p class=\"note\">{}</p>", esc(&note))))
}

fn plots(backups: &[BackupRow]) -> Html {
    let point = |b: &BackupRow, value: f64| Point {
        at: b.started.as_ref().map_or(0.0, |t| t.0.as_second() as f64),
        value,
        label: b.name.clone(),
        tone: match tone(&b.phase) {
            "ok" => "ok",
            "warn" => "warn",
            _ => "bad",
        },
    };
    let finished: Vec<&BackupRow> = backups.iter().filter(|b| b.started.is_some() && b.completed.is_some()).take(MAX_ROWS).collect();
    let durations: Vec<Point> = finished.iter().filter_map(|b| Some(point(b, b.duration_seconds?))).collect();
    let sizes: Vec<Point> = finished.iter().filter_map(|b| Some(point(b, b.volume_bytes? as f64))).collect();
    Html::trusted(format!(
        "<div class=\"plots\"><figure><figcaption>Backup duration</figcaption>{}</figure>\
         <figure><figcaption>Volume data per backup</figcaption>{}</figure></div>",
        plot::over_time("Backup duration over time", &durations, plot::Scale::Decimal, duration).0,
        plot::over_time("Volume data per backup over time", &sizes, plot::Scale::Binary, |v| human_bytes(v as u64).replace(".0 ", " ")).0,
    ))
}

fn cards(o: &Overview) -> Html {
    let phase_count = |p: &str| o.backups.iter().filter(|b| b.phase == p).count();
    let available = o.locations.iter().filter(|l| l.phase == "Available").count();
    let cards = [
        (o.backups.len().to_string(), "backups".to_string()),
        (phase_count("Completed").to_string(), "completed".to_string()),
        (phase_count("PartiallyFailed").to_string(), "partially failed".to_string()),
        ((phase_count("Failed") + phase_count("FailedValidation")).to_string(), "failed".to_string()),
        (o.restores.len().to_string(), "restores".to_string()),
        (o.schedules.len().to_string(), "schedules".to_string()),
        (format!("{available}/{}", o.locations.len()), "locations available".to_string()),
    ];
    let inner: String = cards.iter().map(|(n, what)| format!("<div class=\"card\"><b>{}</b><span>{}</span></div>", esc(n), esc(what))).collect();
    Html::trusted(format!("<div class=\"cards\">{inner}</div>"))
}

pub fn overview(o: &Overview) -> String {
    let mut body = cards(o).0;
    let (backups, backups_note) = limited(&o.backups);
    body += &format!("<h2 id=\"backups\">Backups</h2>{}{}", table(&BACKUP_HEADERS, backup_rows(backups), "No backups.").0, backups_note.0);
    body += &plots(&o.backups).0;
    let (restores, restores_note) = limited(&o.restores);
    body += &format!("<h2 id=\"restores\">Restores</h2>{}{}", table(&RESTORE_HEADERS, restore_rows(restores), "No restores.").0, restores_note.0);
    let schedules = o
        .schedules
        .iter()
        .map(|s| {
            vec![
                Html::from(s.name.as_str()),
                Html::trusted(format!("<code>{}</code>", esc(&s.schedule))),
                badge(if s.paused { "Paused" } else { &s.phase }),
                Html::from(s.storage_location.clone().unwrap_or_else(|| "default".into())),
                Html::from(s.ttl.as_str()),
                time(s.last_backup.as_ref()),
                time(s.next_run.as_ref()),
            ]
        })
        .collect();
    body += &format!(
        "<h2 id=\"schedules\">Schedules</h2>{}",
        table(&["Name", "Schedule", "Phase", "Location", "TTL", "Last backup", "Next run"], schedules, "No schedules.").0
    );
    let locations = o
        .locations
        .iter()
        .map(|l| {
            let bucket = match &l.prefix {
                Some(p) => format!("{}/{p}", l.bucket),
                None => l.bucket.clone(),
            };
            vec![
                Html::from(l.name.as_str()),
                Html::from(l.provider.as_str()),
                Html::from(bucket),
                badge(&l.phase),
                Html::from(l.access_mode.as_str()),
                Html::from(if l.default { "yes" } else { "" }),
                time(l.last_validated.as_ref()),
                optional(l.message.clone()),
            ]
        })
        .collect();
    body += &format!(
        "<h2 id=\"locations\">Storage locations</h2>{}",
        table(
            &["Name", "Provider", "Bucket", "Phase", "Access mode", "Default", "Last validated", "Message"],
            locations,
            "No storage locations: create one with `stowage backup-location create`."
        )
        .0
    );
    let extensions = o
        .extensions
        .iter()
        .map(|e| {
            vec![
                Html::from(e.namespace.as_str()),
                Html::from(e.name.as_str()),
                Html::from(e.kind.as_str()),
                badge(&e.state),
                optional(e.scope.clone()),
                optional(e.digest.as_deref().map(short_digest)),
                optional(e.last_error.clone()),
            ]
        })
        .collect();
    body += &format!(
        "<h2 id=\"extensions\">Extensions</h2>{}",
        table(&["Namespace", "Name", "Kind", "State", "Scope", "Digest", "Last error"], extensions, "No extension ConfigMaps.").0
    );
    body += &format!(
        "<p class=\"note\">Read-only; as of {}. The same data: <a href=\"/api/overview.json\">/api/overview.json</a>.</p>",
        time(Some(&o.generated_at)).0
    );
    page("Stowage", &o.namespace, &Html::trusted(body))
}
