//! `stowage server` flags.

use std::net::SocketAddr;

use stowage_api::names;

#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The namespace Stowage is installed in (its CRs, Secrets and extension ConfigMaps).
    #[arg(short, long, env = names::NAMESPACE_ENV, default_value = names::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Where to serve Prometheus metrics.
    #[arg(long, default_value = "0.0.0.0:8085")]
    pub metrics_address: SocketAddr,
    /// Where to serve the read-only web dashboard (e.g. 0.0.0.0:8087); none when unset. Every
    /// replica serves it: it only reads from the API server and the storage locations.
    #[arg(long, value_name = "ADDR")]
    pub dashboard_address: Option<SocketAddr>,
    /// Back up every pod volume unless opted out, for backups that do not say.
    #[arg(long)]
    pub default_volumes_to_fs_backup: bool,
    /// How often storage locations are checked and synced (Go duration; default 30s).
    #[arg(long, value_parser = parse_period)]
    pub location_check_period: Option<std::time::Duration>,
    /// How often expired backups are looked for (Go duration), besides when each expires; also
    /// how often one that could not be deleted (its location ReadOnly, missing or unavailable)
    /// is retried.
    #[arg(long, value_parser = parse_period, default_value = "1h")]
    pub garbage_collection_frequency: std::time::Duration,
    /// How long the pod volume backups of one backup (or restores of one restore) may take
    /// (Go duration); a Backup's `stowage.io/pod-volume-timeout` annotation overrides it.
    #[arg(long, value_parser = parse_period, default_value = "4h")]
    pub pod_volume_timeout: std::time::Duration,
    /// How long a filesystem frozen by a hook (`quiesce.freeze`) may stay frozen (Go duration):
    /// past it the server thaws it and fails the volume, rather than leave the application
    /// frozen (as KubeVirt's unfreezeTimeoutSeconds).
    #[arg(long, value_parser = parse_period, default_value = "5m")]
    pub max_frozen_time: std::time::Duration,
    /// The image of the init container added to restored pods with volume backups; a ConfigMap
    /// labelled `stowage.io/pod-volume-restore=RestoreItemAction` overrides it.
    #[arg(long, default_value = names::DEFAULT_RESTORE_HELPER_IMAGE)]
    pub restore_helper_image: String,
    /// The most an extension ConfigMap outside the server's namespace may be granted, written
    /// like the `capabilities` of its config.yaml, e.g.
    /// `{log: true, clock: true, kubeRead: [pods], exec: [{container: mysql}]}`. Requests
    /// beyond it are dropped and shown by `stowage extension list`.
    #[arg(long, default_value = DEFAULT_NAMESPACED_EXTENSION_CAPABILITIES, value_parser = parse_capabilities)]
    pub namespaced_extension_capabilities: stowage_runtime::Capabilities,
    /// The most entries (files and directories) a restore extracts from one backup archive.
    #[arg(long, default_value_t = 1_000_000)]
    pub archive_max_entries: u64,
    /// The most bytes a restore extracts from one archive, uncompressed (a quantity: 16Gi):
    /// a small, highly compressed archive must not fill the server's disk.
    #[arg(long, default_value = "16Gi", value_parser = parse_size)]
    pub archive_max_bytes: u64,
    /// The largest single entry of an archive (a quantity: 64Mi).
    #[arg(long, default_value = "64Mi", value_parser = parse_size)]
    pub archive_max_entry_bytes: u64,
    /// Leader election: how long the Lease holds without renewal before a standby replica may
    /// take over (Go duration).
    #[arg(long, value_parser = parse_period, default_value = "15s")]
    pub lease_duration: std::time::Duration,
    /// How long the leader goes on without renewing its Lease before it stops its controllers
    /// and exits; shorter than --lease-duration.
    #[arg(long, value_parser = parse_period, default_value = "10s")]
    pub lease_renew_deadline: std::time::Duration,
    /// How often standbys try for the Lease and the leader renews it.
    #[arg(long, value_parser = parse_period, default_value = "2s")]
    pub lease_retry_period: std::time::Duration,
    /// How many Backups run at once; a backup of namespaces another one in flight covers waits
    /// Queued whatever this says.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrent_backups: u32,
    /// How many Restores run at once; restores into the same namespaces run one after another.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrent_restores: u32,
    /// How many times a Backup or Restore is started before it fails, when servers stop while
    /// it runs (the next leader starts it again).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// How often each BackupRepository is maintained (stale locks removed, unused data pruned)
    /// unless its spec.maintenanceFrequency says otherwise (Go duration; Velero's flag name).
    #[arg(long, value_parser = parse_period, default_value = "168h")]
    pub default_repo_maintain_frequency: std::time::Duration,
    /// The share of a repository that may stay unused after maintenance, in percent (restic's
    /// `prune --max-unused`): partly used packs are repacked until at most this is unused.
    #[arg(long, default_value_t = 5.0)]
    pub repo_maintain_max_unused: f64,
    /// How often the server looks for repositories due for maintenance.
    #[arg(long, value_parser = parse_period, default_value = "1m")]
    pub repo_maintain_check_period: std::time::Duration,
}

/// Application teams' extensions may log and read the clock unless the admin allows more.
pub const DEFAULT_NAMESPACED_EXTENSION_CAPABILITIES: &str = "{log: true, clock: true}";

fn parse_capabilities(value: &str) -> Result<stowage_runtime::Capabilities, String> {
    stowage_runtime::Capabilities::from_yaml(value).map_err(|e| e.to_string())
}

fn parse_size(value: &str) -> Result<u64, String> {
    stowage_runtime::MemoryLimit::parse(value).map(|m| m.bytes()).map_err(|e| e.replace("memory quantity", "size"))
}

fn parse_period(value: &str) -> Result<std::time::Duration, String> {
    stowage_api::duration::parse(value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        args: ServerArgs,
    }

    #[test]
    fn flags_parse() {
        let h = Harness::try_parse_from(["server", "-n", "backup", "--metrics-address", "127.0.0.1:9000",
            "--location-check-period", "2s", "--garbage-collection-frequency", "10m"]).unwrap();
        assert_eq!(h.args.garbage_collection_frequency, std::time::Duration::from_secs(600));
        assert_eq!(h.args.namespace, "backup");
        assert_eq!(h.args.location_check_period, Some(std::time::Duration::from_secs(2)));
        assert_eq!(h.args.dashboard_address, None, "no dashboard unless asked for");
        let h = Harness::try_parse_from(["server", "--dashboard-address", "127.0.0.1:8087"]).unwrap();
        assert_eq!(h.args.dashboard_address, Some("127.0.0.1:8087".parse().unwrap()));
        assert!(Harness::try_parse_from(["server", "--dashboard-address", "8087"]).is_err());
        assert!(Harness::try_parse_from(["server", "--location-check-period", "soon"]).is_err());
        let default = &h.args.namespaced_extension_capabilities;
        assert!(
            default.log && default.clock && default.kube_read.is_empty() && default.exec.is_empty()
        );
        let h = Harness::try_parse_from([
            "server",
            "--namespaced-extension-capabilities",
            "{kubeRead: [pods]}",
        ])
        .unwrap();
        assert_eq!(
            h.args.namespaced_extension_capabilities.kube_read,
            vec!["pods"]
        );
        let Err(e) = Harness::try_parse_from([
            "server",
            "--namespaced-extension-capabilities",
            "{kubeReed: [pods]}",
        ]) else {
            panic!("a misspelt capability must be refused")
        };
        assert!(e.to_string().contains("kubeReed"), "{e}");
    }
}
