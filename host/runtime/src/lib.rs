//! Stowage's extension runtime: WebAssembly components and Rhai scripts, loaded from
//! ConfigMaps, sandboxed, hot-reloaded. The contract is the WIT package in `wit/`
//! (`stowage:extension@0.1.1`); this crate knows nothing of Kubernetes clients: items are
//! `serde_json::Value`s and the cluster is reached through [`HostServices`].
//!
//! # How the controller uses it
//!
//! ```text
//! // once per process
//! let runtime = Runtime::new(RuntimeOptions::default())?;
//! let registry = Registry::new(runtime, Policy::new("stowage-system"));
//!
//! // ConfigMap watch (labelled stowage.io/extension=<kind>)
//! match ExtensionSource::from_configmap_parts(ns, name, &labels, &data, &binary_data) {
//!     Ok(source) => { registry.upsert(source); }  // Err: quarantined, see registry.states()
//!     Err(e) => { /* not an extension's shape: report e on the ConfigMap */ }
//! }
//! // ConfigMap deleted or unlabelled
//! registry.remove(ns, name);
//!
//! // each backup or restore: fix the versions when it starts
//! let extensions = registry.snapshot();                  // Arc<ExtensionSet>, cheap
//! let mut session = extensions.session(context, host);   // inside the tokio runtime
//! tokio::task::spawn_blocking(move || {
//!     for item in items {
//!         let verdict = session.filter(&item);            // after the built-in filters
//!         let outcome = session.item_actions(item);       // after the built-in actions
//!         // outcome.item, outcome.additional, outcome.issues (warnings, or errors if fatal)
//!     }
//!     session.report()    // -> <name>-extensions.json.zst via ExtensionReport::to_json_zst
//! });
//! ```
//!
//! # Threads and async
//!
//! Guest code is synchronous (wasmtime without async support, Rhai): [`Session`] methods
//! block the calling thread for as long as the extensions run (bounded by each call's
//! deadline). Use a session from `spawn_blocking` (or a multi-threaded runtime's worker, where
//! the runtime blocks in place). [`HostServices`] is async; host calls are driven on the tokio
//! runtime captured when the session was created, each bounded by what is left of the
//! call's deadline.
//!
//! # Isolation
//!
//! - One compiled component (`InstancePre`) or script AST per content digest; instances per
//!   operation, never shared; a fresh one per hook call and after any trap.
//! - WASM: pooling allocator, memory cap per instance (`memoryLimit`, through `StoreLimits`),
//!   wall-clock deadline per call (`timeoutSeconds`, through epoch interruption), no WASI
//!   capabilities at all (the `wasi:*` imports of a `wasm32-wasip2` guest trap when called).
//! - Rhai: operation, call-depth, expression-depth and size limits ([`RhaiLimits`]), the
//!   same wall-clock deadline, and the same `memoryLimit` on the heap a call grows where the
//!   binary installs [`heap::CountingAllocator`].
//! - Every host call is checked against the extension's granted capabilities and scope
//!   before it reaches [`HostServices`]; a refusal is an error the extension sees and a
//!   [`Denial`] in the report.

mod config;
mod error;
pub mod heap;
mod host;
mod item;
mod policy;
mod provenance;
mod registry;
mod script;
mod selector;
mod session;
mod source;
mod wasm;

/// The stack a thread that runs extensions needs. Scripts may build values nested as deep as
/// their size limits allow (100,000 arrays in one another), and the script engine clones and
/// drops them recursively: on a default 2 MiB stack that overflows and aborts the process.
/// The memory is reserved, not used, until a script goes that deep.
pub const EXTENSION_STACK_SIZE: usize = 256 << 20;

pub use config::{
    Capabilities, ConfigError, ExecGrant, ExtensionConfig, MemoryLimit, OnError, TargetKind, DEFAULT_MEMORY_LIMIT,
    DEFAULT_TIMEOUT_SECONDS, MAX_MEMORY_LIMIT, MAX_TIMEOUT_SECONDS,
};
pub use error::LoadError;
pub use host::{Denial, ExecOutput, ExecRequest, FreezeRequest, HookTarget, HostServices, LogLevel, OfflineHost, TargetVolume, VolumeMount};
pub use item::{HookPhase, Item, KindRef, ObjectRef, OperationContext, OperationKind, Phase};
pub use policy::{Policy, Scope};
pub use provenance::{Counts, ExtensionRecord, ExtensionReport, ItemRecord, PatchOperation};
pub use registry::{Extension, ExtensionSet, ExtensionStatus, Registry, Runtime, RuntimeError, RuntimeOptions, State};
pub use script::RhaiLimits;
pub use selector::{resource_matches, LabelRequirement, LabelSelector, ResourceSelector};
pub use session::{ActionOutcome, CallObserver, FilterOutcome, ItemIssue, Session};
pub use source::{
    Digest, ExtensionId, ExtensionKind, ExtensionSource, Language, Module, CONFIG_KEY, EXTENSION_LABEL, SCRIPT_KEY,
    WASM_KEY, WASM_ZST_KEY,
};
