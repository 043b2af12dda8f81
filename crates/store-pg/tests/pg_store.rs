//! The PostgreSQL store against a real PostgreSQL (started by the test on loopback,
//! its own data directory, a port chosen at run time, stopped by PID): delivery and
//! byte-exact reads, UIDLs, the session lease across two store handles (two
//! frontends), UPDATE, EXPIRE and LOGIN-DELAY state, quota, the collector, bodies in
//! a shared directory, and the database going away mid-session.

use std::io::Read;
use std::time::{Duration, SystemTime};

use correio_store::{DeliverErrorKind, DeliverOptions, MailStore, StoreError, Update};
use correio_store_pg::{BodiesConfig, PgStore, PgStoreConfig};
use correio_testkit::postgres::Postgres;
use correio_testkit::s3::S3Server;

fn database() -> (Postgres, String) {
    let pg = Postgres::launch();
    pg.create_user("correio", "s3cret");
    pg.create_database("mail", Some("correio"));
    let url = pg.url("mail", "correio", "s3cret");
    (pg, url)
}

/// Where the stores of one test keep bodies: in PostgreSQL, or in a real S3 server
/// (s3s-fs on loopback) the test started.
enum Where {
    Database,
    S3(S3Server),
}

impl Where {
    fn s3() -> Where {
        Where::S3(S3Server::launch())
    }
}

/// A store handle (a frontend) with bodies where this test's [`Where`] says.
fn store(url: &str, name: &str, bodies: &Where) -> PgStore {
    let mut c = PgStoreConfig::new(url);
    c.lease = Duration::from_secs(3);
    c.query_timeout = Duration::from_secs(10);
    if let Where::S3(s3) = bodies {
        c.bodies = BodiesConfig::S3 {
            bucket: s3.bucket().to_string(),
            prefix: "bodies".into(),
        };
        c.s3.endpoint = Some(s3.endpoint());
        c.s3.allow_http = true;
        c.s3.access_key_id = Some(s3.access_key().to_string());
        c.s3.secret_access_key = Some(s3.secret_key().to_string());
    }
    PgStore::open(name, c).unwrap()
}

fn read_all(md: &dyn correio_store::Maildrop, i: usize) -> Vec<u8> {
    let mut out = Vec::new();
    md.open_message(i).unwrap().read_to_end(&mut out).unwrap();
    out
}

fn deliver(s: &PgStore, mailbox: &str, body: &[u8]) {
    s.deliver(mailbox, &mut &body[..], &DeliverOptions::default())
        .unwrap();
}

