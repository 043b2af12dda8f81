//! The fetcher against a scripted fake POP3 server with the faults real servers have:
//! bare LF, a missing final dot at end of stream, sizes that differ from LIST,
//! duplicate or missing UIDLs, lines over 2 KB, PIPELINING advertised but not honoured.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use correio_client::fetch::config::{AccountConfig, resolve};
use correio_client::fetch::{Account, FetchError, Silent, Summary, fetch_account};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Debug, Clone, Default)]
struct Faults {
    bare_lf: bool,
    /// RETR of this message (1-based) sends part of the body and closes.
    cut_retr: Option<usize>,
    wrong_sizes: bool,
    duplicate_uids: bool,
    no_uidl: bool,
    missing_uid: bool,
    fake_pipelining: bool,
    long_greeting: bool,
    /// Announce LOGIN-DELAY 900 in CAPA.
    login_delay: bool,
    /// Refuse PASS with [LOGIN-DELAY].
    refuse_login_delay: bool,
}

/// Messages as stored (LF), served as CRLF (or LF with `bare_lf`).
#[derive(Debug)]
struct FakeServer {
    msgs: Vec<Vec<u8>>,
    faults: Faults,
    /// Messages removed by QUIT (0-based), across sessions.
    removed: Mutex<BTreeSet<usize>>,
}

async fn serve(listener: TcpListener, srv: Arc<FakeServer>) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            return;
        };
        let srv = srv.clone();
        tokio::spawn(async move {
            let _ = session(sock, &srv).await;
        });
    }
}

async fn session(mut sock: tokio::net::TcpStream, srv: &FakeServer) -> std::io::Result<()> {
    let f = &srv.faults;
    let eol: &[u8] = if f.bare_lf { b"\n" } else { b"\r\n" };
    let line = |s: &str| -> Vec<u8> { [s.as_bytes(), eol].concat() };
    let greeting = if f.long_greeting {
        format!("+OK {}", "g".repeat(3000))
    } else {
        "+OK fake".to_owned()
    };
    sock.write_all(&line(&greeting)).await?;
    let live: Vec<usize> = {
        let removed = srv.removed.lock().unwrap();
        (0..srv.msgs.len())
            .filter(|i| !removed.contains(i))
            .collect()
    };
    let mut marked = BTreeSet::new();
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let Some(pos) = pending.iter().position(|&b| b == b'\n') else {
            let n = sock.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            pending.extend_from_slice(&buf[..n]);
            continue;
        };
        let cmd = String::from_utf8_lossy(&pending[..pos])
            .trim_end()
            .to_owned();
        pending.drain(..=pos);
        if f.fake_pipelining {
            // Reads one command per packet and drops whatever came with it.
            pending.clear();
        }
        let mut words = cmd.split(' ');
        let kw = words.next().unwrap_or("").to_ascii_uppercase();
        let arg: Option<usize> = words.next().and_then(|a| a.parse().ok());
        let msg = |n: Option<usize>| n.and_then(|n| live.get(n.wrapping_sub(1)).copied());
        let wire = |i: usize| -> Vec<u8> {
            let m = &srv.msgs[i];
            let mut out = Vec::new();
            for l in m.split_inclusive(|&b| b == b'\n') {
                let l = l.strip_suffix(b"\n").unwrap_or(l);
                if l.first() == Some(&b'.') {
                    out.push(b'.');
                }
                out.extend_from_slice(l);
                out.extend_from_slice(eol);
            }
            out
        };
        let size = |i: usize| -> usize {
            let crlf = srv.msgs[i].len() + srv.msgs[i].iter().filter(|&&b| b == b'\n').count();
            if f.wrong_sizes { crlf + 7 } else { crlf }
        };
        let mut out = Vec::new();
        match kw.as_str() {
            "CAPA" => {
                out.extend(line("+OK"));
                out.extend(line("USER"));
                out.extend(line("UIDL"));
                out.extend(line("TOP"));
                out.extend(line("PIPELINING"));
                if f.login_delay {
                    out.extend(line("LOGIN-DELAY 900"));
                }
                out.extend(line("."));
            }
            "PASS" if f.refuse_login_delay => {
                out.extend(line("-ERR [LOGIN-DELAY] wait 15 minutes"))
            }
            "USER" | "PASS" | "NOOP" | "RSET" => out.extend(line("+OK")),
            "STAT" => out.extend(line(&format!("+OK {} 0", live.len()))),
            "LIST" => {
                out.extend(line("+OK"));
                for (n, &i) in live.iter().enumerate() {
                    out.extend(line(&format!("{} {}", n + 1, size(i))));
                }
                out.extend(line("."));
            }
            "UIDL" if f.no_uidl => out.extend(line("-ERR not supported")),
            "UIDL" => {
                out.extend(line("+OK"));
                for (n, &i) in live.iter().enumerate() {
                    if f.missing_uid && n == 1 {
                        continue;
                    }
                    let uid = if f.duplicate_uids && i == 2 { 1 } else { i };
                    out.extend(line(&format!("{} uid-{uid}", n + 1)));
                }
                out.extend(line("."));
            }
            "RETR" => match msg(arg) {
                Some(i) => {
                    out.extend(line("+OK"));
                    let body = wire(i);
                    if f.cut_retr == Some(i + 1) {
                        out.extend_from_slice(&body[..body.len() / 2]);
                        sock.write_all(&out).await?;
                        return Ok(());
                    }
                    out.extend(body);
                    out.extend(line("."));
                }
                None => out.extend(line("-ERR no such message")),
            },
            "DELE" => match msg(arg) {
                Some(i) => {
                    marked.insert(i);
                    out.extend(line("+OK"));
                }
                None => out.extend(line("-ERR no such message")),
            },
            "QUIT" => {
                srv.removed.lock().unwrap().extend(marked.iter().copied());
                sock.write_all(&line("+OK bye")).await?;
                return Ok(());
            }
            _ => out.extend(line("-ERR unknown")),
        }
        sock.write_all(&out).await?;
    }
}

