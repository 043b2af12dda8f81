//! `correio serve`, `correio cert` and `correio check` as a user runs them: the first
//! run with no config (the README quick start: add a user, deliver, fetch with curl
//! over pop3s), signals (SIGHUP reload, SIGTERM graceful stop), and the config checker's
//! messages. Needs `curl` and `kill` (procps).

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use correio_testkit::daemon::{Daemon, listening_addr};

const BIN: &str = env!("CARGO_BIN_EXE_correio");

/// Kills the server on every exit path (by its pid only).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(st.success());
}

fn correio(dir: &Path, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut c = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run correio");
    c.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "correio {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn first_run_quick_start_with_curl_over_pop3s() {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(BIN)
        .arg("serve")
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run correio serve");
    let mut guard = Guard(child);
    let stdout = guard.0.stdout.take().unwrap();
    let stderr = guard.0.stderr.take().unwrap();
    // Collect stderr in the background (the log), so the pipe never fills.
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            log2.lock().unwrap().push_str(&l);
            log2.lock().unwrap().push('\n');
        }
    });
    let mut lines = BufReader::new(stdout).lines();
    let mut printed = String::new();
    let mut curl_line = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl_line.is_none() {
        assert!(Instant::now() < deadline, "no how-to printed: {printed}");
        let Some(Ok(l)) = lines.next() else {
            panic!("serve exited: {printed}\n{}", log.lock().unwrap());
        };
        printed.push_str(&l);
        printed.push('\n');
        if let Some(rest) = l.strip_prefix("Fetch it with curl: ") {
            curl_line = Some(rest.to_owned());
        }
    }
    assert!(printed.contains("POP3S:       127.0.0.1:"), "{printed}");
    assert!(printed.contains("correio user add NAME"), "{printed}");
    assert!(printed.contains("correio deliver --user NAME"), "{printed}");
    let data = dir.path().join("correio-data");
    assert!(data.join("tls/cert.pem").exists() && data.join("tls/key.pem").exists());

    // The how-to, as a new user would follow it.
    let data_s = data.to_str().unwrap();
    correio(
        dir.path(),
        &["user", "add", "alice", "--data", data_s, "--password-stdin"],
        b"s3cret pw\n",
    );
    let msg = b"Subject: quick start\n\nHello from correio deliver.\n.dot line\n";
    correio(
        dir.path(),
        &["deliver", "--user", "alice", "--data", data_s],
        msg,
    );
    let cmd = curl_line
        .unwrap()
        .replace("NAME:PASSWORD", "alice:s3cret pw");
    let words: Vec<&str> = cmd.split(' ').collect();
    // "curl --cacert FILE -u alice:s3cret pw pop3s://..." - rejoin the user:password.
    assert_eq!(words[0], "curl");
    let url = words.last().unwrap();
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "20", "--cacert", words[2]])
        .args(["-u", "alice:s3cret pw", url])
        .output()
        .expect("curl (is it installed?)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.stdout,
        b"Subject: quick start\r\n\r\nHello from correio deliver.\r\n.dot line\r\n"
    );

    // One grep-able log line per login and logout.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let l = log.lock().unwrap().clone();
        if l.contains("logout") {
            let clean = strip_ansi(&l);
            assert!(
                clean.contains("login user=alice remote=127.0.0.1:"),
                "{clean}"
            );
            assert!(clean.contains("tls=true"), "{clean}");
            assert!(clean.contains("logout user=alice"), "{clean}");
            assert!(clean.contains("retr=1"), "{clean}");
            assert!(!clean.contains("s3cret"), "password in the log: {clean}");
            break;
        }
        assert!(Instant::now() < deadline, "no logout line: {l}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // SIGHUP reloads the certificate; SIGTERM stops gracefully with status 0.
    signal(&guard.0, "HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.lock().unwrap().contains("certificate reloaded") {
        assert!(
            Instant::now() < deadline,
            "no reload: {}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(&guard.0, "TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = guard.0.try_wait().unwrap() {
            assert!(st.success(), "{st}");
            break;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn cert_writes_a_private_key_and_refuses_to_overwrite() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let out = correio(
        dir.path(),
        &["cert", "--data", "d", "--host", "mail.example.org"],
        b"",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("names:       mail.example.org"), "{text}");
    assert!(text.contains("SHA-256:     "), "{text}");
    let key = dir.path().join("d/tls/key.pem");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = Command::new(BIN)
        .args(["cert", "--data", "d"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    correio(dir.path(), &["cert", "--data", "d", "--force"], b"");
}

fn check(dir: &Path, config: &str) -> (bool, String, String) {
    std::fs::write(dir.join("c.toml"), config).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", "c.toml"])
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_says_what_is_wrong_and_where() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let base = format!("data_dir = \"{}\"\n", data.display());

    let (ok, out, err) = check(d, &format!("{base}[listen]\npop3 = [\"127.0.0.1:1110\"]\n"));
    assert!(ok, "{out}{err}");
    assert!(out.contains("configuration OK"), "{out}");
    assert!(out.contains("pop3:          127.0.0.1:1110"), "{out}");

    let (ok, _, err) = check(d, &format!("{base}[limits]\npost_login_idle = \"5m\"\n"));
    assert!(!ok);
    assert!(
        err.contains("c.toml: limits.post_login_idle: must be at least 10m"),
        "{err}"
    );

    let (ok, _, err) = check(d, &format!("{base}\nlisten_pop3 = 1\n"));
    assert!(!ok);
    assert!(
        err.contains("c.toml: line 3:") && err.contains("listen_pop3"),
        "{err}"
    );

    // The default pair missing is the first run: serve creates it, check agrees.
    let (ok, out, err) = check(
        d,
        &format!("{base}[listen]\npop3s = [\"127.0.0.1:1995\"]\n"),
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("will create a self-signed one"), "{out}");
    // A pair the configuration names must exist: check names the path.
    let (ok, _, err) = check(
        d,
        &format!(
            "{base}[tls]\ncert = \"{0}/nope/cert.pem\"\nkey = \"{0}/nope/key.pem\"\n",
            d.display()
        ),
    );
    assert!(!ok);
    assert!(
        err.contains("tls:") && err.contains("nope/cert.pem"),
        "{err}"
    );

    std::fs::write(
        data.join("users"),
        "alice:{PLAIN}x\nbroken line without colons\n",
    )
    .unwrap();
    let (ok, _, err) = check(d, &base);
    assert!(!ok);
    assert!(err.contains("users file") && err.contains("users"), "{err}");

    let (ok, _, err) = check(
        d,
        &format!("{base}mail_location = \"maildir:relative/%u\"\n"),
    );
    assert!(!ok);
    assert!(err.contains("mail_location"), "{err}");
}

fn chown_tree(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), uid, gid);
        }
    }
}

fn read_line(s: &mut BufReader<std::net::TcpStream>) -> String {
    let mut l = String::new();
    s.read_line(&mut l).unwrap();
    l
}

#[test]
fn serve_with_config_lmtp_and_privilege_drop() {
    use std::os::unix::fs::PermissionsExt as _;
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
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if root {
        // The unprivileged user must own what it serves.
        chown_tree(&data, 65534, 65534);
    }
    std::fs::write(
        dir.path().join("c.toml"),
        format!("data_dir = \"{data_s}\"\nuser = \"nobody\"\n"),
    )
    .unwrap();
    // Port 0: the server reports the ports it bound.
    let mut server = Daemon::start({
        let mut c = Command::new(BIN);
        c.args(["serve", "--config", "c.toml"])
            .args(["--pop3", "127.0.0.1:0"])
            .args(["--lmtp", "127.0.0.1:0"])
            .current_dir(dir.path());
        c
    });
    let lmtp = server.wait_listening("listening for LMTP", "", Duration::from_secs(30));
    let pop3 = server.wait_listening("listening", " tls=false", Duration::from_secs(30));
    let pop = std::net::TcpStream::connect(pop3).unwrap();
    pop.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Root was dropped after binding (port numbers here are unprivileged, but the
    // config asks for it, and the drop must happen whenever we started as root).
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let euid = uid_line.split_whitespace().nth(2).unwrap();
    if root {
        assert_eq!(euid, "65534", "{uid_line}");
    } else {
        assert_ne!(euid, "0", "{uid_line}");
    }

    // Deliver over LMTP.
    let l = std::net::TcpStream::connect(lmtp).unwrap();
    l.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut lw = l.try_clone().unwrap();
    let mut lr = BufReader::new(l);
    assert!(read_line(&mut lr).starts_with("220 "));
    lw.write_all(b"LHLO test\r\n").unwrap();
    while read_line(&mut lr).starts_with("250-") {}
    lw.write_all(b"MAIL FROM:<s@example.org>\r\n").unwrap();
    assert!(read_line(&mut lr).starts_with("250"));
    lw.write_all(b"RCPT TO:<alice>\r\n").unwrap();
    assert!(read_line(&mut lr).starts_with("250"));
    lw.write_all(b"DATA\r\n").unwrap();
    assert!(read_line(&mut lr).starts_with("354"));
    lw.write_all(b"Subject: via lmtp\r\n\r\n..stuffed\r\nend\r\n.\r\n")
        .unwrap();
    let r = read_line(&mut lr);
    assert!(r.starts_with("250"), "{r}");

    // Fetch over POP3.
    let mut pw = pop.try_clone().unwrap();
    let mut pr = BufReader::new(pop);
    assert!(read_line(&mut pr).starts_with("+OK"));
    pw.write_all(b"USER alice\r\nPASS pw\r\nRETR 1\r\n")
        .unwrap();
    assert_eq!(read_line(&mut pr), "+OK Send PASS\r\n");
    let r = read_line(&mut pr);
    assert!(r.starts_with("+OK Logged in, 1 messages"), "{r}");
    assert!(read_line(&mut pr).ends_with(" octets\r\n"));
    let mut body = String::new();
    loop {
        let l = read_line(&mut pr);
        if l == ".\r\n" {
            break;
        }
        body.push_str(&l);
    }
    assert!(
        body.ends_with("Subject: via lmtp\r\n\r\n..stuffed\r\nend\r\n"),
        "{body}"
    );
    pw.write_all(b"QUIT\r\n").unwrap();
    server.signal("TERM");
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn retr_of_a_large_message_keeps_server_memory_flat() {
    use std::io::Read as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();
    correio(
        dir.path(),
        // A PLAIN secret: no 64 MiB password hash during the measurement.
        &[
            "user",
            "add",
            "alice",
            "--data",
            data_s,
            "--password-stdin",
            "--scheme",
            "PLAIN",
        ],
        b"pw\n",
    );
    // 64 MiB of short lines, many starting with a dot (stuffing on every other line).
    let mut msg = b"Subject: big\n\n".to_vec();
    while msg.len() < 64 << 20 {
        msg.extend_from_slice(b".a line that starts with a dot and is stuffed on the wire\n");
        msg.extend_from_slice(b"and an ordinary line of text after it, to fill space\n");
    }
    correio(
        dir.path(),
        // Past the default 64 MiB delivery limit: raised for this message.
        &[
            "deliver",
            "--user",
            "alice",
            "--data",
            data_s,
            "--max-size",
            "100000000",
        ],
        &msg,
    );
    let mut server = Daemon::start({
        let mut c = Command::new(BIN);
        c.args(["serve", "--data", data_s, "--pop3", "127.0.0.1:0"])
            .current_dir(dir.path());
        c
    });
    let pop3 = server.wait_listening("listening", " tls=false", Duration::from_secs(30));
    let mut s = std::net::TcpStream::connect(pop3).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"USER alice\r\nPASS pw\r\n").unwrap();
    let mut head = [0u8; 256];
    let mut got = Vec::new();
    while got.iter().filter(|&&b| b == b'\n').count() < 3 {
        let n = s.read(&mut head).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&head[..n]);
    }
    assert!(String::from_utf8_lossy(&got).contains("+OK Logged in, 1 messages"));
    // The server's resident size without a transfer: the smallest of a few samples
    // (start-up work such as building the dummy password hash comes and goes).
    let mut before = u64::MAX;
    for _ in 0..10 {
        before = before.min(vm_rss_kib(server.pid()));
        std::thread::sleep(Duration::from_millis(100));
    }
    s.write_all(b"RETR 1\r\n").unwrap();
    // Read slowly at first so the server has to hold back, sampling its memory.
    let mut total = 0usize;
    // The smallest resident size seen in the last part of the transfer: with the whole
    // message buffered it could never come back near the baseline.
    let mut late_min = u64::MAX;
    let mut buf = vec![0u8; 1 << 16];
    let mut tail = Vec::new();
    let mut reads = 0u64;
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed early");
        total += n;
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 8 {
            tail.drain(..tail.len() - 8);
        }
        reads += 1;
        if reads.is_multiple_of(64) {
            let r = vm_rss_kib(server.pid());
            if total > 40 << 20 {
                late_min = late_min.min(r);
            }
        }
        if reads < 32 {
            std::thread::sleep(Duration::from_millis(5));
        }
        if tail.ends_with(b"\r\n.\r\n") {
            break;
        }
    }
    assert!(total > 64 << 20);
    // Whole-message buffering would add >64 MiB; streaming adds a few chunk buffers.
    assert!(
        late_min < before + 16 * 1024,
        "server memory grew from {before} KiB to {late_min} KiB while sending {total} bytes"
    );
    s.write_all(b"QUIT\r\n").unwrap();
    drop(server);
}

