//! OAuth2 end to end: `correio fetch` gets tokens from the test kit's stand-in
//! authorization server (Google and Microsoft cannot be reached from tests; the
//! stand-in implements RFC 6749, 7636, 8628 and 7662), and a real Dovecot validates
//! them with its `oauth2` passdb by introspection against the same stand-in, for POP3
//! (the source) and IMAP (the destination).
//!
//! The browser's step of the PKCE flow is an HTTP GET of the URL the CLI prints; the
//! stand-in redirects it to the CLI's loopback listener with the code and state.

mod fetch_support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use correio_testkit::imap_reader::read_folder;
use correio_testkit::oauth_server::{AuthServer, AuthServerConfig, OAuthClient, browser_visit};
use correio_testkit::{Dovecot, DovecotConfig};
use fetch_support::*;

const CLIENT: &str = "correio-test-client";

fn stand_in(lifetime: u64) -> AuthServer {
    AuthServer::start(AuthServerConfig {
        clients: vec![
            OAuthClient {
                id: CLIENT.into(),
                secret: None,
                app_user: None,
            },
            OAuthClient {
                id: "correio-daemon".into(),
                secret: Some("app-secret".into()),
                app_user: Some("alice".into()),
            },
        ],
        user: "alice".into(),
        access_lifetime: lifetime,
        device_interval: 1,
        slow_down_once: true,
    })
}

fn dovecot(auth: &AuthServer) -> Dovecot {
    let cfg = DovecotConfig {
        users: vec![("alice".into(), "apw".into()), ("bob".into(), "bpw".into())],
        imap: true,
        tls: true,
        oauth2_introspection_url: Some(auth.introspection_url()),
        ..Default::default()
    };
    Dovecot::start(&cfg).expect("start dovecot with imap and the oauth2 passdb")
}

/// Messages with Date headers (for INTERNALDATE), LF line ends as in the Maildir.
fn dated(n: usize) -> Vec<Vec<u8>> {
    corpus(n)
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let mut d = format!(
                "Date: Tue, {:02} Jul 2003 10:{:02}:37 +0200 (CEST)\n",
                1 + i % 28,
                i % 60
            )
            .into_bytes();
            d.extend_from_slice(&m);
            d
        })
        .collect()
}

fn crlf(m: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.len() + 64);
    for &b in m {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// Runs `cmd` with stderr piped; lines go to a channel (and are kept for failures).
fn spawn(mut cmd: Command) -> (Child, mpsc::Receiver<String>) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits for a line containing `needle` (the child writes it before it waits on us).
fn wait_line(rx: &mpsc::Receiver<String>, needle: &str, seen: &mut Vec<String>) -> String {
    loop {
        match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(l) => {
                seen.push(l.clone());
                if l.contains(needle) {
                    return l;
                }
            }
            Err(e) => panic!(
                "no line with {needle:?} ({e}); stderr so far:\n{}",
                seen.join("\n")
            ),
        }
    }
}

fn finish(mut child: Child, rx: mpsc::Receiver<String>, mut seen: Vec<String>) -> Vec<String> {
    let status = child.wait().unwrap();
    seen.extend(rx.iter());
    assert!(status.success(), "{status}; stderr:\n{}", seen.join("\n"));
    seen
}

/// The PKCE "browser": the URL from the CLI's output, visited.
fn approve_in_browser(child: Child, rx: mpsc::Receiver<String>) -> Vec<String> {
    let mut seen = Vec::new();
    let line = wait_line(&rx, "/authorize?", &mut seen);
    let url = line.trim().to_owned();
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    assert!(
        url.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A"),
        "{url}"
    );
    let status = browser_visit(&url).unwrap();
    assert!(
        status.contains(" 200 "),
        "loopback listener answered {status}"
    );
    finish(child, rx, seen)
}

