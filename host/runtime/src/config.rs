//! `config.yaml` of an extension's ConfigMap: what it applies to, what it may do, its limits.
//!
//! Unknown keys and invalid values are rejected with the path of the key
//! (`capabilities.kubeRead[1]: ...`), so that a user can find the mistake.

use crate::selector::ResourceSelector;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

pub const DEFAULT_TIMEOUT_SECONDS: u32 = 5;
pub const MAX_TIMEOUT_SECONDS: u32 = 300;
pub const DEFAULT_MEMORY_LIMIT: u64 = 64 << 20;
pub const MIN_MEMORY_LIMIT: u64 = 1 << 20;
/// Also the size of a memory slot in the pooling allocator.
pub const MAX_MEMORY_LIMIT: u64 = 1 << 30;

/// The settings of one extension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionConfig {
    /// Which items the extension sees; combined with the extension's own `applies-to`.
    #[serde(default)]
    pub applies_to: ResourceSelector,
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Wall-clock deadline of one call (1 to 300 s).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u32,
    /// Memory cap of a WASM instance, and of the heap one Rhai call grows ("64Mi"; 1Mi to 1Gi).
    #[serde(default)]
    pub memory_limit: MemoryLimit,
    /// Passed to every call in the operation context.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Extensions of one kind run by `order`, then by name.
    #[serde(default)]
    pub order: i32,
    /// Whether a failure of this extension fails the item (`Fail`) or only warns (`Continue`).
    #[serde(default)]
    pub on_error: OnError,
    /// Runs only in the backups and restores that name it in `spec.extensions` (a migration's
    /// registry rewrite, a costly dump), instead of in every one.
    #[serde(default)]
    pub opt_in: bool,
    /// For hooks: what one call is about, each selected pod or each workload that owns them.
    #[serde(default)]
    pub target: TargetKind,
}

/// What a hook is called on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// Each selected pod, around its own volumes.
    #[default]
    Pod,
    /// The Deployment, StatefulSet, DaemonSet (or ReplicaSet, Job) that controls the selected
    /// pods: one call around the volumes of all its pods.
    Workload,
}

fn default_timeout() -> u32 {
    DEFAULT_TIMEOUT_SECONDS
}

impl Default for ExtensionConfig {
    fn default() -> Self {
        ExtensionConfig {
            applies_to: ResourceSelector::default(),
            capabilities: Capabilities::default(),
            timeout_seconds: DEFAULT_TIMEOUT_SECONDS,
            memory_limit: MemoryLimit::default(),
            parameters: BTreeMap::new(),
            order: 0,
            on_error: OnError::default(),
            opt_in: false,
            target: TargetKind::Pod,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum OnError {
    #[default]
    Continue,
    Fail,
}

/// What an extension may call. Everything is denied unless granted.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Capabilities {
    #[serde(default)]
    pub log: bool,
    #[serde(default)]
    pub clock: bool,
    /// Resources it may get and list (`pods`, `deployments.apps`, `ConfigMap`, `*`).
    #[serde(default)]
    pub kube_read: Vec<String>,
    /// Resources it may patch and scale.
    #[serde(default)]
    pub kube_write: Vec<String>,
    /// Containers it may run commands in.
    #[serde(default)]
    pub exec: Vec<ExecGrant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecGrant {
    /// Container name, or `*`.
    pub container: String,
}

/// A memory size in bytes, written as a Kubernetes quantity (`64Mi`, `1Gi`, `512Ki`) or a
/// plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimit(pub u64);

impl Default for MemoryLimit {
    fn default() -> Self {
        MemoryLimit(DEFAULT_MEMORY_LIMIT)
    }
}

impl MemoryLimit {
    pub fn bytes(self) -> u64 {
        self.0
    }

    pub fn parse(text: &str) -> Result<MemoryLimit, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (digits, suffix) = text.split_at(split);
        let multiplier: u64 = match suffix {
            "" => 1,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "k" => 1_000,
            "M" => 1_000_000,
            "G" => 1_000_000_000,
            _ => return Err(format!("{text:?} is not a memory quantity; write it like 64Mi")),
        };
        let number: u64 =
            digits.parse().map_err(|_| format!("{text:?} is not a memory quantity; write it like 64Mi"))?;
        number
            .checked_mul(multiplier)
            .map(MemoryLimit)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl fmt::Display for MemoryLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            b if b % (1 << 30) == 0 => write!(f, "{}Gi", b >> 30),
            b if b % (1 << 20) == 0 => write!(f, "{}Mi", b >> 20),
            b if b % (1 << 10) == 0 => write!(f, "{}Ki", b >> 10),
            b => write!(f, "{b}"),
        }
    }
}

impl Serialize for MemoryLimit {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MemoryLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)
            .map_err(|_| serde::de::Error::custom("expected a memory quantity such as 64Mi"))?
        {
            Raw::Bytes(bytes) => Ok(MemoryLimit(bytes)),
            Raw::Text(text) => MemoryLimit::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

/// An invalid `config.yaml`: `key` is the path of the offending key (`timeoutSeconds`,
/// `capabilities.kubeRead[0]`), empty when the document itself is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config.yaml: {}{message}", if key.is_empty() { String::new() } else { format!("{key}: ") })]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { key: key.into(), message: message.into() }
    }
}

