//! The exact POP3 size rule, streaming: octets with CRLF line ends, before
//! byte-stuffing, without the final "." line (RFC 1939 STAT/LIST; invariant 4).
//!
//! One implementation for the whole project: the store counts with the protocol
//! crate's [`correio_proto::WireSizer`], the same code the server's dot-stuffer is
//! tested against, so a size stored at delivery and the octets RETR sends cannot drift
//! apart.

pub(crate) use correio_proto::WireSizer as WireCounter;

#[cfg(test)]
mod tests {
    use super::*;
    use correio_proto::wire_size;

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