fn oauth_flags(auth: &AuthServer) -> Vec<String> {
    [
        "--oauth2-provider",
        "custom",
        "--oauth2-client-id",
        CLIENT,
        "--oauth2-authorization-url",
        &auth.authorization_url(),
        "--oauth2-token-url",
        &auth.token_url(),
        "--oauth2-device-url",
        &auth.device_url(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// An IMAP date-time as seconds since the epoch.
fn instant(d: &str) -> i64 {
    let f = time::macros::format_description!(
        "[day]-[month repr:short]-[year] [hour]:[minute]:[second] [offset_hour sign:mandatory][offset_minute]"
    );
    time::OffsetDateTime::parse(d, &f)
        .unwrap_or_else(|e| panic!("{d:?}: {e}"))
        .unix_timestamp()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn token_file(state: &Path) -> std::path::PathBuf {
    std::fs::read_dir(state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".oauth2.json"))
        .expect("token file")
}

fn access_token(state: &Path) -> String {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(token_file(state)).unwrap()).unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

/// `--configure` with autoconfig pointing at Dovecot, the stand-in's endpoints, the
/// PKCE step by HTTP GET; then a fetch from Dovecot POP3 (XOAUTH2) into Dovecot IMAP
/// (XOAUTH2 with the same token, folder created on TRYCREATE) with deletion on the
/// source. IMAP BODY.PEEK[] gives back the POP3 bytes exactly: the Maildir holds LF
/// line ends, POP3 and IMAP both carry CRLF, so each stored body must equal the
/// original with every LF made CRLF. INTERNALDATE is the Date header's.
#[test]
fn pkce_configure_then_pop3_to_imap_with_xoauth2_and_delete() {
    let auth = stand_in(3600);
    let d = dovecot(&auth);
    let msgs = dated(12);
    fill_maildir(&d.maildir("alice"), &msgs);
    d.give_mail_to_owner().unwrap();
    let work = tempdir();
    let state = work.path().join("state");
    let cfg = work.path().join("fetch.toml");
    let xml = format!(
        r#"<clientConfig version="1.1"><emailProvider id="example.test"><domain>example.test</domain>
        <incomingServer type="pop3"><hostname>127.0.0.1</hostname><port>{}</port><socketType>plain</socketType>
        <username>alice</username><authentication>OAuth2</authentication></incomingServer></emailProvider></clientConfig>"#,
        d.pop3_addr().port()
    );
    let http = HttpServer::start("/mail/config-v1.1.xml", xml);
    let dns = DnsServer::start(vec![]);
    let imap = d.imap_addr().unwrap();
    let ca = d.cert_pem().unwrap();
    let mut c = correio();
    c.args(["fetch", "--configure", "alice@example.test"])
        .args(["--config", cfg.to_str().unwrap()])
        .args(["--state-dir", state.to_str().unwrap()])
        .args(["--dns-server", &dns.addr.to_string()])
        .args(["--autoconfig-url", &http.base, "--ispdb-url", &http.base])
        .args(oauth_flags(&auth))
        .args([
            "--to",
            &format!("imap://alice@127.0.0.1:{}/Archive", imap.port()),
        ])
        .args(["--to-auth", "xoauth2", "--to-ca", ca.to_str().unwrap()])
        .env("HOME", work.path());
    let (child, rx) = spawn(c);
    let out = approve_in_browser(child, rx);
    assert!(
        out.iter().any(|l| l.contains("Authorised: tokens stored")),
        "{out:?}"
    );
    let tf = token_file(&state);
    assert_eq!(mode(&tf), 0o600, "token file must be private");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        text.contains("[account.\"alice@example.test\".oauth2]"),
        "{text}"
    );
    assert!(text.contains("auth = \"xoauth2\""), "{text}");
    assert_eq!(auth.grants("authorization_code"), 1);

    let v = run_json({
        let mut c = correio();
        c.args(["fetch", "--config", cfg.to_str().unwrap(), "--delete"])
            .env("HOME", work.path());
        c
    });
    let s = summary(&v);
    assert_eq!(s["fetched"], 12, "{v}");
    assert_eq!(s["deleted"], 12, "{v}");
    // The stored token was fresh: no refresh; Dovecot introspected it for POP3 and IMAP.
    assert_eq!(auth.grants("refresh_token"), 0);
    assert!(auth.introspections() >= 2, "{}", auth.log());

    let stored = read_folder(imap, "alice", "apw", "Archive").unwrap();
    let mut got: Vec<Vec<u8>> = stored.iter().map(|m| m.body.clone()).collect();
    got.sort();
    let mut want: Vec<Vec<u8>> = msgs.iter().map(|m| crlf(m)).collect();
    want.sort();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "IMAP bodies differ from the POP3 messages");
    for m in &stored {
        let date = String::from_utf8_lossy(&m.body)
            .lines()
            .next()
            .unwrap()
            .to_owned();
        // "Date: Tue, DD Jul 2003 10:MM:37 +0200 (CEST)" -> "DD-Jul-2003 10:MM:37 +0200"
        let parts: Vec<&str> = date.split_whitespace().collect();
        let want = format!(
            "{:0>2}-{}-{} {} {}",
            parts[2], parts[3], parts[4], parts[5], parts[6]
        );
        // Dovecot's Maildir keeps the instant (the file's mtime), not the zone.
        assert_eq!(
            instant(&m.internaldate),
            instant(&want),
            "{}",
            m.internaldate
        );
        assert!(!m.flags.contains("\\Seen"), "{}", m.flags);
    }
    assert!(
        maildir_messages(&d.maildir("alice")).is_empty(),
        "POP3 source not emptied"
    );
    // APPENDUID kept beside the state file.
    let uids = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".imap-uids"))
        .expect("APPENDUID log");
    // One batch, one MULTIAPPEND: one line, the folder's UIDVALIDITY and UIDs 1:12.
    let text = std::fs::read_to_string(uids).unwrap();
    let fields: Vec<&str> = text.trim_end().split('\t').collect();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert_eq!((fields[0], fields[2]), ("Archive", "1:12"), "{text}");
}

