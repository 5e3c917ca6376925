//! The extensions a server knows: compiled once per content digest, swapped in atomically,
//! quarantined when broken.

use crate::config::{Capabilities, ExtensionConfig};
use crate::error::LoadError;
use crate::policy::{Policy, Scope};
use crate::script::{RhaiLimits, Script, ScriptEngine};
use crate::source::{Digest, ExtensionId, ExtensionKind, ExtensionSource, Language};
use crate::wasm::{WasmComponent, WasmEngine};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Settings of the [`Runtime`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeOptions {
    /// WASM instances alive at once across all operations (the pooling allocator's size);
    /// each backup or restore holds one per extension it uses.
    pub max_wasm_instances: u32,
    pub rhai: RhaiLimits,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions { max_wasm_instances: 128, rhai: RhaiLimits::default() }
    }
}

/// The compiled code of an extension, shared by every version with the same digest.
#[derive(Clone)]
pub(crate) enum Code {
    Wasm(Arc<WasmComponent>),
    Rhai(Arc<Script>),
}

/// One per process: the wasmtime engine (pooling allocator, epoch ticker), the Rhai engine
/// factory and the compile cache.
pub struct Runtime {
    pub(crate) wasm: WasmEngine,
    pub(crate) scripts: ScriptEngine,
    cache: Mutex<HashMap<(Digest, ExtensionKind), Code>>,
    compilations: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
#[error("extension runtime: {0}")]
pub struct RuntimeError(String);

impl Runtime {
    pub fn new(options: RuntimeOptions) -> Result<Arc<Runtime>, RuntimeError> {
        let wasm = WasmEngine::new(options.max_wasm_instances).map_err(|e| RuntimeError(format!("{e:#}")))?;
        Ok(Arc::new(Runtime {
            wasm,
            scripts: ScriptEngine::new(options.rhai),
            cache: Mutex::new(HashMap::new()),
            compilations: AtomicU64::new(0),
        }))
    }

    /// How many modules have been compiled since start (a module seen again is not).
    pub fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }

    /// Parses, resolves and compiles an extension (or takes its code from the cache).
    pub fn load(&self, source: &ExtensionSource, policy: &Policy) -> Result<Arc<Extension>, LoadError> {
        let id = source.id.clone();
        let config =
            ExtensionConfig::from_yaml(&source.config_yaml).map_err(|error| LoadError::Config { id: id.clone(), error })?;
        let module = source.module.decode().map_err(|message| LoadError::Module { id: id.clone(), message })?;
        let (scope, capabilities, dropped_capabilities) = policy.resolve(&id.namespace, &config.capabilities);
        let code = self
            .compile(&module.bytes, module.language, &module.digest, source.kind)
            .map_err(|message| LoadError::Module { id: id.clone(), message })?;
        Ok(Arc::new(Extension {
            id,
            kind: source.kind,
            language: module.language,
            digest: module.digest,
            scope,
            capabilities,
            dropped_capabilities,
            config,
            code,
        }))
    }

    fn compile(&self, bytes: &[u8], language: Language, digest: &Digest, kind: ExtensionKind) -> Result<Code, String> {
        let key = (digest.clone(), kind);
        if let Some(code) = self.cache.lock().unwrap().get(&key) {
            return Ok(code.clone());
        }
        // Compiled outside the lock: a component takes tens of milliseconds.
        self.compilations.fetch_add(1, Ordering::Relaxed);
        let code = match language {
            Language::Wasm => Code::Wasm(Arc::new(self.wasm.compile(bytes, kind)?)),
            Language::Rhai => {
                let text = std::str::from_utf8(bytes).map_err(|_| "script.rhai is not UTF-8".to_owned())?;
                Code::Rhai(Arc::new(self.scripts.compile(text, kind)?))
            }
        };
        Ok(self.cache.lock().unwrap().entry(key).or_insert(code).clone())
    }

    /// Forgets compiled code that no loaded extension uses any more.
    fn prune(&self) {
        self.cache.lock().unwrap().retain(|_, code| match code {
            Code::Wasm(c) => Arc::strong_count(c) > 1,
            Code::Rhai(c) => Arc::strong_count(c) > 1,
        });
    }
}

/// A loaded extension: immutable; a new version is a new `Extension`.
pub struct Extension {
    pub id: ExtensionId,
    pub kind: ExtensionKind,
    pub language: Language,
    pub digest: Digest,
    pub scope: Scope,
    /// What it was granted: its request, capped by the policy outside the server namespace.
    pub capabilities: Capabilities,
    /// Messages for the capabilities the policy dropped.
    pub dropped_capabilities: Vec<String>,
    pub config: ExtensionConfig,
    pub(crate) code: Code,
}

impl std::fmt::Debug for Extension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extension")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("language", &self.language)
            .field("digest", &self.digest)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// The extensions one backup or restore runs with, fixed when it starts.
pub struct ExtensionSet {
    pub(crate) runtime: Arc<Runtime>,
    /// Sorted by kind, then `order`, then name and namespace.
    extensions: Vec<Arc<Extension>>,
}

impl ExtensionSet {
    fn new(runtime: Arc<Runtime>, mut extensions: Vec<Arc<Extension>>) -> ExtensionSet {
        extensions.sort_by(|a, b| {
            (a.kind, a.config.order, &a.id.name, &a.id.namespace).cmp(&(b.kind, b.config.order, &b.id.name, &b.id.namespace))
        });
        ExtensionSet { runtime, extensions }
    }