fn delivery_reads_uidls_lease_and_update_across_two_frontends(bodies: &Where) {
    let (_pg, url) = database();
    let a = store(&url, "pgsql", bodies);
    let b = store(&url, "pgsql", bodies);
    // CRLF in, LF stored: the wire size counts CRLF again.
    deliver(&a, "alice", b"Subject: one\r\n\r\nfirst\r\n");
    deliver(&a, "alice", b"Subject: two\n\n.dot line\nno final newline");
    // A body larger than one chunk row (256 KiB) streams back whole.
    let big: Vec<u8> = (0..700_000u32)
        .map(|i| {
            if i % 77 == 76 {
                b'\n'
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect();
    deliver(&b, "alice", &big);
    // The same body for two users is stored once.
    deliver(&b, "bob", b"Subject: one\r\n\r\nfirst\r\n");

    let md = a.open("alice").unwrap();
    let msgs = md.messages().to_vec();
    assert_eq!(msgs.len(), 3);
    assert_eq!(read_all(&*md, 0), b"Subject: one\n\nfirst\n");
    assert_eq!(msgs[0].size, b"Subject: one\r\n\r\nfirst\r\n".len() as u64);
    assert_eq!(
        read_all(&*md, 1),
        b"Subject: two\n\n.dot line\nno final newline\n"
    );
    assert_eq!(
        msgs[1].size,
        b"Subject: two\r\n\r\n.dot line\r\nno final newline\r\n".len() as u64
    );
    let mut big_lf = big.clone();
    big_lf.push(b'\n');
    assert_eq!(read_all(&*md, 2), big_lf);
    let lines = big_lf.iter().filter(|&&c| c == b'\n').count() as u64;
    assert_eq!(msgs[2].size, big_lf.len() as u64 + lines);
    let uidls: Vec<&str> = msgs.iter().map(|m| m.uidl.as_str()).collect();
    let mut unique = uidls.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "{uidls:?}");

    // The other frontend cannot open alice meanwhile, but can open bob.
    assert!(matches!(b.open("alice"), Err(StoreError::InUse)));
    assert!(a.lease_holder("alice").unwrap().is_some());
    drop(b.open("bob").unwrap());

    // UPDATE: delete message 2, record 1 and 3 as retrieved.
    let report = md
        .update(&Update::new(vec![1], SystemTime::now()).with_retrieved(vec![0, 2]))
        .unwrap();
    assert_eq!(report.removed, 1);
    assert!(
        a.lease_holder("alice").unwrap().is_none(),
        "QUIT releases the lease"
    );

    // A new delivery gets a new UIDL, never the deleted one's.
    deliver(&a, "alice", b"Subject: three\n\nthird\n");
    let md = b.open("alice").unwrap();
    let after: Vec<String> = md.messages().iter().map(|m| m.uidl.clone()).collect();
    assert_eq!(after.len(), 3);
    assert_eq!(after[0], uidls[0]);
    assert_eq!(after[1], uidls[2]);
    assert!(!uidls.contains(&after[2].as_str()));

    // EXPIRE 0 days... a day later: the two retrieved ones expire, the new one stays.
    let later = SystemTime::now() + Duration::from_secs(86_400 + 60);
    let report = md
        .update(&Update::new(vec![], later).with_expiry(Duration::from_secs(86_400)))
        .unwrap();
    assert_eq!((report.removed, report.expired), (2, 2));
    assert_eq!(a.stat("alice").unwrap().messages, 1);

    // Dropping a session without QUIT deletes nothing and gives the mailbox back.
    let md = a.open("alice").unwrap();
    drop(md);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match b.open("alice") {
            Ok(md) => {
                assert_eq!(md.messages().len(), 1);
                break;
            }
            Err(StoreError::InUse) if std::time::Instant::now() < deadline => {
                // The release is sent in the background; wait for it.
                std::thread::yield_now();
            }
            Err(e) => panic!("{e}"),
        }
    }

    // LOGIN-DELAY's clock lives in the database, shared by every frontend.
    let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_123);
    a.record_login("alice", t).unwrap();
    assert_eq!(b.last_login("alice").unwrap(), Some(t));
    assert_eq!(b.last_login("nobody-yet").unwrap(), None);
}

fn a_lease_outlives_nothing_a_stalled_session_cannot_delete_after_losing_it(bodies: &Where) {
    let (_pg, url) = database();
    let a = store(&url, "pgsql", bodies);
    let b = store(&url, "pgsql", bodies);
    deliver(&a, "carol", b"Subject: x\n\nx\n");
    let md = a.open("carol").unwrap();
    // Simulate a frontend that stalled past its lease: expire it in the database.
    _pg.sql(
        "mail",
        "UPDATE correio_lease SET expires = now() - interval '1 second'",
    );
    let md_b = b.open("carol").expect("an expired lease is taken over");
    let e = md.commit(&[0]).unwrap_err();
    assert!(e.to_string().contains("nothing was deleted"), "{e}");
    assert_eq!(md_b.messages().len(), 1);
    md_b.commit(&[]).unwrap();
    assert_eq!(a.stat("carol").unwrap().messages, 1);
}

