//! What garbage collection does with one backup: pure, from the backup, its storage location
//! and the clock.

use jiff::{SignedDuration, Timestamp};
use stowage_api::location::{AccessMode, LocationPhase};
use stowage_api::{Backup, BackupPhase, BackupStorageLocation};

/// Why an expired backup is kept; the value of its `stowage.io/gc-failure` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// Its location is ReadOnly: nothing may be deleted from it.
    LocationReadOnly,
    /// Its location does not exist (any more) in the cluster.
    LocationNotFound,
    /// Its location failed its last check.
    LocationUnavailable,
}

impl Blocked {
    pub fn label(self) -> &'static str {
        match self {
            Blocked::LocationReadOnly => "LocationReadOnly",
            Blocked::LocationNotFound => "LocationNotFound",
            Blocked::LocationUnavailable => "LocationUnavailable",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not expired: look again at this time.
    Keep { expires: Timestamp },
    /// Still running, or without a TTL to go by: not garbage collection's.
    NotMine,
    /// Expired: request its deletion.
    Delete,
    /// Expired but cannot be deleted now.
    Blocked(Blocked),
}

/// When the backup expires: its recorded expiration, or (for a backup that failed validation
/// and never got one) its creation plus its TTL.
pub fn expiration(backup: &Backup) -> Option<Timestamp> {
    if let Some(t) = backup.status.as_ref().and_then(|s| s.expiration.as_ref()) {
        return Some(t.0);
    }
    let created = backup.metadata.creation_timestamp.as_ref()?.0;
    let ttl = SignedDuration::try_from(backup.spec.ttl_duration().ok()?).ok()?;
    created.checked_add(ttl).ok()
}

/// `location` is the backup's location as found in the cluster (None: not found).
pub fn verdict(backup: &Backup, location: Option<&BackupStorageLocation>, now: Timestamp) -> Verdict {
    let phase = backup.status.as_ref().and_then(|s| s.phase);
    // Deleting: a deletion that failed half-way (its request says why) is tried again.
    let finished = matches!(
        phase,
        Some(
            BackupPhase::Completed
                | BackupPhase::PartiallyFailed
                | BackupPhase::Failed
                | BackupPhase::FailedValidation
                | BackupPhase::Deleting
        )
    );
    if !finished || backup.metadata.deletion_timestamp.is_some() {
        return Verdict::NotMine;
    }
    let Some(expires) = expiration(backup) else { return Verdict::NotMine };
    if expires > now {
        return Verdict::Keep { expires };
    }
    let Some(location) = location else { return Verdict::Blocked(Blocked::LocationNotFound) };
    if location.spec.access_mode() == AccessMode::ReadOnly {
        return Verdict::Blocked(Blocked::LocationReadOnly);
    }
    let phase = location.status.as_ref().and_then(|s| s.phase);
    if phase == Some(LocationPhase::Unavailable) {
        return Verdict::Blocked(Blocked::LocationUnavailable);
    }
    Verdict::Delete
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use stowage_api::location::BackupStorageLocationStatus;
    use stowage_api::{BackupSpec, BackupStatus};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    struct B(Backup);

    impl B {
        fn new(phase: BackupPhase) -> B {
            let mut b = Backup::new("nightly-20260501030000", BackupSpec { ttl: "24h".into(), ..Default::default() });
            b.metadata.creation_timestamp = Some(Time(ts("2026-05-01T03:00:00Z")));
            b.status = Some(BackupStatus { phase: Some(phase), ..Default::default() });
            B(b)
        }
        fn expires(mut self, at: &str) -> B {
            self.0.status.as_mut().unwrap().expiration = Some(Time(ts(at)));
            self
        }
    }

    fn location(mode: &str, phase: Option<LocationPhase>) -> BackupStorageLocation {
        let mut l: BackupStorageLocation = serde_json::from_value(serde_json::json!({
            "apiVersion": "stowage.io/v1alpha1", "kind": "BackupStorageLocation", "metadata": {"name": "default"},
            "spec": {"provider": "aws", "objectStorage": {"bucket": "b"}, "accessMode": mode}}))
        .unwrap();
        l.status = phase.map(|p| BackupStorageLocationStatus { phase: Some(p), ..Default::default() });
        l
    }

    #[test]
    fn expired_finished_backups_are_deleted_whatever_their_outcome() {
        let rw = location("ReadWrite", Some(LocationPhase::Available));
        let now = ts("2026-05-03T00:00:00Z");
        for phase in [BackupPhase::Completed, BackupPhase::PartiallyFailed, BackupPhase::Failed] {
            let b = B::new(phase).expires("2026-05-02T03:00:00Z");
            assert_eq!(verdict(&b.0, Some(&rw), now), Verdict::Delete, "{phase:?}");
        }
        // Failed validation: no expiration recorded; creation + TTL counts.
        assert_eq!(verdict(&B::new(BackupPhase::FailedValidation).0, Some(&rw), now), Verdict::Delete);
        let fresh = B::new(BackupPhase::Completed).expires("2026-05-04T00:00:00Z");
        assert_eq!(verdict(&fresh.0, Some(&rw), now), Verdict::Keep { expires: ts("2026-05-04T00:00:00Z") });
    }

    #[test]
    fn running_backups_are_left_alone() {
        let rw = location("ReadWrite", None);
        let b = B::new(BackupPhase::InProgress).expires("2026-05-02T03:00:00Z");
        assert_eq!(verdict(&b.0, Some(&rw), ts("2026-06-01T00:00:00Z")), Verdict::NotMine);
        let b = B::new(BackupPhase::WaitingForVolumes).expires("2026-05-02T03:00:00Z");
        assert_eq!(verdict(&b.0, Some(&rw), ts("2026-06-01T00:00:00Z")), Verdict::NotMine);
    }

    #[test]
    fn a_deletion_that_failed_half_way_is_tried_again() {
        let rw = location("ReadWrite", Some(LocationPhase::Available));
        let b = B::new(BackupPhase::Deleting).expires("2026-05-02T03:00:00Z");
        assert_eq!(verdict(&b.0, Some(&rw), ts("2026-06-01T00:00:00Z")), Verdict::Delete);
    }

    #[test]
    fn location_trouble_blocks_with_a_reason() {
        let now = ts("2026-06-01T00:00:00Z");
        let b = B::new(BackupPhase::Completed).expires("2026-05-02T03:00:00Z");
        assert_eq!(verdict(&b.0, None, now), Verdict::Blocked(Blocked::LocationNotFound));
        let ro = location("ReadOnly", Some(LocationPhase::Available));
        assert_eq!(verdict(&b.0, Some(&ro), now), Verdict::Blocked(Blocked::LocationReadOnly));
        let down = location("ReadWrite", Some(LocationPhase::Unavailable));
        assert_eq!(verdict(&b.0, Some(&down), now), Verdict::Blocked(Blocked::LocationUnavailable));
        assert_eq!(Blocked::LocationReadOnly.label(), "LocationReadOnly");
    }
}
