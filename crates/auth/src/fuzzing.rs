//! Fuzz bodies (used by `fuzz/fuzz_targets/*` and by the seed-replay tests). Each must
//! never panic, hang or allocate without bound, whatever the input. Calling
//! [`sasl_server`] makes the unknown-user dummy hash cheap for the rest of the process:
//! never call these from a server.

use crate::sasl::{
    ClientCredentials, ClientMechanism, ClientMechanismKind, Mechanism, ServerMechanism,
    ServerParams,
};
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
    for line in text.split('\n') {
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
    crate::scheme::cheap_dummy_for_fuzzing();
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let users = fuzz_users();
    let mech = Mechanism::ALL[usize::from(pick & 0x7f) % Mechanism::ALL.len()];
    let mut m = ServerMechanism::new(
        mech,
        &ServerParams {
            cram_md5_challenge: "<1.2@fuzz>".into(),
        },
    );
    let mut parts = rest.split(|&b| b == b'\n');
    // High bit set: the first part is the AUTH command's initial response.
    let initial = if pick & 0x80 != 0 { parts.next() } else { None };
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
                "bob:{SSHA256}dUAwOTn42VMWNdIqE/hOwUhlYLHOY1LQQHEH0Drp0Cjp5ym5",
                "carol:{SCRAM-SHA-256}4096,Y4pQJFL7mRZ3G2kwv1p7xg==,KpUHu6j3B8XkV59/xezd5l9yu9TwDFN77n1CKfVbsaU=,4iOVXZbKpuA0neGfgVEKIF7Tx5hZLVY1Xw+S6xJ3k8Q=",
                "dave:{CRAM-MD5}ff5d74b19e3cb9b2b9f4fcb548fe023aeb44f67f231a5a89714d08b5fec22b78",
            ]
            .iter()
            .filter_map(|l| UserRecord::parse_line(l).ok().flatten())
            .collect()
        })
        .clone()
}

/// Drives every client mechanism with server challenges cut from `data` (split at
/// `\n`): the first byte picks the mechanism (and whether to start two-step). The
/// SCRAM nonce is fixed to `abc` so the fuzzer can reach the later states.
pub fn sasl_client(data: &[u8]) {
    use ClientMechanismKind::*;
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    // A valid server-first may demand up to 10^7 PBKDF2 rounds; that is allowed (and
    // bounded) but too slow for a fuzzer, so skip inputs asking for more than 4 digits.
    if rest
        .windows(7)
        .any(|w| w.starts_with(b"i=") && w[2..].iter().all(u8::is_ascii_digit))
    {
        return;
    }
    let kinds = [Plain, Login, CramMd5, ScramSha256, XOAuth2, OAuthBearer];
    let kind = kinds[usize::from(pick & 0x7f) % kinds.len()];
    let creds = ClientCredentials::new("user", "pencil");
    let Ok(m) = ClientMechanism::new(kind, creds) else {
        return;
    };
    let mut m = m.with_scram_nonce("abc");
    if pick & 0x80 == 0 {
        let _ = m.initial_response();
    }
    for (i, challenge) in rest.split(|&b| b == b'\n').enumerate() {
        if i > 8 || m.step(challenge).is_err() {
            break;
        }
    }
    let _ = m.finish();
}
