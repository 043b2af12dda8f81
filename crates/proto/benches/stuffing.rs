//! Throughput of the byte-stuffer (server, stored LF message → wire) and the unstuffer
//! (client, wire → LF message), on realistic messages: 4 KB of text, 1 MB with a base64
//! attachment, and 1 MB of short text lines (the worst realistic case: cost is per line).
//!
//! Run: `cargo bench -p correio-proto --bench stuffing -- --warm-up-time 1 --measurement-time 3`
//!
//! Times are the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall
//! time: the figure is "GB/s on one core" even on a shared, loaded machine, where wall
//! time mostly measures how long the thread waited for a core.

use std::hint::black_box;
use std::time::Duration;

use correio_proto::{DotStuffer, DotUnstuffer, LineEnding, WireSizer};
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use nix::time::{ClockId, clock_gettime};

/// Criterion measurement by the calling thread's CPU time, formatted like wall time.
struct ThreadCpuTime {
    wall: WallTime,
}

fn cpu_now() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .expect("CLOCK_THREAD_CPUTIME_ID is available on Linux")
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        cpu_now()
    }
    fn end(&self, start: Duration) -> Duration {
        cpu_now().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        self.wall.formatter()
    }
}

/// The chunk size a server reads from the store (and a client from the socket).
const CHUNK: usize = 64 * 1024;

/// A deterministic message that looks like mail: a header block of typical fields,
/// then body text with lines of 0 to 78 characters (about 41 on average), some starting
/// with "." (as quoted text and signatures do), LF line ends as Maildir stores them.
/// Text this short per line is the hard case: the cost is per line.
fn text_message(size: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(size + 128);
    for h in [
        "Return-Path: <alice@example.org>",
        "Received: from mx.example.org (mx.example.org [192.0.2.1])\n\tby pop.example.net (Correio) with LMTP id 4f1a; Sun, 22 Nov 2026 03:00:00 +0000",
        "From: Alice <alice@example.org>",
        "To: Bob <bob@example.net>",
        "Subject: Quarterly figures and the plan for next year",
        "Date: Sun, 22 Nov 2026 02:59:58 +0000",
        "Message-ID: <20261122025958.4f1a@example.org>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
    ] {
        m.extend_from_slice(h.as_bytes());
        m.push(b'\n');
    }
    m.push(b'\n');
    let words: &[&[u8]] = &[
        b"the",
        b"quarterly",
        b"figures",
        b"are",
        b"attached",
        b"and",
        b"we",
        b"should",
        b"discuss",
        b"them",
        b"before",
        b"Friday",
        b"meeting",
        b"budget",
        b"plan",
        b"of",
    ];
    let mut seed: u32 = 0x2545_f491;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    while m.len() < size {
        let r = next();
        if r % 23 == 0 {
            m.push(b'\n'); // paragraph break
            continue;
        }
        if r % 31 == 1 {
            m.push(b'.');
        }
        let target = (r >> 8) as usize % 78;
        let mut line_len = 0;
        while line_len < target {
            let w = words[next() as usize % words.len()];
            m.extend_from_slice(w);
            m.push(b' ');
            line_len += w.len() + 1;
        }
        m.push(b'\n');
    }
    m.truncate(size);
    if m.last() != Some(&b'\n') {
        m.pop();
        m.push(b'\n');
    }
    m
}

/// What a 1 MB mail usually is: a short text part and a base64 attachment (RFC 2045
/// lines of 76 characters), LF line ends.
fn attachment_message(size: usize) -> Vec<u8> {
    let mut m = text_message(2048);
    m.extend_from_slice(
        b"\n--b1\nContent-Type: application/pdf; name=\"figures.pdf\"\n\
          Content-Transfer-Encoding: base64\n\n",
    );
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut seed: u32 = 0x9e37_79b9;
    while m.len() < size - 80 {
        for _ in 0..76 {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            m.push(B64[(seed >> 26) as usize]);
        }
        m.push(b'\n');
    }
    m.extend_from_slice(b"--b1--\n");
    m
}

fn wire(m: &[u8]) -> Vec<u8> {
    let mut s = DotStuffer::new();
    let mut out = Vec::new();
    s.feed(m, &mut out);
    s.finish(&mut out);
    out
}

fn bench(c: &mut Criterion<ThreadCpuTime>) {
    for (name, msg) in [
        ("4KB", text_message(4 * 1024)),
        ("1MB", attachment_message(1024 * 1024)),
        ("1MB_text", text_message(1024 * 1024)),
    ] {
        let wire = wire(&msg);

        let mut g = c.benchmark_group("stuffer");
        g.throughput(Throughput::Bytes(msg.len() as u64));
        let mut out = Vec::with_capacity(CHUNK * 2);
        g.bench_with_input(BenchmarkId::from_parameter(name), &msg, |b, msg| {
            b.iter(|| {
                let mut s = DotStuffer::new();
                let mut sent = 0;
                for chunk in msg.chunks(CHUNK) {
                    out.clear();
                    s.feed(chunk, &mut out);
                    sent += out.len();
                }
                out.clear();
                s.finish(&mut out);
                black_box(sent + out.len())
            })
        });
        g.finish();

        let mut g = c.benchmark_group("wire_sizer");
        g.throughput(Throughput::Bytes(msg.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), &msg, |b, msg| {
            b.iter(|| {
                let mut s = WireSizer::new();
                for chunk in msg.chunks(CHUNK) {
                    s.feed(chunk);
                }
                black_box(s.finish())
            })
        });
        g.finish();

        let mut g = c.benchmark_group("unstuffer");
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), &wire, |b, wire| {
            b.iter(|| {
                let mut u = DotUnstuffer::new(LineEnding::Lf);
                let mut got = 0;
                for chunk in wire.chunks(CHUNK) {
                    out.clear();
                    u.feed(chunk, &mut out);
                    got += out.len();
                }
                assert!(u.is_done());
                black_box(got)
            })
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime { wall: WallTime });
    targets = bench
}
criterion_main!(benches);
