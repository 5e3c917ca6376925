//! `stowage server`: the controllers. Its flags are fixed here so that installs made now keep
//! working when the controllers land.

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
    /// Back up every pod volume unless opted out, for backups that do not say.
    #[arg(long)]
    pub default_volumes_to_fs_backup: bool,
    /// The TTL of backups that do not set one (Go duration).
    #[arg(long, default_value = stowage_api::duration::DEFAULT_BACKUP_TTL, value_parser = parse_duration)]
    pub default_backup_ttl: String,
}

fn parse_duration(value: &str) -> Result<String, String> {
    stowage_api::duration::parse(value).map(|_| value.to_string()).map_err(|e| e.to_string())
}

pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "`stowage server` is not implemented in this build (namespace {:?}, metrics on {}); \
         use a release that includes the controllers",
        args.namespace,
        args.metrics_address
    )
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
    fn flags_parse_and_run_fails_clearly() {
        let h = Harness::try_parse_from(["server", "-n", "backup", "--metrics-address", "127.0.0.1:9000"]).unwrap();
        assert_eq!(h.args.namespace, "backup");
        assert_eq!(h.args.default_backup_ttl, "720h");
        let err = run(h.args).unwrap_err().to_string();
        assert!(err.contains("not implemented"), "{err}");
        assert!(Harness::try_parse_from(["server", "--default-backup-ttl", "30 days"]).is_err());
    }
}