/// Issue #9 bug 6: SIGHUP re-reads the whole configuration file. A broken file is
/// refused with a logged reason and the old configuration stays in force; a good one
/// takes effect for new connections (here: the greeting and EXPIRE), each changed key
/// logged, without a restart.
#[test]
fn sighup_reloads_the_configuration_file_or_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    // Port 0: the server reports the port it bound (a reload keeps the listener).
    let base = format!(
        "data_dir = \"{}\"\n[listen]\npop3 = [\"127.0.0.1:0\"]\n",
        dir.path().join("data").display()
    );
    std::fs::write(&cfg, format!("{base}[pop3]\ngreeting = \"first\"\n")).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let guard = Guard(child);
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut g = log2.lock().unwrap();
            g.push_str(&l);
            g.push('\n');
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let port = loop {
        let l = log.lock().unwrap().clone();
        if let Some(a) = listening_addr(&l, "listening", " tls=false") {
            break a.port();
        }
        assert!(Instant::now() < deadline, "server not up: {l}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let greet = || -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut r = BufReader::new(s);
                let mut l = String::new();
                r.read_line(&mut l).unwrap();
                let mut s = r.into_inner();
                s.write_all(b"CAPA\r\n").unwrap();
                let mut r = BufReader::new(s);
                let mut capa = String::new();
                loop {
                    let mut x = String::new();
                    if r.read_line(&mut x).unwrap() == 0 || x == ".\r\n" {
                        break;
                    }
                    capa.push_str(&x);
                }
                return format!("{l}{capa}");
            }
            assert!(
                Instant::now() < deadline,
                "server not up: {}",
                log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let wait_log = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !log.lock().unwrap().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?}: {}",
                log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert!(greet().starts_with("+OK first"));

    std::fs::write(&cfg, format!("{base}[pop3]\ngreeting = \n")).unwrap();
    signal(&guard.0, "HUP");
    wait_log("configuration not reloaded; keeping the old one");
    assert!(
        log.lock().unwrap().contains("c.toml"),
        "the reason names the file"
    );
    assert!(greet().starts_with("+OK first"));

    std::fs::write(
        &cfg,
        format!("{base}[pop3]\ngreeting = \"second\"\nexpire = 0\n"),
    )
    .unwrap();
    signal(&guard.0, "HUP");
    wait_log("SIGHUP: configuration reloaded");
    let l = log.lock().unwrap().clone();
    assert!(l.contains("key=pop3.greeting old=first new=second"), "{l}");
    assert!(l.contains("key=pop3.expire"), "{l}");
    let g = greet();
    assert!(g.starts_with("+OK second") && g.contains("EXPIRE 0"), "{g}");
}

