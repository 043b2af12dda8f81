//! Replays every seed of the auth fuzz targets (fuzz/corpus/auth_*) through the same
//! functions the fuzzer calls, so the seeds stay valid and a crash found by fuzzing
//! and saved there becomes a regression test.
use correio_testkit::fuzz::replay;

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
