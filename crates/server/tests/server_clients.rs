//! Real third-party clients against the server on loopback: curl (pop3:// with
//! --ssl-reqd, i.e. STLS, and pop3s://) and Python's poplib (USER/PASS, APOP, STLS,
//! pipelined use). Messages must come back byte-exact. These programs are required:
//! a missing one fails the test loudly (packages: curl, python3).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::TestServer;
use correio_testkit::peers::lf_to_crlf;

const MSG1: &[u8] = b"From: a@example.org\nTo: alice@example.org\nSubject: one\n\n.leading dot\nbody line\n..two dots\n";
const MSG2: &[u8] = b"Subject: two\n\nsecond message\n";

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn curl(cert: &Path) -> Command {
    let mut c = Command::new("curl");
    c.args(["-s", "-S", "--max-time", "20", "--cacert"])
        .arg(cert);
    c
}

fn setup() -> TestServer {
    let srv = TestServer::start();
    srv.add_user("alice", "secret pw");
    srv.deliver("alice", MSG1);
    srv.deliver("alice", MSG2);
    srv
}

#[test]
fn curl_pop3s_list_retr_uidl_top_dele() {
    let srv = setup();
    let base = format!("pop3s://localhost:{}", srv.pop3s.port());
    let size1 = lf_to_crlf(MSG1).len();
    let size2 = lf_to_crlf(MSG2).len();
    // LIST
    let out = run(curl(&srv.cert_pem).args(["-u", "alice:secret pw", &format!("{base}/")]));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("1 {size1}\r\n2 {size2}\r\n")
    );
    // RETR: curl unstuffs; the body must be byte-exact (CRLF).
    let out = run(curl(&srv.cert_pem).args(["-u", "alice:secret pw", &format!("{base}/1")]));
    assert_eq!(out.stdout, lf_to_crlf(MSG1));
    // -X UIDL
    let out =
        run(curl(&srv.cert_pem).args(["-u", "alice:secret pw", &format!("{base}/"), "-X", "UIDL"]));
    let uidl = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = uidl.lines().collect();
    assert_eq!(lines.len(), 2, "{uidl}");
    assert!(lines[0].starts_with("1 ") && lines[1].starts_with("2 "));
    // -X "TOP 1 0": header and blank line only.
    let out = run(curl(&srv.cert_pem).args([
        "-u",
        "alice:secret pw",
        &format!("{base}/"),
        "-X",
        "TOP 1 0",
    ]));
    assert_eq!(
        out.stdout,
        lf_to_crlf(b"From: a@example.org\nTo: alice@example.org\nSubject: one\n\n")
    );
    // -X DELE 1 (curl sends QUIT, so it is committed).
    run(curl(&srv.cert_pem).args([
        "-u",
        "alice:secret pw",
        &format!("{base}/1"),
        "-X",
        "DELE",
        "-I",
    ]));
    let out = run(curl(&srv.cert_pem).args(["-u", "alice:secret pw", &format!("{base}/")]));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("1 {size2}\r\n")
    );
    let out = run(curl(&srv.cert_pem).args(["-u", "alice:secret pw", &format!("{base}/1")]));
    assert_eq!(out.stdout, lf_to_crlf(MSG2));
}

#[test]
fn curl_pop3_with_stls_required() {
    let srv = setup();
    let url = format!("pop3://localhost:{}/1", srv.pop3.port());
    let out = run(curl(&srv.cert_pem).args(["--ssl-reqd", "-u", "alice:secret pw", &url]));
    assert_eq!(out.stdout, lf_to_crlf(MSG1));
    // Loopback cleartext works too (allowed for local tools by default).
    let out = run(curl(&srv.cert_pem).args(["-u", "alice:secret pw", &url]));
    assert_eq!(out.stdout, lf_to_crlf(MSG1));
}

#[test]
fn curl_refused_cleartext_then_stls() {
    let srv = TestServer::builder().loopback_untrusted().start();
    // A hashed secret: no CRAM-MD5/SCRAM/APOP to fall back on, only the password.
    srv.add_user_scheme("alice", "secret pw", correio_auth::Scheme::Sha512Crypt);
    srv.deliver("alice", MSG2);
    let url = format!("pop3://localhost:{}/1", srv.pop3.port());
    // Without TLS the password is never accepted...
    let out = curl(&srv.cert_pem)
        .args(["-u", "alice:secret pw", &url])
        .output()
        .expect("curl (is it installed?)");
    assert!(!out.status.success());
    // ...with --ssl-reqd (STLS) it works.
    let out = run(curl(&srv.cert_pem).args(["--ssl-reqd", "-u", "alice:secret pw", &url]));
    assert_eq!(out.stdout, lf_to_crlf(MSG2));
}

