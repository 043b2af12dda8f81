//! `correio serve` behind a real HAProxy (Debian `haproxy`) speaking the PROXY
//! protocol, the client connecting from 127.0.0.2 so the address the server sees
//! really differs from the proxy's (127.0.0.1):
//!
//! - v1 (`send-proxy`) in TCP mode, the client doing STLS with Correio itself;
//! - v2 (`send-proxy-v2-ssl`) with HAProxy terminating TLS: the session counts as TLS
//!   (a password is accepted without STLS although cleartext logins are refused);
//! - v2 (`send-proxy-v2`) in TCP mode in front of a `pop3s_proxy` listener: PROXY
//!   header, then Correio's own TLS.
//!
//! In every case the log's `login … remote=` is the client's 127.0.0.2. A connection
//! from a peer outside `trusted_proxies`, and one from a trusted peer without a header,
//! are closed without a byte.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};

use correio_testkit::daemon::Daemon;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_correio");

fn port() -> u16 {
    correio_testkit::free_port().unwrap()
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--interface", "127.0.0.2"])
        .args(args)
        .output()
        .expect("curl (Debian package curl)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn behind_haproxy_the_client_address_and_tls_come_from_the_proxy_header() {
    let haproxy = correio_testkit::peers::require("haproxy", "haproxy");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path();
    let data = root.join("data");
    let cfg = root.join("correio.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{d}\"\ncleartext_login_on_loopback = false\n\
             trusted_proxies = [\"127.0.0.1\"]\n\
             [listen]\npop3 = [\"127.0.0.1:0\"]\n\
             pop3_proxy = [\"127.0.0.1:0\"]\npop3s_proxy = [\"127.0.0.1:0\"]\n",
            d = data.display()
        ),
    )
    .unwrap();
    let run = |args: &[&str], stdin: &[u8]| {
        let mut c = Command::new(BIN)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(stdin).unwrap();
        let o = c.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let c = cfg.to_str().unwrap();
    run(&["cert", "--config", c, "--host", "localhost"], b"");
    run(
        &[
            "user",
            "add",
            "alice",
            "--config",
            c,
            "--password-stdin",
            "--scheme",
            "PLAIN",
        ],
        b"alice pw\n",
    );
    run(
        &["deliver", "--config", c, "--user", "alice"],
        b"Subject: through the proxy\n\nhello\n",
    );
    let mut server = Daemon::start({
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config", c]);
        cmd
    });
    // Port 0 for ours: the server reports the ports it bound.
    let up = Duration::from_secs(20);
    server.wait_listening("listening", " tls=false proxy=false", up);
    let p_proxy = server
        .wait_listening("listening", " tls=false proxy=true", up)
        .port();
    let ps_proxy = server
        .wait_listening("listening", " tls=true proxy=true", up)
        .port();

    // HAProxy: three frontends, each sending a PROXY header to Correio.
    let cert = data.join("tls/cert.pem");
    let combined = root.join("haproxy.pem");
    let pem = [
        std::fs::read(&cert).unwrap(),
        std::fs::read(data.join("tls/key.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(&combined, pem).unwrap();
    // HAProxy cannot report its ports: chosen here.
    let (f_v1, f_tls, f_v2) = (port(), port(), port());
    let hcfg = root.join("haproxy.cfg");
    std::fs::write(
        &hcfg,
        format!(
            "global\n  maxconn 100\n\
             defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend v1\n  bind 127.0.0.1:{f_v1}\n  default_backend b_v1\n\
             backend b_v1\n  server s1 127.0.0.1:{p_proxy} send-proxy\n\
             frontend tls\n  bind 127.0.0.1:{f_tls} ssl crt {combined}\n  default_backend b_tls\n\
             backend b_tls\n  server s2 127.0.0.1:{p_proxy} send-proxy-v2-ssl\n\
             frontend v2\n  bind 127.0.0.1:{f_v2}\n  default_backend b_v2\n\
             backend b_v2\n  server s3 127.0.0.1:{ps_proxy} send-proxy-v2\n",
            combined = combined.display()
        ),
    )
    .unwrap();
    let mut hap = Daemon::start({
        let mut cmd = Command::new(&haproxy);
        cmd.args(["-db", "-f", hcfg.to_str().unwrap()]);
        cmd
    });
    for p in [f_v1, f_tls, f_v2] {
        hap.wait_port(p, Duration::from_secs(20));
    }
    let cacert = cert.to_str().unwrap();
    let want = "Subject: through the proxy\r\n\r\nhello\r\n";

    // v1, TCP: STLS is Correio's own.
    let (ok, out) = curl(&[
        "--ssl-reqd",
        "--cacert",
        cacert,
        "-u",
        "alice:alice pw",
        &format!("pop3://localhost:{f_v1}/1"),
    ]);
    assert!(ok && out == want, "v1: {out}\n{}", server.log());
    // Without STLS the password is refused: the client is not trusted for cleartext.
    let (ok, _) = curl(&[
        "-u",
        "alice:alice pw",
        &format!("pop3://localhost:{f_v1}/1"),
    ]);
    assert!(!ok, "cleartext login through the v1 proxy must be refused");

    // v2 with HAProxy terminating TLS: a TLS session without STLS.
    let (ok, out) = curl(&[
        "--cacert",
        cacert,
        "-u",
        "alice:alice pw",
        &format!("pop3s://localhost:{f_tls}/1"),
    ]);
    assert!(ok && out == want, "v2-ssl: {out}\n{}", server.log());

    // v2, TCP, in front of a pop3s PROXY listener: Correio's TLS after the header.
    let (ok, out) = curl(&[
        "--cacert",
        cacert,
        "-u",
        "alice:alice pw",
        &format!("pop3s://localhost:{f_v2}/1"),
    ]);
    assert!(ok && out == want, "v2: {out}\n{}", server.log());

    // Every login logged the client's address, not the proxy's.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let l = server.log();
        let logins: Vec<&str> = l
            .lines()
            .filter(|x| x.contains(" login user=alice"))
            .collect();
        if logins.len() >= 3 {
            for x in &logins {
                assert!(
                    x.contains("remote=127.0.0.2:") && x.contains("tls=true"),
                    "{x}"
                );
            }
            break;
        }
        assert!(Instant::now() < deadline, "logins: {l}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Straight to the PROXY listener from an untrusted address: closed, no byte.
    assert_eq!(read_from_127_0_0_2(p_proxy), Vec::<u8>::new());
    // From the trusted proxy address, but no header: closed, no byte.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", p_proxy)).unwrap();
    s.write_all(b"CAPA\r\nUSER alice\r\n").unwrap();
    assert_eq!(read_all(s), Vec::<u8>::new());
    // Both refusals are logged.
    server.wait_log(
        &["not in trusted_proxies", "no valid PROXY protocol header"],
        Duration::from_secs(10),
    );
}

/// What a client connecting from 127.0.0.2 (std cannot bind before connecting, so
/// python3 does) and sending CAPA reads back before the server closes (a reset, as
/// the server closes with the client's bytes unread, counts as closed).
fn read_from_127_0_0_2(port: u16) -> Vec<u8> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import socket,sys\ns=socket.socket(); s.bind(('127.0.0.2',0)); s.settimeout(10)\n\
             s.connect(('127.0.0.1',{port})); s.sendall(b'CAPA\\r\\n')\n\
             d=b''\nwhile True:\n  try: b=s.recv(4096)\n  except ConnectionResetError: break\n  \
             if not b: break\n  d+=b\nsys.stdout.buffer.write(d)"
        ))
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn read_all(mut s: std::net::TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut v = Vec::new();
    let _ = s.read_to_end(&mut v);
    v
}
