//! Fuzz bodies for the parsers of this crate (`fuzz/fuzz_targets/client_*.rs`). Each
//! must never panic; the normal tests replay the seed corpus through them.

/// The Mozilla autoconfig parser on arbitrary text.
pub fn autoconfig(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::discover::parse_autoconfig(&text, "me@example.org", "me", "example.org");
}

/// The HTTP chunked-body decoder on arbitrary bytes; what it returns is bounded.
pub fn http_chunked(data: &[u8]) {
    if let Ok(body) = crate::discover::dechunk(data) {
        assert!(body.len() <= data.len());
    }
}
