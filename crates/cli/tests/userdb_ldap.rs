//! Users in LDAP (issue #11): a real OpenLDAP `slapd`, started by the test on loopback
//! with its own configuration and database, ports chosen at run time, a test CA for
//! `ldaps://` and StartTLS, loaded with `ldapadd`, stopped by PID.
//!
//! Three ways the server can use it: bind as the user after a search by the service
//! account (over `ldaps://`), read `userPassword` with the service account and check
//! the hash here (`{SSHA}` from `slappasswd`, `{CRYPT}$6$`; over StartTLS), and bind
//! with a DN built from the login (no search). For each: LMTP finds the recipient, curl
//! and mpop fetch byte-exact, a wrong password and an unknown user answer alike, filter
//! injection (`*`, `)(`) never logs anyone in, an empty password (an LDAP "anonymous
//! bind") never either, and the directory stopped mid-run gives `-ERR [SYS/TEMP]` and
//! LMTP `451 4.3.0`, then recovers.

mod userdb_support;

use std::process::Command;

use correio_testkit::slapd::{self, Slapd};
use userdb_support::*;

fn slappasswd(scheme: &str, pw: &str) -> String {
    let out = Command::new("slappasswd")
        .args(["-h", scheme, "-s", pw])
        .output()
        .expect("slappasswd (Debian slapd)");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn load_people(ldap: &Slapd, root: &std::path::Path) {
    let ssha = slappasswd("{SSHA}", "pw-alice");
    let sha512 = {
        let out = Command::new("openssl")
            .args(["passwd", "-6", "pw-bob"])
            .output()
            .unwrap();
        format!("{{CRYPT}}{}", String::from_utf8(out.stdout).unwrap().trim())
    };
    let mut ldif = String::new();
    for (uid, n, pw) in [("alice", 2001, ssha), ("bob", 2002, sha512)] {
        ldif.push_str(&format!(
            "dn: uid={uid},{people}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n\
             uid: {uid}\ncn: {uid}\nsn: {uid}\nuidNumber: {n}\ngidNumber: {n}\n\
             homeDirectory: {home}\nuserPassword: {pw}\n\n",
            people = slapd::PEOPLE,
            home = root.join("home").join(uid).display(),
        ));
    }
    ldap.add_ldif(&ldif);
}

fn common_checks(s: &Served, ldap: &mut Slapd, tag: &str) {
    let alice_mail = corpus(&format!("{tag} alice"));
    for m in &alice_mail {
        let r = s.lmtp("alice", m);
        assert!(r.contains("250 2.0.0"), "LMTP to alice: {r}\n{}", s.log());
    }
    let bob_mail = corpus(&format!("{tag} bob"));
    for m in &bob_mail {
        assert!(s.lmtp("bob", m).contains("250 2.0.0"));
    }
    assert!(s.rcpt("nobody").starts_with("550 5.1.1"));
    let want: Vec<Vec<u8>> = alice_mail.iter().map(|m| as_served(m)).collect();
    assert_messages(
        &format!("curl, alice ({tag})"),
        &want,
        &curl_fetch(s, "alice", "pw-alice").unwrap(),
    );
    let want: Vec<Vec<u8>> = bob_mail.iter().map(|m| lf(&as_served(m))).collect();
    assert_messages(
        &format!("mpop, bob ({tag})"),
        &want,
        &mpop_fetch(s, "bob", "pw-bob", tag).unwrap(),
    );
    let wrong = s.login_reply("alice", "nope");
    assert!(wrong.starts_with("-ERR [AUTH]"), "{wrong}");
    assert_eq!(wrong, s.login_reply("zed", "nope"));
    assert_eq!(
        s.plain_reply(b"alice", b"nope"),
        s.plain_reply(b"zed", b"nope")
    );
    assert_hostile_names_refused(s, "pw-alice");
    // An empty password is an anonymous bind to LDAP: it must never log in.
    for script in [
        "USER alice\r\nPASS \r\nQUIT\r\n",
        "USER alice\r\nPASS\r\nQUIT\r\n",
    ] {
        let out = raw(s.pop3, script);
        assert!(!out.contains("+OK Logged in"), "{script:?}: {out}");
    }
    assert!(!s.plain_reply(b"alice", b"").starts_with("+OK"));

    ldap.stop();
    let r = s.login_reply("alice", "not-tried-before");
    assert!(
        r.starts_with("-ERR [SYS/TEMP]"),
        "directory down: {r}\n{}",
        s.log()
    );
    let r = s.login_reply("never-seen", "x");
    assert!(r.starts_with("-ERR [SYS/TEMP]"), "directory down: {r}");
    assert!(s.rcpt("frank").starts_with("451 4.3.0"));
    ldap.start();
    let r = s.login_reply("alice", "not-tried-before");
    assert!(
        r.starts_with("-ERR [AUTH]"),
        "after recovery: {r}\n{}",
        s.log()
    );
    assert!(s.login_reply("bob", "pw-bob").starts_with("+OK"));
    assert!(s.rcpt("frank").starts_with("550 5.1.1"));
    let log = s.log();
    for secret in [
        "pw-alice",
        "pw-bob",
        slapd::SERVICE_PASSWORD,
        "not-tried-before",
    ] {
        assert!(!log.contains(secret), "{secret} in the server log:\n{log}");
    }
}

#[test]
fn ldap_bind_as_the_user_over_ldaps() {
    let dir = open_dir();
    let mut ldap = Slapd::launch();
    load_people(&ldap, dir.path());
    let s = Served::start(
        dir.path(),
        &format!(
            "[auth]\nbackend = \"ldap\"\ncache_size = 0\n[auth.ldap]\nuri = \"{uri}\"\nca = \"{ca}\"\n\
             bind_dn = \"{sdn}\"\nbind_password = \"{spw}\"\nbase = \"{base}\"\ntimeout = \"3s\"\n",
            uri = ldap.ldaps_url(),
            ca = ldap.ca_pem().display(),
            sdn = slapd::SERVICE_DN,
            spw = slapd::SERVICE_PASSWORD,
            base = slapd::PEOPLE,
        ),
    );
    common_checks(&s, &mut ldap, "ldaps-bind");
}

#[test]
fn ldap_password_compare_over_starttls() {
    let dir = open_dir();
    let mut ldap = Slapd::launch();
    load_people(&ldap, dir.path());
    let s = Served::start(
        dir.path(),
        &format!(
            "[auth]\nbackend = \"ldap\"\ncache_size = 0\n[auth.ldap]\nuri = \"{uri}\"\nstarttls = true\n\
             ca = \"{ca}\"\nbind_dn = \"{sdn}\"\nbind_password = \"{spw}\"\nbase = \"{base}\"\n\
             auth_bind = false\ntimeout = \"3s\"\n",
            uri = ldap.ldap_url(),
            ca = ldap.ca_pem().display(),
            sdn = slapd::SERVICE_DN,
            spw = slapd::SERVICE_PASSWORD,
            base = slapd::PEOPLE,
        ),
    );
    common_checks(&s, &mut ldap, "starttls-compare");
}

#[test]
fn ldap_bind_with_a_dn_template() {
    let dir = open_dir();
    let ldap = Slapd::launch();
    load_people(&ldap, dir.path());
    let s = Served::start(
        dir.path(),
        &format!(
            "[auth]\nbackend = \"ldap\"\n[auth.ldap]\nuri = \"{uri}\"\nca = \"{ca}\"\n\
             bind_dn = \"{sdn}\"\nbind_password = \"{spw}\"\nbase = \"{base}\"\n\
             auth_bind_dn = \"uid=%n,{base}\"\n",
            uri = ldap.ldaps_url(),
            ca = ldap.ca_pem().display(),
            sdn = slapd::SERVICE_DN,
            spw = slapd::SERVICE_PASSWORD,
            base = slapd::PEOPLE,
        ),
    );
    assert!(
        s.login_reply("alice", "pw-alice").starts_with("+OK"),
        "{}",
        s.log()
    );
    assert!(s.login_reply("alice", "nope").starts_with("-ERR [AUTH]"));
    // A DN built from a hostile name is escaped (RFC 4514), not a different entry.
    for name in ["alice,ou=people", "alice+cn=x", "*"] {
        assert!(
            s.login_reply(name, "pw-alice").starts_with("-ERR"),
            "{name}"
        );
    }
    // The challenge mechanisms are not offered with a directory.
    let capa = raw(s.pop3, "CAPA\r\nQUIT\r\n");
    let sasl = capa.lines().find(|l| l.starts_with("SASL")).unwrap_or("");
    assert!(!sasl.contains("CRAM") && !sasl.contains("SCRAM"), "{capa}");
}
