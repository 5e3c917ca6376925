//! The shipped `mysqldump` hook, loaded from its ConfigMap manifest: its commands run for real
//! in a local shell standing in for the database container, with fake `mariadb-dump` and
//! `mariadb` tools on the PATH that write a complete, truncated or failed dump, check the
//! password they get through the environment, and record what was loaded.

mod fixtures;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use fixtures::*;
use serde_json::{json, Value};
use stowage_runtime::*;

const PASSWORD: &str = "hunter2-not-in-argv";

const FAKE_DUMP: &str = r#"#!/bin/sh
# Stands in for mariadb-dump: $FAKE_DUMP says what kind of dump it writes.
printf '%s\n' "$@" > "$FAKE_DIR/dump-args"
if [ "$MYSQL_PWD" != "$FAKE_PASSWORD" ]; then
    echo "mariadb-dump: Got error: 1045: \"Access denied for user 'root'@'localhost' (using password: YES)\" when trying to connect" >&2
    exit 2
fi
echo "-- MariaDB dump 10.19"
echo "CREATE TABLE orders (id int);"
case $FAKE_DUMP in
complete) echo "INSERT INTO orders VALUES (1);"; echo; echo "-- Dump completed on 2026-01-01  0:00:00" ;;
truncated) echo "INSERT INTO orders VALUES (1" ;;
failed) echo "mariadb-dump: Got error: 1049: \"Unknown database 'nope'\" when selecting the database" >&2; exit 2 ;;
esac
"#;

const FAKE_CLIENT: &str = r#"#!/bin/sh
# Stands in for the mariadb client: answers the readiness query, records what it loads.
printf '%s\n' "$@" > "$FAKE_DIR/client-args"
if [ "$MYSQL_PWD" != "$FAKE_PASSWORD" ]; then
    echo "ERROR 1045 (28000): Access denied for user 'root'@'localhost' (using password: YES)" >&2
    exit 1
fi
case " $* " in
*" -e "*) echo "${FAKE_SKIP_NETWORKING:-0}"; exit 0 ;;
esac
cat > "$FAKE_DIR/loaded.sql"
"#;

/// The database pod `shop/db` (container `mariadb` first, its password in `MARIADB_ROOT_PASSWORD`),
/// whose commands run in `dir/rootfs` with `dir/bin` first on the PATH.
struct Container {
    dir: TempDir,
    pod: Value,
    /// The container's environment (the password, what the fakes do).
    env: Mutex<BTreeMap<String, String>>,
    execs: Mutex<Vec<ExecRequest>>,
    logs: Mutex<Vec<String>>,
}

