//! Repository key files (`keys/<id>`): the repository's master key, encrypted with a key that
//! scrypt derives from the repository password. Stowage writes its own key files, with a
//! small scrypt cost, in restic's format; the `restic` CLI opens them like its own.
//!
//! # Why a small scrypt cost is safe here
//!
//! scrypt's cost only matters against someone who has the key file (read access to the
//! bucket) and guesses passwords: each guess costs one derivation. Stowage's repository
//! passwords are never chosen by people: each is 256 bits of HKDF-SHA256 output from the
//! cluster's master key Secret (`stowage-api`'s `repository_password`). Guessing one takes
//! about 2^255 attempts whatever each attempt costs, so a memory-hard derivation adds nothing
//! to that; it would only protect low-entropy passwords, which these are not. What protects
//! repositories is the master key Secret, and anyone holding it derives the password directly.
//!
//! rustic_core writes key files with N=2^17, r=8 (128 MiB and ~0.5 s per derivation, at every
//! open of a repository), and restic calibrates its own keys to up to 60 MiB. Ours use
//! N=2^12, r=8, p=1: 4 MiB and a few milliseconds, small next to what any operation needs.
//! (restic accepts any valid scrypt parameters in key files: N a power of two above 1.)
//!
//! Keys added by people (`restic key add`) keep the cost restic gives them; we never touch key
//! files our password does not open.
//!
//! # Opening
//!
//! [`find_master_key`] tries the key files our password may open cheapest first, so a cheap
//! key never waits behind a user's expensive one. An older repository whose key our password
//! opens only at a high cost (one initialised by rustic_core or by `restic init`) gets a cheap
//! key for the same master key and password, and, once that reads back correctly, loses the
//! expensive one ([`replace_expensive_key`]): the next open is cheap.

use crate::backend::StoreBackend;
use crate::crypto::{hex, DataKey};
use rand::Rng;
use rustic_core::jiff::Zoned;
use rustic_core::repofile::{KeyFile, MasterKey};
use rustic_core::{FileType, Id, ReadBackend, RusticResult, WriteBackend};
use sha2::{Digest, Sha256};

/// scrypt's parameters for the key files Stowage writes: N = 2^12, r = 8, p = 1 (4 MiB).
pub(crate) const LOG_N: u8 = 12;
pub(crate) const R: u32 = 8;
pub(crate) const P: u32 = 1;

/// scrypt's memory for parameters N and r, in bytes: the cost a key file asks for.
pub(crate) fn cost(key: &KeyFile) -> u64 {
    128 * u64::from(key.n) * u64::from(key.r) * u64::from(key.p.max(1))
}

fn cheap_cost() -> u64 {
    128 * (1u64 << LOG_N) * u64::from(R) * u64::from(P)
}

/// Whether a key file asks for more than Stowage's own scrypt cost.
pub(crate) fn is_expensive(key: &KeyFile) -> bool {
    cost(key) > cheap_cost()
}

/// A new key file holding `master`, opened by `password` with Stowage's scrypt cost: its id
/// (the SHA-256 of its bytes, as restic names key files) and its bytes.
pub(crate) fn new_key_file(master: &MasterKey, password: &str) -> (String, Vec<u8>) {
    let mut salt = vec![0u8; 64];
    rand::rng().fill_bytes(&mut salt);
    let params = scrypt::Params::new(LOG_N, R, P).expect("valid scrypt parameters");
    let mut derived = [0u8; 64];
    scrypt::scrypt(password.as_bytes(), &salt, &params, &mut derived)
        .expect("64 bytes is a valid scrypt output length");
    let json = serde_json::to_vec(master).expect("a master key serialises");
    let file = KeyFile {
        hostname: Some(gethostname::gethostname().to_string_lossy().into_owned()),
        username: Some("stowage".into()),
        created: Some(Zoned::now()),
        kdf: "scrypt".into(),
        n: 1 << LOG_N,
        r: R,
        p: P,
        data: DataKey::from_bytes(&derived).encrypt(&json),
        salt,
    };
    let bytes = serde_json::to_vec(&file).expect("a key file serialises");
    (hex(&Sha256::digest(&bytes)), bytes)
}

/// Why a key file does not give a master key.
#[derive(Debug)]
pub(crate) enum Unusable {
    /// Not a key file we can read (not JSON, or a KDF or parameters restic does not write).
    Invalid(String),
    /// The password does not open it.
    OtherPassword,
}

/// The master key in key file `bytes`, if `password` opens it.
pub(crate) fn open_key_file(
    bytes: &[u8],
    password: &str,
) -> Result<(KeyFile, MasterKey), Unusable> {
    let file: KeyFile = serde_json::from_slice(bytes)
        .map_err(|e| Unusable::Invalid(format!("not a key file: {e}")))?;
    if file.kdf != "scrypt" {
        return Err(Unusable::Invalid(format!("unknown KDF {:?}", file.kdf)));
    }
    if !file.n.is_power_of_two() || file.n < 2 {
        return Err(Unusable::Invalid(format!(
            "scrypt N={} is not a power of two",
            file.n
        )));
    }
    let log_n = u8::try_from(file.n.trailing_zeros()).expect("at most 31");
    let params = scrypt::Params::new(log_n, file.r, file.p)
        .map_err(|e| Unusable::Invalid(format!("scrypt parameters: {e}")))?;
    let mut derived = [0u8; 64];
    scrypt::scrypt(password.as_bytes(), &file.salt, &params, &mut derived)
        .expect("64 bytes is a valid scrypt output length");
    let json = DataKey::from_bytes(&derived)
        .decrypt(&file.data)
        .ok_or(Unusable::OtherPassword)?;
    let master: MasterKey = serde_json::from_slice(&json)
        .map_err(|e| Unusable::Invalid(format!("no master key inside: {e}")))?;
    Ok((file, master))
}

