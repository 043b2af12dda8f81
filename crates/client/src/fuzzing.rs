//! Fuzz bodies for the parsers of this crate (`fuzz/fuzz_targets/client_*.rs`). Each
//! must never panic; the normal tests replay the seed corpus through them.

/// The Mozilla autoconfig parser on arbitrary text.
pub fn autoconfig(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::discover::parse_autoconfig(&text, "me@example.org", "me", "example.org");
}

/// The IMAP response reader on arbitrary bytes: never panics, every response's text is
/// bounded, and the responses (or the error that ends them) are the same whatever the
/// read buffer's size (1, 7, 64 bytes or the default).
pub fn imap_response(data: &[u8]) {
    use crate::fetch::imap_response::{MAX_LINE, Response, read_response};
    fn all(data: &[u8], cap: usize) -> Vec<Result<Response, std::io::ErrorKind>> {
        let mut r = std::io::BufReader::with_capacity(cap, data);
        let mut out = Vec::new();
        loop {
            match read_response(&mut r) {
                Ok(x) => out.push(Ok(x)),
                Err(e) => {
                    out.push(Err(e.kind()));
                    return out;
                }
            }
        }
    }
    let base = all(data, 8192);
    for r in base.iter().flatten() {
        let text = match r {
            Response::Continue(t) | Response::Untagged(t) => t.len(),
            Response::UntaggedStatus { text, .. } => text.len(),
            Response::Capability(c) => c.len(),
            Response::Tagged { tag, text, .. } => {
                assert!(!tag.is_empty());
                tag.len() + text.len()
            }
        };
        // Lossy UTF-8 may triple a byte.
        assert!(text <= 3 * MAX_LINE);
    }
    for cap in [1, 7, 64] {
        assert_eq!(all(data, cap), base, "buffer size {cap}");
    }
}

/// The `-v` trace's masking on arbitrary client lines (first byte: inside a SASL
/// exchange or not). A password, an AUTH initial response or a SASL line never shows.
pub fn trace_mask(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    for line in text.split("\r\n") {
        let in_sasl = first & 1 == 1;
        let shown = crate::mask_command_line(line, in_sasl);
        if in_sasl {
            assert!(shown == "****" || shown == "*");
            continue;
        }
        let words: Vec<&str> = line.splitn(3, ' ').collect();
        let kw = words[0].to_ascii_uppercase();
        if kw == "PASS" && words.len() > 1 {
            assert_eq!(shown, "PASS ****");
        }
        if kw == "AUTH" && words.len() == 3 {
            assert_eq!(shown, format!("AUTH {} ****", words[1]));
        }
    }
}

/// The check of a server certificate trusted as itself (`--ca` holding the server's
/// own certificate) on arbitrary DER, against a host name made of the first bytes.
pub fn cert_exact(data: &[u8]) {
    crate::tls::fuzz_check_exact(data);
}
