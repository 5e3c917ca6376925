//! Repository passwords (DESIGN §5): never a static shared password. Each restic repository's
//! password is derived with HKDF-SHA256 from the cluster's master key (the Secret `stowage
//! install` creates) and the repository's identity — where it lives, not which cluster made it —
//! so a new cluster given the same master key opens old repositories, and one leaked repository
//! password opens nothing else.

use hkdf::Hkdf;
use sha2::Sha256;

use crate::names::MASTER_KEY_LEN;
use crate::ApiError;

/// Domain separation: a key derived here is never the same as one derived for another purpose.
const INFO_PREFIX: &[u8] = b"stowage.io/restic-repository-password/v1\0";

/// What names a repository across clusters: provider, bucket, prefix and volume namespace.
/// (The storage location's object name is left out on purpose: a migration target may call the
/// same bucket something else.)
pub fn repository_identity(provider: &str, bucket: &str, prefix: Option<&str>, namespace: &str) -> String {
    let prefix = prefix.map(|p| p.trim_matches('/')).filter(|p| !p.is_empty());
    match prefix {
        Some(p) => format!("{provider}:{bucket}/{p}/restic/{namespace}"),
        None => format!("{provider}:{bucket}/restic/{namespace}"),
    }
}

/// The password of the repository `identity`, as 64 hex characters.
pub fn repository_password(master_key: &[u8], identity: &str) -> Result<String, ApiError> {
    if master_key.len() != MASTER_KEY_LEN {
        return Err(ApiError::InvalidMasterKey { len: master_key.len() });
    }
    let hk = Hkdf::<Sha256>::new(None, master_key);
    let mut info = INFO_PREFIX.to_vec();
    info.extend_from_slice(identity.as_bytes());
    let mut okm = [0u8; 32];
    hk.expand(&info, &mut okm).map_err(|_| ApiError::InvalidMasterKey { len: master_key.len() })?;
    Ok(okm.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn hkdf_matches_rfc5869_test_case_3() {
        // RFC 5869 A.3: SHA-256, empty salt and info.
        let ikm = hex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b");
        let mut okm = [0u8; 42];
        Hkdf::<Sha256>::new(None, &ikm).expand(&[], &mut okm).unwrap();
        assert_eq!(
            okm.to_vec(),
            hex("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8")
        );
    }

    #[test]
    fn passwords_are_stable_per_repository_and_differ_across_them() {
        let key = [7u8; 32];
        let a = repository_identity("aws", "velero", Some("/cluster-a/"), "nginx-example");
        assert_eq!(a, "aws:velero/cluster-a/restic/nginx-example");
        let b = repository_identity("aws", "velero", Some("cluster-a"), "other");
        let pa = repository_password(&key, &a).unwrap();
        assert_eq!(pa.len(), 64);
        assert_eq!(pa, repository_password(&key, &a).unwrap(), "same key and identity, same password");
        assert_ne!(pa, repository_password(&key, &b).unwrap(), "another namespace, another password");
        assert_ne!(pa, repository_password(&[8u8; 32], &a).unwrap(), "another master key, another password");
        assert_eq!(repository_identity("aws", "velero", None, "ns"), repository_identity("aws", "velero", Some("/"), "ns"));
    }

    #[test]
    fn a_master_key_of_the_wrong_size_is_refused() {
        let err = repository_password(&[1u8; 16], "aws:b/restic/ns").unwrap_err().to_string();
        assert!(err.contains("16 bytes") && err.contains("stowage-repo-master-key"), "{err}");
    }
}
