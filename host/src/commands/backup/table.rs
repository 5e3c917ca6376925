//! `stowage backup get`'s table, as `velero backup get` prints it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use stowage_api::Backup;

use crate::commands::output::{from_now, time, Table};
use crate::commands::selector;

pub fn table(backups: &[Backup], now: Timestamp) -> String {
    let mut table =
        Table::new(&["NAME", "STATUS", "ERRORS", "WARNINGS", "CREATED", "EXPIRES", "STORAGE LOCATION", "SELECTOR"]);
    for backup in backups {
        let status = backup.status.clone().unwrap_or_default();
        table.row(vec![
            backup.metadata.name.clone().unwrap_or_default(),
            phase(backup),
            status.errors.to_string(),
            status.warnings.to_string(),
            time(backup.metadata.creation_timestamp.as_ref()),
            from_now(expiration(backup).as_ref(), now),
            backup.spec.storage_location.clone().unwrap_or_else(|| "<default>".to_string()),
            selectors(backup),
        ]);
    }
    table.render()
}

pub fn phase(backup: &Backup) -> String {
    if backup.metadata.deletion_timestamp.is_some() {
        return "Deleting".to_string();
    }
    match backup.status.as_ref().and_then(|s| s.phase) {
        Some(phase) => format!("{phase:?}"),
        None => "New".to_string(),
    }
}

/// The expiration the server set, or the one the TTL will give.
fn expiration(backup: &Backup) -> Option<Time> {
    if let Some(expiration) = backup.status.as_ref().and_then(|s| s.expiration.clone()) {
        return Some(expiration);
    }
    let created = backup.metadata.creation_timestamp.as_ref()?.0;
    let ttl = SignedDuration::try_from(backup.spec.ttl_duration().ok()?).ok()?;
    created.checked_add(ttl).ok().map(Time)
}

/// The label selector, or the or-selectors joined with ` or `.
pub fn selectors(backup: &Backup) -> String {
    if backup.spec.or_label_selectors.is_empty() {
        return selector::format(backup.spec.label_selector.as_ref());
    }
    backup.spec.or_label_selectors.iter().map(|s| selector::format(Some(s))).collect::<Vec<_>>().join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_api::backup::{BackupPhase, BackupStatus};
    use stowage_api::BackupSpec;

    fn backup(name: &str, spec: BackupSpec, status: Option<BackupStatus>) -> Backup {
        let mut b = Backup::new(name, spec);
        b.metadata.creation_timestamp = Some(Time("2024-05-01T10:00:00Z".parse().unwrap()));
        b.status = status;
        b
    }

    #[test]
    fn golden_table() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().unwrap();
        let done = BackupStatus {
            phase: Some(BackupPhase::PartiallyFailed),
            errors: 1,
            warnings: 2,
            expiration: Some(Time("2024-05-31T10:00:00Z".parse().unwrap())),
            ..Default::default()
        };
        let spec = BackupSpec {
            storage_location: Some("default".into()),
            label_selector: Some(selector::parse("app=nginx").unwrap()),
            ..Default::default()
        };
        let fresh = BackupSpec {
            ttl: "1h0m0s".into(),
            or_label_selectors: selector::parse_or("app=a or tier in (db)").unwrap(),
            ..Default::default()
        };
        let text = table(&[backup("nginx-backup", spec, Some(done)), backup("b2", fresh, None)], now);
        assert_eq!(
            text,
            "NAME           STATUS            ERRORS   WARNINGS   CREATED                         EXPIRES   STORAGE LOCATION   SELECTOR\n\
             nginx-backup   PartiallyFailed   1        2          2024-05-01 10:00:00 +0000 UTC   29d       default            app=nginx\n\
             b2             New               0        0          2024-05-01 10:00:00 +0000 UTC   1h ago    <default>          app=a or tier in (db)\n"
        );
    }
}
