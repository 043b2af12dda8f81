//! The PROXY protocol (HAProxy's, versions 1 and 2) on listeners behind a load
//! balancer: the proxy sends one header naming the real client before any POP3 byte,
//! and the server uses that address everywhere it would use the peer's — logs, the
//! throttle, the per-address limit, `trusted_networks` and the cleartext policy.
//!
//! Contract: on a PROXY listener the header is **required**, and accepted only from a
//! peer in `trusted_proxies`; anything else (an untrusted peer, no header, a malformed
//! one, one that does not arrive within the TLS-handshake limit) closes the connection
//! without a byte sent. The header is read exactly — no byte after it is consumed —
//! so what follows (POP3 commands, or a TLS ClientHello on a pop3s PROXY listener) is
//! untouched. A v2 header with a `PP2_TYPE_SSL` TLV whose client flag says the client
//! spoke TLS to the proxy marks the session as TLS (HAProxy terminated it).
//!
//! Parsing is done by the `ppp` crate; this module only frames the bytes (bounded: a
//! v1 header is at most 107 octets, a v2 header here at most [`MAX_V2_BODY`] after its
//! 16-octet prefix) and maps the result. [`parse_header`] is fuzzed.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt as _};

/// The v2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 header, CRLF included (the specification's bound).
const MAX_V1: usize = 107;
/// Largest v2 address + TLV block accepted (HAProxy sends well under 1 KiB).
pub const MAX_V2_BODY: usize = 4096;
/// `PP2_TYPE_SSL`.
const PP2_TYPE_SSL: u8 = 0x20;
/// `PP2_CLIENT_SSL`: the client connected to the proxy over TLS.
const PP2_CLIENT_SSL: u8 = 0x01;

/// What the header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxiedConnection {
    /// The real client, or `None` for `UNKNOWN`/`LOCAL` (the proxy's own health
    /// check): the proxy's address stands.
    pub client: Option<SocketAddr>,
    /// The client spoke TLS to the proxy (v2 `PP2_TYPE_SSL` with `PP2_CLIENT_SSL`).
    pub tls: bool,
}

/// Why a PROXY connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The peer is not in `trusted_proxies`.
    #[error("PROXY header from {0}, which is not in trusted_proxies")]
    Untrusted(IpAddr),
    /// The bytes are not a PROXY header.
    #[error("no valid PROXY protocol header: {0}")]
    Malformed(String),
    /// The connection ended or failed before the header was complete.
    #[error("connection closed before the PROXY header: {0}")]
    Io(String),
    /// The header is larger than this server accepts.
    #[error("PROXY header too large")]
    TooLarge,
}