impl Container {
    fn new() -> Arc<Container> {
        let dir = TempDir::new();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(dir.path().join("rootfs/data")).unwrap();
        for (name, text) in [("mariadb-dump", FAKE_DUMP), ("mariadb", FAKE_CLIENT)] {
            let path = bin.join(name);
            std::fs::write(&path, text).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let env = BTreeMap::from([
            ("MARIADB_ROOT_PASSWORD".to_string(), PASSWORD.to_string()),
            ("FAKE_PASSWORD".to_string(), PASSWORD.to_string()),
            ("FAKE_DUMP".to_string(), "complete".to_string()),
            ("FAKE_DIR".to_string(), dir.path().display().to_string()),
        ]);
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db", "namespace": "shop"}, "spec": {"containers": [
            {"name": "mariadb", "image": "mariadb:11", "env": [
                {"name": "MARIADB_ROOT_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "root-password"}}},
                {"name": "WRONG_PASSWORD", "value": "wrong-password-value"}]},
            {"name": "metrics", "image": "exporter"}]}});
        Arc::new(Container { dir, pod, env: Mutex::new(env), execs: Mutex::new(Vec::new()), logs: Mutex::new(Vec::new()) })
    }

    fn set(&self, key: &str, value: &str) {
        self.env.lock().unwrap().insert(key.into(), value.into());
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// The dump path parameter: absolute, as in a real container.
    fn dump_path(&self) -> String {
        self.path("rootfs/data/dump.sql").display().to_string()
    }

    fn execs(&self) -> Vec<ExecRequest> {
        self.execs.lock().unwrap().clone()
    }

    fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

#[async_trait]
impl HostServices for Container {
    fn log(&self, _: &ExtensionId, level: LogLevel, message: &str) {
        self.logs.lock().unwrap().push(format!("{level:?} {message}"));
    }
    async fn kube_get(&self, object: &ObjectRef) -> Result<Option<Value>, String> {
        Ok((object.kind == "Pod" && object.namespace == "shop" && object.name == "db").then(|| self.pod.clone()))
    }
    async fn kube_list(&self, _: &KindRef, _: &str, _: &str) -> Result<Vec<Value>, String> {
        Err("not used".into())
    }
    async fn kube_patch(&self, _: &ObjectRef, _: &Value) -> Result<Value, String> {
        Err("not used".into())
    }
    async fn kube_scale(&self, _: &ObjectRef, _: u32) -> Result<(), String> {
        Err("not used".into())
    }
    /// Runs the command as the container would (no shell of its own: argv as given).
    async fn exec(&self, request: &ExecRequest) -> Result<ExecOutput, String> {
        self.execs.lock().unwrap().push(request.clone());
        let path = format!("{}:/usr/bin:/bin", self.path("bin").display());
        let out = std::process::Command::new(&request.command[0])
            .args(&request.command[1..])
            .current_dir(self.path("rootfs"))
            .env_clear()
            .env("PATH", path)
            .envs(self.env.lock().unwrap().iter())
            .output()
            .map_err(|e| e.to_string())?;
        Ok(ExecOutput {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            exit_code: out.status.code().unwrap_or(128),
        })
    }
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("stowage-mysqldump-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn id() -> ExtensionId {
    ExtensionId::new("stowage", "mysqldump")
}

fn target() -> ObjectRef {
    ObjectRef { group: String::new(), version: "v1".into(), kind: "Pod".into(), namespace: "shop".into(), name: "db".into() }
}

/// Runs one hook phase of the shipped extension on `shop/db` with these pod parameters; the
/// error message when it fails, and the session's report.
fn hook(container: &Arc<Container>, phase: HookPhase, parameters: &[(&str, &str)]) -> (Result<(), String>, ExtensionReport) {
    let registry = registry();
    registry.upsert(shipped("mysqldump")).unwrap();
    let parameters: BTreeMap<String, String> = parameters.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mut session = {
        let _entered = rt.enter();
        registry.snapshot().session(context(), container.clone())
    };
    let result = session.run_hook(&id(), phase, &HookTarget::new(target()), &parameters).map_err(|issue| issue.message);
    (result, session.report())
}

fn dump(container: &Arc<Container>, extra: &[(&str, &str)]) -> Result<(), String> {
    let path = container.dump_path();
    let mut parameters = vec![("password-env", "MARIADB_ROOT_PASSWORD"), ("dump-path", path.as_str())];
    parameters.extend_from_slice(extra);
    hook(container, HookPhase::PreBackup, &parameters).0
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(String::from).collect()
}

#[test]
fn loads_as_an_opt_in_hook_that_fails_the_pod_on_error() {
    let registry = registry();
    let loaded = registry.upsert(shipped("mysqldump")).unwrap();
    assert_eq!((loaded.kind, loaded.language), (ExtensionKind::Hook, Language::Rhai));
    assert!(loaded.config.opt_in);
    assert_eq!(loaded.config.on_error, OnError::Fail);
    assert_eq!(loaded.config.timeout_seconds, MAX_TIMEOUT_SECONDS);
    assert!(loaded.capabilities.may_exec("mariadb") && !loaded.capabilities.may_exec("metrics"));
}

#[test]
fn a_complete_dump_is_renamed_into_place_and_the_password_stays_in_the_environment() {
    let c = Container::new();
    assert_eq!(dump(&c, &[]), Ok(()));
    let written = std::fs::read_to_string(c.path("rootfs/data/dump.sql")).unwrap();
    assert!(written.trim_end().ends_with("-- Dump completed on 2026-01-01  0:00:00"), "{written}");
    assert!(!c.path("rootfs/data/dump.sql.partial").exists());
    let execs = c.execs();
    assert_eq!(execs.len(), 1);
    assert_eq!(execs[0].container, "mariadb", "the pod's first container");
    assert_eq!((execs[0].namespace.as_str(), execs[0].pod.as_str()), ("shop", "db"));
    assert_eq!(&execs[0].command[..2], ["sh", "-c"]);
    let argv = execs[0].command.join(" ");
    assert!(!argv.contains(PASSWORD), "the password is never in the command: {argv}");
    assert!(!c.logs().contains(PASSWORD));
    let args = lines(&c.path("dump-args"));
    assert_eq!(args, ["--user=root", "--single-transaction", "--quick", "--routines", "--events", "--triggers", "--no-tablespaces", "--all-databases", "--flush-privileges"]);
    assert!(c.logs().contains(&format!("mysqldump of all databases in pod shop/db container mariadb: {} complete, {} bytes", c.dump_path(), written.len())), "{}", c.logs());
}

#[test]
fn named_databases_user_and_connection_go_to_the_tool_as_arguments() {
    let c = Container::new();
    let extra = [("databases", "shop, audit_log,shop"), ("user", "backup"), ("socket", "/run/mysqld/mysqld.sock"), ("host", "127.0.0.1"), ("port", "3307"), ("container", "mariadb")];
    assert_eq!(dump(&c, &extra), Ok(()));
    let args = lines(&c.path("dump-args"));
    assert_eq!(&args[..4], ["--user=backup", "--socket=/run/mysqld/mysqld.sock", "--host=127.0.0.1", "--port=3307"]);
    assert_eq!(&args[args.len() - 3..], ["--databases", "shop", "audit_log"]);
    assert!(c.logs().contains("mysqldump of databases shop, audit_log in pod shop/db"), "{}", c.logs());
}

#[test]
fn a_dump_without_its_trailer_fails_and_leaves_no_dump_behind() {
    let c = Container::new();
    // A complete dump of an earlier backup must not survive a failed one looking complete.
    std::fs::write(c.path("rootfs/data/dump.sql"), "-- Dump completed on 2025-01-01\n").unwrap();
    c.set("FAKE_DUMP", "truncated");
    let e = dump(&c, &[]).unwrap_err();
    assert!(e.contains("mysqldump of all databases in container mariadb failed: the dump does not end with the line '-- Dump completed': it is incomplete"), "{e}");
    assert!(!c.path("rootfs/data/dump.sql").exists() && !c.path("rootfs/data/dump.sql.partial").exists());
}

#[test]
fn a_tool_that_exits_nonzero_fails_with_its_last_lines() {
    let c = Container::new();
    c.set("FAKE_DUMP", "failed");
    let e = dump(&c, &[("databases", "shop,nope")]).unwrap_err();
    assert!(e.contains("failed: mariadb-dump exited with code 2: mariadb-dump: Got error: 1049: \"Unknown database 'nope'\" when selecting the database"), "{e}");
    assert!(!c.path("rootfs/data/dump.sql").exists() && !c.path("rootfs/data/dump.sql.partial").exists());
}

#[test]
fn a_wrong_or_missing_password_variable_is_named() {
    let c = Container::new();
    c.set("WRONG_PASSWORD", "wrong-password-value");
    let e = dump(&c, &[("password-env", "WRONG_PASSWORD")]).unwrap_err();
    assert!(e.contains("Access denied for user 'root'@'localhost'") && e.contains("(check the parameters user and password-env)"), "{e}");
    assert!(!e.contains(PASSWORD) && !e.contains("wrong-password-value"), "{e}");
    // Declared in the pod spec but not in the container's environment.
    let e = dump(&c, &[("password-env", "ROOT_PW")]).unwrap_err();
    assert!(e.contains("container mariadb of pod shop/db has no environment variable ROOT_PW (parameter password-env)"), "{e}");
    assert_eq!(c.execs().len(), 1, "nothing ran for the undeclared variable");
}

#[test]
fn unsafe_or_malformed_parameters_are_refused_before_anything_runs() {
    let c = Container::new();
    let cases = [
        ("dump-path", "/var/lib/mysql/x.sql; rm -rf /", "a plain path"),
        ("dump-path", "/var/lib/mysql/../../etc/passwd", "a plain path"),
        ("dump-path", "/var/lib/mysql/", "a plain path"),
        ("dump-path", "-x.sql", "a plain path"),
        ("databases", "shop; DROP DATABASE shop", "\"all\" or database names separated by commas"),
        ("databases", "shop,--all-databases", "\"all\" or database names separated by commas"),
        ("databases", "shop,,audit", "\"all\" or database names separated by commas"),
        ("password-env", "PW; cat /etc/shadow", "the name of an environment variable"),
        ("password-env", "1PW", "the name of an environment variable"),
        ("password-env", "$(id)", "the name of an environment variable"),
        ("user", "root --init-command=x", "an account name"),
        ("socket", "/tmp/`id`", "a plain path"),
        ("host", "db;id", "a host name"),
        ("port", "99999", "a number from 1 to 65535"),
        ("port", "33a", "a number from 1 to 65535"),
        ("load-on-restore", "yes", "\"true\" or \"false\""),
        ("wait-seconds", "0", "a number from 1 to 3600"),
        ("container", "db x", "a container name"),
    ];
    for (key, value, what) in cases {
        let e = dump(&c, &[(key, value)]).unwrap_err();
        assert!(e.contains(&format!("parameter {key}: \"{value}\" is not {what}")), "{key}={value}: {e}");
        assert!(e.contains(&format!("hooks.stowage.io/param.{key}")), "says where to fix it: {e}");
    }
    assert!(c.execs().is_empty(), "nothing ran: {:?}", c.execs());
}

#[test]
fn the_container_must_exist_and_be_granted() {
    let c = Container::new();
    let e = dump(&c, &[("container", "mysql")]).unwrap_err();
    assert!(e.contains("pod shop/db has no container mysql (parameter container); its containers: mariadb, metrics"), "{e}");
    let (result, report) = hook(&c, HookPhase::PreBackup, &[("container", "metrics")]);
    let e = result.unwrap_err();
    assert!(e.contains("capability exec does not include container metrics"), "{e}");
    assert_eq!(report.extensions[0].counts.denied, 1);
    assert!(c.execs().is_empty());
}

#[test]
fn post_backup_removes_the_dump_and_its_partial_file() {
    let c = Container::new();
    assert_eq!(dump(&c, &[]), Ok(()));
    std::fs::write(c.path("rootfs/data/dump.sql.partial"), "left by a dump past its timeout").unwrap();
    let path = c.dump_path();
    assert_eq!(hook(&c, HookPhase::PostBackup, &[("dump-path", &path)]).0, Ok(()));
    assert!(!c.path("rootfs/data/dump.sql").exists() && !c.path("rootfs/data/dump.sql.partial").exists());
    // Nothing to remove is no failure (the pre hook may have failed before writing).
    assert_eq!(hook(&c, HookPhase::PostBackup, &[("dump-path", &path)]).0, Ok(()));
}

#[test]
fn post_restore_loads_the_dump_only_when_asked() {
    let c = Container::new();
    assert_eq!(dump(&c, &[]), Ok(()));
    let path = c.dump_path();
    let base = [("password-env", "MARIADB_ROOT_PASSWORD"), ("dump-path", path.as_str())];
    assert_eq!(hook(&c, HookPhase::PostRestore, &base).0, Ok(()));
    assert_eq!(c.execs().len(), 1, "off by default: nothing ran");
    assert!(c.logs().contains("load-on-restore is not \"true\""), "{}", c.logs());

    let load = [base[0], base[1], ("load-on-restore", "true"), ("socket", "/run/mysqld/mysqld.sock")];
    assert_eq!(hook(&c, HookPhase::PostRestore, &load).0, Ok(()));
    assert_eq!(std::fs::read(c.path("loaded.sql")).unwrap(), std::fs::read(c.path("rootfs/data/dump.sql")).unwrap());
    assert_eq!(lines(&c.path("client-args")), ["--user=root", "--socket=/run/mysqld/mysqld.sock"]);
    assert!(c.logs().contains(&format!("loaded {path} in pod shop/db container mariadb (the server answered after 0s)")), "{}", c.logs());
}

#[test]
fn post_restore_fails_without_a_complete_dump_or_a_ready_server() {
    let c = Container::new();
    let path = c.dump_path();
    let load = [("password-env", "MARIADB_ROOT_PASSWORD"), ("dump-path", path.as_str()), ("load-on-restore", "true"), ("wait-seconds", "1")];
    let e = hook(&c, HookPhase::PostRestore, &load).0.unwrap_err();
    assert!(e.contains(&format!("there is no dump at {path} to load: was the volume holding it backed up and restored?")), "{e}");
    std::fs::write(c.path("rootfs/data/dump.sql"), "CREATE TABLE orders (id int);\n").unwrap();
    let e = hook(&c, HookPhase::PostRestore, &load).0.unwrap_err();
    assert!(e.contains("does not end with the line '-- Dump completed': it is incomplete and is not loaded"), "{e}");
    assert_eq!(dump(&c, &[]), Ok(()));
    // An image's temporary, socket-only server while it initialises a new data directory.
    c.set("FAKE_SKIP_NETWORKING", "1");
    let e = hook(&c, HookPhase::PostRestore, &load).0.unwrap_err();
    assert!(e.contains("the server was not ready after 1s (wait-seconds): it answers on its socket only (skip-networking)"), "{e}");
    assert!(!c.path("loaded.sql").exists(), "nothing was loaded");
}