fn corpus() -> Vec<Vec<u8>> {
    vec![
        b"Subject: one\n\nfirst\n".to_vec(),
        b"Subject: two\n\n.dotted\n..twice\n".to_vec(),
        format!("Subject: three\n\n{}\nend\n", "L".repeat(5000)).into_bytes(),
        b"Subject: four\n\nfour\n".to_vec(),
        b"Subject: five\n\nfive\n".to_vec(),
    ]
}

async fn start(msgs: Vec<Vec<u8>>, faults: Faults) -> (Arc<FakeServer>, u16) {
    let srv = Arc::new(FakeServer {
        msgs,
        faults,
        removed: Mutex::new(BTreeSet::new()),
    });
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(serve(l, srv.clone()));
    (srv, port)
}

fn account(port: u16, dir: &Path, delete: bool) -> Account {
    let c = AccountConfig {
        host: Some("127.0.0.1".into()),
        port: Some(port),
        user: Some("u".into()),
        tls: Some("none".into()),
        auth: Some("user".into()),
        to: Some(format!("maildir:{}", dir.join("Mail").display())),
        state_dir: Some(dir.join("state").display().to_string()),
        timeout: Some("1s".into()),
        delete: Some(delete),
        ..Default::default()
    };
    let mut a = resolve("fake", &c).unwrap();
    a.password = Some(b"p".to_vec());
    a.batch_messages = 2;
    a
}

