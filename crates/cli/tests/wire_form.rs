//! `[delivery] line_ends = "crlf"` as an admin sets it up: one configuration read by
//! `correio deliver` (run as root when the test is root, so it delivers as the
//! mailbox's owner) and by `correio serve` (its LMTP listener delivers too; sessions
//! run as `nobody` when started as root). Messages stored in wire form (CRLF, no line
//! starting with `.`) of 64 KiB and more go to plain connections with `sendfile`; the
//! others, and every message over TLS, are read and stuffed as before. Real clients
//! (curl and Python's `poplib`) must receive every message byte-exact either way, and
//! `correio_sendfile_bytes_total` must count exactly the wire-form messages sent in
//! the clear. Needs curl and python3.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use correio_testkit::daemon::Daemon;
use correio_testkit::peers::{lf_to_crlf, require, run_bounded_input};

const BIN: &str = env!("CARGO_BIN_EXE_correio");

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

/// Runs `correio ARGS` in `dir` with `stdin`, bounded in time; it must succeed.
fn correio(dir: &Path, args: &[&str], stdin: &[u8]) {
    let mut c = Command::new(BIN);
    c.args(args).current_dir(dir);
    let run = run_bounded_input(c, Some(stdin), Duration::from_secs(60), dir);
    assert!(run.ok(), "correio {args:?}: {}", run.log());
}

/// A message of about `size` octets in lines of `line` bytes; `dot` puts a line
/// starting with `.` in the middle.
fn message(subject: &str, size: usize, dot: bool, crlf: bool) -> Vec<u8> {
    let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
    let mut m = format!("Subject: {subject}").into_bytes();
    m.extend_from_slice(eol);
    m.extend_from_slice(eol);
    let mut i = 0usize;
    while m.len() < size {
        if dot && i == 500 {
            m.extend_from_slice(b".a line that POP3 must stuff");
        } else {
            m.extend_from_slice(format!("line {i:07} of {subject}: {}", "x".repeat(50)).as_bytes());
        }
        m.extend_from_slice(eol);
        i += 1;
    }
    m
}

fn read_line(r: &mut BufReader<std::net::TcpStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l
}

fn lmtp_deliver(addr: std::net::SocketAddr, to: &str, body: &[u8]) {
    let l = std::net::TcpStream::connect(addr).unwrap();
    l.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = l.try_clone().unwrap();
    let mut r = BufReader::new(l);
    assert!(read_line(&mut r).starts_with("220 "));
    w.write_all(b"LHLO test\r\n").unwrap();
    while read_line(&mut r).starts_with("250-") {}
    w.write_all(format!("MAIL FROM:<s@example.org>\r\nRCPT TO:<{to}>\r\nDATA\r\n").as_bytes())
        .unwrap();
    assert!(read_line(&mut r).starts_with("250"));
    assert!(read_line(&mut r).starts_with("250"));
    assert!(read_line(&mut r).starts_with("354"));
    // LMTP data is dot-stuffed CRLF; none of these messages has a dot line.
    w.write_all(body).unwrap();
    w.write_all(b".\r\nQUIT\r\n").unwrap();
    let reply = read_line(&mut r);
    assert!(reply.starts_with("250"), "{reply}");
}

fn metric(port: u16, name: &str) -> u64 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {out}"))
        .trim()
        .parse()
        .unwrap()
}

