//! SHA-256 of up to eight messages at once in the eight 32-bit lanes of AVX2 registers.
//!
//! A backup hashes every chunk; on CPUs without SHA extensions one SHA-256 runs at about 10
//! cycles per byte (ring's AVX code), more than the chunker. SHA-256's rounds depend on each
//! other within a message but not across messages, so eight chunks hashed side by side, one
//! per lane, share each instruction: about four times the throughput on one core. Lanes take
//! the next message as they finish one, so messages of any lengths mix. Without AVX2 (or off
//! x86_64), and on CPUs with SHA extensions, where ring is faster, this is ring, one message
//! after another.
//!
//! Unoptimised builds (tests) use ring too: every intrinsic is a function call there, which
//! made hashing tens of times slower than ring and the test suite minutes longer. The unit test
//! below checks the lanes against ring in any build; `cargo test --release` runs the whole
//! suite through them.

/// The SHA-256 of each message, in order.
pub(crate) fn sha256_many(messages: &[&[u8]]) -> Vec<[u8; 32]> {
    if busy_lanes(messages) >= MIN_BUSY && !cfg!(debug_assertions) && lanes_chosen() {
        return lanes(messages);
    }
    messages.iter().map(|m| one(m)).collect()
}

/// Whether full batches go through the lanes: where the CPU has AVX2 but no SHA extensions.
/// With them ring hashes one message at a time faster than eight lanes do (`sha256_paths`
/// below; BENCHMARKS.md, "SHA-256 by CPU"). `STOWAGE_SHA256=ring` or `=lanes` overrides the
/// choice, to measure both on one machine.
fn lanes_chosen() -> bool {
    static CHOSEN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CHOSEN.get_or_init(|| match std::env::var("STOWAGE_SHA256").as_deref() {
        Ok("ring") => false,
        Ok("lanes") => lanes_available(),
        _ => lanes_available() && !sha_extensions(),
    })
}

