//! A real S3-compatible server on 127.0.0.1 for tests: moto's standalone server, or an external
//! server given by `STOWAGE_TEST_S3_ENDPOINT` (+ `STOWAGE_TEST_S3_ACCESS_KEY`,
//! `STOWAGE_TEST_S3_SECRET_KEY`, optional `STOWAGE_TEST_S3_REGION`).

use crate::loopback_http::{form_encode, request, xml_value};
use anyhow::{anyhow, bail, Context, Result};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The region tests should configure; moto and most self-hosted servers accept any.
pub const TEST_REGION: &str = "us-east-1";

/// Without enforced auth moto accepts any key; these are what tests sign with.
const OPEN_ACCESS_KEY: &str = "stowage-test";
const OPEN_SECRET_KEY: &str = "stowage-test-secret";
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
const PORT_ATTEMPTS: usize = 3;

/// A running S3 server. A spawned moto is killed when this is dropped.
pub struct S3Server {
    endpoint: String,
    access_key: String,
    secret_key: String,
    region: String,
    enforces_auth: bool,
    moto: Option<MotoProcess>,
}

impl std::fmt::Debug for S3Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Server")
            .field("endpoint", &self.endpoint)
            .field("access_key", &self.access_key)
            .field("enforces_auth", &self.enforces_auth)
            .field("external", &self.is_external())
            .finish_non_exhaustive()
    }
}

impl S3Server {
    /// Starts moto accepting any credentials (or uses the external server).
    pub fn start() -> Result<S3Server> {
        Self::launch(false)
    }

    /// Starts moto with request signing enforced: only [`access_key`](Self::access_key) /
    /// [`secret_key`](Self::secret_key) are accepted; an unknown key gets `InvalidAccessKeyId`,
    /// a wrong secret `SignatureDoesNotMatch`. An external server is assumed to check
    /// credentials already and is returned as is.
    ///
    /// Use it for credential checks only: moto 5.2 verifies signatures wrongly when a query
    /// value contains `/` (ListObjectsV2 with `prefix=backups/`), failing correctly signed
    /// requests with `SignatureDoesNotMatch`.
    pub fn start_with_auth() -> Result<S3Server> {
        Self::launch(true)
    }

    /// One server per test binary, started on first use and stopped when the process exits.
    /// Tests sharing it must use their own buckets (see [`crate::unique_name`]).
    pub fn shared() -> &'static S3Server {
        static SHARED: OnceLock<S3Server> = OnceLock::new();
        SHARED.get_or_init(|| S3Server::start().unwrap_or_else(|e| panic!("{e:#}")))
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// Whether requests signed with unknown keys are rejected.
    pub fn enforces_auth(&self) -> bool {
        self.enforces_auth
    }

    /// True when `STOWAGE_TEST_S3_ENDPOINT` named the server instead of a spawned moto.
    pub fn is_external(&self) -> bool {
        self.moto.is_none()
    }

    fn launch(enforce_auth: bool) -> Result<S3Server> {
        if let Some(server) = Self::external()? {
            return Ok(server);
        }
        let moto_bin = find_in_path("moto_server").ok_or_else(|| {
            anyhow!(
                "moto_server not found in PATH; install it with pip install 'moto[server]' \
                 or set STOWAGE_TEST_S3_ENDPOINT to an S3 server"
            )
        })?;
        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            match MotoProcess::spawn(&moto_bin) {
                Ok(moto) => return Self::from_moto(moto, enforce_auth),
                // Another process may take the port between probing and moto binding it.
                Err(e) if format!("{e:#}").contains("Address already in use") => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("moto_server did not start")))
    }

    fn external() -> Result<Option<S3Server>> {
        let Ok(endpoint) = std::env::var("STOWAGE_TEST_S3_ENDPOINT") else {
            return Ok(None);
        };
        let var = |name: &str| {
            std::env::var(name)
                .with_context(|| format!("STOWAGE_TEST_S3_ENDPOINT is set but {name} is not"))
        };
        Ok(Some(S3Server {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            access_key: var("STOWAGE_TEST_S3_ACCESS_KEY")?,
            secret_key: var("STOWAGE_TEST_S3_SECRET_KEY")?,
            region: std::env::var("STOWAGE_TEST_S3_REGION").unwrap_or_else(|_| TEST_REGION.into()),
            enforces_auth: true,
            moto: None,
        }))
    }

    fn from_moto(moto: MotoProcess, enforce_auth: bool) -> Result<S3Server> {
        let (access_key, secret_key) = if enforce_auth {
            let key = moto
                .provision_key()
                .context("enabling authentication in moto")?;
            moto.enforce_auth()
                .context("enabling authentication in moto")?;
            key
        } else {
            (OPEN_ACCESS_KEY.to_string(), OPEN_SECRET_KEY.to_string())
        };
        Ok(S3Server {
            endpoint: format!("http://{}", moto.addr),
            access_key,
            secret_key,
            region: TEST_REGION.to_string(),
            enforces_auth: enforce_auth,
            moto: Some(moto),
        })
    }
}

