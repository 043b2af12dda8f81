//! Replays every seed of the auth fuzz targets (fuzz/corpus/auth_*) through the same
//! functions the fuzzer calls, so the seeds stay valid and a crash found by fuzzing
//! and saved there becomes a regression test.
use std::path::PathBuf;

fn replay(target: &str, f: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut n = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_file() {
            f(&std::fs::read(&path).unwrap());
            n += 1;
        }
    }
    assert!(n >= 3, "{target}: expected seed files in {}", dir.display());
}

#[test]
fn passwd_file_seeds() {
    replay("auth_passwd_file", correio_auth::fuzzing::passwd_file);
}

#[test]
fn sasl_server_seeds() {
    replay("auth_sasl_server", correio_auth::fuzzing::sasl_server);
}

#[test]
fn sasl_client_seeds() {
    replay("auth_sasl_client", correio_auth::fuzzing::sasl_client);
}

/// A few thousand pseudo-random inputs through each body: a cheap stand-in for a
/// fuzzing run in the normal suite.
#[test]
fn random_inputs_never_panic() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let alphabet = b"\0\n\r:=,{}$@ anrcpsvie#./%-PLAINn=r=c=biws0123456789ABCxyz";
    for _ in 0..5000 {
        let len = (next() % 120) as usize;
        let data: Vec<u8> = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        correio_auth::fuzzing::passwd_file(&data);
        correio_auth::fuzzing::sasl_server(&data);
        correio_auth::fuzzing::sasl_client(&data);
    }
}
