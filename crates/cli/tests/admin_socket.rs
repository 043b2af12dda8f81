//! `correio admin` against a live `correio serve`: who is logged in, a mailbox's
//! summary (refused while a session holds it), ending a user's sessions, deleting
//! messages older than a date (never one without a readable date), reload and status;
//! as root, the socket belongs to the service user and group (mode 0660) and other
//! users cannot connect.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::process::{Command, Stdio};

use correio_testkit::daemon::{Daemon, is_root};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_correio");

fn correio(args: &[&str], stdin: &[u8]) -> (bool, String) {
    let mut c = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = c.stdin.take().unwrap().write_all(stdin);
    let o = c.wait_with_output().unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn admin(cfg: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["admin", "--config", cfg, "--json"];
    all.extend_from_slice(args);
    let (_, out) = correio(&all, b"");
    serde_json::from_str(out.lines().next().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn admin_commands_against_a_live_server() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path();
    let cfg = root.join("c.toml");
    let user_line = if is_root() { "user = \"nobody\"\n" } else { "" };
    let base = format!(
        "data_dir = \"{}\"\n{user_line}[listen]\npop3 = [\"127.0.0.1:0\"]\n",
        root.join("data").display()
    );
    std::fs::write(&cfg, &base).unwrap();
    let c = cfg.to_str().unwrap();
    let (ok, out) = correio(
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
        b"pw\n",
    );
    assert!(ok, "{out}");
    for msg in [
        "Date: Wed, 01 Jan 2020 10:00:00 +0000\nSubject: old\n\nold\n",
        "Date: Sat, 01 Jun 2024 10:00:00 +0200 (CEST)\nSubject: new\n\nnew\n",
        "Subject: undated\n\nno date\n",
    ] {
        let (ok, out) = correio(
            &["deliver", "--config", c, "--user", "alice"],
            msg.as_bytes(),
        );
        assert!(ok, "{out}");
    }
    let mut server = Daemon::start({
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config", c]);
        cmd
    });
    server.wait_log(&["admin socket listening"], Duration::from_secs(20));
    // Port 0 in the configuration: the server reports the port it bound.
    let port = server
        .wait_listening("listening", " tls=false", Duration::from_secs(20))
        .port();

    // A session holds alice's mailbox.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"USER alice\r\nPASS pw\r\nRETR 1\r\n").unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut l = String::new();
    while !l.starts_with("+OK Logged in") {
        l.clear();
        r.read_line(&mut l).unwrap();
    }
    let who = admin(c, &["who"]);
    let sessions = who["sessions"].as_array().unwrap();
    let alice: Vec<_> = sessions.iter().filter(|x| x["user"] == "alice").collect();
    assert_eq!(alice.len(), 1, "{who}");
    assert!(
        alice[0]["remote"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(alice[0]["tls"], false);

    let busy = admin(c, &["mailbox", "alice"]);
    assert!(busy["error"].as_str().unwrap().contains("in use"), "{busy}");

    // Kick: the session ends without UPDATE.
    let k = admin(c, &["kick", "alice"]);
    assert_eq!(k["kicked"], 1, "{k}");
    let mut rest = String::new();
    let _ = r.read_to_string(&mut rest);
    assert!(rest.contains("-ERR [SYS/TEMP]"), "{rest}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !admin(c, &["who"])["sessions"]
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "session still listed");
        std::thread::sleep(Duration::from_millis(50));
    }

    let m = admin(c, &["mailbox", "alice"]);
    assert_eq!(m["messages"], 3, "{m}");
    assert_eq!(m["uidls"].as_array().unwrap().len(), 3);
    assert_eq!(m["oldest"], 1_577_872_800u64, "{m}");

    // Before 2023: only the 2020 message goes; the undated one stays.
    let (ok, out) = correio(
        &[
            "admin",
            "--config",
            c,
            "expunge",
            "alice",
            "--before",
            "2023-01-01",
        ],
        b"",
    );
    assert!(
        ok && out.contains("deleted 1 message(s) of alice; 1 without a readable date kept"),
        "{out}"
    );
    assert_eq!(admin(c, &["mailbox", "alice"])["messages"], 2);

    std::fs::write(&cfg, format!("{base}[pop3]\ngreeting = \"after reload\"\n")).unwrap();
    let rl = admin(c, &["reload"]);
    assert_eq!(rl["reloaded"], true, "{rl}");
    assert!(
        rl["changed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "pop3.greeting"),
        "{rl}"
    );
    let st = admin(c, &["status"]);
    // The listeners as bound: port 0 of the configuration resolved.
    assert_eq!(
        st["listeners"]["pop3"],
        serde_json::json!([format!("127.0.0.1:{port}")]),
        "{st}"
    );
    assert_eq!(st["config"]["pop3.greeting"], "after reload");
    let (ok, out) = correio(&["admin", "--config", c, "bogus"], b"");
    assert!(!ok, "{out}");

    if is_root() {
        let sock = root.join("data/admin.sock");
        let m = std::fs::metadata(&sock).unwrap();
        assert_eq!(m.mode() & 0o777, 0o660);
        let nobody = std::fs::read_to_string("/etc/passwd")
            .unwrap()
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f[0] == "nobody").then(|| f[2].parse::<u32>().unwrap())
            })
            .unwrap();
        assert_eq!(m.uid(), nobody);
        // Another user (not root, not in the group) cannot connect.
        use std::os::unix::process::CommandExt as _;
        let out = Command::new(BIN)
            .args(["admin", "--socket", sock.to_str().unwrap(), "who"])
            .uid(4242)
            .gid(4242)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("root or in its group"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
