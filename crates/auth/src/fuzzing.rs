//! Fuzz bodies (used by `fuzz/fuzz_targets/*` and by the seed-replay tests). Each must
//! never panic, hang or allocate without bound, whatever the input.

use crate::sasl::{Mechanism, ServerMechanism, ServerParams};
use crate::userdb::{UserRecord, parse_users};

/// Parses `data` as a users file and as single lines; re-formats each record and
/// checks the line parses back to the same record.
pub fn passwd_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(records) = parse_users(text) {
        for r in records {
            let line = r.to_line();
            let again = UserRecord::parse_line(&line);
            assert_eq!(again, Ok(Some(r)), "record must survive a round trip");
        }
    }
    for line in text.lines() {
        if let Ok(Some(r)) = UserRecord::parse_line(line) {
            let _ = r.password.as_ref().map(|p| p.scheme().clone());
            let _ = r.mail_location();
            let _ = crate::sasl::mechanisms_for(&r);
        }
    }
}

/// Drives every server mechanism with client messages cut from `data` (split at
/// `\n`): the first byte picks the mechanism, the rest are the responses. Users have
/// cheap secrets so the fuzzer stays fast.
pub fn sasl_server(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let users = fuzz_users();
    let mech = Mechanism::ALL[usize::from(pick) % Mechanism::ALL.len()];
    let mut m = ServerMechanism::new(
        mech,
        &ServerParams {
            cram_md5_challenge: "<1.2@fuzz>".into(),
        },
    );
    let mut parts = rest.split(|&b| b == b'\n');
    let first = parts.next();
    let initial = if pick & 0x80 != 0 { first } else { None };
    if m.start(initial, &users).is_err() {
        return;
    }
    for (i, part) in parts.enumerate() {
        if i > 8 || m.step(part, &users).is_err() || m.is_done() {
            return;
        }
    }
}

fn fuzz_users() -> Vec<UserRecord> {
    use std::sync::OnceLock;
    static USERS: OnceLock<Vec<UserRecord>> = OnceLock::new();
    USERS
        .get_or_init(|| {
            [
                "alice:{PLAIN}secret",
                "bob:{SSHA256}WhSmN3RZi3AYMMKkzU0D3kgpZkE9GWX8Dk4B5S2kLvKwl6Tk",
                "carol:{SCRAM-SHA-256}4096,Y4pQJFL7mRZ3G2kwv1p7xg==,KpUHu6j3B8XkV59/xezd5l9yu9TwDFN77n1CKfVbsaU=,4iOVXZbKpuA0neGfgVEKIF7Tx5hZLVY1Xw+S6xJ3k8Q=",
                "dave:{CRAM-MD5}ff5d74b19e3cb9b2b9f4fcb548fe023aeb44f67f231a5a89714d08b5fec22b78",
            ]
            .iter()
            .filter_map(|l| UserRecord::parse_line(l).ok().flatten())
            .collect()
        })
        .clone()
}
