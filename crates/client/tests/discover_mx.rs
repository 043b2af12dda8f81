//! Discovery of a Microsoft 365 custom domain by its MX record (no SRV, no
//! autoconfig), from a DNS server on loopback, and the provider it implies.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use correio_client::discover::{Discovery, discover};
use correio_client::oauth::Provider;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::MX;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// Answers MX queries for `domain` with `exchange`, NXDOMAIN otherwise.
fn dns(domain: &'static str, exchange: &'static str) -> (std::net::SocketAddr, Arc<AtomicBool>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let addr = sock.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while !stop2.load(Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let Ok(req) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut resp = Message::new();
            resp.set_id(req.id());
            resp.set_message_type(MessageType::Response);
            resp.set_recursion_available(true);
            resp.add_queries(req.queries().to_vec());
            for q in req.queries() {
                if q.query_type() == RecordType::MX
                    && q.name().to_ascii().eq_ignore_ascii_case(domain)
                {
                    resp.add_answer(Record::from_rdata(
                        q.name().clone(),
                        60,
                        RData::MX(MX::new(10, Name::from_ascii(exchange).unwrap())),
                    ));
                }
            }
            if resp.answers().is_empty() {
                resp.set_response_code(ResponseCode::NXDomain);
            }
            let _ = sock.send_to(&resp.to_vec().unwrap(), from);
        }
    });
    (addr, stop)
}

#[tokio::test]
async fn microsoft_365_custom_domain_by_mx() {
    let (addr, stop) = dns("contoso.test.", "contoso-test.mail.protection.outlook.com.");
    let opts = Discovery {
        dns_server: Some(addr),
        // Nothing listens there: autoconfig and the ISPDB fail at once.
        autoconfig_base: Some("http://127.0.0.1:1".into()),
        ispdb_base: Some("http://127.0.0.1:1".into()),
        timeout: Duration::from_secs(5),
    };
    let found = discover("me@contoso.test", &opts).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let s = &found.settings;
    assert_eq!(s.host.as_deref(), Some("outlook.office365.com"));
    assert_eq!((s.port, s.tls.as_deref()), (Some(995), Some("implicit")));
    assert_eq!(s.user.as_deref(), Some("me@contoso.test"));
    assert!(
        found.notes.iter().any(|n| n.contains("Microsoft 365")),
        "{:?}",
        found.notes
    );
    assert_eq!(
        Provider::detect("me@contoso.test", s.host.as_deref()),
        Some(Provider::Microsoft)
    );
}
