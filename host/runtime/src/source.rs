//! An extension as its ConfigMap holds it, before it is compiled.

use crate::error::LoadError;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;

/// The label that marks a ConfigMap as an extension; its value is the [`ExtensionKind`].
pub const EXTENSION_LABEL: &str = "stowage.io/extension";
pub const WASM_KEY: &str = "extension.wasm";
pub const WASM_ZST_KEY: &str = "extension.wasm.zst";
pub const SCRIPT_KEY: &str = "script.rhai";
pub const CONFIG_KEY: &str = "config.yaml";
/// A decompressed module larger than this is refused (a ConfigMap holds at most 1 MiB).
pub const MAX_MODULE_SIZE: u64 = 32 << 20;

/// Which world an extension implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExtensionKind {
    ItemAction,
    RestoreItemAction,
    ItemFilter,
    Hook,
}

impl ExtensionKind {
    pub const ALL: [ExtensionKind; 4] =
        [ExtensionKind::ItemAction, ExtensionKind::RestoreItemAction, ExtensionKind::ItemFilter, ExtensionKind::Hook];

    /// The label value and WIT world name.
    pub fn as_str(self) -> &'static str {
        match self {
            ExtensionKind::ItemAction => "item-action",
            ExtensionKind::RestoreItemAction => "restore-item-action",
            ExtensionKind::ItemFilter => "item-filter",
            ExtensionKind::Hook => "hook",
        }
    }

    pub fn parse(text: &str) -> Option<ExtensionKind> {
        ExtensionKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl fmt::Display for ExtensionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The code of an extension.
#[derive(Clone, PartialEq, Eq)]
pub enum Module {
    /// A WebAssembly component.
    Wasm(Vec<u8>),
    /// A zstd-compressed WebAssembly component.
    WasmZst(Vec<u8>),
    /// A Rhai script.
    Rhai(String),
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Module::Wasm(bytes) => write!(f, "Wasm({} bytes)", bytes.len()),
            Module::WasmZst(bytes) => write!(f, "WasmZst({} bytes)", bytes.len()),
            Module::Rhai(text) => write!(f, "Rhai({} bytes)", text.len()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Wasm,
    Rhai,
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Language::Wasm => "wasm",
            Language::Rhai => "rhai",
        })
    }
}

/// The module's content after decompression, and its digest.
#[derive(Debug)]
pub(crate) struct ModuleCode {
    pub language: Language,
    pub bytes: Vec<u8>,
    pub digest: Digest,
}

impl Module {
    pub fn language(&self) -> Language {
        match self {
            Module::Wasm(_) | Module::WasmZst(_) => Language::Wasm,
            Module::Rhai(_) => Language::Rhai,
        }
    }

    /// Decompresses the module; the digest is of the decompressed content, so the same
    /// component compressed or not is compiled once.
    pub(crate) fn decode(&self) -> Result<ModuleCode, String> {
        let bytes = match self {
            Module::Wasm(bytes) => bytes.clone(),
            Module::Rhai(text) => text.as_bytes().to_vec(),
            Module::WasmZst(compressed) => {
                let mut bytes = Vec::new();
                zstd::stream::Decoder::new(compressed.as_slice())
                    .and_then(|d| d.take(MAX_MODULE_SIZE + 1).read_to_end(&mut bytes))
                    .map_err(|e| format!("binaryData.{WASM_ZST_KEY}: not valid zstd: {e}"))?;
                bytes
            }
        };
        if bytes.len() as u64 > MAX_MODULE_SIZE {
            return Err(format!("module is larger than {} MiB", MAX_MODULE_SIZE >> 20));
        }
        let digest = Digest::of(&bytes);
        Ok(ModuleCode { language: self.language(), bytes, digest })
    }
}

/// `sha256:<hex>` of a module's content.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Digest(pub String);

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        let hash = Sha256::digest(bytes);
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        Digest(format!("sha256:{hex}"))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Namespace and name of the ConfigMap an extension comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExtensionId {
    pub namespace: String,
    pub name: String,
}