/// Every message of alice with curl (LIST, then RETR each), over `scheme`.
fn curl_all(scheme: &str, port: u16, cacert: &Path, count: usize) -> Vec<Vec<u8>> {
    (1..=count)
        .map(|i| {
            let out = Command::new("curl")
                .args(["-s", "-S", "--max-time", "30", "--cacert"])
                .arg(cacert)
                .args(["-u", "alice:pw"])
                .arg(format!("{scheme}://localhost:{port}/{i}"))
                .args([
                    "--connect-to",
                    &format!("localhost:{port}:127.0.0.1:{port}"),
                ])
                .output()
                .expect("curl");
            assert!(
                out.status.success(),
                "curl {scheme} {i}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        })
        .collect()
}

/// Every message with Python's poplib over plain POP3, as CRLF bytes.
fn poplib_all(port: u16) -> Vec<Vec<u8>> {
    let script = r#"
import poplib, sys
p = poplib.POP3("127.0.0.1", int(sys.argv[1]), timeout=30)
p.user("alice"); p.pass_("pw")
n, _ = p.stat()
out = sys.stdout.buffer
for i in range(1, n + 1):
    _, lines, _ = p.retr(i)
    body = b"".join(l + b"\r\n" for l in lines)
    out.write(b"%d\n" % len(body)); out.write(body)
p.quit()
"#;
    let out = Command::new("python3")
        .args(["-c", script, &port.to_string()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "poplib: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v = Vec::new();
    let mut rest = &out.stdout[..];
    while !rest.is_empty() {
        let nl = rest.iter().position(|&b| b == b'\n').unwrap();
        let len: usize = std::str::from_utf8(&rest[..nl]).unwrap().parse().unwrap();
        v.push(rest[nl + 1..nl + 1 + len].to_vec());
        rest = &rest[nl + 1 + len..];
    }
    v
}

#[test]
fn crlf_storage_sends_wire_form_messages_with_sendfile_byte_exact() {
    require("curl", "curl");
    require("python3", "python3");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let data_s = data.to_str().unwrap();
    correio(
        dir.path(),
        &["user", "add", "alice", "--data", data_s, "--password-stdin"],
        b"pw\n",
    );
    correio(dir.path(), &["cert", "--data", data_s], b"");
    let root = is_root();
    if root {
        let st = Command::new("chown")
            .args(["-R", "nobody:nogroup", data_s])
            .status()
            .unwrap();
        assert!(st.success());
    }
    std::fs::write(
        dir.path().join("c.toml"),
        format!(
            "data_dir = \"{data_s}\"\nuser = \"nobody\"\n\
             [listen]\npop3 = [\"127.0.0.1:0\"]\npop3s = [\"127.0.0.1:0\"]\nlmtp = \"127.0.0.1:0\"\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\
             [delivery]\nline_ends = \"crlf\"\n"
        ),
    )
    .unwrap();

    // Through `correio deliver` (LF input, as from a local MDA): a large clean
    // message, a large one with a dot line, a small clean one.
    let big = message("big clean", 300_000, false, false);
    let dotted = message("big dotted", 300_000, true, false);
    let small = message("small", 2_000, false, false);
    for m in [&big, &dotted, &small] {
        correio(
            dir.path(),
            &["deliver", "--config", "c.toml", "--user", "alice"],
            m,
        );
    }
    let mut server = Daemon::start({
        let mut c = Command::new(BIN);
        c.args(["serve", "--config", "c.toml"])
            .current_dir(dir.path());
        c
    });
    let up = Duration::from_secs(30);
    let metrics = server.wait_listening("metrics listening", "", up).port();
    let lmtp = server.wait_listening("listening for LMTP", "", up);
    let pop3 = server.wait_listening("listening", " tls=false", up).port();
    let pop3s = server.wait_listening("listening", " tls=true", up).port();
    // Through LMTP (CRLF on the wire): a large clean one, 1 MiB.
    let lmtp_big = message("lmtp big", 1 << 20, false, true);
    lmtp_deliver(lmtp, "alice", &lmtp_big);

    // Stored as delivered, in CRLF, with the dot lines in the names.
    let new = data.join("mail/alice/new");
    let mut names: Vec<String> = std::fs::read_dir(&new)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // Delivery order (POP3's): seconds, then the microseconds of `<secs>.M<usecs>`.
    names.sort_by_key(|n| {
        let (secs, rest) = n.split_once(".M").unwrap();
        let usecs: String = rest.chars().take_while(char::is_ascii_digit).collect();
        (secs.parse::<u64>().unwrap(), usecs.parse::<u64>().unwrap())
    });
    assert_eq!(names.len(), 4, "{names:?}");
    for n in &names {
        let body = std::fs::read(new.join(n)).unwrap();
        assert!(
            !body.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
            "{n}: LF stored"
        );
        let d = if n.contains("D=1") { 1 } else { 0 };
        assert!(
            n.ends_with(&format!(",S={0},W={0},D={d}", body.len())),
            "{n}"
        );
        if root {
            let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(new.join(n)).unwrap());
            assert_eq!(uid, 65534, "{n} not owned by the service user");
        }
    }
    // What was stored: the delivered message (after a Return-Path header the
    // delivery adds), byte for byte in its wire form.
    let stored: Vec<Vec<u8>> = names
        .iter()
        .map(|n| std::fs::read(new.join(n)).unwrap())
        .collect();
    for (file, sent) in stored.iter().zip([
        lf_to_crlf(&big),
        lf_to_crlf(&dotted),
        lf_to_crlf(&small),
        lmtp_big.clone(),
    ]) {
        assert!(file.ends_with(&sent), "stored message is not the one sent");
        assert!(file.len() < sent.len() + 200, "more than a header added");
    }
    let want = stored;
    let sendfile_per_fetch = (want[0].len() + want[3].len()) as u64;
    assert_eq!(metric(metrics, "correio_sendfile_bytes_total"), 0);

    let cacert = data.join("tls/cert.pem");
    let got = curl_all("pop3", pop3, &cacert, 4);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            g == w,
            "curl over plain POP3: message {} differs ({} vs {} octets)",
            i + 1,
            g.len(),
            w.len()
        );
    }
    assert_eq!(
        metric(metrics, "correio_sendfile_bytes_total"),
        sendfile_per_fetch,
        "only the two large wire-form messages go by sendfile"
    );
    let got = poplib_all(pop3);
    assert!(got == want, "poplib differs");
    assert_eq!(
        metric(metrics, "correio_sendfile_bytes_total"),
        2 * sendfile_per_fetch
    );
    // Over TLS the same bytes, read and sent through the TLS stream.
    let got = curl_all("pop3s", pop3s, &cacert, 4);
    assert!(got == want, "curl over POP3S differs");
    assert_eq!(
        metric(metrics, "correio_sendfile_bytes_total"),
        2 * sendfile_per_fetch
    );
    // Pipelined behind other commands: replies before and after stay in order.
    let s = std::net::TcpStream::connect(("127.0.0.1", pop3)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    assert!(read_line(&mut r).starts_with("+OK"));
    w.write_all(b"USER alice\r\nPASS pw\r\nSTAT\r\nRETR 4\r\nRETR 1\r\nNOOP\r\nQUIT\r\n")
        .unwrap();
    let mut all = Vec::new();
    r.read_to_end(&mut all).unwrap();
    // Reply by reply, in order: each RETR is its `+OK`, the exact bytes, `.` CRLF.
    let mut rest = &all[..];
    let line = |rest: &mut &[u8]| -> String {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a reply line")
            + 2;
        let l = String::from_utf8_lossy(&rest[..end]).into_owned();
        *rest = &rest[end..];
        l
    };
    assert_eq!(line(&mut rest), "+OK Send PASS\r\n");
    assert!(line(&mut rest).starts_with("+OK Logged in, 4 messages"));
    let total: usize = want.iter().map(Vec::len).sum();
    assert_eq!(line(&mut rest), format!("+OK 4 {total}\r\n"));
    for (i, m) in [(4usize, &want[3]), (1, &want[0])] {
        assert_eq!(
            line(&mut rest),
            format!("+OK {} octets\r\n", m.len()),
            "RETR {i}"
        );
        assert!(
            rest.starts_with(m),
            "RETR {i} not byte-exact in the pipelined stream"
        );
        rest = &rest[m.len()..];
        assert_eq!(line(&mut rest), ".\r\n", "RETR {i}");
    }
    assert!(line(&mut rest).starts_with("+OK"), "NOOP");
    assert!(line(&mut rest).starts_with("+OK"), "QUIT");
    assert!(rest.is_empty());
    assert_eq!(
        metric(metrics, "correio_sendfile_bytes_total"),
        3 * sendfile_per_fetch
    );
    server.signal("TERM");
}
