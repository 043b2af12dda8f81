//! The IMAP destination's wire behaviour against a scripted IMAP server (what Dovecot
//! cannot be made to do on demand): LITERAL- (non-synchronizing only up to 4096
//! bytes, synchronizing above), a per-message NO reported by `take_refused` while the
//! others count as stored, XOAUTH2 without SASL-IR with the server's error
//! continuation answered by an empty line, and a BYE mid-batch failing the batch.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;

use correio_client::fetch::remote::{RemoteSpec, open};
use correio_client::fetch::target::Target;

/// What the server saw of one APPEND.
#[derive(Debug, PartialEq)]
struct Seen {
    size: usize,
    synchronizing: bool,
}

/// Serves one connection: `caps` in the greeting, logins accepted (XOAUTH2 refused
/// once with an error continuation when `refuse_xoauth2_once`), APPENDs answered OK
/// except the message whose body contains `NO-PLEASE`, and BYE on `BYE-PLEASE`.
fn server(caps: &'static str) -> (u16, mpsc::Receiver<Seen>, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        writeln!(w, "* OK [CAPABILITY IMAP4rev1 {caps}] scripted\r").unwrap();
        let mut uid = 0;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end().to_owned();
            let (tag, rest) = line.split_once(' ').unwrap();
            let upper = rest.to_ascii_uppercase();
            if upper.starts_with("CAPABILITY") {
                write!(w, "* CAPABILITY IMAP4rev1 {caps}\r\n{tag} OK done\r\n").unwrap();
            } else if upper.starts_with("AUTHENTICATE XOAUTH2") {
                // No SASL-IR: the client must wait for "+".
                w.write_all(b"+ \r\n").unwrap();
                let mut resp = String::new();
                r.read_line(&mut resp).unwrap();
                let ok = resp.trim_end() == "dXNlcj1tZQFhdXRoPUJlYXJlciBnb29kAQE=";
                if ok {
                    write!(w, "{tag} OK logged in\r\n").unwrap();
                } else {
                    w.write_all(b"+ eyJzdGF0dXMiOiI0MDEifQ==\r\n").unwrap();
                    let mut empty = String::new();
                    r.read_line(&mut empty).unwrap();
                    assert_eq!(empty, "\r\n");
                    write!(w, "{tag} NO [AUTHENTICATIONFAILED] bad token\r\n").unwrap();
                }
            } else if upper.starts_with("AUTHENTICATE PLAIN ") || upper.starts_with("LOGIN") {
                write!(w, "{tag} OK logged in\r\n").unwrap();
            } else if upper.starts_with("APPEND") {
                let open = line.rfind('{').unwrap();
                let spec = &line[open + 1..line.len() - 1];
                let synchronizing = !spec.ends_with('+');
                let size: usize = spec.trim_end_matches('+').parse().unwrap();
                if synchronizing {
                    w.write_all(b"+ go ahead\r\n").unwrap();
                }
                // One literal, or several (MULTIAPPEND: each followed by the next
                // message's arguments and literal, the last by CRLF).
                let mut text = String::new();
                let mut size = size;
                let mut synchronizing = synchronizing;
                let mut count = 0;
                loop {
                    let mut body = vec![0; size];
                    r.read_exact(&mut body).unwrap();
                    text.push_str(&String::from_utf8_lossy(&body));
                    count += 1;
                    let _ = tx.send(Seen {
                        size,
                        synchronizing,
                    });
                    let mut rest = String::new();
                    r.read_line(&mut rest).unwrap();
                    if rest == "\r\n" {
                        break;
                    }
                    let rest = rest.trim_end();
                    let open = rest.rfind('{').unwrap();
                    let spec = &rest[open + 1..rest.len() - 1];
                    synchronizing = !spec.ends_with('+');
                    assert!(!synchronizing, "MULTIAPPEND only with LITERAL+ here");
                    size = spec.trim_end_matches('+').parse().unwrap();
                }
                if text.contains("BYE-PLEASE") {
                    w.write_all(b"* BYE going away\r\n").unwrap();
                    return;
                }
                if text.contains("NO-PLEASE") {
                    write!(w, "{tag} NO [OVERQUOTA] mailbox full\r\n").unwrap();
                } else {
                    let first = uid + 1;
                    uid += count;
                    let set = if count == 1 {
                        format!("{uid}")
                    } else {
                        format!("{first}:{uid}")
                    };
                    write!(w, "{tag} OK [APPENDUID 7 {set}] done\r\n").unwrap();
                }
            } else if upper.starts_with("LOGOUT") {
                // The client may close as soon as it reads the BYE.
                let _ = write!(w, "* BYE bye\r\n{tag} OK bye\r\n");
                return;
            } else {
                write!(w, "{tag} BAD what\r\n").unwrap();
            }
        }
    });
    (port, rx, h)
}

