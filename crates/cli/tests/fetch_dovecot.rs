//! `correio fetch` against a real Dovecot (started on loopback by the testkit):
//! keep, delete, N days, size limits, STLS and implicit TLS, every target, compared
//! byte for byte with the corpus.

mod fetch_support;

use std::fs;

use correio_testkit::{Dovecot, DovecotConfig};
use fetch_support::*;

const USER: &str = "alice";
const PASS: &str = "s3cret word";

fn dovecot(msgs: &[Vec<u8>], tls: bool) -> Dovecot {
    let mut cfg = DovecotConfig::with_user(USER, PASS);
    cfg.tls = tls;
    let d = Dovecot::start(&cfg).expect("start dovecot");
    fill_maildir(&d.maildir(USER), msgs);
    d.give_mail_to_owner().unwrap();
    d
}

#[test]
fn keep_mode_fetches_once_byte_exact() {
    let msgs = corpus(30);
    let d = dovecot(&msgs, false);
    let port = d.pop3_addr().port();
    let work = tempdir();
    let md = work.path().join("Mail");
    let to = format!("maildir:{}", md.display());
    let args = ["--tls", "none", "--to", to.as_str()];
    let v = run_json(fetch_cmd("127.0.0.1", port, USER, PASS, work.path(), &args));
    assert_eq!(summary(&v)["fetched"], 30, "{v}");
    assert_eq!(summary(&v)["deleted"], 0);
    assert_eq!(maildir_messages(&md), sorted(&msgs));
    // Second run: nothing new, nothing twice.
    let v = run_json(fetch_cmd("127.0.0.1", port, USER, PASS, work.path(), &args));
    assert_eq!(summary(&v)["fetched"], 0, "{v}");
    assert_eq!(maildir_messages(&md).len(), 30);
    // The server still has everything.
    assert_eq!(maildir_messages(&d.maildir(USER)).len(), 30);
    // A new message arrives: only it is fetched.
    d.deliver_with_lda(USER, b"Subject: late\n\nlate body\n")
        .unwrap();
    let v = run_json(fetch_cmd("127.0.0.1", port, USER, PASS, work.path(), &args));
    assert_eq!(summary(&v)["fetched"], 1, "{v}");
    assert_eq!(maildir_messages(&md).len(), 31);
}

#[test]
fn delete_mode_empties_the_server() {
    let msgs = corpus(25);
    let d = dovecot(&msgs, false);
    let work = tempdir();
    let md = work.path().join("Mail");
    let to = format!("maildir:{}", md.display());
    let v = run_json(fetch_cmd(
        "127.0.0.1",
        d.pop3_addr().port(),
        USER,
        PASS,
        work.path(),
        &[
            "--tls",
            "none",
            "--delete",
            "--to",
            &to,
            "--batch-messages",
            "7",
        ],
    ));
    assert_eq!(summary(&v)["fetched"], 25, "{v}");
    assert_eq!(summary(&v)["deleted"], 25, "{v}");
    assert_eq!(maildir_messages(&md), sorted(&msgs));
    assert!(maildir_messages(&d.maildir(USER)).is_empty());
}

#[test]
fn delete_after_days_deletes_only_old_messages() {
    let msgs = corpus(6);
    let d = dovecot(&msgs, false);
    let port = d.pop3_addr().port();
    let work = tempdir();
    let md = work.path().join("Mail");
    let to = format!("maildir:{}", md.display());
    let args = [
        "--tls",
        "none",
        "--delete-after-days",
        "3",
        "--to",
        to.as_str(),
    ];
    let v = run_json(fetch_cmd("127.0.0.1", port, USER, PASS, work.path(), &args));
    assert_eq!(summary(&v)["fetched"], 6);
    assert_eq!(summary(&v)["deleted"], 0);
    // Age two records to 4 days, as if fetched back then.
    let state_file = fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "state"))
        .unwrap();
    let mut state: serde_json::Value =
        serde_json::from_slice(&fs::read(&state_file).unwrap()).unwrap();
    let seen = state["seen"].as_object_mut().unwrap();
    let old = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 4 * 86400;
    for (_, v) in seen.iter_mut().take(2) {
        *v = old.into();
    }
    fs::write(&state_file, serde_json::to_vec(&state).unwrap()).unwrap();
    let v = run_json(fetch_cmd("127.0.0.1", port, USER, PASS, work.path(), &args));
    assert_eq!(summary(&v)["fetched"], 0, "{v}");
    assert_eq!(summary(&v)["deleted"], 2, "{v}");
    assert_eq!(maildir_messages(&d.maildir(USER)).len(), 4);
    assert_eq!(maildir_messages(&md).len(), 6);
}

