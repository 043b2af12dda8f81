//! Replays the seed corpus of the probe's fuzz targets through their bodies, and
//! checks what the certificate reader makes of the real certificates among the seeds.

use correio_testkit::fuzz::replay;
use std::fs;
use std::path::PathBuf;

use correio_client::probe::{fuzzing, x509};

fn dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

#[test]
fn response_seeds() {
    replay("client_probe_response", fuzzing::response);
}

#[test]
fn x509_seeds() {
    replay("client_probe_x509", fuzzing::x509);
}

#[test]
fn real_certificates_read_right() {
    let d = dir("client_probe_x509");
    let rcgen = x509::parse(&fs::read(d.join("rcgen-self-signed")).unwrap()).unwrap();
    assert_eq!(rcgen.subject, "CN=rcgen self signed cert");
    assert!(rcgen.self_issued);
    assert!(
        rcgen.san.contains(&"DNS:localhost".to_owned()),
        "{:?}",
        rcgen.san
    );
    assert!(
        rcgen.san.contains(&"IP:127.0.0.1".to_owned()),
        "{:?}",
        rcgen.san
    );
    assert!(rcgen.san.contains(&"IP:::1".to_owned()), "{:?}", rcgen.san);
    assert_eq!(x509::format_time(rcgen.not_before), "1975-01-01T00:00:00Z");
    assert_eq!(x509::format_time(rcgen.not_after), "4096-01-01T00:00:00Z");
    assert_eq!(
        x509::parse(&fs::read(d.join("rcgen-truncated")).unwrap()),
        None
    );

    let isrg = x509::parse(&fs::read(d.join("root-isrg-root-x1")).unwrap()).unwrap();
    assert_eq!(
        isrg.subject,
        "C=US, O=Internet Security Research Group, CN=ISRG Root X1"
    );
    assert_eq!(isrg.issuer, isrg.subject);
    assert_eq!(x509::format_time(isrg.not_before), "2015-06-04T11:04:38Z");
    assert_eq!(x509::format_time(isrg.not_after), "2035-06-04T11:04:38Z");
    assert!(isrg.san.is_empty());
    assert_eq!(
        isrg.serial,
        "82:10:CF:B0:D2:40:E3:59:44:63:E0:BB:63:82:8B:00"
    );
}
