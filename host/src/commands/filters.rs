//! The flags choosing what a backup or restore covers, shared by `backup create` and
//! `restore create`, and the small value parsers the create commands use.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;

use super::selector;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Namespaces to include (comma-separated, globs allowed) [default: all].
    #[arg(long, value_delimiter = ',', value_name = "NS,...")]
    pub include_namespaces: Vec<String>,
    /// Namespaces to exclude (comma-separated, globs allowed).
    #[arg(long, value_delimiter = ',', value_name = "NS,...")]
    pub exclude_namespaces: Vec<String>,
    /// Resources to include, as kubectl names them (deployments, deploy.apps, ...) [default: all].
    #[arg(long, value_delimiter = ',', value_name = "RESOURCE,...")]
    pub include_resources: Vec<String>,
    /// Resources to exclude.
    #[arg(long, value_delimiter = ',', value_name = "RESOURCE,...")]
    pub exclude_resources: Vec<String>,
    /// Include cluster-scoped resources [default: only those related to included items, or all
    /// when every namespace is included].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub include_cluster_resources: Option<bool>,
    /// Only objects matching this label selector, e.g. `app=nginx,tier in (web,db)`.
    #[arg(short = 'l', long, value_parser = selector::parse, conflicts_with = "or_selector")]
    pub selector: Option<LabelSelector>,
    /// Objects matching any of these selectors, separated by ` or `: `app=nginx or app=redis`.
    #[arg(long, value_parser = parse_or_selector, value_name = "SELECTOR or SELECTOR")]
    pub or_selector: Option<OrSelectors>,
}

/// `--or-selector`'s value (a newtype: clap would take a bare `Vec` for repeated flags).
#[derive(Debug, Clone, PartialEq)]
pub struct OrSelectors(pub Vec<LabelSelector>);

fn parse_or_selector(text: &str) -> Result<OrSelectors, String> {
    selector::parse_or(text).map(OrSelectors)
}

impl FilterArgs {
    /// Checks what clap cannot: empty list items and contradictions between the lists.
    pub fn check(&self) -> Result<(), String> {
        check_lists("namespaces", &self.include_namespaces, &self.exclude_namespaces)?;
        check_lists("resources", &self.include_resources, &self.exclude_resources)
    }

    /// Whether any filter flag was given.
    pub fn any(&self) -> bool {
        !(self.include_namespaces.is_empty()
            && self.exclude_namespaces.is_empty()
            && self.include_resources.is_empty()
            && self.exclude_resources.is_empty()
            && self.include_cluster_resources.is_none()
            && self.selector.is_none()
            && self.or_selector.is_none())
    }

    pub fn or_selectors(&self) -> Vec<LabelSelector> {
        self.or_selector.clone().map(|s| s.0).unwrap_or_default()
    }
}

fn check_lists(what: &str, included: &[String], excluded: &[String]) -> Result<(), String> {
    for (flag, list) in [("include", included), ("exclude", excluded)] {
        if list.iter().any(|s| s.trim().is_empty()) {
            return Err(format!("--{flag}-{what} has an empty item; write e.g. --{flag}-{what} a,b"));
        }
    }
    if excluded.iter().any(|s| s == "*") {
        return Err(format!("--exclude-{what} cannot be *; to cover nothing, do not create it"));
    }
    if let Some(both) = included.iter().find(|s| excluded.contains(s)) {
        return Err(format!("{both:?} is in both --include-{what} and --exclude-{what}; keep it in one"));
    }
    Ok(())
}

/// A Go duration flag (`720h`, `1h30m`), normalised as Go prints it (`720h0m0s`).
pub fn parse_duration(value: &str) -> Result<String, String> {
    stowage_api::duration::parse(value).map(stowage_api::duration::format).map_err(|e| e.to_string())
}

/// `key=value,key=value` (labels, provider config). Quotes around a value are dropped, as a
/// shell that did not remove them would leave them.
pub fn parse_key_values(flag: &str, occurrences: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for pair in occurrences.iter().flat_map(|o| o.split(',')) {
        let malformed = || format!("{flag}: {pair:?} is not KEY=VALUE; write e.g. {flag} a=1,b=2");
        let (key, value) = pair.split_once('=').ok_or_else(malformed)?;
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(malformed());
        }
        let value = value.trim();
        let value = (value.strip_prefix('"').and_then(|v| v.strip_suffix('"'))).unwrap_or(value);
        if map.insert(key.to_string(), value.to_string()).is_some() {
            return Err(format!("{flag}: {key} is given twice; keep one"));
        }
    }
    Ok(map)
}