const POPLIB: &str = r#"
import hashlib, poplib, ssl, sys
host, port, cafile, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
out = sys.stdout.buffer
p = poplib.POP3(host, port, timeout=20)
if mode == "stls":
    ctx = ssl.create_default_context(cafile=cafile)
    p.stls(context=ctx)
    caps = p.capa()
    assert "STLS" not in caps, caps
if mode == "apop":
    p.apop("alice", "secret pw")
else:
    p.user("alice")
    p.pass_("secret pw")
count, size = p.stat()
listing = p.list()[1]
out.write(b"STAT %d %d\n" % (count, size))
for n in range(1, count + 1):
    resp, lines, octets = p.retr(n)
    body = b"\r\n".join(lines) + b"\r\n"
    out.write(b"MSG %d %d %d\n" % (n, octets, len(body)))
    out.write(body)
if mode == "pipelined":
    # Send every command at once, then read all the replies in order.
    p._putline(b"UIDL 1\r\nLIST 2\r\nNOOP\r\nRETR 2")
    for _ in range(3):
        out.write(p._getresp() + b"\n")
    resp, lines, octets = p._getlongresp()
    out.write(b"PIPE " + b"\r\n".join(lines) + b"\r\n")
p.dele(1)
p.quit()
"#;

fn poplib(srv: &TestServer, port: u16, mode: &str) -> Vec<u8> {
    run(Command::new("python3")
        .arg("-c")
        .arg(POPLIB)
        .arg("127.0.0.1")
        .arg(port.to_string())
        .arg(&srv.cert_pem)
        .arg(mode))
    .stdout
}

fn check_poplib_output(out: &[u8], mode: &str) {
    // "MSG n octets len": poplib's own octet count (unstuffed, CRLF) and the body
    // length must both equal the size rule; the body must be byte-exact.
    let text = out;
    let (a, b) = (lf_to_crlf(MSG1), lf_to_crlf(MSG2));
    let stat = format!("STAT 2 {}\n", a.len() + b.len());
    assert!(
        text.starts_with(stat.as_bytes()),
        "{}",
        String::from_utf8_lossy(text)
    );
    let find = |needle: &[u8]| text.windows(needle.len()).position(|w| w == needle);
    let m1 = find(b"MSG 1 ").expect("MSG 1");
    let m1_end = m1 + text[m1..].iter().position(|&c| c == b'\n').unwrap() + 1;
    assert_eq!(
        &text[m1_end..m1_end + a.len()],
        &a[..],
        "message 1 not byte-exact"
    );
    let m2 = find(b"MSG 2 ").expect("MSG 2");
    let m2_end = m2 + text[m2..].iter().position(|&c| c == b'\n').unwrap() + 1;
    assert_eq!(
        &text[m2_end..m2_end + b.len()],
        &b[..],
        "message 2 not byte-exact"
    );
    let header = String::from_utf8_lossy(&text[m1..m1_end]).into_owned();
    assert_eq!(header, format!("MSG 1 {} {}\n", a.len(), a.len()), "{mode}");
}

#[test]
fn poplib_user_pass() {
    let srv = setup();
    let out = poplib(&srv, srv.pop3.port(), "user");
    check_poplib_output(&out, "user");
    // The DELE + QUIT removed message 1.
    let out = poplib(&srv, srv.pop3.port(), "user");
    assert!(out.starts_with(format!("STAT 1 {}\n", lf_to_crlf(MSG2).len()).as_bytes()));
}

#[test]
fn poplib_apop() {
    let srv = setup();
    let out = poplib(&srv, srv.pop3.port(), "apop");
    check_poplib_output(&out, "apop");
}

#[test]
fn poplib_stls() {
    let srv = TestServer::builder().loopback_untrusted().start();
    srv.add_user("alice", "secret pw");
    srv.deliver("alice", MSG1);
    srv.deliver("alice", MSG2);
    let out = poplib(&srv, srv.pop3.port(), "stls");
    check_poplib_output(&out, "stls");
}

#[test]
fn poplib_pipelined() {
    let srv = setup();
    let out = poplib(&srv, srv.pop3.port(), "pipelined");
    check_poplib_output(&out, "pipelined");
    let text = String::from_utf8_lossy(&out);
    let b = lf_to_crlf(MSG2);
    assert!(text.contains("\n+OK 1 "), "{text}");
    assert!(text.contains(&format!("\n+OK 2 {}\n", b.len())), "{text}");
    assert!(text.contains("\n+OK\n"), "{text}");
    assert!(
        text.contains(&format!("PIPE {}", String::from_utf8_lossy(&b))),
        "{text}"
    );
}