fn quota_size_limit_and_the_collector(bodies: &Where) {
    let (pg, url) = database();
    let s = store(&url, "pgsql", bodies);
    let opts = DeliverOptions::default().quota(Some(30), Some(2));
    s.deliver("dave", &mut &b"0123456789\n"[..], &opts).unwrap();
    s.deliver("dave", &mut &b"0123456789\n"[..], &opts).unwrap();
    let e = s.deliver("dave", &mut &b"x\n"[..], &opts).unwrap_err();
    assert_eq!(e.kind(), DeliverErrorKind::QuotaExceeded);
    assert!(e.is_temporary());
    let e = s
        .deliver(
            "dave",
            &mut &[b'a'; 100][..],
            &DeliverOptions::default().max_message_size(Some(50)),
        )
        .unwrap_err();
    assert_eq!(e.kind(), DeliverErrorKind::TooLarge);
    assert_eq!(s.stat("dave").unwrap().messages, 2);

    // Delete both: the shared body stays until the grace period has passed.
    let md = s.open("dave").unwrap();
    md.commit(&[0, 1]).unwrap();
    let r = s.collect_garbage(None).unwrap();
    assert_eq!(r.bodies, 0, "inside the grace period");
    // Collected: the shared body, and the one the quota refused (bodies are written
    // before the transaction that refused its row).
    let r = s.collect_garbage(Some(Duration::ZERO)).unwrap();
    assert_eq!(r.bodies, 2);
    match bodies {
        Where::Database => {
            assert_eq!(
                pg.sql("mail", "SELECT count(*) FROM correio_body_chunk"),
                "0\n"
            )
        }
        Where::S3(s3) => assert_eq!(s3.object_count(), 0, "the objects are deleted too"),
    }
    // A body still pointed to is never collected.
    s.deliver("dave", &mut &b"keep\n"[..], &DeliverOptions::default())
        .unwrap();
    let r = s.collect_garbage(Some(Duration::ZERO)).unwrap();
    assert_eq!(r.bodies, 0);
    let md = s.open("dave").unwrap();
    assert_eq!(read_all(&*md, 0), b"keep\n");
}

#[test]
fn bodies_in_a_shared_directory_and_uidls_kept_by_import() {
    let (_pg, url) = database();
    let dir = tempfile::tempdir().unwrap();
    let mut c = PgStoreConfig::new(&url);
    c.bodies = BodiesConfig::Directory(dir.path().join("bodies"));
    let s = PgStore::open("pgsql", c).unwrap();
    s.check().unwrap();
    let big = vec![b'z'; 3 * 1024 * 1024];
    deliver(&s, "erin", &big);
    assert!(
        s.import_message(
            "erin",
            "old-uidl-1",
            Some(1_700_000_000),
            &mut &b"old\n"[..]
        )
        .unwrap()
    );
    assert!(
        !s.import_message("erin", "old-uidl-1", None, &mut &b"old\n"[..])
            .unwrap(),
        "a second import of the same UIDL is skipped"
    );
    let md = s.open("erin").unwrap();
    assert_eq!(md.messages()[1].uidl, "old-uidl-1");
    let mut want = big.clone();
    want.push(b'\n');
    assert_eq!(read_all(&*md, 0), want);
    assert_eq!(read_all(&*md, 1), b"old\n");
    // The imported retrieval date is EXPIRE's clock.
    let r = md
        .update(&Update::new(vec![], SystemTime::now()).with_expiry(Duration::from_secs(86_400)))
        .unwrap();
    assert_eq!(r.expired, 1);
    assert_eq!(s.uidls("erin").unwrap().len(), 1);
    md_drop_gc(&s);
}

fn md_drop_gc(s: &PgStore) {
    let r = s.collect_garbage(Some(Duration::ZERO)).unwrap();
    assert_eq!(r.bodies, 1, "the imported body, no longer used");
}

