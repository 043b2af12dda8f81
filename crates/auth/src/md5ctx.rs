//! HMAC-MD5 from precomputed inner/outer MD5 states: what Dovecot's `{CRAM-MD5}` scheme
//! stores. The md-5 crate does not expose its compression function or let a hash resume
//! from a saved state, so the (small, fixed) MD5 block function lives here and is tested
//! against the md-5 crate.

/// MD5's initial state (RFC 1321 §3.3).
pub(crate) const MD5_IV: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

const S: [u32; 64] = [
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9,
    14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10, 15,
    21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
];

const K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
];

fn compress(state: &mut [u32; 4], block: &[u8; 64]) {
    let mut m = [0u32; 16];
    for (i, w) in m.iter_mut().enumerate() {
        *w = u32::from_le_bytes([
            block[4 * i],
            block[4 * i + 1],
            block[4 * i + 2],
            block[4 * i + 3],
        ]);
    }
    let [mut a, mut b, mut c, mut d] = *state;
    for i in 0..64 {
        let (f, g) = match i / 16 {
            0 => ((b & c) | (!b & d), i),
            1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
            2 => (b ^ c ^ d, (3 * i + 5) % 16),
            _ => (c ^ (b | !d), (7 * i) % 16),
        };
        let tmp = d;
        d = c;
        c = b;
        b = b.wrapping_add(
            a.wrapping_add(f)
                .wrapping_add(K[i])
                .wrapping_add(m[g])
                .rotate_left(S[i]),
        );
        a = tmp;
    }
    state[0] = state[0].wrapping_add(a);
    state[1] = state[1].wrapping_add(b);
    state[2] = state[2].wrapping_add(c);
    state[3] = state[3].wrapping_add(d);
}

/// Finishes an MD5 computation that already absorbed `prefix_blocks` whole 64-byte
/// blocks into `state`, with `data` as the rest of the message.
pub(crate) fn md5_resume(mut state: [u32; 4], prefix_blocks: u64, data: &[u8]) -> [u8; 16] {
    let total_bits = (prefix_blocks * 64 + data.len() as u64).wrapping_mul(8);
    let mut chunks = data.chunks_exact(64);
    for block in &mut chunks {
        let mut b = [0u8; 64];
        b.copy_from_slice(block);
        compress(&mut state, &b);
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let tail_len = if rest.len() < 56 { 64 } else { 128 };
    tail[tail_len - 8..tail_len].copy_from_slice(&total_bits.to_le_bytes());
    for block in tail[..tail_len].chunks_exact(64) {
        let mut b = [0u8; 64];
        b.copy_from_slice(block);
        compress(&mut state, &b);
    }
    let mut out = [0u8; 16];
    for (i, w) in state.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// The CRAM-MD5 context of a secret: MD5 states after absorbing `key ^ opad` (outer)
/// and `key ^ ipad` (inner), in that order, as Dovecot's `hmac_md5_get_cram_context`
/// lays them out (eight little-endian 32-bit words).
pub(crate) fn cram_context(secret: &[u8]) -> [u8; 32] {
    use md5::Digest;
    let mut key = [0u8; 64];
    if secret.len() > 64 {
        key[..16].copy_from_slice(&md5::Md5::digest(secret));
    } else {
        key[..secret.len()].copy_from_slice(secret);
    }
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for i in 0..64 {
        ipad[i] ^= key[i];
        opad[i] ^= key[i];
    }
    let mut inner = MD5_IV;
    compress(&mut inner, &ipad);
    let mut outer = MD5_IV;
    compress(&mut outer, &opad);
    let mut out = [0u8; 32];
    for (i, w) in outer.iter().chain(inner.iter()).enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// HMAC-MD5 of `message` from a CRAM-MD5 context made by [`cram_context`].
pub(crate) fn hmac_md5_from_context(context: &[u8; 32], message: &[u8]) -> [u8; 16] {
    let word = |i: usize| {
        u32::from_le_bytes([
            context[4 * i],
            context[4 * i + 1],
            context[4 * i + 2],
            context[4 * i + 3],
        ])
    };
    let outer = [word(0), word(1), word(2), word(3)];
    let inner = [word(4), word(5), word(6), word(7)];
    let inner_digest = md5_resume(inner, 1, message);
    md5_resume(outer, 1, &inner_digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use md5::Digest;

    #[test]
    fn resume_from_iv_matches_md5_crate() {
        for len in [0usize, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            assert_eq!(
                md5_resume(MD5_IV, 0, &data)[..],
                md5::Md5::digest(&data)[..],
                "len {len}"
            );
        }
    }

    #[test]
    fn context_hmac_matches_hmac_crate() {
        for secret in [&b""[..], b"tanstaaftanstaaf", &[0xAB; 64], &[0x11; 100]] {
            let ctx = cram_context(secret);
            let msg = b"<1896.697170952@postoffice.reston.mci.net>";
            let mut mac = Hmac::<md5::Md5>::new_from_slice(secret).unwrap();
            mac.update(msg);
            assert_eq!(
                hmac_md5_from_context(&ctx, msg)[..],
                mac.finalize().into_bytes()[..]
            );
        }
    }
}