/// Deserialises YAML (or JSON), naming the key of the first error.
fn deserialize<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, ConfigError> {
    let document = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(document).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        let mut message = e.inner().to_string();
        // The path already names an unknown key: say what it is instead of repeating it.
        if message.starts_with("unknown field `") {
            if let Some(end) = message.find("`, ") {
                message = format!("unknown key, {}", &message[end + 3..]);
            }
        }
        ConfigError::new(key, message)
    })
}

impl Capabilities {
    /// Capabilities written as in `config.yaml` (`{log: true, kubeRead: [pods]}`), as the
    /// server's policy takes them. An empty document grants nothing.
    pub fn from_yaml(text: &str) -> Result<Capabilities, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Capabilities::default());
        }
        let capabilities: Capabilities = deserialize(text)?;
        for (field, list) in [
            ("kubeRead", &capabilities.kube_read),
            ("kubeWrite", &capabilities.kube_write),
        ] {
            if let Some(i) = list.iter().position(|r| r.trim().is_empty()) {
                return Err(ConfigError::new(
                    format!("{field}[{i}]"),
                    "empty resource name",
                ));
            }
        }
        Ok(capabilities)
    }
}

impl ExtensionConfig {
    /// Parses and validates `config.yaml`. An empty document means all defaults.
    pub fn from_yaml(text: &str) -> Result<ExtensionConfig, ConfigError> {
        if text.trim().is_empty() {
            return Ok(ExtensionConfig::default());
        }
        let config: ExtensionConfig = deserialize(text)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_TIMEOUT_SECONDS).contains(&self.timeout_seconds) {
            return Err(ConfigError::new(
                "timeoutSeconds",
                format!("{} is out of range; use 1 to {MAX_TIMEOUT_SECONDS}", self.timeout_seconds),
            ));
        }
        let memory = self.memory_limit.bytes();
        if !(MIN_MEMORY_LIMIT..=MAX_MEMORY_LIMIT).contains(&memory) {
            return Err(ConfigError::new(
                "memoryLimit",
                format!(
                    "{} is out of range; use {} to {}",
                    self.memory_limit,
                    MemoryLimit(MIN_MEMORY_LIMIT),
                    MemoryLimit(MAX_MEMORY_LIMIT)
                ),
            ));
        }
        self.applies_to.validate().map_err(|(key, message)| ConfigError::new(format!("appliesTo.{key}"), message))?;
        for (field, list) in [("kubeRead", &self.capabilities.kube_read), ("kubeWrite", &self.capabilities.kube_write)] {
            for (i, resource) in list.iter().enumerate() {
                if resource.trim().is_empty() {
                    return Err(ConfigError::new(format!("capabilities.{field}[{i}]"), "empty resource name"));
                }
            }
        }
        for (i, grant) in self.capabilities.exec.iter().enumerate() {
            if grant.container.trim().is_empty() {
                return Err(ConfigError::new(format!("capabilities.exec[{i}].container"), "empty container name"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(yaml: &str) -> ConfigError {
        ExtensionConfig::from_yaml(yaml).unwrap_err()
    }

    #[test]
    fn full_config_parses() {
        let config = ExtensionConfig::from_yaml(
            r#"
appliesTo:
  includedNamespaces: [shop]
  includedResources: [persistentvolumeclaims]
  labelSelector:
    matchLabels: {app: db}
    matchExpressions:
      - {key: tier, operator: In, values: [backend]}
capabilities:
  log: true
  kubeRead: [pods, deployments.apps]
  kubeWrite: [deployments.apps]
  exec: [{container: mysql}]
timeoutSeconds: 10
memoryLimit: 32Mi
parameters: {standard: fast}
order: -1
onError: Fail
optIn: true
target: workload
"#,
        )
        .unwrap();
        assert_eq!(config.timeout_seconds, 10);
        assert_eq!(config.memory_limit.bytes(), 32 << 20);
        assert_eq!(config.parameters["standard"], "fast");
        assert_eq!(config.on_error, OnError::Fail);
        assert!(config.opt_in);
        assert_eq!(config.target, TargetKind::Workload);
        assert_eq!(config.capabilities.exec[0].container, "mysql");
        assert_eq!(config.applies_to.label_selector.unwrap().match_labels["app"], "db");
    }

    #[test]
    fn empty_config_is_defaults() {
        let config = ExtensionConfig::from_yaml("").unwrap();
        assert_eq!(config, ExtensionConfig::default());
        assert_eq!(config.timeout_seconds, DEFAULT_TIMEOUT_SECONDS);
        assert!(!config.capabilities.log);
        assert!(!config.opt_in, "an extension runs in every operation unless it opts in");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = error("timeoutSecond: 3\n");
        assert_eq!(e.key, "timeoutSecond");
        assert!(e.to_string().starts_with("config.yaml: timeoutSecond: unknown key, expected one of `appliesTo`"), "{e}");
        let e = error("capabilities:\n  kubeReed: [pods]\n");
        assert_eq!(e.key, "capabilities.kubeReed");
        assert!(e.message.contains("`kubeRead`"), "{e}");
        let e = error("appliesTo:\n  labelSelector:\n    matchLabel: {a: b}\n");
        assert_eq!(e.key, "appliesTo.labelSelector.matchLabel");
    }

    #[test]
    fn invalid_values_are_named() {
        let e = error("memoryLimit: 64MB\n");
        assert_eq!(e.key, "memoryLimit");
        assert!(e.message.contains("64MB"), "{e}");
        let e = error("memoryLimit: 4Gi\n");
        assert_eq!(e.key, "memoryLimit");
        assert!(e.message.contains("out of range"), "{e}");
        let e = error("timeoutSeconds: 0\n");
        assert_eq!(e.to_string(), "config.yaml: timeoutSeconds: 0 is out of range; use 1 to 300");
        let e = error("timeoutSeconds: soon\n");
        assert_eq!(e.key, "timeoutSeconds");
        let e = error("onError: Ignore\n");
        assert_eq!(e.key, "onError");
        let e = error("optIn: sometimes\n");
        assert_eq!(e.key, "optIn");
        let e = error("parameters:\n  replicas: [1]\n");
        assert_eq!(e.key, "parameters.replicas");
        let e = error("appliesTo:\n  labelSelector:\n    matchExpressions: [{key: a, operator: Like}]\n");
        assert_eq!(e.key, "appliesTo.labelSelector.matchExpressions[0].operator");
        let e = error("capabilities:\n  exec: [{container: ''}]\n");
        assert_eq!(e.key, "capabilities.exec[0].container");
        let e = error("- just\n- a list\n");
        assert_eq!(e.key, "");
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(MemoryLimit::parse("64Mi").unwrap().bytes(), 64 << 20);
        assert_eq!(MemoryLimit::parse("1Gi").unwrap().bytes(), 1 << 30);
        assert_eq!(MemoryLimit::parse("1048576").unwrap().bytes(), 1 << 20);
        assert_eq!(MemoryLimit::parse("2M").unwrap().bytes(), 2_000_000);
        assert!(MemoryLimit::parse("Mi").is_err());
        assert!(MemoryLimit::parse("-1Mi").is_err());
        assert_eq!(MemoryLimit(64 << 20).to_string(), "64Mi");
    }
}