fn spec(port: u16, auth: &str) -> RemoteSpec {
    let mut s = RemoteSpec::parse(&format!("imap://me@127.0.0.1:{port}/INBOX")).unwrap();
    s.tls = correio_client::fetch::remote::RemoteTls::None;
    s.insecure = true;
    s.password_command = Some("echo pw".into());
    s.auth = auth.into();
    s
}

fn put(t: &mut dyn Target, msg: &[u8]) {
    t.begin().unwrap();
    // In two chunks, as the fetcher writes.
    let (a, b) = msg.split_at(msg.len() / 2);
    t.write(a).unwrap();
    t.write(b).unwrap();
    t.finish().unwrap();
}

#[test]
fn literal_minus_and_a_refused_message() {
    let (port, rx, h) = server("LITERAL- AUTH=PLAIN SASL-IR UIDPLUS");
    let mut t = open(&spec(port, "auto")).unwrap();
    let small = b"Subject: small\r\n\r\nhello\r\n".to_vec();
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 5000));
    big.extend_from_slice(b"\r\n");
    let refused = b"Subject: NO-PLEASE\r\n\r\nover quota\r\n".to_vec();
    put(t.as_mut(), &small);
    put(t.as_mut(), &big);
    put(t.as_mut(), &refused);
    t.sync().unwrap();
    let r = t.take_refused();
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].0, 2);
    assert!(r[0].1.contains("mailbox full"), "{}", r[0].1);
    drop(t);
    h.join().unwrap();
    let seen: Vec<Seen> = rx.iter().collect();
    assert_eq!(
        seen,
        vec![
            Seen {
                size: small.len(),
                synchronizing: false
            },
            Seen {
                size: big.len(),
                synchronizing: true
            },
            Seen {
                size: refused.len(),
                synchronizing: false
            },
        ]
    );
}

#[test]
fn xoauth2_without_sasl_ir_and_its_error_continuation() {
    let (port, _rx, h) = server("AUTH=XOAUTH2 LITERAL+");
    let mut s = spec(port, "xoauth2");
    s.token = Some("good".into());
    let mut t = open(&s).unwrap();
    put(t.as_mut(), b"Subject: a\r\n\r\nb\r\n");
    t.sync().unwrap();
    assert!(t.take_refused().is_empty());
    drop(t);
    h.join().unwrap();

    let (port, _rx, h) = server("AUTH=XOAUTH2 LITERAL+");
    let mut s = spec(port, "xoauth2");
    s.token = Some("expired".into());
    let mut t = open(&s).unwrap();
    put(t.as_mut(), b"Subject: a\r\n\r\nb\r\n");
    let e = t.sync().unwrap_err().to_string();
    assert!(e.contains("AUTHENTICATE XOAUTH2 refused: bad token"), "{e}");
    assert!(
        e.contains("\"status\":\"401\""),
        "the server's reason is shown: {e}"
    );
    drop(t);
    h.join().unwrap();
}

#[test]
fn bye_in_the_middle_fails_the_whole_batch() {
    let (port, _rx, h) = server("AUTH=PLAIN SASL-IR LITERAL+");
    let mut t = open(&spec(port, "plain")).unwrap();
    put(t.as_mut(), b"Subject: BYE-PLEASE\r\n\r\nx\r\n");
    put(t.as_mut(), b"Subject: second\r\n\r\ny\r\n");
    assert!(t.sync().is_err());
    drop(t);
    h.join().unwrap();
}

#[test]
fn a_refused_multiappend_is_retried_message_by_message() {
    let (port, rx, h) = server("MULTIAPPEND LITERAL+ AUTH=PLAIN SASL-IR UIDPLUS");
    let mut t = open(&spec(port, "auto")).unwrap();
    put(t.as_mut(), b"Subject: one\r\n\r\n1\r\n");
    put(t.as_mut(), b"Subject: NO-PLEASE\r\n\r\n2\r\n");
    put(t.as_mut(), b"Subject: three\r\n\r\n3\r\n");
    t.sync().unwrap();
    let r = t.take_refused();
    assert_eq!(r.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1], "{r:?}");
    drop(t);
    h.join().unwrap();
    // Three literals in the MULTIAPPEND, then three single APPENDs.
    assert_eq!(rx.iter().count(), 6);
}
