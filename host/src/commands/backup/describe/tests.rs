use super::*;

const BACKUP: &str = r#"
apiVersion: stowage.io/v1alpha1
kind: Backup
metadata:
  name: nginx-backup
  namespace: stowage
  labels:
    stowage.io/storage-location: default
spec:
  includedNamespaces: [nginx-example]
  labelSelector:
    matchLabels:
      app: nginx
  ttl: 720h0m0s
  storageLocation: default
  extensions: [mysqldump]
  hooks:
    resources:
      - name: freeze
        includedNamespaces: [nginx-example]
        pre:
          - exec:
              container: fsfreeze
              command: [/sbin/fsfreeze, --freeze, /var/log/nginx]
status:
  phase: PartiallyFailed
  formatVersion: 1.1.0
  expiration: "2024-05-31T10:00:00Z"
  startTimestamp: "2024-05-01T10:00:00Z"
  completionTimestamp: "2024-05-01T10:01:00Z"
  progress:
    totalItems: 20
    itemsBackedUp: 19
  warnings: 2
  errors: 1
  hookStatus:
    hooksAttempted: 2
    hooksFailed: 1
  podVolumeBackupsAttempted: 2
  podVolumeBackupsCompleted: 1
  podVolumeBackupsFailed: 1
  extensions:
    - name: mysqldump
      digest: sha256:abcd
  failureReason: one volume failed
"#;

fn backup() -> Backup {
    serde_yaml::from_str(BACKUP).unwrap()
}

#[test]
fn golden_describe() {
    let text = describe(&backup(), None);
    let expected = "\
Name:         nginx-backup
Namespace:    stowage
Labels:       stowage.io/storage-location=default
Annotations:  <none>

Phase:  PartiallyFailed (run `stowage backup logs nginx-backup` for more information)

Errors:    1
Warnings:  2

Namespaces:
  Included:  nginx-example
  Excluded:  <none>

Resources:
  Included:        *
  Excluded:        <none>
  Cluster-scoped:  auto

Label selector:  app=nginx

Storage Location:  default

Default volumes to fs backup:  <server default>

TTL:  720h0m0s

Hooks:
  Resources:
    freeze:
      Namespaces included:  nginx-example
      Namespaces excluded:  <none>
      Resources included:   *
      Resources excluded:   <none>
      Label selector:       <none>
      Pre Exec Hook:
        Container:  fsfreeze
        Command:    /sbin/fsfreeze --freeze /var/log/nginx
        On Error:   Fail
        Timeout:    30s

Extensions requested:  mysqldump

Backup Format Version:  1.1.0

Started:    2024-05-01 10:00:00 +0000 UTC
Completed:  2024-05-01 10:01:00 +0000 UTC

Expiration:  2024-05-31 10:00:00 +0000 UTC

Total items to be backed up:  20
Items backed up:              19

Hooks attempted:  2
Hooks failed:     1

Pod Volume Backups (specify --details for more information):
  Completed:  1
  Failed:     1

Extensions run:
  mysqldump  sha256:abcd

Failure reason:  one volume failed
";
    assert_eq!(text, expected, "\n{text}");
}

#[test]
fn details_show_downloads_or_why_not() {
    let resource_list = br#"{"apps/v1/Deployment": ["nginx-example/nginx"], "v1/Pod": ["nginx-example/nginx-1", "nginx-example/nginx-2"]}"#;
    let volumes = serde_json::json!([
        {"spec": {"pod": {"namespace": "nginx-example", "name": "nginx-1"}, "volume": "logs"},
            "status": {"phase": "Completed", "snapshotID": "3f1e2d4c5b6a7988", "progress": {"totalBytes": 1536, "bytesDone": 1536}}},
        {"spec": {"pod": {"namespace": "nginx-example", "name": "nginx-1"}, "volume": "data"},
            "status": {"phase": "Completed", "snapshotID": "0011223344", "progress": {"totalBytes": 100, "bytesDone": 100}}},
        {"spec": {"pod": {"namespace": "nginx-example", "name": "nginx-2"}, "volume": "logs"},
            "status": {"phase": "Failed", "message": "volume \"logs\": no directory"}},
    ]);
    let details = BackupDetails {
        resource_list: Ok(resource_list.to_vec()),
        volumes: Ok(serde_json::to_vec(&volumes).unwrap()),
        results: Some(Err("download request \"nginx-backup-x2b4z\" was not processed within 60s".into())),
    };
    let text = describe(&backup(), Some(&details));
    assert!(
        text.contains(
            "Resource List:\n  apps/v1/Deployment:\n    - nginx-example/nginx\n  v1/Pod:\n    - nginx-example/nginx-1\n    - nginx-example/nginx-2\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "Pod Volume Backups:\n  Completed:\n    nginx-example/nginx-1: logs:  1.5 KiB, snapshot 3f1e2d4c\n    nginx-example/nginx-1: data:  100 B, snapshot 00112233\n  Failed:\n    nginx-example/nginx-2: logs:  volume \"logs\": no directory\n"
        ),
        "{text}"
    );
    assert!(text.contains("Warnings and errors:  <error: download request"), "{text}");
    assert!(text.contains("Failure reason:  one volume failed"), "the rest is still printed");

    let broken = BackupDetails { resource_list: Ok(b"not json".to_vec()), volumes: Ok(b"[]".to_vec()), results: None };
    let text = describe(&backup(), Some(&broken));
    assert!(text.contains("Resource List:  <error: the resource list is not valid"), "{text}");
    assert!(text.contains("Pod Volume Backups:  <none included>"), "{text}");
    assert!(text.contains("Errors:    1\nWarnings:  2"), "counts stay when results were not fetched: {text}");
}

#[test]
fn new_backup_describes_defaults() {
    let b = Backup::new("fresh", Default::default());
    let text = describe(&b, None);
    assert!(text.contains("Phase:  New\n"), "{text}");
    assert!(text.contains("Storage Location:  <default>"), "{text}");
    assert!(text.contains("Hooks:  <none>"), "{text}");
    assert!(text.contains("Pod Volume Backups:  <none included>"), "{text}");
    assert!(text.contains("Started:    <n/a>"), "{text}");
    assert!(!text.contains("Failure reason"), "{text}");
}