/// `<base>-<YYYYMMDDhhmmss>` in UTC: how Velero names restores and scheduled backups.
pub fn timestamped_name(base: &str, now: Timestamp) -> String {
    format!("{base}-{}", now.strftime("%Y%m%d%H%M%S"))
}

/// Checks an object name the user gave, naming the flag or argument it came from.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    stowage_api::layout::check_object_name(name).map_err(|e| format!("{what}: {e}"))?;
    if name.len() > 63 {
        // Stowage labels what an operation creates with its name; label values stop at 63.
        return Err(format!("{what}: {name:?} is longer than 63 characters; choose a shorter name"));
    }
    Ok(())
}

/// Checks `--extensions`: comma-separated `name` or `namespace/name`, none empty.
pub fn check_extension_names(names: &[String]) -> Result<(), String> {
    for name in names {
        let parts: Vec<&str> = name.trim().split('/').collect();
        if parts.len() > 2 || parts.iter().any(|p| p.trim().is_empty()) {
            return Err(format!(
                "--extensions: {name:?} is not `name` or `namespace/name`; write e.g. --extensions mysqldump,shop/fsfreeze"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        filters: FilterArgs,
    }

    fn filters(args: &[&str]) -> Result<FilterArgs, clap::Error> {
        Harness::try_parse_from(std::iter::once("x").chain(args.iter().copied())).map(|h| h.filters)
    }

    #[test]
    fn lists_and_optional_bools() {
        let f = filters(&["--include-namespaces", "a,b", "--include-cluster-resources"]).unwrap();
        assert_eq!(f.include_namespaces, ["a", "b"]);
        assert_eq!(f.include_cluster_resources, Some(true));
        let f = filters(&["--include-cluster-resources=false", "--exclude-resources=events"]).unwrap();
        assert_eq!(f.include_cluster_resources, Some(false));
        assert!(f.any());
        assert!(!filters(&[]).unwrap().any());
        assert!(filters(&["--include-cluster-resources=maybe"]).is_err());
    }

    #[test]
    fn selectors_are_parsed_and_exclusive() {
        let f = filters(&["--selector", "app=nginx"]).unwrap();
        assert_eq!(f.selector.unwrap().match_labels.unwrap()["app"], "nginx");
        let f = filters(&["--or-selector", "app=a or app=b"]).unwrap();
        assert_eq!(f.or_selectors().len(), 2);
        assert!(filters(&["-l", "app=a", "--or-selector", "app=b"]).is_err());
        let err = filters(&["-l", "app in (a"]).unwrap_err().to_string();
        assert!(err.contains("unbalanced"), "{err}");
    }

    #[test]
    fn contradictions_are_named() {
        let f = filters(&["--include-namespaces", "a,b", "--exclude-namespaces", "b"]).unwrap();
        assert!(f.check().unwrap_err().contains("\"b\" is in both"));
        let f = filters(&["--exclude-resources", "*"]).unwrap();
        assert!(f.check().unwrap_err().contains("cannot be *"));
        let f = filters(&["--include-resources", "pods,,secrets"]).unwrap();
        assert!(f.check().unwrap_err().contains("empty item"));
    }

    #[test]
    fn durations_key_values_names() {
        assert_eq!(parse_duration("72h").unwrap(), "72h0m0s");
        assert!(parse_duration("3 days").unwrap_err().contains("Go duration"));
        let kv = parse_key_values("--config", &["region=minio,s3ForcePathStyle=\"true\"".into()]).unwrap();
        assert_eq!(kv["s3ForcePathStyle"], "true");
        assert!(parse_key_values("--config", &["region".into()]).unwrap_err().contains("KEY=VALUE"));
        assert!(parse_key_values("--labels", &["a=1,a=2".into()]).unwrap_err().contains("twice"));
        let now: Timestamp = "2024-05-01T03:04:05Z".parse().unwrap();
        assert_eq!(timestamped_name("nginx-backup", now), "nginx-backup-20240501030405");
        assert!(check_name("NAME", "Nginx").is_err());
        assert!(check_name("NAME", &"a".repeat(64)).unwrap_err().contains("63"));
        assert!(check_name("NAME", "nginx-backup").is_ok());
    }
}
