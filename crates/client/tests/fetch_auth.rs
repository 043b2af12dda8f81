//! How the fetcher logs in, against scripted servers: `auth = auto` falling back to
//! LOGIN when a server refuses USER, and the errors of refused challenge-response
//! mechanisms (a CRAM-MD5 `-ERR`, a SCRAM `e=` server error), which must name the
//! mechanism and the way to choose another (issue #9).

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use correio_client::fetch::config::{AccountConfig, resolve};
use correio_client::fetch::{Account, FetchError, Silent, fetch_account};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// What the scripted server does at login.
#[derive(Debug, Clone, Copy)]
enum Script {
    /// CAPA lists USER and SASL LOGIN, but USER is refused; LOGIN works.
    RefuseUser,
    /// CAPA lists SASL CRAM-MD5 PLAIN; CRAM-MD5 is refused with `[AUTH]`.
    RefuseCramMd5,
    /// CAPA lists SASL SCRAM-SHA-256 PLAIN; the SCRAM server-final is `e=invalid-proof`.
    ScramServerError,
}

/// Serves one connection by `script`, recording every line the client sent.
async fn serve(listener: TcpListener, script: Script, seen: Arc<Mutex<Vec<String>>>) {
    let Ok((sock, _)) = listener.accept().await else {
        return;
    };
    let (r, mut w) = sock.into_split();
    let mut lines = BufReader::new(r).lines();
    // The next line from the client, recorded; `None` once it is gone.
    macro_rules! next_line {
        () => {
            match lines.next_line().await {
                Ok(Some(l)) => {
                    seen.lock().unwrap().push(l.clone());
                    l
                }
                _ => return,
            }
        };
    }
    // Sends one line (CRLF added); stops serving if the client is gone.
    macro_rules! send {
        ($($fmt:tt)*) => {
            if w.write_all(format!("{}\r\n", format!($($fmt)*)).as_bytes()).await.is_err() {
                return;
            }
        };
    }
    let capa = match script {
        Script::RefuseUser => "USER\r\nSASL LOGIN",
        Script::RefuseCramMd5 => "USER\r\nSASL CRAM-MD5 PLAIN",
        Script::ScramServerError => "USER\r\nSASL SCRAM-SHA-256 PLAIN",
    };
    send!("+OK scripted");
    loop {
        let line = next_line!();
        let kw = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
        match (kw.as_str(), script) {
            ("CAPA", _) => send!("+OK\r\n{capa}\r\nUIDL\r\n."),
            ("USER", Script::RefuseUser) => send!("-ERR USER is not taken here"),
            ("AUTH", Script::RefuseUser) => {
                send!("+ {}", B64.encode("Username:"));
                next_line!();
                send!("+ {}", B64.encode("Password:"));
                next_line!();
                send!("+OK logged in");
            }
            ("AUTH", Script::RefuseCramMd5) => {
                send!("+ {}", B64.encode("<1.2@scripted>"));
                next_line!();
                send!("-ERR [AUTH] Authentication failed");
            }
            ("AUTH", Script::ScramServerError) => {
                // AUTH SCRAM-SHA-256 <client-first>: a server-first extending the
                // client's nonce, then an e= server-final.
                let first = line.split(' ').nth(2).unwrap_or("");
                let first = String::from_utf8(B64.decode(first).unwrap_or_default()).unwrap();
                let cnonce = first.rsplit("r=").next().unwrap_or("").to_owned();
                let salt = B64.encode(b"sixteen byte salt");
                send!("+ {}", B64.encode(format!("r={cnonce}srv,s={salt},i=4096")));
                next_line!();
                send!("+ {}", B64.encode("e=invalid-proof"));
                // The client cancels with "*".
                next_line!();
                send!("-ERR [AUTH] Authentication failed");
            }
            ("LIST" | "UIDL", _) => send!("+OK\r\n."),
            ("QUIT", _) => {
                send!("+OK bye");
                return;
            }
            _ => send!("-ERR unexpected"),
        }
    }
}

async fn start(script: Script) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(serve(l, script, seen.clone()));
    (port, seen)
}

fn account(port: u16, dir: &std::path::Path, auth: &str) -> Account {
    let c = AccountConfig {
        host: Some("127.0.0.1".into()),
        port: Some(port),
        user: Some("u".into()),
        tls: Some("none".into()),
        auth: Some(auth.into()),
        to: Some(format!("maildir:{}", dir.join("Mail").display())),
        state_dir: Some(dir.join("state").display().to_string()),
        timeout: Some("5s".into()),
        ..Default::default()
    };
    let mut a = resolve("scripted", &c).unwrap();
    a.password = Some(b"p".to_vec());
    a
}

#[tokio::test]
async fn auto_falls_back_to_login_when_the_server_refuses_user() {
    let (port, seen) = start(Script::RefuseUser).await;
    let dir = tempfile::tempdir().unwrap();
    let s = fetch_account(
        &account(port, dir.path(), "auto"),
        &correio_client::sasl::factory,
        &Silent,
    )
    .await
    .unwrap();
    assert_eq!(s.on_server, 0);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        &seen[..5],
        [
            "CAPA",
            "USER u",
            "AUTH LOGIN",
            &B64.encode("u"),
            &B64.encode("p")
        ],
        "{seen:?}"
    );
    assert!(!seen.iter().any(|l| l.starts_with("PASS")), "{seen:?}");
}

#[tokio::test]
async fn a_refused_cram_md5_names_the_mechanism_and_the_auth_flag() {
    let (port, _) = start(Script::RefuseCramMd5).await;
    let dir = tempfile::tempdir().unwrap();
    let e = fetch_account(
        &account(port, dir.path(), "cram-md5"),
        &correio_client::sasl::factory,
        &Silent,
    )
    .await
    .unwrap_err();
    let FetchError::Login {
        method,
        reason,
        hint,
    } = &e
    else {
        panic!("not a login error: {e}");
    };
    assert_eq!(method, "CRAM-MD5");
    assert_eq!(reason, "[AUTH] Authentication failed");
    let hint = hint.as_deref().unwrap_or_default();
    assert!(hint.contains("no CRAM-MD5 secret"), "{hint}");
    assert!(hint.contains("`--auth plain`"), "{hint}");
    assert!(
        hint.contains("`auth = \"plain\"` in the account file"),
        "{hint}"
    );
    assert!(hint.contains("over TLS"), "{hint}");
}

#[tokio::test]
async fn auto_without_tls_picks_scram_and_its_server_error_says_how_to_avoid_it() {
    let (port, seen) = start(Script::ScramServerError).await;
    let dir = tempfile::tempdir().unwrap();
    let e = fetch_account(
        &account(port, dir.path(), "auto"),
        &correio_client::sasl::factory,
        &Silent,
    )
    .await
    .unwrap_err();
    let seen = seen.lock().unwrap().clone();
    assert!(seen[1].starts_with("AUTH SCRAM-SHA-256 "), "{seen:?}");
    let text = e.to_string();
    assert!(
        text.starts_with(
            "login failed: SCRAM-SHA-256 authentication failed (server error: invalid-proof)"
        ),
        "{text}"
    );
    assert!(
        text.contains("no SCRAM secret for this user; try `--auth plain`"),
        "{text}"
    );
}
