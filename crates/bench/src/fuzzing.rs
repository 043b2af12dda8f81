//! Fuzz bodies (run by `fuzz/fuzz_targets/bench_*.rs` and, on the seed corpus, by this
//! crate's tests). Not a stable API.

use crate::conn::{BodyEnd, Scan};

/// The multi-line body scanner against a naive reference, with the input cut into
/// chunks of a size taken from the first byte: both must agree on where the body ends
/// and how long it is, however the bytes arrive. Panics on a disagreement.
pub fn body_end(data: &[u8]) {
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first % 64) + 1;
    let expected = if data.starts_with(b".\r\n") {
        Some((3usize, 0u64))
    } else {
        memchr::memmem::find(data, b"\r\n.\r\n").map(|i| (i + 5, (i + 2) as u64))
    };
    let mut scanner = BodyEnd::new();
    // `window` plays the read buffer: unconsumed bytes, then each new chunk.
    let mut window: Vec<u8> = Vec::new();
    let mut offset = 0usize; // bytes of `data` consumed before `window`
    let mut fed = 0usize;
    let got = loop {
        match scanner.scan(&window) {
            Scan::Done { consumed, body } => break Some((offset + consumed, body)),
            Scan::More { consumed } => {
                assert!(consumed <= window.len());
                window.drain(..consumed);
                offset += consumed;
                if fed == data.len() {
                    break None;
                }
                let next = (fed + chunk).min(data.len());
                window.extend_from_slice(&data[fed..next]);
                fed = next;
            }
        }
    };
    assert_eq!(got, expected, "chunk size {chunk}");
}

/// The users-file parser: never panics, and every user it accepts round-trips.
pub fn users_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(users) = crate::Credential::parse_lines(text, "fuzz") {
        for u in users {
            let again = crate::Credential::parse(&format!("{}:{}", u.user, u.pass));
            assert_eq!(again.ok().as_ref(), Some(&u));
        }
    }
}