/// Parses one complete header (exactly its bytes).
pub fn parse_header(bytes: &[u8]) -> Result<ProxiedConnection, ProxyError> {
    use ppp::HeaderResult;
    match HeaderResult::parse(bytes) {
        HeaderResult::V1(Ok(h)) => {
            if h.header.len() != bytes.len() {
                return Err(ProxyError::Malformed("bytes after the v1 header".into()));
            }
            let client = match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Tcp6(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Unknown => None,
            };
            Ok(ProxiedConnection { client, tls: false })
        }
        HeaderResult::V2(Ok(h)) => {
            if h.len() != bytes.len() {
                return Err(ProxyError::Malformed("bytes after the v2 header".into()));
            }
            let client = match (h.command, h.addresses) {
                (ppp::v2::Command::Local, _) => None,
                (_, ppp::v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (_, ppp::v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                _ => None,
            };
            let mut tls = false;
            for tlv in h.tlvs() {
                let tlv = tlv.map_err(|e| ProxyError::Malformed(e.to_string()))?;
                if tlv.kind == PP2_TYPE_SSL
                    && tlv.value.first().is_some_and(|c| c & PP2_CLIENT_SSL != 0)
                {
                    tls = true;
                }
            }
            Ok(ProxiedConnection { client, tls })
        }
        HeaderResult::V1(Err(e)) => Err(ProxyError::Malformed(e.to_string())),
        HeaderResult::V2(Err(e)) => Err(ProxyError::Malformed(e.to_string())),
    }
}

/// Reads exactly one header from `stream` (no byte more) and parses it.
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<ProxiedConnection, ProxyError> {
    let io = |e: std::io::Error| ProxyError::Io(e.to_string());
    // Both forms are at least 12 octets ("PROXY UNKNOWN\r\n" is 15).
    let mut buf = vec![0u8; 12];
    stream.read_exact(&mut buf).await.map_err(io)?;
    if buf.as_slice() == V2_SIGNATURE {
        let mut head = [0u8; 4];
        stream.read_exact(&mut head).await.map_err(io)?;
        buf.extend_from_slice(&head);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        if len > MAX_V2_BODY {
            return Err(ProxyError::TooLarge);
        }
        let start = buf.len();
        buf.resize(start + len, 0);
        stream.read_exact(&mut buf[start..]).await.map_err(io)?;
        return parse_header(&buf);
    }
    if !buf.starts_with(b"PROXY ") {
        return Err(ProxyError::Malformed("does not start with PROXY".into()));
    }
    // v1: up to CRLF, byte by byte so nothing after it is consumed.
    while !buf.ends_with(b"\r\n") {
        if buf.len() >= MAX_V1 {
            return Err(ProxyError::TooLarge);
        }
        let b = stream.read_u8().await.map_err(io)?;
        buf.push(b);
    }
    parse_header(&buf)
}

/// Fuzz body (`fuzz/fuzz_targets/server_proxy_header.rs`): never panics; a parsed v1
/// client address is a real address; whatever `read_header` would frame parses the
/// same as the whole buffer.
#[doc(hidden)]
pub fn fuzz_header(data: &[u8]) {
    let _ = parse_header(data);
    let rt = tokio::runtime::Builder::new_current_thread().build();
    if let Ok(rt) = rt {
        let mut cursor = std::io::Cursor::new(data.to_vec());
        let _ = rt.block_on(read_header(&mut cursor));
        assert!(cursor.position() as usize <= data.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_headers() {
        let h = parse_header(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 110\r\n").unwrap();
        assert_eq!(h.client, Some("192.0.2.7:40000".parse().unwrap()));
        assert!(!h.tls);
        let h = parse_header(b"PROXY TCP6 2001:db8::1 ::1 40000 110\r\n").unwrap();
        assert_eq!(h.client, Some("[2001:db8::1]:40000".parse().unwrap()));
        assert_eq!(parse_header(b"PROXY UNKNOWN\r\n").unwrap().client, None);
        assert!(parse_header(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nUSER x\r\n").is_err());
        assert!(parse_header(b"USER alice\r\n").is_err());

        // v2, IPv4, with an SSL TLV (client flag set) and a NOOP TLV.
        let mut v2 = V2_SIGNATURE.to_vec();
        let tlvs: Vec<u8> = [
            vec![PP2_TYPE_SSL, 0, 5, PP2_CLIENT_SSL, 0, 0, 0, 0],
            vec![0x04, 0, 1, 42],
        ]
        .concat();
        let addr = [198, 51, 100, 9, 127, 0, 0, 1, 0x9c, 0x40, 0, 110];
        v2.extend_from_slice(&[0x21, 0x11]);
        v2.extend_from_slice(&((addr.len() + tlvs.len()) as u16).to_be_bytes());
        v2.extend_from_slice(&addr);
        v2.extend_from_slice(&tlvs);
        let h = parse_header(&v2).unwrap();
        assert_eq!(h.client, Some("198.51.100.9:40000".parse().unwrap()));
        assert!(h.tls);
        // LOCAL (a health check): the proxy's own address stands.
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse_header(&local).unwrap().client, None);
    }

    #[tokio::test]
    async fn read_header_stops_at_the_header() {
        let mut c =
            std::io::Cursor::new(b"PROXY TCP4 192.0.2.7 127.0.0.1 4 110\r\nCAPA\r\n".to_vec());
        let h = read_header(&mut c).await.unwrap();
        assert_eq!(h.client.unwrap().ip().to_string(), "192.0.2.7");
        assert_eq!(&c.get_ref()[c.position() as usize..], b"CAPA\r\n");
        let mut c = std::io::Cursor::new(format!("PROXY {}\r\n", "x".repeat(200)).into_bytes());
        assert_eq!(read_header(&mut c).await, Err(ProxyError::TooLarge));
        let mut c = std::io::Cursor::new(b"CAPA\r\nUSER alice\r\n".to_vec());
        assert!(matches!(
            read_header(&mut c).await,
            Err(ProxyError::Malformed(_))
        ));
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        let mut c = std::io::Cursor::new(v2);
        assert_eq!(read_header(&mut c).await, Err(ProxyError::TooLarge));
    }
}
