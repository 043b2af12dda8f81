//! `[tls] sni`: one certificate per domain name. A client naming a configured host
//! (SNI) gets that host's certificate, any other client the default pair; a missing
//! SNI file stops `serve` naming it; and (as root, the server dropped to `nobody`) a
//! SIGHUP after replacing an SNI pair with a root-only key serves the new one, read
//! through the privileged helper. Certificates are compared by their DER bytes as
//! `openssl s_client` receives them.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};

use correio_testkit::daemon::{Daemon, is_root};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_correio");

/// A self-signed pair for `host` written by `correio cert` into `dir/tls/`.
fn make_cert(dir: &Path, host: &str) {
    let out = Command::new(BIN)
        .args([
            "cert",
            "--data",
            dir.to_str().unwrap(),
            "--host",
            host,
            "--force",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The DER of `pem`'s first certificate, via openssl.
fn der_of_file(pem: &Path) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in", pem.to_str().unwrap()])
        .output()
        .expect("openssl");
    assert!(out.status.success());
    out.stdout
}

/// The DER of the certificate the server presents for `servername` (none: no SNI).
fn served(port: u16, servername: Option<&str>) -> Vec<u8> {
    let mut args = vec![
        "s_client".to_owned(),
        "-connect".to_owned(),
        format!("127.0.0.1:{port}"),
    ];
    match servername {
        Some(n) => args.extend(["-servername".to_owned(), n.to_owned()]),
        None => args.push("-noservername".to_owned()),
    }
    let mut c = Command::new("openssl")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl");
    c.stdin.take().unwrap().write_all(b"QUIT\r\n").unwrap();
    let out = c.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let end = text.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    let mut c = Command::new("openssl")
        .args(["x509", "-outform", "DER"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(text[start..end].as_bytes())
        .unwrap();
    c.wait_with_output().unwrap().stdout
}

#[test]
fn one_certificate_per_server_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path();
    let (default, net, org) = (root.join("default"), root.join("net"), root.join("org"));
    make_cert(&default, "localhost");
    make_cert(&net, "mail.example.net");
    make_cert(&org, "pop.example.org");
    let user_line = if is_root() { "user = \"nobody\"\n" } else { "" };
    let cfg = root.join("c.toml");
    let text = format!(
        "data_dir = \"{d}/data\"\n{user_line}[listen]\npop3s = [\"127.0.0.1:0\"]\n\
         [tls]\ncert = \"{def}/tls/cert.pem\"\nkey = \"{def}/tls/key.pem\"\n\
         sni = [\n  {{ name = \"Mail.Example.Net\", cert = \"{net}/tls/cert.pem\", key = \"{net}/tls/key.pem\" }},\n\
                  {{ name = \"pop.example.org\", cert = \"{org}/tls/cert.pem\", key = \"{org}/tls/key.pem\" }},\n]\n",
        d = root.display(),
        def = default.display(),
        net = net.display(),
        org = org.display(),
    );
    std::fs::write(&cfg, &text).unwrap();
    let check = Command::new(BIN)
        .args(["check", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let mut server = Daemon::start({
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config", cfg.to_str().unwrap()]);
        cmd
    });
    // Port 0 in the configuration: the server reports the port it bound.
    let port = server
        .wait_listening("listening", " tls=true", Duration::from_secs(20))
        .port();

    let want_default = der_of_file(&default.join("tls/cert.pem"));
    let want_net = der_of_file(&net.join("tls/cert.pem"));
    let want_org = der_of_file(&org.join("tls/cert.pem"));
    assert_eq!(served(port, Some("mail.example.net")), want_net);
    assert_eq!(served(port, Some("pop.example.org")), want_org);
    assert_eq!(served(port, Some("other.example.com")), want_default);
    assert_eq!(served(port, None), want_default);

    if is_root() {
        // Replace mail.example.net's pair by one whose key only root may read, and
        // reload: the server (now `nobody`) gets it through the privileged helper.
        let renewed = root.join("renewed");
        make_cert(&renewed, "mail.example.net");
        for f in ["cert.pem", "key.pem"] {
            std::fs::copy(renewed.join("tls").join(f), net.join("tls").join(f)).unwrap();
            std::os::unix::fs::chown(net.join("tls").join(f), Some(0), Some(0)).unwrap();
        }
        std::fs::set_permissions(
            net.join("tls/key.pem"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        server.signal("HUP");
        let want_new = der_of_file(&renewed.join("tls/cert.pem"));
        assert_ne!(want_new, want_net);
        let deadline = Instant::now() + Duration::from_secs(10);
        while served(port, Some("mail.example.net")) != want_new {
            assert!(Instant::now() < deadline, "{}", server.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(served(port, Some("pop.example.org")), want_org);
    }
    drop(server);

    // A missing SNI file stops serve, naming it.
    std::fs::write(
        &cfg,
        text.replace("org}/tls/key.pem", "org}/tls/nope.pem")
            .replace(
                &format!("{}/tls/key.pem\" }},\n]", org.display()),
                &format!("{}/tls/missing.pem\" }},\n]", org.display()),
            ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing.pem"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
