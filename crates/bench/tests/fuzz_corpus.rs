//! Replays the seed corpus of this crate's fuzz targets through their bodies, plus
//! every chunking of a few hand-picked replies.

use correio_testkit::fuzz::replay;

#[test]
fn body_end_seeds() {
    replay("bench_body_end", correio_bench::fuzzing::body_end);
}

#[test]
fn users_file_seeds() {
    replay("bench_users_file", correio_bench::fuzzing::users_file);
}

#[test]
fn body_end_in_every_chunk_size() {
    let bodies: [&[u8]; 6] = [
        b".\r\n",
        b"\r\n.\r\n",
        b"a\r\n..b\r\n.\r\n",
        b"..\r\n.\r\nnext reply",
        b"x\r\n.\r",
        b"line\r\n.\r\n.\r\n",
    ];
    for body in bodies {
        for chunk in 0u8..64 {
            let mut input = vec![chunk];
            input.extend_from_slice(body);
            correio_bench::fuzzing::body_end(&input);
        }
    }
}
