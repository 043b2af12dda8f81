//! SASL line framing for `AUTH` (RFC 5034), both sides. The mechanisms themselves
//! (PLAIN, SCRAM, ...) live elsewhere; this module only moves their bytes on and off
//! the wire.
//!
//! The exchange after `AUTH mech [initial-response]`:
//! - the server sends challenges as `+ <base64>` CRLF ([`encode_challenge`]);
//! - the client answers each with one line of base64 ([`encode_response`]), or `*` to
//!   cancel ([`encode_cancel`]); the server decodes it with [`decode_response`];
//! - the initial response on the `AUTH` line is base64, or `=` for an empty one
//!   ([`encode_initial_response`] / [`decode_initial_response`]).
//!
//! Everything is bounded: a response line longer than [`MAX_SASL_LINE`] octets (line
//! end excluded) is refused before decoding, so a server sets its
//! [`LineFramer`](crate::framer::LineFramer) to `MAX_SASL_LINE + 2` during an exchange.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// The longest SASL line (a client response or a server challenge), in octets without
/// CRLF. Large enough for OAuth bearer tokens (which run to a few kilobytes), small
/// enough to bound memory per session.
pub const MAX_SASL_LINE: usize = 16 * 1024;

/// The longest decoded SASL payload that fits in [`MAX_SASL_LINE`].
pub const MAX_SASL_PAYLOAD: usize = MAX_SASL_LINE / 4 * 3;

/// Standard base64 (RFC 4648 §4). Padding may be left out: a few clients and servers
/// do, and the meaning is unambiguous. Anything else (whitespace, URL-safe letters,
/// non-zero trailing bits) is an error.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A decoded client response line.
#[derive(Clone, PartialEq, Eq)]
pub enum SaslResponse {
    /// The decoded bytes (possibly empty).
    Data(Vec<u8>),
    /// `*`: the client cancelled the exchange (the server answers `-ERR`).
    Cancel,
}

impl fmt::Debug for SaslResponse {
    // Responses carry passwords and tokens: never print the bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SaslResponse::Data(d) => write!(f, "Data(<{} bytes redacted>)", d.len()),
            SaslResponse::Cancel => f.write_str("Cancel"),
        }
    }
}

/// Why a SASL line could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SaslError {
    /// Not valid base64.
    InvalidBase64,
    /// Longer than [`MAX_SASL_LINE`].
    TooLong,
    /// A server line that is not a `+ ` continuation.
    NotAChallenge,
}

impl SaslError {
    /// The text that follows `-ERR ` when the server refuses the exchange for this.
    pub fn wire_text(self) -> &'static str {
        match self {
            SaslError::InvalidBase64 => "Invalid base64 data in SASL response",
            SaslError::TooLong => "SASL response too long",
            SaslError::NotAChallenge => "Expected a SASL continuation",
        }
    }
}

impl fmt::Display for SaslError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.wire_text())
    }
}

impl std::error::Error for SaslError {}

fn decode(text: &[u8]) -> Result<Vec<u8>, SaslError> {
    if text.len() > MAX_SASL_LINE {
        return Err(SaslError::TooLong);
    }
    B64.decode(text).map_err(|_| SaslError::InvalidBase64)
}

// ---- server side ----

/// Server: decodes one client response line (without CRLF) sent during an exchange.
/// `*` cancels; an empty line (or `=`, which some clients send) is an empty response.
pub fn decode_response(line: &[u8]) -> Result<SaslResponse, SaslError> {
    match line {
        b"*" => Ok(SaslResponse::Cancel),
        b"=" => Ok(SaslResponse::Data(Vec::new())),
        _ => decode(line).map(SaslResponse::Data),
    }
}

/// Server: decodes the initial response from the `AUTH` line: `=` is an empty
/// response, anything else must be base64. (`*` is not meaningful here and fails as
/// invalid base64.)
pub fn decode_initial_response(arg: &str) -> Result<Vec<u8>, SaslError> {
    if arg == "=" {
        return Ok(Vec::new());
    }
    decode(arg.as_bytes())
}

/// Server: appends the challenge line `+ <base64>` CRLF (`+ ` CRLF when empty).
pub fn encode_challenge(challenge: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"+ ");
    encode_into(challenge, out);
    out.extend_from_slice(b"\r\n");
}

fn encode_into(data: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(
        start + base64::encoded_len(data.len(), true).unwrap_or(0),
        0,
    );
    // The buffer was sized by the same function the encoder uses, so this cannot fail.
    let written = B64.encode_slice(data, &mut out[start..]).unwrap_or(0);
    out.truncate(start + written);
}

// ---- client side ----