#[test]
fn size_limit_skip_delete_and_headers_only() {
    let msgs = corpus(14);
    let d = dovecot(&msgs, false);
    let port = d.pop3_addr().port();
    let big = msgs.iter().filter(|m| m.len() > 2000).count();
    assert!(big > 0);
    let work = tempdir();
    let md = work.path().join("Mail");
    let to = format!("maildir:{}", md.display());
    let v = run_json(fetch_cmd(
        "127.0.0.1",
        port,
        USER,
        PASS,
        work.path(),
        &["--tls", "none", "--max-size", "2000", "--to", &to],
    ));
    assert_eq!(summary(&v)["skipped_oversize"], big as u64, "{v}");
    assert_eq!(summary(&v)["fetched"], (14 - big) as u64);
    let small: Vec<Vec<u8>> = msgs.iter().filter(|m| m.len() <= 1900).cloned().collect();
    assert_eq!(maildir_messages(&md), sorted(&small));

    // Headers only, into another place with its own state.
    let work2 = tempdir();
    let md2 = work2.path().join("H");
    let to2 = format!("maildir:{}", md2.display());
    let v = run_json(fetch_cmd(
        "127.0.0.1",
        port,
        USER,
        PASS,
        work2.path(),
        &["--tls", "none", "--headers-only", "--to", &to2],
    ));
    assert_eq!(summary(&v)["fetched"], 14);
    let heads: Vec<Vec<u8>> = msgs
        .iter()
        .map(|m| {
            let end = m.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
            m[..end].to_vec()
        })
        .collect();
    assert_eq!(maildir_messages(&md2), sorted(&heads));

    // Oversize delete: removes the big ones on the server without fetching them.
    let work3 = tempdir();
    let md3 = work3.path().join("M");
    let to3 = format!("maildir:{}", md3.display());
    let v = run_json(fetch_cmd(
        "127.0.0.1",
        port,
        USER,
        PASS,
        work3.path(),
        &[
            "--tls",
            "none",
            "--max-size",
            "2000",
            "--oversize",
            "delete",
            "--to",
            &to3,
        ],
    ));
    assert_eq!(summary(&v)["deleted"], big as u64, "{v}");
    assert_eq!(maildir_messages(&d.maildir(USER)).len(), 14 - big);
}