fn the_database_going_away_is_a_temporary_failure_and_nothing_is_lost(bodies: &Where) {
    let (mut pg, url) = database();
    let s = store(&url, "pgsql", bodies);
    deliver(&s, "frank", b"Subject: kept\n\nkept\n");
    let md = s.open("frank").unwrap();
    pg.stop();
    let e = s
        .deliver("frank", &mut &b"x\n"[..], &DeliverOptions::default())
        .unwrap_err();
    assert!(e.is_temporary(), "{e}");
    let e = md.commit(&[0]).unwrap_err();
    assert!(e.is_temporary(), "{e}");
    assert!(matches!(s.open("frank"), Err(StoreError::Unavailable(_))));
    pg.start();
    // The session's lease runs out (3 s here); then the message is still there.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let md = loop {
        match s.open("frank") {
            Ok(md) => break md,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(read_all(&*md, 0), b"Subject: kept\n\nkept\n");
}

#[test]
fn delivery_reads_uidls_lease_and_update_across_two_frontends_bodies_in_postgresql() {
    delivery_reads_uidls_lease_and_update_across_two_frontends(&Where::Database);
}

#[test]
fn delivery_reads_uidls_lease_and_update_across_two_frontends_bodies_in_s3() {
    delivery_reads_uidls_lease_and_update_across_two_frontends(&Where::s3());
}

#[test]
fn a_lease_outlives_nothing_a_stalled_session_cannot_delete_after_losing_it_bodies_in_postgresql() {
    a_lease_outlives_nothing_a_stalled_session_cannot_delete_after_losing_it(&Where::Database);
}

#[test]
fn a_lease_outlives_nothing_a_stalled_session_cannot_delete_after_losing_it_bodies_in_s3() {
    a_lease_outlives_nothing_a_stalled_session_cannot_delete_after_losing_it(&Where::s3());
}

#[test]
fn quota_size_limit_and_the_collector_bodies_in_postgresql() {
    quota_size_limit_and_the_collector(&Where::Database);
}

#[test]
fn quota_size_limit_and_the_collector_bodies_in_s3() {
    quota_size_limit_and_the_collector(&Where::s3());
}

#[test]
fn the_database_going_away_is_a_temporary_failure_and_nothing_is_lost_bodies_in_postgresql() {
    the_database_going_away_is_a_temporary_failure_and_nothing_is_lost(&Where::Database);
}

#[test]
fn the_database_going_away_is_a_temporary_failure_and_nothing_is_lost_bodies_in_s3() {
    the_database_going_away_is_a_temporary_failure_and_nothing_is_lost(&Where::s3());
}

#[test]
fn the_object_store_going_away_is_a_temporary_failure_and_nothing_is_lost() {
    let (_pg, url) = database();
    let mut bodies = Where::s3();
    let s = store(&url, "pgsql", &bodies);
    deliver(&s, "gina", b"Subject: kept\n\nkept\n");
    let Where::S3(s3) = &mut bodies else {
        unreachable!()
    };
    assert_eq!(s3.object_count(), 1);
    s3.stop();
    let md = s.open("gina").unwrap();
    let e = md.open_message(0).map(|_| ()).unwrap_err();
    assert!(e.is_temporary(), "{e}");
    let e = s
        .deliver(
            "gina",
            &mut &b"Subject: new\n\nnew\n"[..],
            &DeliverOptions::default(),
        )
        .unwrap_err();
    assert!(e.is_temporary(), "{e}");
    // The refused delivery left no message row.
    assert_eq!(md.messages().len(), 1);
    md.commit(&[]).unwrap();
    s3.start();
    deliver(&s, "gina", b"Subject: new\n\nnew\n");
    let md = s.open("gina").unwrap();
    assert_eq!(md.messages().len(), 2);
    assert_eq!(read_all(&*md, 0), b"Subject: kept\n\nkept\n");
    assert_eq!(read_all(&*md, 1), b"Subject: new\n\nnew\n");
}

#[test]
fn small_bodies_stay_in_postgresql_large_ones_go_to_s3() {
    let (pg, url) = database();
    let bodies = Where::s3();
    let Where::S3(s3) = &bodies else {
        unreachable!()
    };
    let mut c = PgStoreConfig::new(&url);
    c.bodies = BodiesConfig::S3 {
        bucket: s3.bucket().to_string(),
        prefix: "bodies".into(),
    };
    c.s3.endpoint = Some(s3.endpoint());
    c.s3.allow_http = true;
    c.s3.access_key_id = Some(s3.access_key().to_string());
    c.s3.secret_access_key = Some(s3.secret_key().to_string());
    c.small_bodies_in_database = 16 * 1024;
    let s = PgStore::open("pgsql", c).unwrap();
    let small: Vec<Vec<u8>> = (0..5)
        .map(|i| format!("Subject: s{i}\n\nsmall\n").into_bytes())
        .collect();
    let large = vec![b'L'; 100_000];
    for m in &small[..3] {
        deliver(&s, "hana", m);
    }
    deliver(&s, "hana", &large);
    for m in &small[3..] {
        deliver(&s, "hana", m);
    }
    assert_eq!(s3.object_count(), 1, "only the large body is an object");
    assert_eq!(
        pg.sql("mail", "SELECT count(*) FROM correio_body WHERE in_db"),
        "5\n"
    );
    let md = s.open("hana").unwrap();
    for (i, want) in small[..3].iter().enumerate() {
        assert_eq!(&read_all(&*md, i), want);
    }
    let mut l = large.clone();
    l.push(b'\n');
    assert_eq!(read_all(&*md, 3), l);
    for (i, want) in small[3..].iter().enumerate() {
        assert_eq!(&read_all(&*md, 4 + i), want);
    }
}
