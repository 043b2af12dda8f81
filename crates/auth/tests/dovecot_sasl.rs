//! Our client mechanisms against a real SASL server: Dovecot's POP3 (Debian packages
//! dovecot-core and dovecot-pop3d), started on loopback by the test. This proves the
//! wire formats (and SCRAM's server-signature check) against an independent
//! implementation, not only against our own server side.
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use correio_auth::{ClientCredentials, ClientMechanism, ClientMechanismKind, SaslError};
use correio_testkit::{Dovecot, DovecotConfig};

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(dovecot: &Dovecot) -> Conn {
        let s = TcpStream::connect(dovecot.pop3_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut c = Conn {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        };
        assert!(c.line().starts_with("+OK"));
        c
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.reader.read_line(&mut l).unwrap();
        assert!(l.ends_with("\r\n"), "unterminated line {l:?}");
        l.truncate(l.len() - 2);
        l
    }

    fn send(&mut self, l: &str) {
        self.writer
            .write_all(format!("{l}\r\n").as_bytes())
            .unwrap();
    }
}

/// Runs one AUTH exchange; Ok(()) when the server said +OK and the mechanism agreed.
fn auth(
    c: &mut Conn,
    kind: ClientMechanismKind,
    user: &str,
    pass: &str,
    initial: bool,
) -> Result<(), String> {
    let mut m = ClientMechanism::new(kind, ClientCredentials::new(user, pass)).unwrap();
    match if initial { m.initial_response() } else { None } {
        Some(ir) => c.send(&format!("AUTH {} {}", kind.name(), STANDARD.encode(ir))),
        None => c.send(&format!("AUTH {}", kind.name())),
    }
    for _ in 0..10 {
        let l = c.line();
        if let Some(ch) = l
            .strip_prefix("+ ")
            .or(if l == "+" { Some("") } else { None })
        {
            let challenge = STANDARD.decode(ch.trim()).unwrap();
            match m.step(&challenge) {
                Ok(resp) => c.send(&STANDARD.encode(resp)),
                Err(e) => {
                    c.send("*");
                    let _ = c.line();
                    return Err(format!("client: {e}"));
                }
            }
        } else if l.starts_with("+OK") {
            return m.finish().map_err(|e: SaslError| format!("finish: {e}"));
        } else {
            return Err(l);
        }
    }
    panic!("exchange did not end");
}

#[test]
fn our_client_mechanisms_log_in_to_dovecot() {
    let mut cfg = DovecotConfig::with_user("alice", "s3cret w0rd");
    cfg.extra_config =
        "auth_mechanisms = plain login cram-md5 scram-sha-256\nauth_failure_delay = 0\n".into();
    let dovecot = Dovecot::start(&cfg).expect("start dovecot");
    use ClientMechanismKind::*;
    for kind in [Plain, Login, CramMd5, ScramSha256] {
        for initial in [true, false] {
            let mut c = Conn::open(&dovecot);
            let r = auth(&mut c, kind, "alice", "s3cret w0rd", initial);
            assert_eq!(
                r,
                Ok(()),
                "{} (initial {initial}); log:\n{}",
                kind.name(),
                dovecot.log()
            );
            c.send("QUIT");
            let mut c = Conn::open(&dovecot);
            let r = auth(&mut c, kind, "alice", "wrong", initial);
            assert!(r.is_err(), "{} accepted a wrong password", kind.name());
        }
    }
}
