//! Stowage's extension runtime: WebAssembly components and Rhai scripts, loaded from
//! ConfigMaps, sandboxed, hot-reloaded. The contract is the WIT package in `wit/`
//! (`stowage:extension@0.1.0`); this crate knows nothing of Kubernetes clients: items are
//! `serde_json::Value`s and the cluster is reached through a host-services trait the controller implements.

mod config;
mod error;
mod item;
mod policy;
mod selector;
mod source;

pub use config::{
    Capabilities, ConfigError, ExecGrant, ExtensionConfig, MemoryLimit, OnError, DEFAULT_MEMORY_LIMIT,
    DEFAULT_TIMEOUT_SECONDS, MAX_MEMORY_LIMIT, MAX_TIMEOUT_SECONDS,
};
pub use error::LoadError;
pub use item::{HookPhase, Item, KindRef, ObjectRef, OperationContext, OperationKind, Phase};
pub use policy::{Policy, Scope};
pub use selector::{resource_matches, LabelRequirement, LabelSelector, ResourceSelector};
pub use source::{
    Digest, ExtensionId, ExtensionKind, ExtensionSource, Language, Module, CONFIG_KEY, EXTENSION_LABEL, SCRIPT_KEY,
    WASM_KEY, WASM_ZST_KEY,
};
