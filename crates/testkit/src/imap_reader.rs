//! Reads what an IMAP server stores, without Correio's own IMAP code: Python's
//! `imaplib` (Debian package `python3`) logs in with a password, SELECTs a folder
//! read-only and `UID FETCH`es `(BODY.PEEK[] INTERNALDATE FLAGS)` of every message.
//! BODY.PEEK[] returns the message exactly as stored, CRLF line ends included (IMAP
//! servers store and serve CRLF), and does not set `\Seen`.

use std::net::SocketAddr;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapMessage {
    /// BODY.PEEK[]: the bytes as stored.
    pub body: Vec<u8>,
    /// INTERNALDATE, as the server wrote it (`"05-Dec-2026 01:58:14 +0000"`).
    pub internaldate: String,
    /// The FLAGS list's content (`\Seen \Recent`).
    pub flags: String,
}

const SCRIPT: &str = r#"
import base64, imaplib, re, sys
host, port, user, pw, folder = sys.argv[1:6]
m = imaplib.IMAP4(host, int(port))
m.login(user, pw)
typ, _ = m.select('"%s"' % folder, readonly=True)
if typ != 'OK':
    sys.exit(0)
typ, data = m.uid('SEARCH', None, 'ALL')
for uid in data[0].split():
    typ, d = m.uid('FETCH', uid, '(BODY.PEEK[] INTERNALDATE FLAGS)')
    meta = b''
    body = b''
    for part in d:
        if isinstance(part, tuple):
            meta += part[0]
            body = part[1]
        elif isinstance(part, bytes):
            meta += part
    meta = meta.decode('utf-8', 'replace')
    date = re.search(r'INTERNALDATE "([^"]*)"', meta).group(1)
    flags = re.search(r'FLAGS \(([^)]*)\)', meta).group(1)
    print(base64.b64encode(body).decode(), base64.b64encode(date.encode()).decode(), base64.b64encode(flags.encode()).decode())
m.logout()
"#;

fn b64(s: &str) -> Result<Vec<u8>> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = A.iter().position(|&a| a == c).context("bad base64")? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// Every message of `folder` (none when the folder does not exist), in UID order.
pub fn read_folder(
    addr: SocketAddr,
    user: &str,
    password: &str,
    folder: &str,
) -> Result<Vec<ImapMessage>> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .args([
            &addr.ip().to_string(),
            &addr.port().to_string(),
            user,
            password,
            folder,
        ])
        .output()
        .context("running python3 (Debian package python3)")?;
    if !out.status.success() {
        bail!(
            "python3 imaplib failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut v = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() != 3 {
            bail!("unexpected line {line:?}");
        }
        v.push(ImapMessage {
            body: b64(f[0])?,
            internaldate: String::from_utf8(b64(f[1])?)?,
            flags: String::from_utf8(b64(f[2])?)?,
        });
    }
    Ok(v)
}
