//! Replays every seed file of fuzz/corpus/<target>/ through the same function the fuzz
//! target calls, so the normal suite keeps the fuzzers' invariants without a nightly
//! toolchain.

use correio_testkit::fuzz::replay;

use correio_store::fuzzing;

#[test]
fn store_mbox_parse_corpus() {
    replay("store_mbox_parse", fuzzing::mbox_parse);
}

#[test]
fn store_mbox_roundtrip_corpus() {
    replay("store_mbox_roundtrip", |d| {
        fuzzing::mbox_roundtrip(d);
        fuzzing::normalizer_crlf(d);
    });
}

#[test]
fn store_maildir_index_corpus() {
    replay("store_maildir_index", fuzzing::maildir_index);
}

#[test]
fn store_dovecot_uidlist_corpus() {
    replay("store_dovecot_uidlist", fuzzing::dovecot_uidlist);
}

/// The mbox fuzz bodies on generated inputs too: every combination of a few tricky
/// lines, so the invariants hold beyond the seeds.
#[test]
fn mbox_bodies_on_generated_inputs() {
    let parts: [&[u8]; 8] = [
        b"From a Thu Jan  1 00:00:00 1970\n",
        b"\n",
        b">From x\n",
        b"Content-Length: 3\n",
        b"abc\n",
        b"\r\n",
        b"Status: RO\n",
        b"no newline",
    ];
    // (`normalizer_crlf` cuts its input where the first byte says: every cut of these.)
    for a in 0..8 {
        for b in 0..8 {
            for c in 0..8 {
                for d in 0..8 {
                    let input = [parts[a], parts[b], parts[c], parts[d]].concat();
                    fuzzing::mbox_parse(&input);
                    fuzzing::mbox_roundtrip(&input);
                    fuzzing::normalizer_crlf(&input);
                }
            }
        }
    }
}

#[test]
fn store_expiry_retrieved_corpus() {
    replay("store_expiry_retrieved", fuzzing::expiry_retrieved);
}

#[test]
fn store_mailbox_ref_corpus() {
    replay("store_mailbox_ref", fuzzing::mailbox_ref);
}