/// `[log]`: JSON lines for log shippers, the LMTP listener announced at start-up like
/// the POP3 ones, and no timestamp of our own under systemd (the journal adds one).
#[test]
fn log_format_level_and_journal() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    let base = format!(
        "data_dir = \"{}\"\n[listen]\npop3 = [\"127.0.0.1:0\"]\nlmtp = \"127.0.0.1:0\"\n",
        dir.path().join("data").display()
    );
    let run = |text: &str, journal: bool| -> String {
        std::fs::write(&cfg, text).unwrap();
        let mut c = Command::new(BIN);
        c.args(["serve", "--config", cfg.to_str().unwrap()])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if journal {
            c.env("JOURNAL_STREAM", "8:12345");
        } else {
            c.env_remove("JOURNAL_STREAM");
        }
        let mut child = c.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let guard = Guard(child);
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = String::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        // Both listeners announced: enough.
        while !(seen.contains("listening for LMTP") && seen.matches("listening").count() >= 2) {
            assert!(Instant::now() < deadline, "{seen}");
            match lines.next() {
                Some(Ok(x)) => {
                    seen.push_str(&x);
                    seen.push('\n');
                }
                _ => panic!("serve ended: {seen}"),
            }
        }
        signal(&guard.0, "TERM");
        seen
    };
    let json = run(&format!("{base}[log]\nformat = \"json\"\n"), false);
    for line in json.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some(),
            "{line}"
        );
    }
    // The LMTP line carries the address really bound (port 0 asked for any).
    let lmtp: std::net::SocketAddr = json
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|v| v["message"] == "listening for LMTP")
        .and_then(|v| v["addr"].as_str().and_then(|a| a.parse().ok()))
        .unwrap_or_else(|| panic!("no LMTP address: {json}"));
    assert!(lmtp.ip().is_loopback() && lmtp.port() != 0, "{json}");
    let text = run(&base, true);
    for line in text.lines() {
        assert!(
            line.starts_with(" INFO") || line.starts_with("INFO") || line.contains(" INFO "),
            "{line}"
        );
        assert!(
            !line.starts_with("20"),
            "no timestamp under systemd: {line}"
        );
    }
    // An invalid level is refused, naming the key.
    std::fs::write(&cfg, format!("{base}[log]\nlevel = \"loud\"\n")).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("log.level"));
}