#[test]
fn implicit_tls_and_stls_with_ca_and_fingerprint() {
    let msgs = corpus(5);
    let d = dovecot(&msgs, true);
    let ca = d.cert_pem().unwrap();
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&ca)
        .output()
        .expect("openssl (Debian package openssl) is needed");
    let printed = String::from_utf8(out.stdout).unwrap();
    let fp = printed.trim().split('=').nth(1).unwrap().to_owned();
    let s_port = d.pop3s_addr().unwrap().port();
    let p_port = d.pop3_addr().port();
    for (port, tls, trust) in [
        (s_port, "implicit", vec!["--ca", ca.to_str().unwrap()]),
        (s_port, "implicit", vec!["--fingerprint", fp.as_str()]),
        (p_port, "starttls", vec!["--ca", ca.to_str().unwrap()]),
        (p_port, "starttls", vec!["--fingerprint", fp.as_str()]),
    ] {
        let work = tempdir();
        let md = work.path().join("Mail");
        let to = format!("maildir:{}", md.display());
        let mut args = vec!["--tls", tls, "--to", to.as_str()];
        args.extend(trust.iter().copied());
        // The certificate is for "localhost".
        let v = run_json(fetch_cmd("localhost", port, USER, PASS, work.path(), &args));
        assert_eq!(summary(&v)["fetched"], 5, "{tls} {trust:?}: {v}");
        assert_eq!(maildir_messages(&md), sorted(&msgs));
    }
    // A wrong pin is refused before any password is sent.
    let work = tempdir();
    let bad = "00".repeat(32);
    let out = fetch_cmd(
        "localhost",
        s_port,
        USER,
        PASS,
        work.path(),
        &[
            "--tls",
            "implicit",
            "--fingerprint",
            &bad,
            "--to",
            "maildir:/nonexistent/x",
        ],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fingerprint"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No trust configured: the self-signed certificate is refused.
    let out = fetch_cmd(
        "localhost",
        s_port,
        USER,
        PASS,
        work.path(),
        &["--tls", "implicit", "--to", "maildir:/nonexistent/x"],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
}

#[test]
fn every_target_byte_exact() {
    let msgs = corpus(14);
    let d = dovecot(&msgs, false);
    let port = d.pop3_addr().port();

    // mbox (mboxrd): unquote and split, then compare.
    let work = tempdir();
    let mbox = work.path().join("inbox.mbox");
    let to = format!("mbox:{}", mbox.display());
    let v = run_json(fetch_cmd(
        "127.0.0.1",
        port,
        USER,
        PASS,
        work.path(),
        &["--tls", "none", "--to", &to],
    ));
    assert_eq!(summary(&v)["fetched"], 14);
    let text = fs::read(&mbox).unwrap();
    assert_eq!(sorted(&split_mboxrd(&text)), sorted(&msgs));

    // EML folder: CRLF files.
    let work = tempdir();
    let eml = work.path().join("eml");
    let to = format!("eml:{}", eml.display());
    run_json(fetch_cmd(
        "127.0.0.1",
        port,
        USER,
        PASS,
        work.path(),
        &["--tls", "none", "--to", &to],
    ));
    let mut got: Vec<Vec<u8>> = fs::read_dir(&eml)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .map(|p| fs::read(p).unwrap())
        .collect();
    got.sort();
    let crlf: Vec<Vec<u8>> = msgs
        .iter()
        .map(|m| {
            String::from_utf8_lossy(m)
                .replace('\n', "\r\n")
                .into_bytes()
        })
        .collect();
    assert_eq!(got, sorted(&crlf));

    // MDA: each message to a numbered file.
    let work = tempdir();
    let out = work.path().join("mda");
    fs::create_dir(&out).unwrap();
    let to = format!("mda:cat > {}/$(date +%s%N).msg", out.display());
    run_json(fetch_cmd(
        "127.0.0.1",
        port,
        USER,
        PASS,
        work.path(),
        &["--tls", "none", "--to", &to],
    ));
    let mut got: Vec<Vec<u8>> = fs::read_dir(&out)
        .unwrap()
        .map(|e| fs::read(e.unwrap().path()).unwrap())
        .collect();
    got.sort();
    assert_eq!(got, sorted(&msgs));
}

/// Splits an mboxrd file into messages, undoing the quoting and the separator line.
fn split_mboxrd(data: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(data);
    let mut msgs: Vec<Vec<u8>> = Vec::new();
    for line in text.split_inclusive('\n') {
        if line.starts_with("From ") {
            msgs.push(Vec::new());
            continue;
        }
        let cur = msgs.last_mut().unwrap();
        let unq = if line.trim_start_matches('>').starts_with("From ") && line.starts_with('>') {
            &line[1..]
        } else {
            line
        };
        cur.extend_from_slice(unq.as_bytes());
    }
    // Each message is followed by one blank separator line.
    for m in &mut msgs {
        assert!(m.ends_with(b"\n\n") || m == b"\n", "separator missing");
        m.pop();
    }
    msgs
}

#[test]
fn every_auth_method_dovecot_offers() {
    let msgs = corpus(2);
    let mut cfg = DovecotConfig::with_user(USER, PASS);
    cfg.extra_config = "auth_mechanisms = plain login cram-md5 scram-sha-256\n".into();
    let d = Dovecot::start(&cfg).expect("start dovecot");
    fill_maildir(&d.maildir(USER), &msgs);
    d.give_mail_to_owner().unwrap();
    for auth in [
        "user",
        "plain",
        "login",
        "cram-md5",
        "scram-sha-256",
        "auto",
    ] {
        let work = tempdir();
        let md = work.path().join("Mail");
        let to = format!("maildir:{}", md.display());
        let v = run_json(fetch_cmd(
            "127.0.0.1",
            d.pop3_addr().port(),
            USER,
            PASS,
            work.path(),
            &["--tls", "none", "--auth", auth, "--to", &to],
        ));
        assert_eq!(summary(&v)["fetched"], 2, "{auth}: {v}");
    }
    // A wrong password is a clear failure, and nothing is stored.
    let work = tempdir();
    let out = fetch_cmd(
        "127.0.0.1",
        d.pop3_addr().port(),
        USER,
        "wrong",
        work.path(),
        &[
            "--tls",
            "none",
            "--auth",
            "scram-sha-256",
            "--to",
            "maildir:/nonexistent/x",
        ],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("login failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn config_file_accounts_run_concurrently_with_shared_defaults() {
    let a = corpus(4);
    let b: Vec<Vec<u8>> = corpus(9)[4..].to_vec();
    let cfg = DovecotConfig {
        users: vec![("ann".into(), "pa".into()), ("ben".into(), "pb".into())],
        ..Default::default()
    };
    let d = Dovecot::start(&cfg).expect("start dovecot");
    fill_maildir(&d.maildir("ann"), &a);
    fill_maildir(&d.maildir("ben"), &b);
    d.give_mail_to_owner().unwrap();
    let work = tempdir();
    let w = work.path().display();
    let port = d.pop3_addr().port();
    let toml = format!(
        r#"
[defaults]
host = "127.0.0.1"
port = {port}
tls = "none"
state_dir = "{w}/state"
delete = true

[account.ann]
user = "ann"
password_command = "echo pa"
to = "maildir:{w}/ann"

[account.ben]
user = "ben"
password_command = "echo pb"
to = "mbox:{w}/ben.mbox"
keep = true
delete = false
"#
    );
    fs::write(work.path().join("f.toml"), toml).unwrap();
    let mut c = correio();
    c.args([
        "fetch",
        "--config",
        work.path().join("f.toml").to_str().unwrap(),
    ])
    .env("HOME", work.path());
    let v = run_json(c);
    let accts = v["accounts"].as_array().unwrap();
    assert_eq!(accts.len(), 2, "{v}");
    assert_eq!(accts[0]["summary"]["account"], "ann");
    assert_eq!(accts[0]["summary"]["deleted"], 4);
    assert_eq!(accts[1]["summary"]["fetched"], 5);
    assert_eq!(accts[1]["summary"]["deleted"], 0);
    assert_eq!(maildir_messages(&work.path().join("ann")), sorted(&a));
    assert!(maildir_messages(&d.maildir("ann")).is_empty());
    assert_eq!(maildir_messages(&d.maildir("ben")).len(), 5);
    // --account picks one.
    let mut c = correio();
    c.args([
        "fetch",
        "--config",
        work.path().join("f.toml").to_str().unwrap(),
        "--account",
        "ben",
    ])
    .env("HOME", work.path());
    let v = run_json(c);
    assert_eq!(v["accounts"].as_array().unwrap().len(), 1);
    assert_eq!(summary(&v)["fetched"], 0);
}
