//! Replays the seed corpora of the From_ line and fsck fuzz targets
//! (fuzz/corpus/<target>/) through the same functions the targets call, and runs the
//! bodies on generated mboxes, so `cargo test` keeps their invariants on stable.

use correio_testkit::fuzz::replay;

use correio_store::fsck::fuzzing;

#[test]
fn store_mbox_from_line_corpus() {
    replay("store_mbox_from_line", fuzzing::from_line);
}

#[test]
fn store_fsck_mbox_corpus() {
    replay("store_fsck_mbox", fuzzing::mbox_repair);
    // The parse seeds hold the same shapes and more.
    replay("store_mbox_parse", fuzzing::mbox_repair);
}

#[test]
fn store_maildir_name_corpus() {
    replay("store_maildir_name", fuzzing::maildir_name);
}

#[test]
fn store_fsck_uidlist_corpus() {
    replay("store_fsck_uidlist", fuzzing::uidlist);
}

/// Every sequence of four of these lines: the separator rule's ambiguous shapes next
/// to each other, through the parse body and the repair body.
#[test]
fn mbox_bodies_on_generated_separator_shapes() {
    let parts: [&[u8]; 10] = [
        b"From a Thu Jan  1 00:00:00 1970\n",
        b"\n",
        b"From me Tue Feb  2 00:00:00 2024 said hi\n",
        b">From x Thu Jan  1 00:00:00 1970\n",
        b"Content-Length: 5\n",
        b"line\n",
        b"\r\n",
        b"From b Thu Jan  1 00:00:01 1970\r\n",
        b"junk",
        b"From x\n",
    ];
    for a in parts {
        for b in parts {
            for c in parts {
                for d in parts {
                    let input = [a, b, c, d].concat();
                    correio_store::fuzzing::mbox_parse(&input);
                    fuzzing::mbox_repair(&input);
                }
            }
        }
    }
}