/// Whether the CPU has the SHA extensions (SHA-NI), which ring's SHA-256 uses.
fn sha_extensions() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("sha") && std::is_x86_feature_detected!("ssse3")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The share of lane steps that hash data when these messages go through the lanes (longest
/// first): a lane step costs the same busy or idle, and eight busy lanes hash 2.5 times as
/// fast as ring here (64 MiB in 71–86 ms against 192 ms), so below about 0.4 the lanes lose.
/// A few chunks of one large file (about five per 8 MiB region, 0.5 to 8 MiB each) keep a
/// third of the lanes busy: in a backup appending to a 2 GiB file hashing took as long as
/// with ring. Batches of small files, of similar sizes, fill them.
const MIN_BUSY: f64 = 0.6;

fn busy_lanes(messages: &[&[u8]]) -> f64 {
    let mut lens: Vec<u64> = messages.iter().map(|m| m.len() as u64 / 64 + 1).collect();
    lens.sort_unstable_by(|a, b| b.cmp(a));
    let mut lanes = [0u64; 8];
    for len in &lens {
        let least = lanes.iter_mut().min().expect("eight lanes");
        *least += len;
    }
    let steps = lanes.iter().max().copied().unwrap_or(0);
    if steps == 0 {
        return 0.0;
    }
    lens.iter().sum::<u64>() as f64 / (8 * steps) as f64
}

fn lanes_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The lanes' SHA-256 (only called when [`lanes_available`]).
fn lanes(messages: &[&[u8]]) -> Vec<[u8; 32]> {
    #[cfg(target_arch = "x86_64")]
    {
        assert!(lanes_available());
        // SAFETY: AVX2 is present (checked above).
        unsafe { x86::many(messages) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        unreachable!("no SHA-256 lanes off x86_64: {}", messages.len())
    }
}

/// ring's SHA-256 of one message.
pub(crate) fn one(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    digest.as_ref().try_into().expect("32 bytes")
}

const INIT: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// A message as a run of 64-byte blocks: its whole blocks, then its padded tail (one or two
/// blocks: the last bytes, 0x80, zeros, the bit length).
struct Blocks<'a> {
    data: &'a [u8],
    whole: usize,
    tail: [u8; 128],
    blocks: usize,
}

impl<'a> Blocks<'a> {
    fn new(data: &'a [u8]) -> Self {
        let whole = data.len() / 64;
        let rest = &data[whole * 64..];
        let mut tail = [0u8; 128];
        tail[..rest.len()].copy_from_slice(rest);
        tail[rest.len()] = 0x80;
        let tail_blocks = if rest.len() < 56 { 1 } else { 2 };
        let bits = (data.len() as u64) * 8;
        tail[tail_blocks * 64 - 8..tail_blocks * 64].copy_from_slice(&bits.to_be_bytes());
        Blocks {
            data,
            whole,
            tail,
            blocks: whole + tail_blocks,
        }
    }

    fn block(&self, k: usize) -> &[u8] {
        if k < self.whole {
            &self.data[k * 64..k * 64 + 64]
        } else {
            let t = k - self.whole;
            &self.tail[t * 64..t * 64 + 64]
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Blocks, INIT, K};
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn ror<const R: i32, const L: i32>(x: __m256i) -> __m256i {
        _mm256_or_si256(_mm256_srli_epi32::<R>(x), _mm256_slli_epi32::<L>(x))
    }

    #[inline(always)]
    unsafe fn add(a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(a, b)
    }

    #[inline(always)]
    unsafe fn xor3(a: __m256i, b: __m256i, c: __m256i) -> __m256i {
        _mm256_xor_si256(_mm256_xor_si256(a, b), c)
    }

    /// One 64-byte block of each lane's message into the lanes' states.
    #[target_feature(enable = "avx2")]
    unsafe fn compress(state: &mut [__m256i; 8], blocks: [&[u8]; 8]) {
        // Big-endian words: word t of lane l is bytes 4t..4t+4 of lane l's block.
        let swap = _mm256_setr_epi8(
            3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12, 3, 2, 1, 0, 7, 6, 5, 4, 11, 10,
            9, 8, 15, 14, 13, 12,
        );
        let mut w = [_mm256_setzero_si256(); 16];
        for half in 0..2 {
            // Eight rows (lanes) of eight words, transposed into eight words of eight lanes.
            let mut r = [_mm256_setzero_si256(); 8];
            for (l, row) in r.iter_mut().enumerate() {
                let p = blocks[l].as_ptr().add(half * 32) as *const __m256i;
                *row = _mm256_shuffle_epi8(_mm256_loadu_si256(p), swap);
            }
            let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
            let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
            let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
            let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
            let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
            let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
            let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
            let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
            let u0 = _mm256_unpacklo_epi64(t0, t2);
            let u1 = _mm256_unpackhi_epi64(t0, t2);
            let u2 = _mm256_unpacklo_epi64(t1, t3);
            let u3 = _mm256_unpackhi_epi64(t1, t3);
            let u4 = _mm256_unpacklo_epi64(t4, t6);
            let u5 = _mm256_unpackhi_epi64(t4, t6);
            let u6 = _mm256_unpacklo_epi64(t5, t7);
            let u7 = _mm256_unpackhi_epi64(t5, t7);
            let base = half * 8;
            w[base] = _mm256_permute2x128_si256::<0x20>(u0, u4);
            w[base + 1] = _mm256_permute2x128_si256::<0x20>(u1, u5);
            w[base + 2] = _mm256_permute2x128_si256::<0x20>(u2, u6);
            w[base + 3] = _mm256_permute2x128_si256::<0x20>(u3, u7);
            w[base + 4] = _mm256_permute2x128_si256::<0x31>(u0, u4);
            w[base + 5] = _mm256_permute2x128_si256::<0x31>(u1, u5);
            w[base + 6] = _mm256_permute2x128_si256::<0x31>(u2, u6);
            w[base + 7] = _mm256_permute2x128_si256::<0x31>(u3, u7);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
        for t in 0..64 {
            let wt = if t < 16 {
                w[t]
            } else {
                let w15 = w[(t - 15) & 15];
                let w2 = w[(t - 2) & 15];
                let s0 = xor3(ror::<7, 25>(w15), ror::<18, 14>(w15), _mm256_srli_epi32::<3>(w15));
                let s1 = xor3(ror::<17, 15>(w2), ror::<19, 13>(w2), _mm256_srli_epi32::<10>(w2));
                let next = add(add(w[t & 15], s0), add(w[(t - 7) & 15], s1));
                w[t & 15] = next;
                next
            };
            let s1 = xor3(ror::<6, 26>(e), ror::<11, 21>(e), ror::<25, 7>(e));
            let ch = _mm256_xor_si256(_mm256_and_si256(e, f), _mm256_andnot_si256(e, g));
            let k = _mm256_set1_epi32(K[t] as i32);
            let t1 = add(add(add(h, s1), add(ch, k)), wt);
            let s0 = xor3(ror::<2, 30>(a), ror::<13, 19>(a), ror::<22, 10>(a));
            let maj = _mm256_xor_si256(
                _mm256_and_si256(a, b),
                _mm256_and_si256(c, _mm256_xor_si256(a, b)),
            );
            let t2 = add(s0, maj);
            h = g;
            g = f;
            f = e;
            e = add(d, t1);
            d = c;
            c = b;
            b = a;
            a = add(t1, t2);
        }
        for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = add(*s, v);
        }
    }

    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn many(messages: &[&[u8]]) -> Vec<[u8; 32]> {
        let mut out = vec![[0u8; 32]; messages.len()];
        let idle = [0u8; 64];
        // Longest first: lanes then finish close together.
        let mut order: Vec<usize> = (0..messages.len()).collect();
        order.sort_by_key(|&m| std::cmp::Reverse(messages[m].len()));
        // Per lane: which message, its blocks, the next block.
        let mut lanes: [Option<(usize, Blocks<'_>, usize)>; 8] = Default::default();
        let mut next = 0;
        let mut state = [_mm256_setzero_si256(); 8];
        let fresh = |state: &mut [__m256i; 8], lane: usize| {
            let mut words = [[0u32; 8]; 8];
            for (i, s) in state.iter().enumerate() {
                _mm256_storeu_si256(words[i].as_mut_ptr() as *mut __m256i, *s);
            }
            for (i, s) in state.iter_mut().enumerate() {
                words[i][lane] = INIT[i];
                *s = _mm256_loadu_si256(words[i].as_ptr() as *const __m256i);
            }
        };
        loop {
            for (lane, slot) in lanes.iter_mut().enumerate() {
                if slot.is_none() && next < messages.len() {
                    *slot = Some((order[next], Blocks::new(messages[order[next]]), 0));
                    fresh(&mut state, lane);
                    next += 1;
                }
            }
            if lanes.iter().all(Option::is_none) {
                return out;
            }
            let blocks: [&[u8]; 8] = std::array::from_fn(|l| match &lanes[l] {
                Some((_, b, k)) => b.block(*k),
                None => &idle[..],
            });
            compress(&mut state, blocks);
            let mut finished = [false; 8];
            for (l, lane) in lanes.iter_mut().enumerate() {
                if let Some((_, b, k)) = lane {
                    *k += 1;
                    finished[l] = *k == b.blocks;
                }
            }
            if finished.iter().any(|&f| f) {
                let mut words = [[0u32; 8]; 8];
                for (i, s) in state.iter().enumerate() {
                    _mm256_storeu_si256(words[i].as_mut_ptr() as *mut __m256i, *s);
                }
                for l in 0..8 {
                    if finished[l] {
                        let (m, _, _) = lanes[l].take().expect("finished lanes are busy");
                        for i in 0..8 {
                            out[m][i * 4..i * 4 + 4].copy_from_slice(&words[i][l].to_be_bytes());
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_ring_on_messages_of_every_length_mixed() {
        // Lengths around the padding boundaries (55, 56, 63, 64 ...), empty, and long ones,
        // in counts that leave lanes idle and refill them.
        let mut lens: Vec<usize> = (0..200).collect();
        lens.extend([1000, 4095, 4096, 4097, 65_536, 1 << 20, (1 << 20) + 13, 3, 0]);
        let messages: Vec<Vec<u8>> =
            lens.iter().enumerate().map(|(i, &l)| stowage_test_support::noise(l, i as u64)).collect();
        if !lanes_available() {
            eprintln!("!!! no AVX2 on this CPU: the SHA-256 lanes are NOT tested");
            return;
        }
        for count in [1, 2, 7, 8, 9, 17, messages.len()] {
            let refs: Vec<&[u8]> = messages[messages.len() - count..].iter().map(|m| &m[..]).collect();
            let expected: Vec<[u8; 32]> = refs.iter().map(|m| one(m)).collect();
            assert_eq!(lanes(&refs), expected, "{count} messages");
            assert_eq!(sha256_many(&refs), expected, "{count} messages");
        }
        // Eight equal messages fill the lanes; five uneven ones do not.
        let equal: Vec<&[u8]> = vec![&messages[150][..]; 8];
        assert!(busy_lanes(&equal) > 0.99);
        // 0, 40, 80 and 120 bytes and 1 MiB.
        let uneven: Vec<&[u8]> = [0, 40, 80, 120, 205].iter().map(|&i| &messages[i][..]).collect();
        assert!(busy_lanes(&uneven) < MIN_BUSY, "{}", busy_lanes(&uneven));
        // The known digest of "abc".
        assert_eq!(
            crate::crypto::hex(&lanes(&[b"abc", b""])[0]),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// Throughput of ring and of the lanes on full batches of eight equal messages:
    /// `cargo test --release -p stowage-restic --lib sha256_paths -- --ignored --nocapture`
    #[test]
    #[ignore = "a benchmark: run it by name, in release"]
    fn sha256_paths() {
        eprintln!("AVX2: {}, SHA extensions: {}, default: {}", lanes_available(), sha_extensions(),
            if lanes_chosen() { "lanes" } else { "ring" });
        for size in [1 << 10, 4 << 10, 16 << 10, 64 << 10, 512 << 10] {
            let messages: Vec<Vec<u8>> = (0..8).map(|i| stowage_test_support::noise(size, i)).collect();
            let refs: Vec<&[u8]> = messages.iter().map(|m| &m[..]).collect();
            let rounds = (256 << 20) / (8 * size);
            let time = |f: &dyn Fn() -> Vec<[u8; 32]>| {
                let mut best = f64::MAX;
                for _ in 0..5 {
                    let at = std::time::Instant::now();
                    for _ in 0..rounds {
                        std::hint::black_box(f());
                    }
                    best = best.min(at.elapsed().as_secs_f64());
                }
                256.0 / best
            };
            let ring = time(&|| refs.iter().map(|m| one(m)).collect());
            let lanes_rate = if lanes_available() { time(&|| lanes(&refs)) } else { 0.0 };
            eprintln!("8 x {:>4} KiB: ring {ring:7.0} MiB/s, lanes {lanes_rate:7.0} MiB/s, lanes/ring {:.2}",
                size >> 10, lanes_rate / ring);
        }
    }
}