/// Client: appends one response line (base64 of `data`, CRLF; an empty line when
/// `data` is empty).
pub fn encode_response(data: &[u8], out: &mut Vec<u8>) {
    encode_into(data, out);
    out.extend_from_slice(b"\r\n");
}

/// Client: appends the cancel line `*` CRLF.
pub fn encode_cancel(out: &mut Vec<u8>) {
    out.extend_from_slice(b"*\r\n");
}

/// Client: the initial-response argument for the `AUTH` line: base64, or `=` when
/// empty. Use [`initial_response_fits`] first: if the line would pass 255 octets the
/// client must leave the initial response out (RFC 5034 §4).
pub fn encode_initial_response(data: &[u8]) -> String {
    if data.is_empty() {
        "=".to_owned()
    } else {
        B64.encode(data)
    }
}

/// Client: whether `AUTH <mechanism> <initial-response>` CRLF fits the 255-octet
/// command limit (RFC 2449 §4, RFC 5034 §4).
pub fn initial_response_fits(mechanism: &str, data: &[u8]) -> bool {
    let ir = if data.is_empty() {
        1
    } else {
        base64::encoded_len(data.len(), true).unwrap_or(usize::MAX)
    };
    "AUTH "
        .len()
        .saturating_add(mechanism.len())
        .saturating_add(1)
        .saturating_add(ir)
        .saturating_add(2)
        <= crate::MAX_COMMAND_LINE
}

/// Client: decodes a server challenge line (without CRLF): `+ <base64>`, or a bare `+`
/// (some servers omit the space when the challenge is empty).
pub fn decode_challenge(line: &[u8]) -> Result<Vec<u8>, SaslError> {
    match line {
        b"+" => Ok(Vec::new()),
        [b'+', b' ', payload @ ..] => decode_challenge_payload(payload),
        _ => Err(SaslError::NotAChallenge),
    }
}

/// Client: decodes the payload of a continuation as
/// [`ServerLine::Continuation`](crate::response::ServerLine::Continuation) keeps it.
/// Trailing spaces (which some servers send) are ignored.
pub fn decode_challenge_payload(payload: &[u8]) -> Result<Vec<u8>, SaslError> {
    let mut p = payload;
    while let [head @ .., b' '] = p {
        p = head;
    }
    decode(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_side() {
        assert_eq!(decode_response(b"*"), Ok(SaslResponse::Cancel));
        assert_eq!(decode_response(b""), Ok(SaslResponse::Data(vec![])));
        assert_eq!(decode_response(b"="), Ok(SaslResponse::Data(vec![])));
        assert_eq!(
            decode_response(b"AGFsaWNlAHB3"),
            Ok(SaslResponse::Data(b"\0alice\0pw".to_vec()))
        );
        assert_eq!(decode_response(b"AGFs aWNl"), Err(SaslError::InvalidBase64));
        assert_eq!(decode_response(b"!!!!"), Err(SaslError::InvalidBase64));
        assert_eq!(decode_initial_response("="), Ok(vec![]));
        assert_eq!(decode_initial_response("*"), Err(SaslError::InvalidBase64));
        let huge = vec![b'A'; MAX_SASL_LINE + 4];
        assert_eq!(decode_response(&huge), Err(SaslError::TooLong));
        let mut out = Vec::new();
        encode_challenge(b"<1896.697170952@dbc.mtview.ca.us>", &mut out);
        assert_eq!(out, b"+ PDE4OTYuNjk3MTcwOTUyQGRiYy5tdHZpZXcuY2EudXM+\r\n");
        out.clear();
        encode_challenge(b"", &mut out);
        assert_eq!(out, b"+ \r\n");
    }

    #[test]
    fn client_side() {
        let mut out = Vec::new();
        encode_response(b"\0alice\0pw", &mut out);
        encode_response(b"", &mut out);
        encode_cancel(&mut out);
        assert_eq!(out, b"AGFsaWNlAHB3\r\n\r\n*\r\n");
        assert_eq!(encode_initial_response(b""), "=");
        assert_eq!(decode_challenge(b"+ "), Ok(vec![]));
        assert_eq!(decode_challenge(b"+"), Ok(vec![]));
        assert_eq!(decode_challenge(b"+ PDEyMz4="), Ok(b"<123>".to_vec()));
        assert_eq!(decode_challenge(b"+OK"), Err(SaslError::NotAChallenge));
        assert!(initial_response_fits("PLAIN", &[0; 100]));
        // "AUTH PLAIN " + 244 base64 chars + CRLF = 257 > 255.
        assert!(!initial_response_fits("PLAIN", &[0; 183]));
        assert!(initial_response_fits("PLAIN", &[0; 180]));
    }
}
