//! SCRAM message pieces shared by the server and client sides (RFC 5802 §5, §7).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use rand::RngCore as _;

use super::SaslError;

/// Longest SCRAM message we accept from a peer; real ones are ~200 bytes.
pub(crate) const MAX_SCRAM_MESSAGE: usize = 4096;

/// A fresh nonce: 24 random bytes as base64 (printable, never `,`).
pub(crate) fn new_nonce() -> String {
    let mut b = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut b);
    STANDARD_NO_PAD.encode(b)
}

/// Decodes a `saslname` (`=2C` → `,`, `=3D` → `=`; any other `=` is an error).
pub(crate) fn decode_saslname(s: &str) -> Result<String, SaslError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(SaslError::Malformed("bad '=' escape in SCRAM name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Encodes a `saslname`.
pub(crate) fn encode_saslname(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

/// Splits `k=v,k=v,...` into attributes, checking each is `letter=value`.
pub(crate) fn attributes(msg: &str) -> Result<Vec<(char, &str)>, SaslError> {
    msg.split(',')
        .map(|part| {
            let mut chars = part.chars();
            match (chars.next(), chars.next()) {
                (Some(k), Some('=')) if k.is_ascii_alphabetic() => Ok((k, &part[2..])),
                _ => Err(SaslError::Malformed("SCRAM attribute is not 'x=value'")),
            }
        })
        .collect()
}

/// A nonce must be printable ASCII except `,` (RFC 5802 §7).
pub(crate) fn valid_nonce(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

pub(crate) fn b64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

pub(crate) fn unb64(s: &str) -> Option<Vec<u8>> {
    STANDARD.decode(s).ok()
}

pub(crate) fn xor32(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for i in 0..32 {
        out[i] = a[i] ^ b[i];
    }
    out
}
