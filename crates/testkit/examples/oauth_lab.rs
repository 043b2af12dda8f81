//! A lab for trying `correio fetch` with OAuth2 by hand: starts the stand-in
//! authorization server and a Dovecot (POP3 + IMAP, the `oauth2` passdb introspecting
//! against the stand-in; user `alice`, password `apw`, three messages in her INBOX),
//! prints their addresses, and runs until the file given as the first argument exists.
//!
//! ```sh
//! cargo run -p correio-testkit --example oauth_lab -- /tmp/stop-lab   # as root
//! ```

use std::path::PathBuf;

use correio_testkit::oauth_server::{AuthServer, AuthServerConfig, OAuthClient};
use correio_testkit::{Dovecot, DovecotConfig};

fn main() -> anyhow::Result<()> {
    let stop = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "/tmp/stop-lab".into()),
    );
    let auth = AuthServer::start(AuthServerConfig {
        clients: vec![OAuthClient {
            id: "correio-demo".into(),
            secret: None,
            app_user: None,
        }],
        user: "alice".into(),
        access_lifetime: 3600,
        device_interval: 1,
        slow_down_once: false,
    });
    let d = Dovecot::start(&DovecotConfig {
        users: vec![("alice".into(), "apw".into())],
        imap: true,
        tls: true,
        oauth2_introspection_url: Some(auth.introspection_url()),
        ..Default::default()
    })?;
    let cur = d.maildir("alice").join("cur");
    std::fs::create_dir_all(&cur)?;
    for sub in ["new", "tmp"] {
        std::fs::create_dir_all(d.maildir("alice").join(sub))?;
    }
    for i in 1..=3 {
        std::fs::write(
            cur.join(format!("17000000{i}.M{i}P1.lab:2,")),
            format!(
                "Date: Fri, 0{i} Dec 2026 09:00:00 +0100\nFrom: bob@example.org\nTo: alice@example.test\nSubject: lab message {i}\n\n.a line with a leading dot\nbody {i}\n"
            ),
        )?;
    }
    d.give_mail_to_owner()?;
    println!("POP3={}", d.pop3_addr());
    println!("IMAP={}", d.imap_addr().unwrap_or(d.pop3_addr()));
    println!("CA={}", d.cert_pem().unwrap_or_default().display());
    println!("AUTHORIZATION_URL={}", auth.authorization_url());
    println!("TOKEN_URL={}", auth.token_url());
    println!("DEVICE_URL={}", auth.device_url());
    println!("MAILDIR={}", d.maildir("alice").display());
    println!("READY");
    while !stop.exists() {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    eprintln!("stand-in requests:\n{}", auth.log());
    Ok(())
}
