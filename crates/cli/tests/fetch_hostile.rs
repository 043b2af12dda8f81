//! `correio fetch` against hostile servers (issue #10): each test runs its own
//! server (`fetch_support::hostile`) and bounds the fetcher by limits the kernel
//! enforces (`ulimit -t` CPU seconds, `ulimit -d` data memory) or by the fetcher's own
//! deadlines, never by measuring time.

mod fetch_support;

use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::time::Duration;

use fetch_support::hostile::{Body, Hostile, Script};
use fetch_support::*;

/// `correio fetch` from the hostile server, run under kernel limits: `cpu` seconds of
/// CPU time and `data_kib` KiB of data memory (heap and stacks).
fn fetch_limited(
    srv: &Hostile,
    work: &std::path::Path,
    cpu: u32,
    data_kib: u64,
    extra: &[&str],
) -> Output {
    let inner = fetch_cmd("127.0.0.1", srv.port, "u", "p", work, extra);
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!(
            "ulimit -t {cpu} && ulimit -d {data_kib} && exec \"$@\""
        ))
        .arg("sh")
        .arg(inner.get_program())
        .args(inner.get_args())
        .env("HOME", work)
        .env("MALLOC_ARENA_MAX", "2")
        .env_remove("XDG_CONFIG_HOME");
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Regression: the fetcher's own mbox writer quoted From lines in quadratic time
/// (~27 s of CPU for this message); the store's writer is linear. The kernel kills
/// the fetch if it needs more than 20 s of CPU.
#[test]
fn a_400k_line_of_quote_marks_ending_in_from_goes_into_mbox_in_linear_time() {
    let mut line = vec![b'>'; 400_000];
    line.extend_from_slice(b"From x");
    let mut msg = b"Subject: quotes\r\n\r\n".to_vec();
    msg.extend_from_slice(&line);
    msg.extend_from_slice(b"\r\n");
    let srv = Hostile::start(Script {
        messages: vec![Body::Bytes(msg)],
        ..Default::default()
    });
    let work = tempdir();
    let mbox = work.path().join("mbox");
    let to = format!("mbox:{}", mbox.display());
    let out = fetch_limited(
        &srv,
        work.path(),
        20,
        1 << 20,
        &["--tls", "none", "--to", &to],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read(&mbox).unwrap();
    // mboxrd: the line gets one more '>'.
    let mut want = vec![b'>'; 400_001];
    want.extend_from_slice(b"From x\n");
    assert!(
        text.windows(want.len()).any(|w| w == want.as_slice()),
        "the line is not quoted once"
    );
}

/// A 192 MiB message that is one line without end streams through in far less data
/// memory than its size (the kernel refuses more than 128 MiB).
#[test]
fn a_192_mib_single_line_message_streams_in_bounded_memory() {
    const SIZE: u64 = 192 << 20;
    let srv = Hostile::start(Script {
        messages: vec![Body::Repeat {
            head: b"Subject: big\r\n\r\n".to_vec(),
            byte: b'x',
            count: SIZE,
            tail: Vec::new(),
        }],
        ..Default::default()
    });
    let work = tempdir();
    let md = work.path().join("M");
    let to = format!("maildir:{}", md.display());
    let out = fetch_limited(
        &srv,
        work.path(),
        600,
        128 << 10,
        &["--tls", "none", "--to", &to],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let files: Vec<_> = std::fs::read_dir(md.join("new"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(files.len(), 1);
    // Header, the line, and the line end the store adds.
    assert_eq!(
        files[0].metadata().unwrap().len(),
        b"Subject: big\n\n".len() as u64 + SIZE + 1
    );
}

/// Regression: a LIST size of 9999999999999999999 overflowed the pipelining window
/// (a panic in debug builds). Now the session stops with an error that names the
/// server, exit status 5 (protocol), and nothing is deleted.
#[test]
fn absurd_list_sizes_are_refused_naming_the_server() {
    for size in [
        "9999999999999999999",
        "18446744073709551615",
        "99999999999999999999999",
    ] {
        let srv = Hostile::start(Script {
            messages: vec![Body::Bytes(b"A: b\r\n\r\nx\r\n".to_vec()); 3],
            list_sizes: Some(vec!["10".into(), size.into(), "10".into()]),
            ..Default::default()
        });
        let work = tempdir();
        let to = format!("maildir:{}", work.path().join("M").display());
        let out = fetch_limited(
            &srv,
            work.path(),
            20,
            1 << 20,
            &["--tls", "none", "--to", &to, "--delete"],
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(5), "{size}: {err}");
        assert!(err.contains(&format!("127.0.0.1:{}", srv.port)), "{err}");
        assert!(err.contains("size") || err.contains("octets"), "{err}");
        assert_eq!(srv.counters.deletes.load(Ordering::SeqCst), 0);
    }
}

/// Message numbers that do not fit (in UIDL, where the fetcher reads them after LIST)
/// end the session the same way: exit status 5, the server named, nothing deleted.
#[test]
fn absurd_uidl_message_numbers_are_refused_naming_the_server() {
    for number in ["99999999999", "4294967296", "18446744073709551616"] {
        let srv = Hostile::start(Script {
            messages: vec![Body::Bytes(b"A: b\r\n\r\nx\r\n".to_vec()); 2],
            uidl_lines: Some(vec!["1 a".into(), format!("{number} b")]),
            ..Default::default()
        });
        let work = tempdir();
        let to = format!("maildir:{}", work.path().join("M").display());
        let out = fetch_limited(
            &srv,
            work.path(),
            20,
            1 << 20,
            &["--tls", "none", "--to", &to, "--delete"],
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(5), "{number}: {err}");
        assert!(err.contains(&format!("127.0.0.1:{}", srv.port)), "{err}");
        assert!(err.contains("message number"), "{err}");
        assert_eq!(srv.counters.deletes.load(Ordering::SeqCst), 0);
    }
}

/// A body that runs on far past its LIST size (10 octets listed, 8 MiB sent) ends the
/// session: exit status 5, the partial message is not kept, nothing is deleted.
#[test]
fn a_body_far_longer_than_listed_is_abandoned() {
    let srv = Hostile::start(Script {
        messages: vec![Body::Repeat {
            head: b"A: b\r\n\r\n".to_vec(),
            byte: b'y',
            count: 8 << 20,
            tail: b"\r\n".to_vec(),
        }],
        list_sizes: Some(vec!["10".into()]),
        ..Default::default()
    });
    let work = tempdir();
    let md = work.path().join("M");
    let to = format!("maildir:{}", md.display());
    let out = fetch_limited(
        &srv,
        work.path(),
        60,
        1 << 20,
        &["--tls", "none", "--to", &to, "--delete"],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("LIST said 10"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{}", srv.port)), "{err}");
    assert_eq!(maildir_messages(&md).len(), 0);
    assert_eq!(srv.counters.deletes.load(Ordering::SeqCst), 0);
}

/// A server that drips a line every 50 ms forever inside a message: every read is
/// answered well within --timeout (10s), so only the response deadline ends it. Exit
/// status 3 (network), the error names the deadline and the server.
#[test]
fn a_dripping_message_hits_the_response_deadline() {
    let srv = Hostile::start(Script {
        messages: vec![Body::Endless {
            head: b"A: b\r\n\r\n".to_vec(),
            every: Duration::from_millis(50),
        }],
        ..Default::default()
    });
    let work = tempdir();
    let md = work.path().join("M");
    let to = format!("maildir:{}", md.display());
    let out = fetch_limited(
        &srv,
        work.path(),
        60,
        1 << 20,
        &["--tls", "none", "--to", &to, "--response-timeout", "1s"],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("response deadline (1s)"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{}", srv.port)), "{err}");
    assert!(srv.counters.dripped.load(Ordering::SeqCst) > 0);
    assert_eq!(maildir_messages(&md).len(), 0);
}

/// A server that drips every line of every response (50 ms each): each response is
/// short enough, the session is not; the session deadline ends it with exit status 3.
#[test]
fn a_dripping_server_hits_the_session_deadline() {
    let srv = Hostile::start(Script {
        messages: vec![Body::Bytes(b"A: b\r\n\r\nx\r\n".to_vec()); 200],
        drip: Some(Duration::from_millis(50)),
        ..Default::default()
    });
    let work = tempdir();
    let to = format!("maildir:{}", work.path().join("M").display());
    let out = fetch_limited(
        &srv,
        work.path(),
        60,
        1 << 20,
        &[
            "--tls",
            "none",
            "--to",
            &to,
            "--response-timeout",
            "5s",
            "--session-timeout",
            "2s",
            "--no-pipelining",
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("session deadline (2s)"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{}", srv.port)), "{err}");
}

/// A destination that fails in the middle of a batch (an MDA that refuses the second
/// message): the run stops with exit status 6 naming the destination, before any
/// DELE; only what the MDA stored is recorded. The next run (the MDA working again)
/// deletes that one without fetching it again and fetches the rest.
#[test]
fn a_destination_failing_mid_batch_deletes_only_what_it_stored() {
    let msgs: Vec<Body> = ["one", "two", "three"]
        .iter()
        .map(|w| Body::Bytes(format!("Subject: {w}\r\n\r\n{w}\r\n").into_bytes()))
        .collect();
    let srv = Hostile::start(Script {
        messages: msgs,
        ..Default::default()
    });
    let work = tempdir();
    let out_file = work.path().join("delivered");
    // Refuses the second message once (the flag file remembers); the same command
    // both runs, since the state is per destination.
    let flag = work.path().join("refused-once");
    let mda = format!(
        "mda:m=$(cat); case \"$m\" in *two*) [ -e {flag} ] || {{ touch {flag}; exit 1; }};; esac; printf '%s\\n' \"$m\" >> {out}",
        flag = flag.display(),
        out = out_file.display()
    );
    let out = fetch_limited(
        &srv,
        work.path(),
        60,
        1 << 20,
        &["--tls", "none", "--to", &mda, "--delete"],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(err.contains("destination mda:"), "{err}");
    let delivered = std::fs::read_to_string(&out_file).unwrap();
    assert!(delivered.contains("Subject: one"), "{delivered}");
    assert!(!delivered.contains("Subject: t"), "{delivered}");
    assert_eq!(srv.counters.deletes.load(Ordering::SeqCst), 0);

    let out = fetch_limited(
        &srv,
        work.path(),
        60,
        1 << 20,
        &["--tls", "none", "--to", &mda, "--delete"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let delivered = std::fs::read_to_string(&out_file).unwrap();
    for w in ["one", "two", "three"] {
        assert_eq!(
            delivered.matches(&format!("Subject: {w}\n")).count(),
            1,
            "{delivered}"
        );
    }
    assert_eq!(srv.counters.deletes.load(Ordering::SeqCst), 3);
}
