//! Our server mechanisms against a third-party SASL client: curl's POP3 AUTH (PLAIN,
//! LOGIN, CRAM-MD5; curl is built without SCRAM). A minimal POP3 responder in the test
//! drives `ServerMechanism` exactly as the server does (base64 framing, `+ ` challenges).
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use correio_auth::{Mechanism, ServerMechanism, ServerParams, Step, UserRecord};

/// Serves one POP3 connection; returns the authenticated user, if any.
fn serve_one(listener: TcpListener, users: Vec<UserRecord>) -> Option<String> {
    let (stream, _) = listener.accept().ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut w = stream;
    let mut line = String::new();
    let mut read = |line: &mut String| -> Option<String> {
        line.clear();
        (reader.read_line(line).ok()? > 0).then(|| line.trim_end_matches(['\r', '\n']).to_owned())
    };
    w.write_all(b"+OK ready\r\n").ok()?;
    let mut who = None;
    loop {
        let cmd = read(&mut line)?;
        let mut words = cmd.splitn(3, ' ');
        match words.next()?.to_ascii_uppercase().as_str() {
            "CAPA" => w
                .write_all(b"+OK\r\nSASL PLAIN LOGIN CRAM-MD5\r\nUIDL\r\n.\r\n")
                .ok()?,
            "AUTH" => {
                let mech = Mechanism::from_name(words.next()?)?;
                let initial = words.next().map(|ir| {
                    if ir == "=" {
                        Vec::new()
                    } else {
                        STANDARD.decode(ir).unwrap_or_default()
                    }
                });
                let mut m = ServerMechanism::new(mech, &ServerParams::new("curl.test"));
                let mut step = m.start(initial.as_deref(), &users);
                loop {
                    match step {
                        Ok(Step::Challenge(c)) => {
                            w.write_all(format!("+ {}\r\n", STANDARD.encode(c)).as_bytes())
                                .ok()?;
                            let resp = read(&mut line)?;
                            if resp == "*" {
                                w.write_all(b"-ERR cancelled\r\n").ok()?;
                                break;
                            }
                            step = m.step(&STANDARD.decode(resp).unwrap_or_default(), &users);
                        }
                        Ok(Step::Success { user }) => {
                            w.write_all(b"+OK logged in\r\n").ok()?;
                            who = Some(user);
                            break;
                        }
                        _ => {
                            w.write_all(b"-ERR [AUTH] authentication failed\r\n").ok()?;
                            break;
                        }
                    }
                }
            }
            "LIST" => w.write_all(b"+OK 0 messages\r\n.\r\n").ok()?,
            "QUIT" => {
                w.write_all(b"+OK bye\r\n").ok()?;
                return who;
            }
            _ => w.write_all(b"-ERR unknown\r\n").ok()?,
        }
    }
}

fn curl_login(
    mech: &str,
    user: &str,
    pass: &str,
    sasl_ir: bool,
    users: &[UserRecord],
) -> (bool, Option<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    let users = users.to_vec();
    std::thread::spawn(move || {
        let _ = tx.send(serve_one(listener, users));
    });
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-S",
        "--max-time",
        "20",
        "--login-options",
        &format!("AUTH={mech}"),
        "-u",
    ])
    .arg(format!("{user}:{pass}"))
    .arg(format!("pop3://127.0.0.1:{port}/"));
    if sasl_ir {
        cmd.arg("--sasl-ir");
    }
    let out = cmd
        .output()
        .expect("curl is needed for this test (Debian package curl)");
    let served = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("responder finished");
    (out.status.success(), served)
}

#[test]
fn curl_logs_in_with_each_mechanism() {
    let users = vec![
        UserRecord::parse_line("alice:{PLAIN}s3cret w0rd")
            .unwrap()
            .unwrap(),
        UserRecord::parse_line(
            "carol:{CRAM-MD5}ff5d74b19e3cb9b2b9f4fcb548fe023aeb44f67f231a5a89714d08b5fec22b78",
        )
        .unwrap()
        .unwrap(),
    ];
    for mech in ["PLAIN", "LOGIN", "CRAM-MD5"] {
        for ir in [false, true] {
            let (ok, who) = curl_login(mech, "alice", "s3cret w0rd", ir, &users);
            assert!(
                ok && who.as_deref() == Some("alice"),
                "{mech} ir={ir}: curl ok={ok} user={who:?}"
            );
            let (ok, who) = curl_login(mech, "alice", "wrong", ir, &users);
            assert!(
                !ok && who.is_none(),
                "{mech} ir={ir} accepted a wrong password"
            );
        }
    }
    let (ok, who) = curl_login("CRAM-MD5", "carol", "pass", false, &users);
    assert!(
        ok && who.as_deref() == Some("carol"),
        "CRAM-MD5 with a stored CRAM-MD5 context"
    );
}
