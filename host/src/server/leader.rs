//! Leader election through a `coordination.k8s.io/v1` Lease (DESIGN §9): every replica of the
//! server serves health and metrics; only the holder of the Lease runs the controllers.
//!
//! Written here rather than taken from a crate: it is the client-go algorithm in ~150 lines on
//! the kube client Stowage already has, and it must stop the controllers before the lease can
//! expire — a rule the crates leave to the caller. A candidate takes the Lease when it is free,
//! its own, or was not renewed within its duration as this process observed it (its own clock
//! only: no comparison of clocks across machines); every write carries the Lease's
//! resourceVersion, so two candidates never both win. The leader renews every retry period; if
//! it has not renewed for the renew deadline (shorter than the duration) or sees another holder,
//! it stops leading at once, before any other candidate may take over.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::Client;

/// The Lease's name, in the server's namespace.
pub const LEASE_NAME: &str = "stowage-server";

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    /// Who this process is (the pod name).
    pub identity: String,
    /// How long a Lease holds without renewal before another candidate may take it.
    pub duration: Duration,
    /// How long the leader keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// How often candidates try and the leader renews.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// The settings must leave the leader time to stop before its lease can expire.
    pub fn check(&self) -> Result<(), String> {
        if self.renew_deadline >= self.duration {
            return Err(format!(
                "--lease-renew-deadline ({:?}) must be shorter than --lease-duration ({:?}): a leader must stop before another may start",
                self.renew_deadline, self.duration
            ));
        }
        if self.retry_period >= self.renew_deadline {
            return Err(format!("--lease-retry-period ({:?}) must be shorter than --lease-renew-deadline ({:?})", self.retry_period, self.renew_deadline));
        }
        Ok(())
    }
}

/// What a candidate last saw of the Lease, and when (on its own clock).
struct Observed {
    holder: String,
    renew: Option<MicroTime>,
    at: Instant,
}

pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<Observed>,
}

/// Why leading ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Lost {
    /// Another candidate holds the Lease.
    TakenBy(String),
    /// No renewal succeeded within the renew deadline.
    NotRenewed(Duration),
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::TakenBy(holder) => write!(f, "the Lease is now held by {holder}"),
            Lost::NotRenewed(d) => write!(f, "the Lease could not be renewed for {}s", d.as_secs()),
        }
    }
}

impl Elector {
    pub fn new(client: Client, config: LeaseConfig) -> Elector {
        Elector { api: Api::namespaced(client, &config.namespace), config, observed: None }
    }

