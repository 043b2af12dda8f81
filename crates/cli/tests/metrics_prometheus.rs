//! `[metrics] listen`: a real Prometheus (Debian `prometheus`), started by the test on
//! loopback with its own data directory and a port chosen at run time, scrapes
//! `correio serve`; the test reads counters that moved (a successful and a failed
//! login, a RETR, an LMTP delivery) back through Prometheus's HTTP query API.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};

use correio_testkit::daemon::Daemon;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_correio");

/// One HTTP/1.0 GET on loopback: (status line, body).
fn http_get(port: u16, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.lines().next().unwrap_or("").to_owned();
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_owned();
    (status, body)
}

fn pop3(port: u16, script: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(script.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn prometheus_scrapes_the_counters_that_moved() {
    let prometheus = correio_testkit::peers::require("prometheus", "prometheus");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path();
    // Ours on port 0 (the server reports what it bound); Prometheus's chosen here.
    let prom = correio_testkit::free_port().unwrap();
    let cfg = root.join("correio.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\n[listen]\npop3 = [\"127.0.0.1:0\"]\nlmtp = \"127.0.0.1:0\"\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n",
            root.join("data").display()
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let mut add = Command::new(BIN)
        .args([
            "user",
            "add",
            "alice",
            "--config",
            c,
            "--password-stdin",
            "--scheme",
            "PLAIN",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin.take().unwrap().write_all(b"pw\n").unwrap();
    assert!(add.wait().unwrap().success());
    let mut server = Daemon::start({
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config", c]);
        cmd
    });
    let up = Duration::from_secs(20);
    let metrics = server.wait_listening("metrics listening", "", up).port();
    let lmtp = server.wait_listening("listening for LMTP", "", up).port();
    let p3 = server.wait_listening("listening", " tls=false", up).port();

    // Traffic: an LMTP delivery, a failed and a successful login, a RETR.
    let lmtp_out = pop3(
        lmtp,
        "LHLO t\r\nMAIL FROM:<s@example.net>\r\nRCPT TO:<alice>\r\nDATA\r\nSubject: m\r\n\r\nhi\r\n.\r\nQUIT\r\n",
    );
    assert!(lmtp_out.contains("250 2.0.0"), "{lmtp_out}");
    let bad = pop3(p3, "USER alice\r\nPASS wrong\r\nQUIT\r\n");
    assert!(bad.contains("-ERR [AUTH]"), "{bad}");
    let good = pop3(p3, "USER alice\r\nPASS pw\r\nRETR 1\r\nQUIT\r\n");
    assert!(good.contains("+OK Logged in"), "{good}");

    // The endpoint itself: the text format, and nothing else served.
    let (status, body) = http_get(metrics, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert!(
        body.contains("correio_logins_total{mechanism=\"USER\",result=\"success\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("correio_lmtp_deliveries_total{result=\"delivered\"} 1"),
        "{body}"
    );
    let (status, _) = http_get(metrics, "/other");
    assert!(status.contains("404"), "{status}");

    // A real Prometheus scrapes it.
    let data = root.join("prometheus-data");
    let pcfg = root.join("prometheus.yml");
    std::fs::write(
        &pcfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: correio\n    static_configs:\n      - targets: ['127.0.0.1:{metrics}']\n"
        ),
    )
    .unwrap();
    let _prom = Daemon::start({
        let mut cmd = Command::new(&prometheus);
        cmd.arg(format!("--config.file={}", pcfg.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom}"));
        cmd
    });
    let queries = [
        ("correio_logins_total{result=\"success\"}", "1"),
        ("correio_logins_total{result=\"wrong_credentials\"}", "1"),
        ("correio_messages_sent_total", "1"),
        ("correio_lmtp_deliveries_total{result=\"delivered\"}", "1"),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    for (q, want) in queries {
        loop {
            let path = format!("/api/v1/query?query={}", urlencode(q));
            let got = std::net::TcpStream::connect(("127.0.0.1", prom))
                .ok()
                .map(|_| http_get(prom, &path).1)
                .unwrap_or_default();
            let value = serde_json::from_str::<serde_json::Value>(&got)
                .ok()
                .and_then(|v| {
                    v["data"]["result"][0]["value"][1]
                        .as_str()
                        .map(str::to_owned)
                });
            if value.as_deref() == Some(want) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus never returned {want} for {q}: {got}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