fn stored(dir: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = fs::read_dir(dir.join("Mail/new"))
        .map(|r| r.map(|e| fs::read(e.unwrap().path()).unwrap()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

async fn run(a: &Account) -> Result<Summary, FetchError> {
    fetch_account(a, &correio_client::sasl::factory, &Silent).await
}

#[tokio::test]
async fn bare_lf_server_is_understood() {
    let (_srv, port) = start(
        corpus(),
        Faults {
            bare_lf: true,
            ..Default::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let s = run(&account(port, dir.path(), false)).await.unwrap();
    assert_eq!(s.fetched, 5);
    assert_eq!(stored(dir.path()), sorted(corpus()));
}

#[tokio::test]
async fn missing_final_dot_is_an_error_and_records_nothing_for_it() {
    let (srv, port) = start(
        corpus(),
        Faults {
            cut_retr: Some(4),
            ..Default::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let a = account(port, dir.path(), true);
    let e = run(&a).await.unwrap_err();
    assert!(e.to_string().contains("closed"), "{e}");
    // Messages 1-3 arrived whole and were committed; 4 is nowhere; nothing was
    // deleted (no QUIT).
    let got = stored(dir.path());
    assert_eq!(got, sorted(corpus()[..3].to_vec()));
    assert!(srv.removed.lock().unwrap().is_empty());
    let state = fs::read_to_string(
        fs::read_dir(dir.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "state"))
            .unwrap(),
    )
    .unwrap();
    assert!(
        state.contains("uid-2") && !state.contains("uid-3"),
        "{state}"
    );
    // No partial file anywhere in new/.
    assert!(got.iter().all(|m| corpus().contains(m)));
}

#[tokio::test]
async fn sizes_differing_from_list_are_reported() {
    let (_srv, port) = start(
        corpus(),
        Faults {
            wrong_sizes: true,
            ..Default::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let s = run(&account(port, dir.path(), false)).await.unwrap();
    assert_eq!(s.fetched, 5);
    assert_eq!(
        s.warnings
            .iter()
            .filter(|w| w.contains("LIST said"))
            .count(),
        5,
        "{:?}",
        s.warnings
    );
    assert_eq!(stored(dir.path()), sorted(corpus()));
}

#[tokio::test]
async fn duplicate_uids_fall_back_to_content_hash() {
    for faults in [
        Faults {
            duplicate_uids: true,
            ..Default::default()
        },
        Faults {
            missing_uid: true,
            ..Default::default()
        },
        Faults {
            no_uidl: true,
            ..Default::default()
        },
    ] {
        let (_srv, port) = start(corpus(), faults.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let a = account(port, dir.path(), false);
        let s = run(&a).await.unwrap();
        assert!(s.content_hash_keys, "{faults:?}");
        assert!(
            s.warnings.iter().any(|w| w.contains("content hash")),
            "{:?}",
            s.warnings
        );
        assert_eq!(s.fetched, 5);
        // Keep mode, second run: everything downloaded again to compare, nothing stored twice.
        let s = run(&a).await.unwrap();
        assert_eq!(s.fetched, 0, "{faults:?}");
        assert_eq!(stored(dir.path()), sorted(corpus()));
    }
}

#[tokio::test]
async fn long_lines_pass_through() {
    let (_srv, port) = start(
        corpus(),
        Faults {
            long_greeting: true,
            ..Default::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let s = run(&account(port, dir.path(), false)).await.unwrap();
    assert_eq!(s.fetched, 5);
    // Every message byte for byte: the 5000-octet body line arrives whole, neither
    // cut, split nor dropped (a corpus check alone holds with any big message).
    let got = stored(dir.path());
    assert_eq!(got, sorted(corpus()));
    let long_line = format!("\n{}\n", "L".repeat(5000)).into_bytes();
    assert!(
        got.iter()
            .any(|m| m.windows(long_line.len()).any(|w| w == long_line)),
        "the long line did not arrive in one piece"
    );
}

#[tokio::test]
async fn pipelining_advertised_but_not_honoured_falls_back() {
    let (srv, port) = start(
        corpus(),
        Faults {
            fake_pipelining: true,
            ..Default::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let a = account(port, dir.path(), true);
    let s = tokio::time::timeout(Duration::from_secs(20), run(&a))
        .await
        .unwrap()
        .unwrap();
    assert!(!s.pipelined);
    assert!(
        s.warnings.iter().any(|w| w.contains("PIPELINING")),
        "{:?}",
        s.warnings
    );
    assert_eq!(stored(dir.path()), sorted(corpus()));
    assert_eq!(srv.removed.lock().unwrap().len(), 5);
}

#[tokio::test]
async fn login_delay_is_reported_for_the_daemon() {
    let (_srv, port) = start(
        corpus(),
        Faults {
            login_delay: true,
            ..Default::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let s = run(&account(port, dir.path(), false)).await.unwrap();
    assert_eq!(s.login_delay, Some(900));

    let (_srv, port) = start(
        corpus(),
        Faults {
            refuse_login_delay: true,
            ..Default::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let e = run(&account(port, dir.path(), false)).await.unwrap_err();
    assert!(matches!(e, FetchError::LoginDelay(_)), "{e}");
}
