//! Timing at the wire: an unknown user and a wrong password must cost the same time
//! (no user enumeration). In its own test binary so that no other test competes for
//! the CPU while it measures.

mod common;

use std::time::Instant;

use common::TestServer;

#[test]
fn unknown_user_costs_the_same_time_as_a_wrong_password() {
    let srv = TestServer::start();
    srv.add_user_scheme("alice", "secret pw", correio_auth::Scheme::Argon2id);
    let attempt = |user: &str| {
        let mut w = srv.connect();
        w.line();
        w.cmd(&format!("USER {user}"));
        let t = Instant::now();
        assert_eq!(w.cmd("PASS wrong"), "-ERR [AUTH] Authentication failed\r\n");
        t.elapsed()
    };
    // Warm up: the auth crate pads cheap failures to a moving average of the dummy
    // check's cost, which starts from the (slower, concurrent) start-up measurement.
    for _ in 0..6 {
        attempt("nobody");
    }
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        known.push(attempt("alice"));
        unknown.push(attempt("nobody"));
    }
    known.sort();
    unknown.sort();
    let (k, u) = (known[1].as_secs_f64(), unknown[1].as_secs_f64());
    eprintln!("wrong password {known:?}, unknown user {unknown:?}");
    // Same work on both paths: medians within a factor of two (plus scheduling noise).
    assert!(
        u < 2.0 * k + 0.05 && k < 2.0 * u + 0.05,
        "wrong password {known:?} vs unknown user {unknown:?}"
    );
}