/// A key file the password opened.
pub(crate) struct Opened {
    pub(crate) id: Id,
    pub(crate) file: KeyFile,
    pub(crate) master: MasterKey,
}

/// The key files of the repository, parsed, cheapest first (unreadable ones are skipped).
pub(crate) fn key_files(backend: &StoreBackend) -> RusticResult<Vec<(Id, Vec<u8>)>> {
    let mut files = Vec::new();
    for (id, _) in backend.list_with_size(FileType::Key)? {
        let bytes = backend.read_full(FileType::Key, &id)?;
        match serde_json::from_slice::<KeyFile>(&bytes) {
            Ok(file) => files.push((cost(&file), id, bytes.to_vec())),
            Err(e) => tracing::debug!("skipping key file {id}: {e}"),
        }
    }
    files.sort_by_key(|(cost, id, _)| (*cost, *id));
    Ok(files
        .into_iter()
        .map(|(_, id, bytes)| (id, bytes))
        .collect())
}

/// Tries the key files `password` opens, cheapest first, until `accept` takes one's master
/// key (it opens the config with it: a key left by an initialisation that never wrote its
/// config opens, but holds another master key). `Ok(None)`: the password opens none.
pub(crate) fn find_master_key<T, E>(
    keys: &[(Id, Vec<u8>)],
    password: &str,
    mut accept: impl FnMut(&MasterKey) -> Result<Option<T>, E>,
) -> Result<Option<(Opened, T)>, E> {
    for (id, bytes) in keys {
        match open_key_file(bytes, password) {
            Ok((file, master)) => {
                if let Some(value) = accept(&master)? {
                    let opened = Opened {
                        id: *id,
                        file,
                        master,
                    };
                    return Ok(Some((opened, value)));
                }
                tracing::debug!("key file {id} opens, but its master key does not open the config");
            }
            Err(Unusable::OtherPassword) => {}
            Err(Unusable::Invalid(why)) => tracing::debug!("skipping key file {id}: {why}"),
        }
    }
    Ok(None)
}

/// Gives an expensive key our password opened a cheap replacement: writes a cheap key file
/// for the same master key and password, reads it back and opens it, and only then removes
/// the expensive one. Any failure leaves the expensive key in place (and is logged): the
/// repository opens as before, only at the old cost.
pub(crate) fn replace_expensive_key(
    backend: &StoreBackend,
    old: &Opened,
    password: &str,
    repo: &str,
) {
    let (new_hex, bytes) = new_key_file(&old.master, password);
    let result = (|| -> Result<Id, String> {
        let new_id: Id = new_hex.parse().map_err(|e| format!("key id: {e}"))?;
        backend
            .write_bytes(FileType::Key, &new_id, false, bytes.into())
            .map_err(|e| e.display_log())?;
        let back = backend
            .read_full(FileType::Key, &new_id)
            .map_err(|e| e.display_log())?;
        let (_, master) = open_key_file(&back, password)
            .map_err(|e| format!("the new key file does not open: {e:?}"))?;
        if master.encrypt != old.master.encrypt || master.mac.k != old.master.mac.k {
            return Err("the new key file holds another master key".into());
        }
        Ok(new_id)
    })();
    match result {
        Ok(new_id) => match backend.remove(FileType::Key, &old.id, false) {
            Ok(()) => tracing::info!(
                "restic repository {repo}: replaced key {} (scrypt N={}, r={}) with key {new_id} \
                 (N={}, r={R}): opening it no longer needs {} MiB",
                old.id,
                old.file.n,
                old.file.r,
                1u32 << LOG_N,
                cost(&old.file) >> 20,
            ),
            Err(e) => tracing::warn!(
                "restic repository {repo}: added the cheaper key {new_id} but could not remove \
                 the expensive key {}: {}",
                old.id,
                e.display_log()
            ),
        },
        Err(e) => tracing::warn!(
            "restic repository {repo}: could not add a cheaper key next to key {} (scrypt N={}): \
             {e}; it keeps opening with that key",
            old.id,
            old.file.n
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_key_files_are_cheap_named_by_their_hash_and_open_with_the_password_only() {
        let master = MasterKey::new();
        let (id, bytes) = new_key_file(&master, "pw");
        assert_eq!(id, hex(&Sha256::digest(&bytes)));
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["kdf"], "scrypt");
        assert_eq!(json["N"], 4096);
        assert_eq!(json["r"], 8);
        assert_eq!(json["p"], 1);
        assert_eq!(
            json["salt"].as_str().unwrap().len(),
            88,
            "64 bytes of salt, base64"
        );

        let (file, opened) = open_key_file(&bytes, "pw").unwrap();
        assert!(!is_expensive(&file));
        assert_eq!(opened.encrypt, master.encrypt);
        assert_eq!(opened.mac.k, master.mac.k);
        assert_eq!(opened.mac.r, master.mac.r);
        assert!(matches!(
            open_key_file(&bytes, "other"),
            Err(Unusable::OtherPassword)
        ));
        assert!(matches!(
            open_key_file(b"{}", "pw"),
            Err(Unusable::Invalid(_))
        ));

        // rustic_core's own key files are what we replace.
        let mut expensive = file;
        expensive.n = 1 << 17;
        assert!(is_expensive(&expensive));
    }
}
