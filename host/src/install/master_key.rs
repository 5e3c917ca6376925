//! The cluster master key: repository passwords are derived from it (DESIGN §5), so it must be
//! random, must survive re-installs, and must be kept by the admin.

use std::fmt;

use rand::TryRngCore;
use stowage_api::names::MASTER_KEY_LEN;

use super::InstallError;

#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; MASTER_KEY_LEN]);

impl MasterKey {
    /// 32 bytes straight from the operating system's RNG.
    pub fn generate() -> Result<MasterKey, InstallError> {
        let mut key = [0u8; MASTER_KEY_LEN];
        rand::rngs::OsRng.try_fill_bytes(&mut key).map_err(|e| InstallError::MasterKey(e.to_string()))?;
        Ok(MasterKey(key))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// What the admin must be told when a key was generated for printing (dry run).
pub fn dry_run_notice(namespace: &str) -> String {
    format!(
        "The Secret {namespace}/{secret} above holds a newly generated repository master key. Keep a copy \
         outside this cluster: without it, volume backups cannot be restored on a new cluster.\n\
         If Stowage is already installed in namespace {namespace}, leave that Secret out when applying this \
         output: replacing the existing key makes existing volume backups unreadable.",
        secret = stowage_api::names::MASTER_KEY_SECRET,
    )
}

/// What the admin must be told after an install created the key.
pub fn created_notice(namespace: &str) -> String {
    let secret = stowage_api::names::MASTER_KEY_SECRET;
    format!(
        "Created the repository master key in Secret {namespace}/{secret}. Back it up now and keep it outside \
         this cluster:\n  kubectl -n {namespace} get secret {secret} -o yaml > {secret}.yaml\n\
         Without it, volume backups cannot be restored on a new cluster."
    )
}

/// What the admin is told when an existing key was kept.
pub fn kept_notice(namespace: &str) -> String {
    format!(
        "Kept the existing repository master key in Secret {namespace}/{} (it is never rotated by install).",
        stowage_api::names::MASTER_KEY_SECRET
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_redacted() {
        let a = MasterKey::generate().unwrap();
        let b = MasterKey::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_bytes().len(), 32);
        assert_ne!(a.as_bytes(), &[0u8; 32]);
        assert_eq!(format!("{a:?}"), "MasterKey(<redacted>)");
    }

    #[test]
    fn notices_say_to_keep_the_key() {
        for notice in [dry_run_notice("stowage"), created_notice("stowage")] {
            assert!(notice.contains("stowage-repo-master-key"), "{notice}");
            assert!(notice.contains("cannot be restored on a new cluster"), "{notice}");
        }
    }
}