impl ExtensionId {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ExtensionId {
        ExtensionId { namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for ExtensionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// An extension as loaded from its ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionSource {
    pub id: ExtensionId,
    pub kind: ExtensionKind,
    pub module: Module,
    /// The text of `config.yaml`; empty means all defaults.
    pub config_yaml: String,
}

impl ExtensionSource {
    /// Reads an extension from the parts of its ConfigMap, checking its shape: the
    /// [`EXTENSION_LABEL`], exactly one module (`binaryData.extension.wasm`,
    /// `binaryData.extension.wasm.zst` or `data.script.rhai`), an optional
    /// `data.config.yaml`, and no other keys.
    pub fn from_configmap_parts(
        namespace: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
        data: &BTreeMap<String, String>,
        binary_data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<ExtensionSource, LoadError> {
        let id = ExtensionId::new(namespace, name);
        let shape = |message: String| LoadError::Shape { id: id.clone(), message };
        let label = labels
            .get(EXTENSION_LABEL)
            .ok_or_else(|| shape(format!("label {EXTENSION_LABEL} is missing")))?;
        let kind = ExtensionKind::parse(label).ok_or_else(|| {
            let kinds: Vec<_> = ExtensionKind::ALL.iter().map(|k| k.as_str()).collect();
            shape(format!("label {EXTENSION_LABEL}: {label:?} is not one of {}", kinds.join(", ")))
        })?;
        for key in data.keys() {
            if key != SCRIPT_KEY && key != CONFIG_KEY {
                let hint = if key == WASM_KEY || key == WASM_ZST_KEY { " (a component goes in binaryData)" } else { "" };
                return Err(shape(format!("data.{key}: unknown key; expected {SCRIPT_KEY} or {CONFIG_KEY}{hint}")));
            }
        }
        for key in binary_data.keys() {
            if key != WASM_KEY && key != WASM_ZST_KEY {
                return Err(shape(format!("binaryData.{key}: unknown key; expected {WASM_KEY} or {WASM_ZST_KEY}")));
            }
        }
        let mut modules = Vec::new();
        if let Some(bytes) = binary_data.get(WASM_KEY) {
            modules.push((format!("binaryData.{WASM_KEY}"), Module::Wasm(bytes.clone())));
        }
        if let Some(bytes) = binary_data.get(WASM_ZST_KEY) {
            modules.push((format!("binaryData.{WASM_ZST_KEY}"), Module::WasmZst(bytes.clone())));
        }
        if let Some(script) = data.get(SCRIPT_KEY) {
            modules.push((format!("data.{SCRIPT_KEY}"), Module::Rhai(script.clone())));
        }
        let module = match modules.len() {
            0 => {
                return Err(shape(format!(
                    "no module: put a component in binaryData.{WASM_KEY} (or {WASM_ZST_KEY}) or a script in data.{SCRIPT_KEY}"
                )))
            }
            1 => modules.pop().unwrap().1,
            _ => {
                let keys: Vec<_> = modules.iter().map(|(k, _)| k.as_str()).collect();
                return Err(shape(format!("more than one module ({}); keep one", keys.join(", "))));
            }
        };
        Ok(ExtensionSource {
            id,
            kind,
            module,
            config_yaml: data.get(CONFIG_KEY).cloned().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kind: &str) -> BTreeMap<String, String> {
        [(EXTENSION_LABEL.to_owned(), kind.to_owned())].into()
    }

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn shape_error(result: Result<ExtensionSource, LoadError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn script_configmap() {
        let source = ExtensionSource::from_configmap_parts(
            "stowage",
            "skip",
            &labels("item-filter"),
            &data(&[(SCRIPT_KEY, "fn filter(ctx, item) { true }"), (CONFIG_KEY, "order: 1")]),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(source.kind, ExtensionKind::ItemFilter);
        assert_eq!(source.module.language(), Language::Rhai);
        assert_eq!(source.config_yaml, "order: 1");
    }

    #[test]
    fn shape_errors_name_the_key() {
        let none = BTreeMap::new();
        let script = data(&[(SCRIPT_KEY, "")]);
        assert_eq!(
            shape_error(ExtensionSource::from_configmap_parts("ns", "x", &BTreeMap::new(), &script, &none)),
            "extension ns/x: label stowage.io/extension is missing"
        );
        assert!(shape_error(ExtensionSource::from_configmap_parts("ns", "x", &labels("action"), &script, &none))
            .contains("\"action\" is not one of item-action, restore-item-action, item-filter, hook"));
        let extra = data(&[(SCRIPT_KEY, ""), ("notes.txt", "")]);
        assert!(shape_error(ExtensionSource::from_configmap_parts("ns", "x", &labels("hook"), &extra, &none))
            .contains("data.notes.txt: unknown key"));
        assert!(shape_error(ExtensionSource::from_configmap_parts("ns", "x", &labels("hook"), &BTreeMap::new(), &none))
            .contains("no module"));
        let both: BTreeMap<String, Vec<u8>> = [(WASM_KEY.to_owned(), vec![0u8])].into();
        assert!(shape_error(ExtensionSource::from_configmap_parts("ns", "x", &labels("hook"), &script, &both))
            .contains("more than one module (binaryData.extension.wasm, data.script.rhai)"));
    }

    #[test]
    fn compressed_and_plain_modules_share_a_digest() {
        let wasm = b"\0asm not really".to_vec();
        let compressed = zstd::encode_all(wasm.as_slice(), 3).unwrap();
        let plain = Module::Wasm(wasm).decode().unwrap();
        let zst = Module::WasmZst(compressed).decode().unwrap();
        assert_eq!(plain.digest, zst.digest);
        assert!(plain.digest.0.starts_with("sha256:"));
        assert!(Module::WasmZst(b"nope".to_vec()).decode().unwrap_err().contains("not valid zstd"));
    }
}
