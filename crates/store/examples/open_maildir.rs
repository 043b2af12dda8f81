//! Times opening a Maildir session and listing it, as a POP3 login does:
//!
//!     cargo run --release -p correio-store --example open_maildir -- DIR [ROUNDS]
//!
//! Prints the time of each open (the first may list the directories and write the
//! index; later ones of a quiet Maildir take the listing from the index).
fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("usage: open_maildir DIR [ROUNDS]"));
    let rounds: usize = args.next().map_or(5, |r| r.parse().expect("ROUNDS"));
    let loc = correio_store::MailLocation::Maildir(dir);
    for _ in 0..rounds {
        let t = std::time::Instant::now();
        let md = correio_store::open_maildrop(&loc).expect("open");
        let n = md.messages().len();
        let total: u64 = md.messages().iter().map(|m| m.size).sum();
        let opened = t.elapsed();
        drop(md);
        println!(
            "{n} messages, {total} octets: open {opened:?}, with release {:?}",
            t.elapsed()
        );
    }
}
