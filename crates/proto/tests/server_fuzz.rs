//! Replays fuzz/corpus/server_session/ through the server session fuzz body, and runs
//! the same body on random inputs (proptest), so its invariants hold in every test run.

use correio_proto::server::fuzz_session;
use proptest::prelude::*;

#[test]
fn server_session_corpus() {
    correio_testkit::fuzz::replay("server_session", fuzz_session);
}

/// Command-shaped noise: real keywords, numbers, junk and line ends.
fn script() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"USER u".to_vec()),
        Just(b"PASS p w".to_vec()),
        Just(b"STAT".to_vec()),
        Just(b"LIST".to_vec()),
        Just(b"RETR 1".to_vec()),
        Just(b"TOP 2 1".to_vec()),
        Just(b"DELE 1".to_vec()),
        Just(b"RSET".to_vec()),
        Just(b"QUIT".to_vec()),
        Just(b"STLS".to_vec()),
        Just(b"AUTH PLAIN".to_vec()),
        Just(b"CAPA".to_vec()),
        Just(b"*".to_vec()),
        prop::collection::vec(any::<u8>(), 0..40),
    ];
    let line_end = prop_oneof![
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(Vec::new())
    ];
    (any::<u8>(), prop::collection::vec((token, line_end), 0..30)).prop_map(|(flags, parts)| {
        let mut v = vec![flags];
        for (t, e) in parts {
            v.extend(t);
            v.extend(e);
        }
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn server_session_never_breaks_its_promises(data in script()) {
        fuzz_session(&data);
    }
}