    /// The extensions one operation runs: every one that is not `optIn`, and the opt-in ones
    /// the operation names (`spec.extensions`). Names of extensions not in the set are ignored
    /// here; the server refuses them when it validates the operation.
    pub fn for_operation(&self, requested: &[ExtensionId]) -> ExtensionSet {
        let extensions = self.extensions.iter().filter(|e| !e.config.opt_in || requested.contains(&e.id)).cloned().collect();
        ExtensionSet { runtime: self.runtime.clone(), extensions }
    }

    /// An empty set, for operations without extensions.
    pub fn empty(runtime: Arc<Runtime>) -> ExtensionSet {
        ExtensionSet { runtime, extensions: Vec::new() }
    }

    /// Every extension, in the order they run.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Extension>> {
        self.extensions.iter()
    }

    pub fn of_kind(&self, kind: ExtensionKind) -> impl Iterator<Item = &Arc<Extension>> {
        self.extensions.iter().filter(move |e| e.kind == kind)
    }

    pub fn get(&self, id: &ExtensionId) -> Option<&Arc<Extension>> {
        self.extensions.iter().find(|e| e.id == *id)
    }

    pub fn is_empty(&self) -> bool {
        self.extensions.is_empty()
    }

    pub(crate) fn extensions(&self) -> &[Arc<Extension>] {
        &self.extensions
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    Active,
    Quarantined,
}

/// One line of `stowage extension list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionStatus {
    pub id: ExtensionId,
    pub kind: ExtensionKind,
    pub language: Language,
    /// Unknown when the extension could not be read far enough.
    pub scope: Option<Scope>,
    pub digest: Option<Digest>,
    pub state: State,
    /// Why it is quarantined.
    pub error: Option<String>,
    /// Capabilities the policy dropped.
    pub dropped_capabilities: Vec<String>,
}

struct Entry {
    kind: ExtensionKind,
    language: Language,
    loaded: Result<Arc<Extension>, (LoadError, Option<Digest>)>,
}

/// The server's extensions, fed by the ConfigMap watch.
pub struct Registry {
    runtime: Arc<Runtime>,
    policy: Policy,
    entries: Mutex<BTreeMap<ExtensionId, Entry>>,
    current: RwLock<Arc<ExtensionSet>>,
}

impl Registry {
    pub fn new(runtime: Arc<Runtime>, policy: Policy) -> Registry {
        let empty = Arc::new(ExtensionSet::empty(runtime.clone()));
        Registry { runtime, policy, entries: Mutex::new(BTreeMap::new()), current: RwLock::new(empty) }
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Adds or replaces an extension. Code already compiled for the same digest is reused.
    /// On error the extension is quarantined (it no longer runs, even if an earlier version
    /// did) and the error is kept for [`Registry::states`]. Operations that already took a
    /// [`Registry::snapshot`] keep the versions they started with.
    pub fn upsert(&self, source: ExtensionSource) -> Result<Arc<Extension>, LoadError> {
        let loaded = self.runtime.load(&source, &self.policy);
        let entry = Entry {
            kind: source.kind,
            language: source.module.language(),
            loaded: match &loaded {
                Ok(extension) => Ok(extension.clone()),
                Err(error) => Err((error.clone(), source.module.decode().ok().map(|m| m.digest))),
            },
        };
        if let Err(error) = &loaded {
            tracing::warn!(extension = %source.id, "quarantined: {error}");
        }
        self.entries.lock().unwrap().insert(source.id, entry);
        self.publish();
        loaded
    }

    /// Forgets an extension (its ConfigMap was deleted or unlabelled).
    pub fn remove(&self, namespace: &str, name: &str) -> bool {
        let removed = self.entries.lock().unwrap().remove(&ExtensionId::new(namespace, name)).is_some();
        if removed {
            self.publish();
        }
        removed
    }

    /// The extensions to run a new backup or restore with.
    pub fn snapshot(&self) -> Arc<ExtensionSet> {
        self.current.read().unwrap().clone()
    }

    /// Every known extension, active or quarantined, by namespace and name.
    pub fn states(&self) -> Vec<ExtensionStatus> {
        let entries = self.entries.lock().unwrap();
        entries
            .iter()
            .map(|(id, entry)| match &entry.loaded {
                Ok(e) => ExtensionStatus {
                    id: id.clone(),
                    kind: e.kind,
                    language: e.language,
                    scope: Some(e.scope.clone()),
                    digest: Some(e.digest.clone()),
                    state: State::Active,
                    error: None,
                    dropped_capabilities: e.dropped_capabilities.clone(),
                },
                Err((error, digest)) => ExtensionStatus {
                    id: id.clone(),
                    kind: entry.kind,
                    language: entry.language,
                    scope: Some(self.policy.resolve(&id.namespace, &Capabilities::default()).0),
                    digest: digest.clone(),
                    state: State::Quarantined,
                    error: Some(error.to_string()),
                    dropped_capabilities: Vec::new(),
                },
            })
            .collect()
    }

    fn publish(&self) {
        {
            // Under the entries lock, so that two publishers cannot swap in an older set last.
            let entries = self.entries.lock().unwrap();
            let active = entries.values().filter_map(|e| e.loaded.as_ref().ok().cloned()).collect();
            *self.current.write().unwrap() = Arc::new(ExtensionSet::new(self.runtime.clone(), active));
        }
        self.runtime.prune();
    }
}