struct MotoProcess {
    addr: SocketAddr,
    child: Child,
    /// `sh` that kills moto when our end of its stdin closes: the only cleanup that also runs
    /// when the test process exits without dropping (the shared server lives in a static) or
    /// is killed.
    watchdog: Child,
    _watchdog_stdin: ChildStdin,
    _log_dir: tempfile::TempDir,
}

impl MotoProcess {
    fn spawn(moto_bin: &Path) -> Result<MotoProcess> {
        let addr = free_loopback_port()?;
        let log_dir = tempfile::tempdir()?;
        let log_path = log_dir.path().join("moto.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(moto_bin)
            .args(["-H", "127.0.0.1", "-p", &addr.port().to_string()])
            // Auth is switched on at run time after provisioning a key (see enforce_auth).
            .env_remove("INITIAL_NO_AUTH_ACTION_COUNT")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", moto_bin.display()))?;
        let mut watchdog = Command::new("sh")
            .args([
                "-c",
                "read _line; kill \"$0\" 2>/dev/null",
                &child.id().to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the moto watchdog shell")?;
        let watchdog_stdin = watchdog.stdin.take().expect("piped stdin");
        let mut moto = MotoProcess {
            addr,
            child,
            watchdog,
            _watchdog_stdin: watchdog_stdin,
            _log_dir: log_dir,
        };
        moto.wait_ready(&log_path)?;
        Ok(moto)
    }

    fn wait_ready(&mut self, log_path: &Path) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "moto_server exited ({status}) before answering on {}: {}",
                    self.addr,
                    log_tail(log_path)
                );
            }
            if request(self.addr, "GET", "/moto-api/", &[], "").is_ok() {
                return Ok(());
            }
            if started.elapsed() > STARTUP_DEADLINE {
                bail!(
                    "moto_server did not answer on {} within {:?}: {}",
                    self.addr,
                    STARTUP_DEADLINE,
                    log_tail(log_path)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Creates an IAM user allowed everything and returns its key. Runs while moto still
    /// accepts unsigned requests; the fake Authorization header only routes them to IAM.
    fn provision_key(&self) -> Result<(String, String)> {
        let user = "stowage-test";
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
        self.iam(&format!("Action=CreateUser&UserName={user}"))?;
        let created = self.iam(&format!("Action=CreateAccessKey&UserName={user}"))?;
        self.iam(&format!(
            "Action=PutUserPolicy&UserName={user}&PolicyName=all&PolicyDocument={}",
            form_encode(policy)
        ))?;
        let value = |tag| {
            xml_value(&created, tag)
                .map(str::to_string)
                .with_context(|| {
                    format!("no {tag} in moto's CreateAccessKey reply: {created:.300}")
                })
        };
        Ok((value("AccessKeyId")?, value("SecretAccessKey")?))
    }

    fn iam(&self, form: &str) -> Result<String> {
        let auth = "AWS4-HMAC-SHA256 Credential=provision/20250101/us-east-1/iam/aws4_request, \
                    SignedHeaders=host, Signature=0";
        let body = format!("{form}&Version=2010-05-08");
        let headers = [
            ("Authorization", auth),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ];
        let resp = request(self.addr, "POST", "/", &headers, &body)?;
        if resp.status != 200 {
            bail!(
                "IAM {form:.40} returned {}: {:.300}",
                resp.status,
                resp.body
            );
        }
        Ok(resp.body)
    }

    /// From now on every request must be signed by a key moto's IAM knows.
    fn enforce_auth(&self) -> Result<()> {
        let headers = [("Content-Type", "text/plain")];
        let resp = request(self.addr, "POST", "/moto-api/reset-auth", &headers, "0")?;
        if resp.status != 200 {
            bail!(
                "moto reset-auth returned {}: {:.300}",
                resp.status,
                resp.body
            );
        }
        Ok(())
    }
}

impl Drop for MotoProcess {
    fn drop(&mut self) {
        // Watchdog first, so it cannot signal a recycled pid after moto is reaped.
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_loopback_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?)
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    if tail.is_empty() {
        "(no output)".to_string()
    } else {
        format!("moto output:\n{tail}")
    }
}