    /// Waits until this process holds the Lease.
    pub async fn acquire(&mut self) {
        let mut said = false;
        loop {
            match self.try_hold().await {
                Ok(true) => return,
                Ok(false) => {
                    if !said {
                        let holder = self.observed.as_ref().map(|o| o.holder.clone()).unwrap_or_default();
                        tracing::info!("standing by: {holder} leads (Lease {}/{LEASE_NAME})", self.config.namespace);
                        said = true;
                    }
                }
                Err(e) => tracing::warn!("trying for the Lease {}/{LEASE_NAME}: {e}", self.config.namespace),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Renews the Lease until leading ends, and says why.
    pub async fn keep(&mut self) -> Lost {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            let left = self.config.renew_deadline.saturating_sub(renewed.elapsed());
            match tokio::time::timeout(left, self.try_hold()).await {
                Ok(Ok(true)) => renewed = Instant::now(),
                Ok(Ok(false)) => {
                    let holder = self.observed.as_ref().map(|o| o.holder.clone()).unwrap_or_default();
                    return Lost::TakenBy(holder);
                }
                Ok(Err(e)) => tracing::warn!("renewing the Lease {}/{LEASE_NAME}: {e}", self.config.namespace),
                Err(_) => {}
            }
            if renewed.elapsed() >= self.config.renew_deadline {
                return Lost::NotRenewed(self.config.renew_deadline);
            }
        }
    }

    /// Gives the Lease up (when this process holds it), so a standby takes over at its next
    /// try instead of waiting for the Lease to run out: a rolling update hands over at once.
    pub async fn release(&mut self) {
        let result = async {
            let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else { return Ok(()) };
            let mut spec = lease.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            lease.spec = Some(spec);
            self.api.replace(LEASE_NAME, &PostParams::default(), &lease).await.map(drop)
        }
        .await;
        match result {
            Ok(()) => tracing::info!("gave up the Lease {}/{LEASE_NAME}", self.config.namespace),
            Err(e) => tracing::warn!("giving up the Lease {}/{LEASE_NAME}: {e}; a standby takes over when it runs out", self.config.namespace),
        }
    }

    /// One attempt to take or renew the Lease; true when this process holds it afterwards.
    async fn try_hold(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let me = self.config.identity.clone();
        let duration = i32::try_from(self.config.duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.into()),
                    namespace: Some(self.config.namespace.clone()),
                    annotations: Some([(VERSION_ANNOTATION.to_string(), SERVER_VERSION.to_string())].into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let changed = self.observed.as_ref().is_none_or(|o| o.holder != holder || o.renew != spec.renew_time);
        if changed {
            self.observed = Some(Observed { holder: holder.clone(), renew: spec.renew_time.clone(), at: Instant::now() });
        }
        let seen = self.observed.as_ref().map(|o| o.at).unwrap_or_else(Instant::now);
        let held_by_other = !holder.is_empty() && holder != me;
        let their_duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(duration).max(1) as u64);
        if held_by_other && seen.elapsed() < their_duration {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(holder != me);
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(me.clone()),
            lease_duration_seconds: Some(duration),
            acquire_time: if holder == me { spec.acquire_time } else { Some(now.clone()) },
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..spec
        });
        lease.metadata.annotations.get_or_insert_default().insert(VERSION_ANNOTATION.into(), SERVER_VERSION.into());
        // The resourceVersion read above makes this a compare-and-swap.
        match self.api.replace(LEASE_NAME, &PostParams::default(), &lease).await {
            Ok(written) => {
                let spec = written.spec.unwrap_or_default();
                self.observed = Some(Observed { holder: me, renew: spec.renew_time, at: Instant::now() });
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The Lease's holder, for `stowage version`.
pub async fn holder(client: Client, namespace: &str) -> Result<Option<Holder>, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let Some(lease) = api.get_opt(LEASE_NAME).await? else { return Ok(None) };
    let version = lease.metadata.annotations.as_ref().and_then(|a| a.get(VERSION_ANNOTATION)).cloned();
    Ok(lease.spec.and_then(|s| s.holder_identity).filter(|h| !h.is_empty()).map(|identity| Holder { identity, version }))
}

/// Which replica holds the Lease, and the version it wrote when it took or last renewed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub identity: String,
    pub version: Option<String>,
}

/// The Lease annotation where the holding server writes its version (`stowage version` reads it).
pub const VERSION_ANNOTATION: &str = "stowage.io/server-version";
const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// This process's identity: the pod name from the downward API (`POD_NAME`), else host and pid.
pub fn identity() -> String {
    if let Some(name) = std::env::var("POD_NAME").ok().filter(|n| !n.is_empty()) {
        return name;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "stowage".into());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(duration: u64, deadline: u64, retry: u64) -> LeaseConfig {
        LeaseConfig {
            namespace: "stowage".into(),
            identity: "a".into(),
            duration: Duration::from_secs(duration),
            renew_deadline: Duration::from_secs(deadline),
            retry_period: Duration::from_secs(retry),
        }
    }

    #[test]
    fn a_leader_must_be_able_to_stop_before_its_lease_expires() {
        config(15, 10, 2).check().unwrap();
        assert!(config(10, 10, 2).check().unwrap_err().contains("must be shorter than --lease-duration"));
        assert!(config(15, 10, 10).check().unwrap_err().contains("--lease-retry-period"));
    }
}
