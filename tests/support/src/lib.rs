//! Shared fixtures for Stowage's test suites.
//!
//! - [`S3Server`]: a real S3-compatible server on loopback (moto, or an external server named by
//!   `STOWAGE_TEST_S3_ENDPOINT`), optionally with request signing enforced.
//! - [`unique_name`]: names for buckets and objects that do not collide between tests sharing a
//!   server.
//! - [`FaultProxy`]: a loopback TCP proxy that can be switched at run time to refuse, delay or
//!   answer 5xx, for network fault tests.
//! - [`noise`]: deterministic, poorly compressible bytes for volume and archive tests.
//!
//! This crate deliberately does not depend on `stowage-storage`, so that crate can use it as a
//! dev-dependency; tests create buckets through `stowage_storage::S3Store::create_bucket`.

mod fault_proxy;
mod loopback_http;
mod s3_server;

pub use fault_proxy::{FaultProxy, Mode as FaultMode};
pub use s3_server::{S3Server, TEST_REGION};

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A name unique within this machine for a while: `<stem>-<pid>-<counter>-<time>`, lowercase
/// and at most 63 characters, so it is also a valid S3 bucket name when `stem` is one.
pub fn unique_name(stem: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 1_000_000)
        .unwrap_or(0);
    let suffix = format!("-{}-{n}-{t}", std::process::id());
    let keep = 63usize.saturating_sub(suffix.len()).min(stem.len());
    format!("{}{suffix}", stem[..keep].to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_are_valid_bucket_names() {
        let a = unique_name("stowage-test");
        let b = unique_name("stowage-test");
        assert_ne!(a, b);
        for name in [a, b, unique_name(&"x".repeat(100))] {
            assert!(name.len() <= 63, "{name}");
            assert!(name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        }
    }
}

/// `len` deterministic, poorly compressible bytes (xorshift), the same for the same `seed`:
/// data whose stored size measures what a backup really added.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
