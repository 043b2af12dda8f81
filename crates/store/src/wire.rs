//! The exact POP3 size rule, streaming: octets with CRLF line ends, before
//! byte-stuffing, without the final "." line. A bare LF counts as CRLF (two octets);
//! a message that does not end with a line end gets a CRLF added on the wire, and that
//! CRLF is counted. An empty message has size 0.
//!
//! This mirrors `correio_proto::WireSizer`; the store keeps its own copy so that it can
//! size messages without depending on the order in which crates land.

/// Streaming wire-size counter.
#[derive(Debug, Default, Clone)]
pub(crate) struct WireCounter {
    total: u64,
    last: Option<u8>,
}

impl WireCounter {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        let mut lf_bare = 0u64;
        let mut prev = self.last;
        for &b in chunk {
            if b == b'\n' && prev != Some(b'\r') {
                lf_bare += 1;
            }
            prev = Some(b);
        }
        self.total += chunk.len() as u64 + lf_bare;
        self.last = prev;
    }

    pub(crate) fn finish(&self) -> u64 {
        match self.last {
            None | Some(b'\n') => self.total,
            Some(_) => self.total + 2,
        }
    }
}

/// The wire size of a whole stored message.
#[cfg(test)]
pub(crate) fn wire_size(stored: &[u8]) -> u64 {
    let mut c = WireCounter::new();
    c.feed(stored);
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_rule() {
        assert_eq!(wire_size(b""), 0);
        assert_eq!(wire_size(b"a\n"), 3);
        assert_eq!(wire_size(b"a\r\n"), 3);
        assert_eq!(wire_size(b"a"), 3);
        assert_eq!(wire_size(b"a\rb\n"), 5);
        assert_eq!(wire_size(b"\n\n"), 4);
    }

    #[test]
    fn chunking_does_not_matter() {
        let msg = b"Subject: x\r\n\nbody\r\nline\nend";
        let whole = wire_size(msg);
        for split in 0..msg.len() {
            let mut c = WireCounter::new();
            c.feed(&msg[..split]);
            c.feed(&msg[split..]);
            assert_eq!(c.finish(), whole, "split at {split}");
        }
    }
}
