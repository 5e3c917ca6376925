//! Names of the objects `stowage install` creates, which the server and node agent rely on.

/// The namespace Stowage is installed into by default.
pub const DEFAULT_NAMESPACE: &str = "stowage";
/// The server's Deployment, ServiceAccount and container.
pub const SERVER: &str = "stowage";
/// The node agent's DaemonSet and container.
pub const NODE_AGENT: &str = "node-agent";
/// The node agent's ServiceAccount.
pub const NODE_AGENT_SERVICE_ACCOUNT: &str = "stowage-node-agent";

/// The Secret holding the object-store credentials file, under [`CREDENTIALS_SECRET_KEY`].
pub const CREDENTIALS_SECRET: &str = "cloud-credentials";
pub const CREDENTIALS_SECRET_KEY: &str = "cloud";
/// Where the credentials Secret is mounted in the server and node-agent pods.
pub const CREDENTIALS_MOUNT_PATH: &str = "/credentials";

/// The Secret holding the cluster master key from which repository passwords are derived.
/// Losing it loses access to every volume backup: `stowage install` says so.
pub const MASTER_KEY_SECRET: &str = "stowage-repo-master-key";
pub const MASTER_KEY_SECRET_KEY: &str = "master-key";
/// Length of the master key in bytes.
pub const MASTER_KEY_LEN: usize = 32;

/// The BackupStorageLocation `stowage install` creates.
pub const DEFAULT_LOCATION: &str = "default";

/// The kubelet's pod directory on most distributions (RancherOS, OpenShift, PKS differ).
pub const DEFAULT_KUBELET_PODS_DIR: &str = "/var/lib/kubelet/pods";
/// Where the node agent container sees the kubelet pod directory.
pub const NODE_AGENT_PODS_MOUNT: &str = "/host_pods";

/// Prometheus metrics port of the server and node agents.
pub const METRICS_PORT: u16 = 8085;
/// The name of the server Service's port (metrics and downloads, on [`METRICS_PORT`]).
pub const SERVER_HTTP_PORT_NAME: &str = "http";
/// The server's read-only dashboard port (`stowage install --dashboard`).
pub const DASHBOARD_PORT: u16 = 8087;

/// The field manager of Stowage's server-side applies.
pub const FIELD_MANAGER: &str = "stowage";

/// Environment variable carrying the install namespace (from the downward API).
pub const NAMESPACE_ENV: &str = "STOWAGE_NAMESPACE";

/// The directory, inside each restored volume, holding restore markers (`.stowage/<restore-uid>`).
pub const RESTORE_MARKER_DIR: &str = ".stowage";

/// The image of the restore helper init container (`stowage-restore-helper`).
pub const DEFAULT_RESTORE_HELPER_IMAGE: &str = concat!("stowage/restore-helper:", env!("CARGO_PKG_VERSION"));
/// The name of the init container added to restored pods with volume backups (Velero's name).
pub const RESTORE_HELPER_CONTAINER: &str = "restore-wait";
/// Where the restore helper sees each restored volume (`<dir>/<volume>`).
pub const RESTORE_HELPER_VOLUMES_DIR: &str = "/restores";