fn account_file(work: &Path, auth: &AuthServer, pop3: u16, extra: &str) -> std::path::PathBuf {
    let cfg = work.join("fetch.toml");
    std::fs::write(
        &cfg,
        format!(
            "[account.alice]\nhost = \"127.0.0.1\"\nport = {pop3}\ntls = \"none\"\nuser = \"alice\"\n\
             state_dir = \"{state}\"\nto = \"maildir:{md}\"\n{extra}\n\
             [account.alice.oauth2]\nprovider = \"custom\"\nclient_id = \"{CLIENT}\"\n\
             authorization_url = \"{a}\"\ntoken_url = \"{t}\"\ndevice_url = \"{dv}\"\n",
            state = work.join("state").display(),
            md = work.join("Mail").display(),
            a = auth.authorization_url(),
            t = auth.token_url(),
            dv = auth.device_url(),
        ),
    )
    .unwrap();
    cfg
}

fn fetch_config(cfg: &Path, extra: &[&str]) -> std::process::Output {
    correio()
        .args(["fetch", "--config", cfg.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap()
}

/// Tokens that expire within the refresh margin are refreshed before login, and the
/// refreshed token is what Dovecot accepts; once consent is revoked the refresh gets
/// invalid_grant and the message names the exact command that fixes it.
#[test]
fn expiring_token_is_refreshed_and_revoked_consent_names_the_fix() {
    // 30 s < the 60 s refresh margin: every run refreshes.
    let auth = stand_in(30);
    let d = dovecot(&auth);
    fill_maildir(&d.maildir("alice"), &dated(3));
    d.give_mail_to_owner().unwrap();
    let work = tempdir();
    let cfg = account_file(work.path(), &auth, d.pop3_addr().port(), "");
    let mut c = correio();
    c.args(["fetch", "--authorize", "--config", cfg.to_str().unwrap()]);
    let (child, rx) = spawn(c);
    approve_in_browser(child, rx);
    let state = work.path().join("state");
    let first = access_token(&state);

    // The refreshed token logs in to Dovecot POP3 and, as the destination, IMAP.
    let imap = d.imap_addr().unwrap();
    let to = format!("imap://alice@127.0.0.1:{}/Refreshed", imap.port());
    let ca = d.cert_pem().unwrap();
    let out = fetch_config(
        &cfg,
        &[
            "--keep",
            "--to",
            &to,
            "--to-auth",
            "xoauth2",
            "--to-ca",
            ca.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(auth.grants("refresh_token"), 1, "{}", auth.log());
    let second = access_token(&state);
    assert_ne!(first, second, "the token file holds the refreshed token");
    assert!(auth.is_active(&second));
    assert_eq!(
        read_folder(imap, "alice", "apw", "Refreshed")
            .unwrap()
            .len(),
        3
    );
    assert_eq!(mode(&token_file(&state)), 0o600);

    auth.revoke_refresh_tokens();
    let out = fetch_config(&cfg, &["--keep"]);
    assert_eq!(out.status.code(), Some(4), "authentication failure");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid_grant"), "{err}");
    let fix = format!(
        "run `correio fetch --authorize --config {} --account alice`",
        cfg.display()
    );
    assert!(err.contains(&fix), "{err}");
    // Tokens never reach the output.
    assert!(!err.contains(&second), "{err}");

    // Running as a daemon, the account stops (rather than retrying forever) with the
    // same message; with no account left, the daemon ends with a failure.
    let out = fetch_config(&cfg, &["--keep", "--every", "1s"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "every account stopped for authorisation"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("alice: stopped: "), "{err}");
    assert!(err.contains(&fix), "{err}");
}

/// The device flow (RFC 8628) for headless machines: the CLI prints the user code,
/// the "user" enters it at the stand-in; the CLI polls, slows down by 5 s when told
/// (the stand-in counts polls that came too early), and the token opens Dovecot POP3;
/// a token revoked before its expiry is refreshed once when the server refuses it.
#[test]
fn device_flow_honours_slow_down_and_its_token_logs_in() {
    let auth = stand_in(3600);
    let d = dovecot(&auth);
    fill_maildir(&d.maildir("alice"), &dated(2));
    d.give_mail_to_owner().unwrap();
    let work = tempdir();
    let cfg = account_file(work.path(), &auth, d.pop3_addr().port(), "");
    let mut c = correio();
    c.args(["fetch", "--authorize", "--config", cfg.to_str().unwrap()])
        .args(["--oauth2-flow", "device"]);
    let (child, rx) = spawn(c);
    let mut seen = Vec::new();
    let line = wait_line(&rx, "enter the code", &mut seen);
    let code = line.rsplit(' ').next().unwrap().trim().to_owned();
    assert!(auth.approve_device(&code), "{line}");
    finish(child, rx, seen);
    assert_eq!(auth.grants("device_code"), 1);
    assert_eq!(auth.early_polls(), 0, "{}", auth.log());
    let out = fetch_config(&cfg, &["--keep"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(maildir_messages(&work.path().join("Mail")).len(), 2);
    assert_eq!(auth.grants("refresh_token"), 0);

    // The provider revokes the access token before its expiry: Dovecot refuses it,
    // the fetcher refreshes once and logs in with the new one.
    auth.invalidate_access_tokens();
    let out = fetch_config(&cfg, &["--keep"]);
    let err = String::from_utf8_lossy(&out.stderr);
    // Nothing new: exit status 1, as fetchmail.
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("refreshing it and trying again"), "{err}");
    assert_eq!(auth.grants("refresh_token"), 1);
}

/// Client credentials (unattended Microsoft 365 tenants): no user step; the first
/// fetch gets the application token itself and logs in with it (XOAUTH2, then
/// OAUTHBEARER for POP3 and an IMAPS destination).
#[test]
fn client_credentials_fetch_without_any_user_step() {
    let auth = stand_in(3600);
    let d = dovecot(&auth);
    fill_maildir(&d.maildir("alice"), &dated(2));
    d.give_mail_to_owner().unwrap();
    let work = tempdir();
    let cfg = account_file(work.path(), &auth, d.pop3_addr().port(), "");
    let out = fetch_config(
        &cfg,
        &[
            "--oauth2-flow",
            "client-credentials",
            "--oauth2-client-id",
            "correio-daemon",
            "--oauth2-client-secret",
            "app-secret",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(auth.grants("client_credentials"), 1);
    assert_eq!(maildir_messages(&work.path().join("Mail")).len(), 2);

    // The same token with OAUTHBEARER (RFC 7628), POP3 and IMAP. The IMAP folder is a
    // new destination, whose state starts empty: it gets every message, the two
    // fetched into the Maildir before and two new ones.
    for m in &dated(4)[2..] {
        d.deliver_with_lda("alice", m).unwrap();
    }
    let imap = d.imap_addr().unwrap();
    let ca = d.cert_pem().unwrap();
    let out = fetch_config(
        &cfg,
        &[
            "--oauth2-flow",
            "client-credentials",
            "--oauth2-client-id",
            "correio-daemon",
            "--oauth2-client-secret",
            "app-secret",
            "--auth",
            "oauthbearer",
            "--delete",
            "--to",
            &format!(
                "imaps://alice@127.0.0.1:{}/Bearer",
                d.imaps_addr().unwrap().port()
            ),
            "--to-auth",
            "oauthbearer",
            "--to-ca",
            ca.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        auth.grants("client_credentials"),
        1,
        "the token was still fresh"
    );
    assert_eq!(
        read_folder(imap, "alice", "apw", "Bearer").unwrap().len(),
        4
    );
    assert!(maildir_messages(&d.maildir("alice")).is_empty());
}
