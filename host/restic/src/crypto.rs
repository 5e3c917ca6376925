//! restic's authenticated encryption (AES-256-CTR + Poly1305-AES, as rustic_core uses it):
//! a stored object or blob is a 16-byte nonce, the ciphertext and a 16-byte MAC.

use aes256ctr_poly1305aes::aead::{Aead, AeadInPlace};
use aes256ctr_poly1305aes::Aes256CtrPoly1305Aes;
use rand::Rng;
use rustic_core::repofile::MasterKey;

/// Nonce and MAC: what encryption adds to a plaintext.
pub(crate) const OVERHEAD: usize = 32;
/// The nonce before the ciphertext.
pub(crate) const NONCE: usize = 16;

/// A 64-byte restic key (32 bytes of AES key, then Poly1305's k and r): the repository's
/// data key, or the key scrypt derives from a password to open a key file.
#[derive(Clone)]
pub(crate) struct DataKey(aes256ctr_poly1305aes::Key);

impl DataKey {
    pub(crate) fn new(key: &MasterKey) -> Self {
        let mut k = aes256ctr_poly1305aes::Key::default();
        k[0..32].copy_from_slice(&key.encrypt);
        k[32..48].copy_from_slice(&key.mac.k);
        k[48..64].copy_from_slice(&key.mac.r);
        DataKey(k)
    }

    /// From 64 raw bytes in restic's order (a key derived by scrypt).
    pub(crate) fn from_bytes(bytes: &[u8; 64]) -> Self {
        DataKey(aes256ctr_poly1305aes::Key::from(*bytes))
    }

    pub(crate) fn encrypt(&self, plain: &[u8]) -> Vec<u8> {
        let mut nonce = aes256ctr_poly1305aes::aead::Nonce::<Aes256CtrPoly1305Aes>::default();
        rand::rng().fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(plain.len() + OVERHEAD);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = Aes256CtrPoly1305Aes::new(&self.0)
            .encrypt_in_place_detached(&nonce, &[], &mut out[16..])
            .expect("encrypting a buffer of less than 64 GiB does not fail");
        out.extend_from_slice(&tag);
        out
    }

    /// Encrypts `buf[NONCE..]` in place: fills the nonce's room at the start with a random
    /// nonce and appends the MAC (what [`Self::encrypt`] does, without a second buffer).
    pub(crate) fn encrypt_in_place(&self, buf: &mut Vec<u8>) {
        assert!(buf.len() >= NONCE, "room for the nonce");
        let mut nonce = aes256ctr_poly1305aes::aead::Nonce::<Aes256CtrPoly1305Aes>::default();
        rand::rng().fill_bytes(&mut nonce);
        buf[..NONCE].copy_from_slice(&nonce);
        let tag = Aes256CtrPoly1305Aes::new(&self.0)
            .encrypt_in_place_detached(&nonce, &[], &mut buf[NONCE..])
            .expect("encrypting a buffer of less than 64 GiB does not fail");
        buf.extend_from_slice(&tag);
    }

    /// The plaintext, or `None` when the MAC does not match (another key, or damaged data).
    pub(crate) fn decrypt(&self, data: &[u8]) -> Option<Vec<u8>> {
        if data.len() < OVERHEAD {
            return None;
        }
        let nonce =
            aes256ctr_poly1305aes::aead::Nonce::<Aes256CtrPoly1305Aes>::from_slice(&data[..16]);
        Aes256CtrPoly1305Aes::new(&self.0)
            .decrypt(nonce, &data[16..])
            .ok()
    }

    /// Decrypts `sealed` (nonce, ciphertext, MAC) in place; the plaintext is then
    /// `sealed[16..len - 16]`. `false` when the MAC does not match.
    pub(crate) fn decrypt_in_place(&self, sealed: &mut [u8]) -> bool {
        let len = sealed.len();
        if len < OVERHEAD {
            return false;
        }
        let (nonce, rest) = sealed.split_at_mut(16);
        let (body, tag) = rest.split_at_mut(len - OVERHEAD);
        let nonce = aes256ctr_poly1305aes::aead::Nonce::<Aes256CtrPoly1305Aes>::from_slice(nonce);
        let tag = aes256ctr_poly1305aes::aead::Tag::<Aes256CtrPoly1305Aes>::from_slice(tag);
        Aes256CtrPoly1305Aes::new(&self.0)
            .decrypt_in_place_detached(nonce, &[], body, tag)
            .is_ok()
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decrypting_in_place_matches_decrypting_and_checks_the_mac() {
        let key = DataKey::from_bytes(&[3u8; 64]);
        let plain = b"some blob contents".repeat(100);
        let mut sealed = key.encrypt(&plain);
        assert_eq!(key.decrypt(&sealed).unwrap(), plain);
        let mut tampered = sealed.clone();
        assert!(key.decrypt_in_place(&mut sealed));
        assert_eq!(&sealed[16..sealed.len() - 16], &plain[..]);
        tampered[40] ^= 1;
        assert!(!key.decrypt_in_place(&mut tampered));
        assert!(!DataKey::from_bytes(&[4u8; 64]).decrypt_in_place(&mut key.encrypt(&plain)));

        // Encrypting in place gives what decrypts to the plaintext.
        let mut buf = vec![0u8; NONCE];
        buf.extend_from_slice(&plain);
        key.encrypt_in_place(&mut buf);
        assert_eq!(buf.len(), plain.len() + OVERHEAD);
        assert_eq!(key.decrypt(&buf).unwrap(), plain);
    }
}
