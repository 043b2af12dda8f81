//! The checks, connection by connection. See the module docs of [`super`] for what
//! is checked and what the probe does to the server.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use correio_proto::Capabilities;
use correio_proto::capa::ExpirePolicy;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;

use super::parse::{self, Body, Classified, Ending, Kind, Target, printable};
use super::tls::{Handshake, TlsSetup, Versions};
use super::wire::{Io, MAX_LINE, Wire, WireError};
use super::{
    CHECKS, Certificate, CheckResult, Enumeration, Mailbox, Offer, Options, ProbeError, Report,
    Severity, Side, Status, Summary, TargetInfo, TlsVersion, check_def, x509,
};

type Conn = Wire<Box<dyn Io>>;

/// The most a listing (CAPA, LIST, UIDL, AUTH) may take.
const MAX_LISTING: usize = 32 << 20;
/// How long to wait for data the server should not send (STLS injection).
const QUIET_WAIT: Duration = Duration::from_millis(1500);
/// Failed logins answered faster than this (median) count as "no delay".
const NO_DELAY_BELOW: Duration = Duration::from_millis(200);
/// How many messages get TOP checked.
const TOP_MESSAGES: usize = 3;
/// Retrieved messages up to this size are kept for the TOP comparison.
const TOP_KEEP: usize = 1 << 20;

/// How to open a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// Cleartext.
    Plain,
    /// Cleartext, then STLS with these versions; `true`: enforce the certificate.
    Stls(Versions, bool),
    /// TLS from the first byte.
    Implicit(Versions, bool),
}

impl How {
    fn is_tls(self) -> bool {
        !matches!(self, How::Plain)
    }
}

/// How the test account logs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    UserPass,
    SaslPlain,
}

struct Opened {
    conn: Conn,
    greeting: Vec<u8>,
    cls: Classified,
    handshake: Option<Handshake>,
    /// Octets the server sent after `+OK` to STLS, before the handshake.
    leftover: Vec<u8>,
}

/// A CAPA answer.
struct CapaRead {
    lines: Vec<String>,
    caps: Capabilities,
    problems: Vec<String>,
}

struct Outcome {
    status: Status,
    severity: Option<Severity>,
    detail: String,
}

enum LoginFail {
    /// Could not connect or the handshake failed.
    Connect(String),
    /// `-ERR [LOGIN-DELAY]`.
    LoginDelay(String),
    /// Any other refusal.
    Refused(String),
}

impl LoginFail {
    fn text(&self) -> String {
        match self {
            LoginFail::Connect(e) => e.clone(),
            LoginFail::LoginDelay(e) => format!("login refused for LOGIN-DELAY: {e}"),
            LoginFail::Refused(e) => format!("login refused: {e}"),
        }
    }
}

/// One failed-login sample.
struct Sample {
    user_answer: Option<String>,
    pass_answer: Option<String>,
    time: Duration,
}

/// A probe run.
pub(crate) struct Prober<'a> {
    opts: &'a Options,
    target: Target,
    tls: TlsSetup,
    results: HashMap<&'static str, Outcome>,
    offer: Offer,
    mailbox: Option<Mailbox>,
    account_error: Option<String>,
    enumeration: Option<Enumeration>,
    notes: Vec<String>,
    status_lines: usize,
    lower_case: Option<String>,
    bare_lf: Option<String>,
    too_long: Option<String>,
    caps_clear: Option<Capabilities>,
    caps_tls: Option<Capabilities>,
    caps_txn: Option<Capabilities>,
    /// CAPA answered +OK before login (in any state).
    capa_works: bool,
    first_timestamp: Option<String>,
    tls_ok: bool,
    handshakes: Vec<(Versions, Result<Handshake, String>)>,
    counter: u64,
}

fn wire_err(e: WireError) -> String {
    e.to_string()
}

fn median(v: &[Duration]) -> Option<Duration> {
    let mut v = v.to_vec();
    v.sort();
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2),
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

impl<'a> Prober<'a> {
    pub(crate) fn new(opts: &'a Options, target: Target, tls: TlsSetup) -> Self {
        let mut offer = Offer::default();
        offer.tls.trust = tls.trust.clone();
        Prober {
            opts,
            target,
            tls,
            results: HashMap::new(),
            offer,
            mailbox: None,
            account_error: None,
            enumeration: None,
            notes: Vec::new(),
            status_lines: 0,
            lower_case: None,
            bare_lf: None,
            too_long: None,
            caps_clear: None,
            caps_tls: None,
            caps_txn: None,
            capa_works: false,
            first_timestamp: None,
            tls_ok: false,
            handshakes: Vec::new(),
            counter: 0,
        }
    }

    // ---- results -------------------------------------------------------------------

    fn set(
        &mut self,
        id: &'static str,
        status: Status,
        severity: Option<Severity>,
        detail: String,
    ) {
        debug_assert!(check_def(id).is_some(), "unknown check {id}");
        let rank = |s: Status| match s {
            Status::Skip => 0,
            Status::Info => 1,
            Status::Pass => 2,
            Status::Fail => 3,
        };
        match self.results.get_mut(id) {
            Some(old) if rank(old.status) > rank(status) => {}
            Some(old) if old.status == status => {
                if !detail.is_empty() && !old.detail.contains(&detail) {
                    old.detail = format!("{}; {detail}", old.detail);
                }
                if let (Some(a), Some(b)) = (old.severity, severity) {
                    old.severity = Some(a.max(b));
                }
            }
            _ => {
                self.results.insert(
                    id,
                    Outcome {
                        status,
                        severity,
                        detail,
                    },
                );
            }
        }
    }

    fn pass(&mut self, id: &'static str, detail: impl Into<String>) {
        self.set(id, Status::Pass, None, detail.into());
    }

    fn fail(&mut self, id: &'static str, detail: impl Into<String>) {
        let sev = check_def(id).map(|d| d.severity);
        self.set(id, Status::Fail, sev, detail.into());
    }

    fn fail_with(&mut self, id: &'static str, sev: Severity, detail: impl Into<String>) {
        self.set(id, Status::Fail, Some(sev), detail.into());
    }

    fn skip(&mut self, id: &'static str, detail: impl Into<String>) {
        self.set(id, Status::Skip, None, detail.into());
    }

    fn info(&mut self, id: &'static str, detail: impl Into<String>) {
        self.set(id, Status::Info, None, detail.into());
    }

    fn note(&mut self, n: impl Into<String>) {
        let n = n.into();
        if !self.notes.contains(&n) && self.notes.len() < 50 {
            self.notes.push(n);
        }
    }

    // ---- reading ---------------------------------------------------------------------

    fn observe(&mut self, raw: &[u8], c: &Classified, what: &str) {
        self.status_lines += 1;
        if !c.exact_case && self.lower_case.is_none() {
            self.lower_case = Some(format!("answer to {what}: {}", printable(raw, 80)));
        }
        if c.ending == Ending::Lf && self.bare_lf.is_none() {
            self.bare_lf = Some(format!("answer to {what} ended with a bare LF"));
        }
        if c.octets > parse::RFC_LINE_MAX && self.too_long.is_none() {
            self.too_long = Some(format!("answer to {what}: {} octets", c.octets));
        }
    }

    async fn answer(
        &mut self,
        c: &mut Conn,
        what: &str,
    ) -> Result<(Vec<u8>, Classified), WireError> {
        let raw = c.line(MAX_LINE).await?;
        let cls = parse::classify(&raw);
        self.observe(&raw, &cls, what);
        Ok((raw, cls))
    }

    /// Sends a command, reads its first line; also the time to the answer.
    async fn ask(
        &mut self,
        c: &mut Conn,
        cmd: &str,
    ) -> Result<(Vec<u8>, Classified, Duration), WireError> {
        c.command(cmd).await?;
        let t0 = Instant::now();
        let what = cmd.split(' ').next().unwrap_or(cmd).to_owned();
        let (raw, cls) = self.answer(c, &what).await?;
        Ok((raw, cls, t0.elapsed()))
    }

    /// A multi-line listing after its `+OK`.
    async fn listing(&mut self, c: &mut Conn, what: &str) -> Result<Body, WireError> {
        let raw = c.body(MAX_LISTING).await?;
        let body = parse::split_body(&raw);
        if body.bare_lf > 0 && self.bare_lf.is_none() {
            self.bare_lf = Some(format!("{what} listing has lines ended with a bare LF"));
        }
        Ok(body)
    }

    /// CAPA: `None` when answered `-ERR`.
    async fn capa(&mut self, c: &mut Conn, cmd: &str) -> Result<Option<CapaRead>, WireError> {
        let (raw, cls, _) = self.ask(c, cmd).await?;
        match cls.kind {
            Kind::Ok => {}
            Kind::Err => return Ok(None),
            _ => {
                return Ok(Some(CapaRead {
                    lines: Vec::new(),
                    caps: Capabilities::new(),
                    problems: vec![format!("CAPA answered {:?}", printable(&raw, 80))],
                }));
            }
        }
        let body = self.listing(c, "CAPA").await?;
        let mut problems = Vec::new();
        let lines: Vec<Vec<u8>> = body.content_lines().map(<[u8]>::to_vec).collect();
        if body.longest > parse::RFC_LINE_MAX {
            problems.push(format!("a capability line of {} octets", body.longest));
        }
        for l in &lines {
            if !parse::capa_line_ok(l) && l.len() + 2 <= parse::RFC_LINE_MAX {
                problems.push(format!("malformed capability line {:?}", printable(l, 80)));
            }
        }
        if body.unstuffed_dots > 0 {
            problems.push("a line starting with an unstuffed \".\"".into());
        }
        let caps = match Capabilities::parse_lines(lines.iter().map(Vec::as_slice)) {
            Ok(c) => c,
            Err(e) => {
                problems.push(e.to_string());
                Capabilities::new()
            }
        };
        Ok(Some(CapaRead {
            lines: lines.iter().map(|l| printable(l, 200)).collect(),
            caps,
            problems,
        }))
    }

    fn random_hex(&mut self, n: usize) -> String {
        self.counter += 1;
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let mut h = Sha256::new();
        h.update(nanos.to_le_bytes());
        h.update(std::process::id().to_le_bytes());
        h.update(self.counter.to_le_bytes());
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        hex[..n.min(hex.len())].to_owned()
    }

    // ---- connections -----------------------------------------------------------------

    async fn tcp(&self) -> Result<TcpStream, String> {
        let t = self.opts.timeout;
        let addr = (self.target.host.as_str(), self.target.port);
        let tcp = tokio::time::timeout(t, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("no connection within {t:?}"))?
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    async fn open(&mut self, how: How) -> Result<Opened, String> {
        let t = self.opts.timeout;
        let host = self.target.host.clone();
        let tcp = self.tcp().await?;
        match how {
            How::Plain | How::Stls(..) => {
                let mut conn: Conn = Wire::new(Box::new(tcp), t);
                let (greeting, cls) = self
                    .answer(&mut conn, "the connection (greeting)")
                    .await
                    .map_err(wire_err)?;
                let How::Stls(versions, enforce) = how else {
                    return Ok(Opened {
                        conn,
                        greeting,
                        cls,
                        handshake: None,
                        leftover: Vec::new(),
                    });
                };
                if !cls.is_ok() {
                    return Err(format!("greeting {:?}", printable(&greeting, 100)));
                }
                let (raw, stls, _) = self.ask(&mut conn, "STLS").await.map_err(wire_err)?;
                if !stls.is_ok() {
                    return Err(format!("STLS answered {:?}", printable(&raw, 100)));
                }
                let (io, leftover) = conn.into_parts();
                let (connector, seen) = self.tls.connector(versions, enforce)?;
                let (tls, hs) = super::tls::handshake(io, &connector, &seen, &host, t).await?;
                Ok(Opened {
                    conn: Wire::new(Box::new(tls), t),
                    greeting,
                    cls,
                    handshake: Some(hs),
                    leftover,
                })
            }
            How::Implicit(versions, enforce) => {
                let (connector, seen) = self.tls.connector(versions, enforce)?;
                let (tls, hs) = super::tls::handshake(tcp, &connector, &seen, &host, t).await?;
                let mut conn: Conn = Wire::new(Box::new(tls), t);
                let (greeting, cls) = self
                    .answer(&mut conn, "the connection (greeting)")
                    .await
                    .map_err(wire_err)?;
                Ok(Opened {
                    conn,
                    greeting,
                    cls,
                    handshake: Some(hs),
                    leftover: Vec::new(),
                })
            }
        }
    }

    /// Ends a session politely (errors ignored).
    async fn quit(&mut self, mut c: Conn) {
        if c.command("QUIT").await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), c.line(MAX_LINE)).await;
        }
        c.shutdown().await;
    }

    fn caps_for(&self, tls: bool) -> Option<&Capabilities> {
        if tls {
            self.caps_tls.as_ref()
        } else {
            self.caps_clear.as_ref()
        }
    }

    fn all_caps(&self) -> impl Iterator<Item = &Capabilities> {
        [&self.caps_clear, &self.caps_tls, &self.caps_txn]
            .into_iter()
            .flatten()
    }

    // ---- the run ---------------------------------------------------------------------

    pub(crate) async fn run(mut self) -> Result<Report, ProbeError> {
        let started = SystemTime::now();
        let t0 = Instant::now();
        let base = if self.target.implicit_tls {
            How::Implicit(Versions::Any, false)
        } else {
            How::Plain
        };
        let first = self
            .open(base)
            .await
            .map_err(|reason| ProbeError::Unreachable {
                target: format!("{}:{}", self.target.host, self.target.port),
                reason,
            })?;
        if self.base(first).await {
            self.tls_phase().await;
            self.errors_phase(base).await;
            self.auth_phase().await;
            if !self.target.implicit_tls {
                self.injection_phase().await;
            }
            self.account_phase().await;
            self.enumeration_phase().await;
        }
        self.finish();
        Ok(self.report(started, t0.elapsed()))
    }

    /// The first connection: greeting, CAPA, case, pipelining, bare AUTH, QUIT.
    /// False when the server refuses service (nothing more to probe).
    async fn base(&mut self, first: Opened) -> bool {
        let Opened {
            mut conn,
            greeting,
            cls,
            handshake,
            ..
        } = first;
        let tls = handshake.is_some();
        if let Some(hs) = handshake {
            self.tls_ok = true;
            self.handshakes.push((Versions::Any, Ok(hs)));
        }
        self.offer.greeting = Some(printable(&greeting, 300));
        if !cls.is_ok() {
            self.fail(
                "greeting",
                format!("greeting was {:?}", printable(&greeting, 200)),
            );
            return false;
        }
        self.pass("greeting", printable(&greeting, 200));
        if let Some(ts) = parse::apop_timestamp(&cls.text) {
            self.offer.apop_timestamp = Some(ts.to_owned());
            self.first_timestamp = Some(ts.to_owned());
        }
        let state = if tls { "under TLS" } else { "in cleartext" };
        match self.capa(&mut conn, "CAPA").await {
            Ok(Some(r)) => {
                self.capa_works = true;
                if r.problems.is_empty() {
                    self.pass("capa", format!("{} lines {state}", r.lines.len()));
                } else {
                    self.fail("capa", r.problems.join("; "));
                }
                self.take_offer(&r, tls);
                // The same command in lower case must get the same answer.
                match self.capa(&mut conn, "capa").await {
                    Ok(Some(lower)) if lower.lines == r.lines => {
                        self.pass("command-case", "\"capa\" answered like \"CAPA\"")
                    }
                    Ok(Some(_)) => self.fail(
                        "command-case",
                        "\"capa\" got a different capability list than \"CAPA\"",
                    ),
                    Ok(None) => self.fail("command-case", "\"capa\" answered -ERR, \"CAPA\" +OK"),
                    Err(e) => {
                        self.fail("command-case", format!("\"capa\": {e}"));
                        return true;
                    }
                }
                if r.caps.pipelining {
                    self.pipelining(&mut conn, &r.lines).await;
                } else {
                    self.skip("pipelining", "PIPELINING is not announced");
                }
            }
            Ok(None) => {
                self.info(
                    "capa",
                    "CAPA answered -ERR: not implemented, clients must guess the extensions",
                );
                self.skip("pipelining", "no CAPA");
            }
            Err(e) => {
                self.fail("capa", format!("CAPA: {e}"));
                return true;
            }
        }
        if self.auth_listing(&mut conn, tls).await.is_err() {
            return true;
        }
        match self.ask(&mut conn, "QUIT").await {
            Ok((_, q, _)) if q.is_ok() => {
                if conn.closes_within(Duration::from_secs(2)).await {
                    self.pass("quit-authorization", "+OK, connection closed");
                } else {
                    self.fail("quit-authorization", "+OK, but the connection stayed open");
                }
            }
            Ok((raw, _, _)) => self.fail(
                "quit-authorization",
                format!("QUIT answered {:?}", printable(&raw, 100)),
            ),
            Err(e) => self.fail("quit-authorization", format!("QUIT: {e}")),
        }
        true
    }

    /// Records a CAPA answer in the offer.
    fn take_offer(&mut self, r: &CapaRead, tls: bool) {
        let c = &r.caps;
        if tls {
            self.offer.capa.tls = Some(r.lines.clone());
            self.offer.sasl.tls = Some(c.sasl.clone());
            self.caps_tls = Some(c.clone());
        } else {
            self.offer.capa.cleartext = Some(r.lines.clone());
            self.offer.sasl.cleartext = Some(c.sasl.clone());
            self.offer.stls = c.stls;
            self.caps_clear = Some(c.clone());
        }
        self.absorb(r);
    }

    fn absorb(&mut self, r: &CapaRead) {
        let c = &r.caps;
        self.offer.user |= c.user;
        self.offer.top |= c.top;
        self.offer.uidl |= c.uidl;
        self.offer.pipelining |= c.pipelining;
        self.offer.resp_codes |= c.resp_codes;
        if c.implementation.is_some() {
            self.offer.implementation.clone_from(&c.implementation);
        }
        let arg = |tag: &str| {
            r.lines.iter().find_map(|l| {
                let (t, rest) = l.split_once(' ').unwrap_or((l, ""));
                t.eq_ignore_ascii_case(tag).then(|| rest.to_owned())
            })
        };
        if let Some(e) = arg("EXPIRE") {
            self.offer.expire = Some(e);
        }
        if let Some(d) = arg("LOGIN-DELAY") {
            self.offer.login_delay = Some(d);
        }
    }

    async fn pipelining(&mut self, c: &mut Conn, expect: &[String]) {
        if let Err(e) = c.send(b"CAPA\r\nCAPA\r\n").await {
            self.fail("pipelining", format!("sending: {e}"));
            return;
        }
        for i in 1..=2 {
            let got = async {
                let (raw, cls) = self.answer(c, "pipelined CAPA").await?;
                if !cls.is_ok() {
                    return Ok::<_, WireError>(Err(printable(&raw, 100)));
                }
                let b = self.listing(c, "CAPA").await?;
                Ok(Ok(b
                    .content_lines()
                    .map(|l| printable(l, 200))
                    .collect::<Vec<_>>()))
            }
            .await;
            match got {
                Ok(Ok(lines)) if lines == expect => {}
                Ok(Ok(_)) => {
                    self.fail(
                        "pipelining",
                        format!("pipelined CAPA #{i} got a different list"),
                    );
                    return;
                }
                Ok(Err(line)) => {
                    self.fail(
                        "pipelining",
                        format!("pipelined CAPA #{i} answered {line:?}"),
                    );
                    return;
                }
                Err(e) => {
                    self.fail("pipelining", format!("pipelined CAPA #{i}: {e}"));
                    return;
                }
            }
        }
        self.pass(
            "pipelining",
            "two CAPA sent in one packet were both answered",
        );
    }

    /// Bare `AUTH`: the mechanism list, compared with CAPA SASL.
    async fn auth_listing(&mut self, c: &mut Conn, tls: bool) -> Result<(), WireError> {
        let state = if tls { "under TLS" } else { "in cleartext" };
        let (raw, cls, _) = self.ask(c, "AUTH").await?;
        let listed: Option<Vec<String>> = match cls.kind {
            Kind::Ok => {
                let b = self.listing(c, "AUTH").await?;
                Some(
                    b.content_lines()
                        .map(|l| {
                            let l = String::from_utf8_lossy(l);
                            l.split(' ').next().unwrap_or("").to_ascii_uppercase()
                        })
                        .filter(|m| !m.is_empty())
                        .collect(),
                )
            }
            Kind::Continuation => {
                // Taken as the start of an exchange: cancel it.
                c.command("*").await?;
                let _ = self.answer(c, "AUTH cancel").await?;
                None
            }
            _ => None,
        };
        let Some(listed) = listed else {
            self.info(
                "auth-listing",
                format!(
                    "AUTH without a mechanism {state} answered {:?} (not defined by RFC 5034; CAPA SASL is what counts)",
                    printable(&raw, 100)
                ),
            );
            return Ok(());
        };
        if tls {
            self.offer.auth_listing.tls = Some(listed.clone());
        } else {
            self.offer.auth_listing.cleartext = Some(listed.clone());
        }
        let Some(caps) = self.caps_for(tls) else {
            self.info(
                "auth-listing",
                format!("AUTH {state} lists {listed:?}; no CAPA to compare"),
            );
            return Ok(());
        };
        let a: HashSet<&str> = caps.sasl.iter().map(String::as_str).collect();
        let b: HashSet<&str> = listed.iter().map(String::as_str).collect();
        if a == b {
            self.pass(
                "auth-listing",
                format!("{state}: {}", join_or_none(&listed)),
            );
        } else {
            self.fail(
                "auth-listing",
                format!(
                    "{state}: AUTH lists {} but CAPA SASL announces {}",
                    join_or_none(&listed),
                    join_or_none(&caps.sasl)
                ),
            );
        }
        Ok(())
    }

    // ---- TLS -------------------------------------------------------------------------

    async fn tls_phase(&mut self) {
        let implicit = self.target.implicit_tls;
        if !implicit && self.caps_clear.as_ref().is_some_and(|c| !c.stls) {
            self.fail(
                "tls-offered",
                "STLS is not announced on this cleartext port (is there a pop3s port?)",
            );
            for id in [
                "stls-capa",
                "stls-repeat",
                "stls-immediate",
                "tls-versions",
                "cert-trusted",
                "cert-hostname",
                "cert-expiry",
            ] {
                self.skip(id, "no TLS");
            }
            self.skip("stls-injection", "STLS is not offered");
            return;
        }
        let mut first_done = false;
        for (v, name) in [(Versions::Tls12, "TLS 1.2"), (Versions::Tls13, "TLS 1.3")] {
            let how = if implicit {
                How::Implicit(v, false)
            } else {
                How::Stls(v, false)
            };
            match self.open(how).await {
                Ok(o) => {
                    let hs = o.handshake.clone();
                    self.offer.tls.versions.push(TlsVersion {
                        version: name,
                        supported: true,
                        cipher_suite: hs.as_ref().map(|h| h.cipher_suite.clone()),
                        error: None,
                    });
                    if let Some(hs) = hs {
                        self.handshakes.push((v, Ok(hs)));
                    }
                    self.tls_ok = true;
                    if !implicit {
                        if o.leftover.is_empty() {
                            self.pass("stls-immediate", "nothing before the handshake");
                        } else {
                            self.fail(
                                "stls-immediate",
                                format!(
                                    "{} octets after +OK to STLS: {:?}",
                                    o.leftover.len(),
                                    printable(&o.leftover, 80)
                                ),
                            );
                        }
                    }
                    if first_done {
                        self.quit(o.conn).await;
                    } else {
                        first_done = true;
                        self.under_tls(o.conn).await;
                    }
                }
                Err(e) => {
                    self.offer.tls.versions.push(TlsVersion {
                        version: name,
                        supported: false,
                        cipher_suite: None,
                        error: Some(e.clone()),
                    });
                    self.handshakes.push((v, Err(e)));
                }
            }
        }
        if implicit {
            self.pass("tls-offered", "implicit TLS");
            for id in ["stls-immediate", "stls-repeat", "stls-injection"] {
                self.skip(id, "implicit TLS (no STLS)");
            }
            // The base connection was TLS: STLS must not be offered there.
            match &self.caps_tls {
                Some(c) if c.stls => {
                    self.fail("stls-capa", "STLS is offered on an implicit-TLS connection")
                }
                Some(_) => self.pass("stls-capa", "not offered under implicit TLS"),
                None => {}
            }
        } else if self.tls_ok {
            self.pass("tls-offered", "STLS");
        } else {
            let why: Vec<String> = self
                .handshakes
                .iter()
                .filter_map(|(_, r)| r.as_ref().err().cloned())
                .collect();
            self.fail(
                "tls-offered",
                format!("STLS did not work: {}", why.join("; ")),
            );
            self.skip("stls-injection", "STLS does not work");
        }
        let supported: Vec<&str> = self
            .offer
            .tls
            .versions
            .iter()
            .filter(|v| v.supported)
            .map(|v| v.version)
            .collect();
        if !supported.is_empty() {
            self.pass("tls-versions", supported.join(", "));
        } else if self.tls_ok {
            self.fail(
                "tls-versions",
                "neither TLS 1.2 nor TLS 1.3 (only older versions?)",
            );
        } else {
            self.fail("tls-versions", "no TLS handshake succeeded");
        }
        self.certificate();
    }

    /// The first TLS connection: CAPA, STLS again, bare AUTH.
    async fn under_tls(&mut self, mut c: Conn) {
        match self.capa(&mut c, "CAPA").await {
            // Implicit TLS: the first connection already read this list.
            Ok(Some(_)) if self.target.implicit_tls => {}
            Ok(Some(r)) => {
                if !r.problems.is_empty() {
                    self.fail("capa", format!("under TLS: {}", r.problems.join("; ")));
                }
                if r.caps.stls {
                    self.fail("stls-capa", "CAPA under TLS still offers STLS");
                } else {
                    let before = self.offer.capa.cleartext.clone().unwrap_or_default();
                    let added: Vec<&String> =
                        r.lines.iter().filter(|l| !before.contains(l)).collect();
                    let gone: Vec<&String> =
                        before.iter().filter(|l| !r.lines.contains(l)).collect();
                    let show =
                        |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
                    let mut d = "not offered under TLS".to_owned();
                    if !added.is_empty() {
                        d.push_str(&format!("; added under TLS: {}", show(&added)));
                    }
                    if !gone.is_empty() {
                        d.push_str(&format!("; gone under TLS: {}", show(&gone)));
                    }
                    self.pass("stls-capa", d);
                }
                self.capa_works = true;
                self.take_offer(&r, true);
            }
            Ok(None) => self.skip("stls-capa", "CAPA answered -ERR under TLS"),
            Err(e) => {
                self.fail("stls-capa", format!("CAPA under TLS: {e}"));
                return;
            }
        }
        if !self.target.implicit_tls {
            match self.ask(&mut c, "STLS").await {
                Ok((_, cls, _)) if cls.is_err() => self.pass("stls-repeat", "-ERR"),
                Ok((raw, _, _)) => {
                    self.fail(
                        "stls-repeat",
                        format!("STLS under TLS answered {:?}", printable(&raw, 100)),
                    );
                    return; // the session state is unknown now
                }
                Err(e) => {
                    self.fail("stls-repeat", format!("STLS under TLS: {e}"));
                    return;
                }
            }
        }
        if self.auth_listing(&mut c, true).await.is_err() {
            return;
        }
        self.quit(c).await;
    }

    fn certificate(&mut self) {
        let Some(hs) = self
            .handshakes
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .find(|h| !h.seen.chain.is_empty())
            .cloned()
        else {
            for id in ["cert-trusted", "cert-hostname", "cert-expiry"] {
                self.skip(id, "no certificate seen");
            }
            return;
        };
        let der = &hs.seen.chain[0];
        let info = x509::parse(der);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let trust_error = match &hs.seen.chain_ok {
            Some(Ok(())) => None,
            Some(Err(e)) => Some(e.clone()),
            None => Some("not checked".into()),
        };
        let hostname_error = match &hs.seen.name_ok {
            Some(Ok(())) => None,
            Some(Err(e)) => Some(e.clone()),
            None => Some("not checked".into()),
        };
        match &trust_error {
            None => self.pass("cert-trusted", format!("trusted by {}", self.tls.trust)),
            Some(e) => self.fail(
                "cert-trusted",
                format!("{e} (checked against {})", self.tls.trust),
            ),
        }
        match &hostname_error {
            None => self.pass("cert-hostname", format!("valid for {}", self.target.host)),
            Some(e) => self.fail(
                "cert-hostname",
                format!("not valid for {}: {e}", self.target.host),
            ),
        }
        let Some(info) = info else {
            self.skip("cert-expiry", "the certificate could not be read");
            self.note("the server certificate could not be parsed for display");
            return;
        };
        let days_left = (info.not_after - now).div_euclid(86_400);
        if info.not_after < now {
            self.fail_with(
                "cert-expiry",
                Severity::High,
                format!("expired on {}", x509::format_time(info.not_after)),
            );
        } else if days_left < 14 {
            self.fail("cert-expiry", format!("expires in {days_left} days"));
        } else {
            self.pass("cert-expiry", format!("expires in {days_left} days"));
        }
        self.offer.tls.certificate = Some(Certificate {
            subject: info.subject,
            issuer: info.issuer,
            self_issued: info.self_issued,
            san: info.san,
            not_before: x509::format_time(info.not_before),
            not_after: x509::format_time(info.not_after),
            days_left,
            serial: info.serial,
            sha256: crate::tls::fingerprint_hex(der),
            chain_length: hs.seen.chain.len(),
            trusted: trust_error.is_none(),
            trust_error,
            hostname: self.target.host.clone(),
            hostname_matches: hostname_error.is_none(),
            hostname_error,
        });
    }

    // ---- errors, APOP, cleartext USER ------------------------------------------------

    async fn errors_phase(&mut self, base: How) {
        let mut o = match self.open(base).await {
            Ok(o) => o,
            Err(e) => {
                self.note(format!("second connection failed: {e}"));
                return;
            }
        };
        match (&self.first_timestamp, parse::apop_timestamp(&o.cls.text)) {
            (Some(a), Some(b)) => {
                if !parse::apop_timestamp_well_formed(a) {
                    self.fail("apop-timestamp", format!("{a} is not <local@domain>"));
                } else if a == b {
                    self.fail(
                        "apop-timestamp",
                        format!("two greetings carried the same timestamp {a}"),
                    );
                } else {
                    self.pass("apop-timestamp", format!("{a} then {b}"));
                }
            }
            (Some(_), None) => self.fail("apop-timestamp", "the second greeting had no timestamp"),
            (None, _) => self.skip("apop-timestamp", "no APOP timestamp in the greeting"),
        }
        let c = &mut o.conn;
        if !self
            .expect_err(c, "XPROBE", "unknown-command", "before login")
            .await
        {
            return;
        }
        if !self
            .expect_err(c, "STAT", "wrong-state", "STAT before login")
            .await
        {
            return;
        }
        if !self.target.implicit_tls {
            let name = format!("probe-{}", self.random_hex(10));
            match self.ask(c, &format!("USER {name}")).await {
                Ok((raw, cls, _)) => {
                    let announced = self
                        .caps_clear
                        .as_ref()
                        .map(|c| {
                            let mut v = Vec::new();
                            if c.user {
                                v.push("USER".to_owned());
                            }
                            v.extend(
                                c.sasl
                                    .iter()
                                    .filter(|m| matches!(m.as_str(), "PLAIN" | "LOGIN"))
                                    .cloned(),
                            );
                            v
                        })
                        .unwrap_or_default();
                    let accepted = cls.is_ok();
                    let sev = if self.tls_ok {
                        Severity::Medium
                    } else {
                        Severity::High
                    };
                    let answer = printable(&raw, 100).replace(&name, "<user>");
                    if announced.is_empty() && !accepted {
                        self.pass(
                            "cleartext-login",
                            format!("no password mechanism announced without TLS; USER answered {answer:?}"),
                        );
                    } else {
                        let mut why = Vec::new();
                        if !announced.is_empty() {
                            why.push(format!(
                                "CAPA without TLS announces {}",
                                announced.join(", ")
                            ));
                        }
                        if accepted {
                            why.push(format!("USER without TLS answered {answer:?}"));
                        }
                        if !self.tls_ok {
                            why.push("and there is no TLS at all".into());
                        }
                        self.fail_with("cleartext-login", sev, why.join("; "));
                    }
                }
                Err(e) => {
                    self.note(format!("USER without TLS: {e}"));
                    return;
                }
            }
        } else {
            self.pass("cleartext-login", "TLS from the first byte");
        }
        if !self.capa_works {
            // No CAPA to try the case rule on: use QUIT.
            match self.ask(c, "quit").await {
                Ok((_, q, _)) if q.is_ok() => self.pass("command-case", "\"quit\" answered +OK"),
                Ok((raw, _, _)) => self.fail(
                    "command-case",
                    format!("\"quit\" answered {:?}", printable(&raw, 100)),
                ),
                Err(e) => self.fail("command-case", format!("\"quit\": {e}")),
            }
            o.conn.shutdown().await;
        } else {
            self.quit(o.conn).await;
        }
    }

    /// Sends `cmd`, which must be answered -ERR; false when the connection is gone.
    async fn expect_err(&mut self, c: &mut Conn, cmd: &str, id: &'static str, ctx: &str) -> bool {
        match self.ask(c, cmd).await {
            Ok((raw, cls, _)) => {
                let line = printable(&raw, 100);
                if cls.is_err() {
                    self.pass(id, format!("{ctx}: {line:?}"));
                } else {
                    self.fail(id, format!("{ctx}: {cmd} answered {line:?}"));
                }
                true
            }
            Err(e) => {
                self.fail(id, format!("{ctx}: {cmd}: {e} (instead of -ERR)"));
                false
            }
        }
    }

    // ---- SASL ------------------------------------------------------------------------

    async fn auth_phase(&mut self) {
        let how = if self.target.implicit_tls {
            How::Implicit(Versions::Any, false)
        } else if self.tls_ok {
            How::Stls(Versions::Any, false)
        } else {
            How::Plain
        };
        let mut o = match self.open(how).await {
            Ok(o) => o,
            Err(e) => {
                self.note(format!("connection for the AUTH checks failed: {e}"));
                return;
            }
        };
        let state = if how.is_tls() {
            "under TLS"
        } else {
            "in cleartext"
        };
        let c = &mut o.conn;
        match self.ask(c, "AUTH XPROBE-UNKNOWN").await {
            Ok((_, cls, _)) if cls.is_err() => {
                self.pass("auth-unknown-mechanism", format!("-ERR {state}"))
            }
            Ok((raw, cls, _)) => {
                self.fail(
                    "auth-unknown-mechanism",
                    format!("answered {:?}", printable(&raw, 100)),
                );
                if cls.kind == Kind::Continuation {
                    let _ = c.command("*").await;
                }
                self.quit(o.conn).await;
                return;
            }
            Err(e) => {
                self.fail("auth-unknown-mechanism", format!("{e} (instead of -ERR)"));
                return;
            }
        }
        let mech = self.caps_for(how.is_tls()).and_then(|c| {
            c.sasl
                .iter()
                .find(|m| m.as_str() == "PLAIN")
                .or_else(|| c.sasl.first())
                .cloned()
        });
        let Some(mech) = mech else {
            self.skip(
                "auth-cancel",
                format!("no SASL mechanism announced {state}"),
            );
            self.quit(o.conn).await;
            return;
        };
        match self.ask(c, &format!("AUTH {mech}")).await {
            Ok((_, cls, _)) if cls.kind == Kind::Continuation => {
                let r = async {
                    c.command("*").await?;
                    self.answer(c, "AUTH cancel (*)").await
                }
                .await;
                match r {
                    Ok((_, a)) if a.is_err() => self.pass("auth-cancel", format!("AUTH {mech} then \"*\": -ERR")),
                    Ok((raw, a)) => {
                        let sev = if a.is_ok() { Severity::High } else { Severity::Medium };
                        self.fail_with(
                            "auth-cancel",
                            sev,
                            format!("AUTH {mech} then \"*\" answered {:?}", printable(&raw, 100)),
                        );
                    }
                    Err(e @ WireError::Timeout(_)) => self.skip(
                        "auth-cancel",
                        format!(
                            "AUTH {mech} then \"*\": {e} (a failed-login penalty from earlier attempts may be holding AUTH answers back)"
                        ),
                    ),
                    Err(e) => self.fail("auth-cancel", format!("AUTH {mech} then \"*\": {e}")),
                }
            }
            Ok((raw, _, _)) => self.skip(
                "auth-cancel",
                format!(
                    "AUTH {mech} without initial response answered {:?}",
                    printable(&raw, 100)
                ),
            ),
            Err(e) => self.fail("auth-cancel", format!("AUTH {mech}: {e}")),
        }
        self.quit(o.conn).await;
    }

    // ---- STLS injection --------------------------------------------------------------

    async fn injection_phase(&mut self) {
        if !self.tls_ok {
            return;
        }
        let t = self.opts.timeout;
        let host = self.target.host.clone();
        let tcp = match self.tcp().await {
            Ok(t) => t,
            Err(e) => {
                self.note(format!(
                    "connection for the STLS injection check failed: {e}"
                ));
                return;
            }
        };
        let mut conn: Conn = Wire::new(Box::new(tcp), t);
        let r = async {
            let (_, g) = self.answer(&mut conn, "the connection (greeting)").await?;
            if !g.is_ok() {
                return Ok(None);
            }
            // Both commands in one packet: a server that keeps the cleartext buffer
            // across the handshake runs CAPA as if it came inside TLS.
            conn.send(b"STLS\r\nCAPA\r\n").await?;
            Ok::<_, WireError>(Some(self.answer(&mut conn, "STLS").await?))
        }
        .await;
        let (raw, cls) = match r {
            Ok(Some(x)) => x,
            Ok(None) => {
                self.skip("stls-injection", "greeting was not +OK");
                return;
            }
            Err(e) => {
                self.skip("stls-injection", format!("STLS: {e}"));
                return;
            }
        };
        if !cls.is_ok() {
            self.skip(
                "stls-injection",
                format!("STLS answered {:?}", printable(&raw, 100)),
            );
            return;
        }
        let (io, leftover) = conn.into_parts();
        if !leftover.is_empty() {
            self.fail(
                "stls-immediate",
                format!(
                    "with CAPA pipelined after STLS, {} cleartext octets came after +OK: {:?}",
                    leftover.len(),
                    printable(&leftover, 80)
                ),
            );
        }
        let hs = match self.tls.connector(Versions::Any, false) {
            Ok((connector, seen)) => super::tls::handshake(io, &connector, &seen, &host, t).await,
            Err(e) => Err(e),
        };
        let mut tls: Conn = match hs {
            Ok((tls, _)) => Wire::new(Box::new(tls), t),
            Err(e) => {
                self.pass(
                    "stls-injection",
                    format!("the server did not complete TLS after pipelined data ({e})"),
                );
                return;
            }
        };
        let unasked = match tls.unsolicited(QUIET_WAIT.min(t)).await {
            Ok(n) => n,
            Err(e) => {
                self.pass(
                    "stls-injection",
                    format!("the server closed the session after pipelined data ({e})"),
                );
                return;
            }
        };
        if unasked > 0 {
            let line = self
                .answer(&mut tls, "CAPA sent before TLS")
                .await
                .map(|(raw, _)| printable(&raw, 100))
                .unwrap_or_else(|e| e.to_string());
            self.fail(
                "stls-injection",
                format!("the CAPA sent in cleartext with STLS was answered inside TLS: {line:?}"),
            );
            tls.shutdown().await;
            return;
        }
        // Nothing unasked; now ask once and make sure exactly one answer comes.
        let ours = async {
            let (_, cls, _) = self.ask(&mut tls, "CAPA").await?;
            if cls.is_ok() {
                self.listing(&mut tls, "CAPA").await?;
            }
            tls.unsolicited(Duration::from_millis(500)).await
        }
        .await;
        match ours {
            Ok(0) => self.pass(
                "stls-injection",
                "a CAPA pipelined with STLS was discarded; only the CAPA sent under TLS was answered",
            ),
            Ok(n) => self.fail(
                "stls-injection",
                format!("{n} extra octets after the one CAPA sent under TLS: the pipelined command ran inside TLS"),
            ),
            Err(e) => self.pass("stls-injection", format!("no injected answer ({e})")),
        }
        self.quit(tls).await;
    }

    // ---- the test account ------------------------------------------------------------

    const ACCOUNT_CHECKS: [&'static str; 15] = [
        "capa-transaction",
        "stat",
        "list",
        "uidl-format",
        "uidl-unique",
        "uidl-list",
        "uidl-persistent",
        "retr-size",
        "retr-format",
        "no-such-message",
        "top",
        "noop",
        "quit-keeps",
        "dele",
        "rset",
    ];

    fn skip_account(&mut self, why: &str) {
        for id in Self::ACCOUNT_CHECKS {
            self.skip(id, why.to_owned());
        }
        self.skip("quit-deletes", why.to_owned());
    }

    /// The channel for passwords: TLS when there is any, cleartext only when allowed.
    fn login_channel(&self, enforce: bool) -> Result<How, String> {
        if self.target.implicit_tls {
            Ok(How::Implicit(Versions::Any, enforce))
        } else if self.tls_ok {
            Ok(How::Stls(Versions::Any, enforce))
        } else if is_loopback(&self.target.host) || self.opts.allow_cleartext {
            Ok(How::Plain)
        } else {
            Err("no TLS, and the password would cross the network in cleartext (--allow-cleartext to send it anyway)".into())
        }
    }

    fn login_method(&self, how: How) -> Result<Method, String> {
        match self.caps_for(how.is_tls()) {
            None => Ok(Method::UserPass),
            Some(c) if c.user => Ok(Method::UserPass),
            Some(c) if c.has_sasl("PLAIN") => Ok(Method::SaslPlain),
            Some(_) => Err("neither USER nor SASL PLAIN is announced".into()),
        }
    }

    async fn login(
        &mut self,
        how: How,
        method: Method,
        user: &str,
        pass: &[u8],
    ) -> Result<Conn, LoginFail> {
        let mut last = String::new();
        for _ in 0..8 {
            let mut o = self.open(how).await.map_err(LoginFail::Connect)?;
            if !o.cls.is_ok() {
                return Err(LoginFail::Refused(format!(
                    "greeting {:?}",
                    printable(&o.greeting, 100)
                )));
            }
            let c = &mut o.conn;
            let r = async {
                match method {
                    Method::UserPass => {
                        let (raw, cls, _) = self.ask(c, &format!("USER {user}")).await?;
                        if !cls.is_ok() {
                            return Ok((raw, cls));
                        }
                        let mut line = b"PASS ".to_vec();
                        line.extend_from_slice(pass);
                        line.extend_from_slice(b"\r\n");
                        c.send(&line).await?;
                        self.answer(c, "PASS").await
                    }
                    Method::SaslPlain => {
                        let mut ir = vec![0u8];
                        ir.extend_from_slice(user.as_bytes());
                        ir.push(0);
                        ir.extend_from_slice(pass);
                        c.command(&format!("AUTH PLAIN {}", B64.encode(ir))).await?;
                        self.answer(c, "AUTH PLAIN").await
                    }
                }
            }
            .await;
            let (raw, cls) = r.map_err(|e| LoginFail::Refused(e.to_string()))?;
            if cls.is_ok() {
                return Ok(o.conn);
            }
            let line = printable(&raw, 150);
            match cls.code.as_deref().map(str::to_ascii_uppercase).as_deref() {
                Some("IN-USE") => {
                    // The previous session (ended without QUIT) may still hold the
                    // maildrop lock for a moment.
                    last = line;
                    o.conn.shutdown().await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Some("LOGIN-DELAY") => return Err(LoginFail::LoginDelay(line)),
                _ => return Err(LoginFail::Refused(line)),
            }
        }
        Err(LoginFail::Refused(last))
    }

    async fn account_phase(&mut self) {
        let (Some(user), Some(pass)) = (self.opts.user.clone(), self.opts.password.clone()) else {
            self.skip_account("needs a test account (--user)");
            return;
        };
        let how = match self.login_channel(!self.opts.insecure_skip_verify) {
            Ok(h) => h,
            Err(e) => {
                self.account_error = Some(e.clone());
                self.skip_account(&e);
                return;
            }
        };
        let method = match self.login_method(how) {
            Ok(m) => m,
            Err(e) => {
                self.account_error = Some(e.clone());
                self.skip_account(&e);
                return;
            }
        };
        let c = match self.login(how, method, &user, &pass).await {
            Ok(c) => c,
            Err(e) => {
                let mut text = e.text();
                if text.contains("certificate not accepted") {
                    text.push_str(" (trust it with --ca FILE, or --insecure-skip-verify)");
                }
                self.account_error = Some(text.clone());
                self.skip_account(&format!("no login: {text}"));
                return;
            }
        };
        let Some(first) = self.read_session(c, &user).await else {
            return;
        };
        self.keeps_session(how, method, &user, &pass, &first).await;
        if self.opts.allow_delete {
            self.delete_sessions(how, method, &user, &pass).await;
        } else {
            for id in ["dele", "rset", "quit-deletes"] {
                self.skip(id, "read-only (--allow-delete to run it)");
            }
        }
    }

    /// What session A saw, for the later sessions to compare.
    async fn read_session(&mut self, mut c: Conn, user: &str) -> Option<Snapshot> {
        let r = self.read_checks(&mut c, user).await;
        // No QUIT: nothing this session did may reach the UPDATE state.
        c.shutdown().await;
        drop(c);
        match r {
            Ok(s) => Some(s),
            Err(e) => {
                self.note(format!("first account session: {e}"));
                self.account_error = Some(format!("the first account session broke off: {e}"));
                None
            }
        }
    }

    async fn read_checks(&mut self, c: &mut Conn, user: &str) -> Result<Snapshot, WireError> {
        match self.capa(c, "CAPA").await? {
            Some(r) => {
                if !r.problems.is_empty() {
                    self.fail("capa", format!("after login: {}", r.problems.join("; ")));
                }
                self.pass("capa-transaction", format!("{} lines", r.lines.len()));
                self.offer.capa.transaction = Some(r.lines.clone());
                self.absorb(&r);
                self.caps_txn = Some(r.caps);
            }
            None if self.capa_works => {
                self.fail("capa-transaction", "CAPA answered -ERR after login")
            }
            None => self.skip("capa-transaction", "no CAPA at all"),
        }
        // STAT, and "stat" in lower case.
        let (raw, cls, _) = self.ask(c, "STAT").await?;
        let stat = if cls.is_ok() {
            parse::parse_stat(&cls.text)
        } else {
            None
        };
        match stat {
            Some((n, o)) => self.pass("stat", format!("{n} messages, {o} octets")),
            None => self.fail("stat", format!("STAT answered {:?}", printable(&raw, 100))),
        }
        let (raw_l, cls_l, _) = self.ask(c, "stat").await?;
        if cls_l.is_ok() && parse::parse_stat(&cls_l.text) == stat {
            self.pass("command-case", "\"stat\" answered like \"STAT\"");
        } else {
            self.fail(
                "command-case",
                format!("\"stat\" answered {:?}", printable(&raw_l, 100)),
            );
        }
        // LIST
        let (raw, cls, _) = self.ask(c, "LIST").await?;
        let mut entries: Vec<(u64, u64)> = Vec::new();
        let mut problems = Vec::new();
        if cls.is_ok() {
            let body = self.listing(c, "LIST").await?;
            for l in body.content_lines() {
                match parse::parse_scan(l) {
                    Some(e) => entries.push(e),
                    None => problems.push(format!("bad scan listing {:?}", printable(l, 60))),
                }
            }
        } else {
            problems.push(format!("LIST answered {:?}", printable(&raw, 100)));
        }
        let numbered = entries
            .iter()
            .enumerate()
            .all(|(i, (n, _))| *n == i as u64 + 1);
        if !numbered {
            problems.push("messages are not numbered 1..n in order".into());
        }
        let total: u64 = entries.iter().map(|e| e.1).sum();
        if let Some((n, o)) = stat {
            if n != entries.len() as u64 {
                problems.push(format!(
                    "STAT says {n} messages, LIST lists {}",
                    entries.len()
                ));
            }
            if o != total {
                problems.push(format!(
                    "STAT says {o} octets, LIST sizes add up to {total}"
                ));
            }
        }
        let count = stat.map(|s| s.0).unwrap_or(entries.len() as u64);
        let octets = stat.map(|s| s.1).unwrap_or(total);
        self.mailbox = Some(Mailbox {
            user: user.to_owned(),
            messages: count,
            octets,
            retrieved: 0,
            deleted: 0,
        });
        for (n, size) in [entries.first(), entries.last()]
            .into_iter()
            .flatten()
            .copied()
        {
            let (raw, cls, _) = self.ask(c, &format!("LIST {n}")).await?;
            let got = if cls.is_ok() {
                parse::parse_scan(cls.text.as_bytes())
            } else {
                None
            };
            if got != Some((n, size)) {
                problems.push(format!(
                    "LIST {n} answered {:?}, the listing said {n} {size}",
                    printable(&raw, 100)
                ));
            }
        }
        if problems.is_empty() {
            self.pass("list", format!("{} entries agree with STAT", entries.len()));
        } else {
            self.fail("list", problems.join("; "));
        }
        // Messages that do not exist.
        let beyond = entries.len() as u64 + 1;
        let mut nsm = Vec::new();
        for cmd in [
            format!("LIST {beyond}"),
            format!("RETR {beyond}"),
            "RETR 0".to_owned(),
        ] {
            let (raw, cls, _) = self.ask(c, &cmd).await?;
            if cls.is_ok() {
                nsm.push(format!("{cmd} answered {:?}", printable(&raw, 100)));
                // A +OK to RETR opens a body: read it away.
                if cmd.starts_with("RETR") {
                    c.body(MAX_LISTING).await?;
                }
            }
        }
        if nsm.is_empty() {
            self.pass(
                "no-such-message",
                format!("LIST {beyond}, RETR {beyond} and RETR 0: -ERR"),
            );
        } else {
            self.fail("no-such-message", nsm.join("; "));
        }
        // UIDL
        let uids = self.uidl_checks(c, &entries).await?;
        // NOOP, unknown command.
        let (raw, cls, _) = self.ask(c, "NOOP").await?;
        if cls.is_ok() {
            self.pass("noop", "+OK");
        } else {
            self.fail("noop", format!("NOOP answered {:?}", printable(&raw, 100)));
        }
        let (raw, cls, _) = self.ask(c, "XPROBE").await?;
        if cls.is_err() {
            self.pass(
                "unknown-command",
                format!("after login: {:?}", printable(&raw, 100)),
            );
        } else {
            self.fail(
                "unknown-command",
                format!("after login: XPROBE answered {:?}", printable(&raw, 100)),
            );
        }
        // RETR and TOP.
        let expire0 = self
            .all_caps()
            .any(|c| c.expire.is_some_and(|e| e.policy == ExpirePolicy::Days(0)));
        if expire0 && !self.opts.allow_delete {
            let why = "EXPIRE 0: the server may delete what is retrieved (--allow-delete to retrieve anyway)";
            for id in ["retr-size", "retr-format", "top"] {
                self.skip(id, why);
            }
        } else if entries.is_empty() {
            for id in ["retr-size", "retr-format", "top"] {
                self.skip(
                    id,
                    "the maildrop is empty (put a few messages in the test account)",
                );
            }
        } else {
            self.retr_checks(c, &entries).await?;
        }
        Ok(Snapshot {
            stat: stat.unwrap_or((count, octets)),
            uids,
        })
    }

    async fn uidl_checks(
        &mut self,
        c: &mut Conn,
        entries: &[(u64, u64)],
    ) -> Result<Option<Vec<(u64, String)>>, WireError> {
        let (raw, cls, _) = self.ask(c, "UIDL").await?;
        if !cls.is_ok() {
            let announced = self.all_caps().any(|c| c.uidl);
            let line = printable(&raw, 100);
            if announced {
                self.fail(
                    "uidl-list",
                    format!("UIDL is announced but answered {line:?}"),
                );
            } else {
                self.skip(
                    "uidl-list",
                    format!("UIDL answered {line:?} (optional, not announced)"),
                );
            }
            for id in ["uidl-format", "uidl-unique", "uidl-persistent"] {
                self.skip(id, "no UIDL");
            }
            return Ok(None);
        }
        let body = self.listing(c, "UIDL").await?;
        let mut uids = Vec::new();
        let mut bad_lines = Vec::new();
        for l in body.content_lines() {
            match parse::parse_uidl(l) {
                Some(u) => uids.push(u),
                None => bad_lines.push(format!("bad unique-id listing {:?}", printable(l, 80))),
            }
        }
        let bad: Vec<&(u64, String)> = uids.iter().filter(|(_, u)| !parse::uid_valid(u)).collect();
        if bad.is_empty() && bad_lines.is_empty() {
            self.pass("uidl-format", format!("{} ids", uids.len()));
        } else {
            let mut d = bad_lines;
            d.extend(bad.iter().take(5).map(|(n, u)| {
                format!(
                    "message {n}: {:?} ({} octets)",
                    printable(u.as_bytes(), 80),
                    u.len()
                )
            }));
            self.fail("uidl-format", d.join("; "));
        }
        let mut seen = HashSet::new();
        let dupes: Vec<&String> = uids
            .iter()
            .map(|(_, u)| u)
            .filter(|u| !seen.insert(*u))
            .collect();
        if dupes.is_empty() {
            self.pass("uidl-unique", format!("{} distinct ids", uids.len()));
        } else {
            self.fail(
                "uidl-unique",
                format!(
                    "repeated: {}",
                    dupes
                        .iter()
                        .take(5)
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        let mut problems = Vec::new();
        let nums: Vec<u64> = uids.iter().map(|u| u.0).collect();
        let list_nums: Vec<u64> = entries.iter().map(|e| e.0).collect();
        if nums != list_nums {
            problems.push(format!(
                "UIDL lists {} messages, LIST {}",
                nums.len(),
                list_nums.len()
            ));
        }
        if let Some((n, uid)) = uids.first().cloned() {
            let (raw, cls, _) = self.ask(c, &format!("UIDL {n}")).await?;
            let got = if cls.is_ok() {
                parse::parse_uidl(cls.text.as_bytes())
            } else {
                None
            };
            if got.as_ref() != Some(&(n, uid.clone())) {
                problems.push(format!(
                    "UIDL {n} answered {:?}, the listing said {n} {uid}",
                    printable(&raw, 100)
                ));
            }
        }
        if problems.is_empty() {
            self.pass("uidl-list", "UIDL agrees with LIST and UIDL n");
        } else {
            self.fail("uidl-list", problems.join("; "));
        }
        Ok(Some(uids))
    }

    async fn retr_checks(&mut self, c: &mut Conn, entries: &[(u64, u64)]) -> Result<(), WireError> {
        let mut size_bad = Vec::new();
        let mut format_bad = Vec::new();
        let mut kept: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut retrieved = 0u64;
        let mut too_big = 0;
        for &(n, size) in entries.iter().take(self.opts.max_messages) {
            if size > self.opts.max_message_size {
                too_big += 1;
                continue;
            }
            let (raw, cls, _) = self.ask(c, &format!("RETR {n}")).await?;
            if !cls.is_ok() {
                format_bad.push(format!("RETR {n} answered {:?}", printable(&raw, 100)));
                continue;
            }
            // Room for stuffing and bare-LF surprises, bounded.
            let bound = usize::try_from(size.saturating_mul(2))
                .unwrap_or(usize::MAX)
                .saturating_add(64 << 10)
                .min(2 * self.opts.max_message_size as usize + (1 << 20));
            let wire = c.body(bound).await?;
            let body = parse::split_body(&wire);
            retrieved += 1;
            let exact = body.exact_size();
            if exact != size {
                let why = if body.size_lf() == size {
                    " (the server counts each line end as one octet)"
                } else if body.size_with_stuffing() == size {
                    " (the server counts the stuffing dots)"
                } else {
                    ""
                };
                size_bad.push(format!(
                    "message {n}: LIST says {size}, RETR sent {exact}{why}"
                ));
            }
            if body.bare_lf > 0 {
                format_bad.push(format!(
                    "message {n}: {} lines ended with a bare LF",
                    body.bare_lf
                ));
            }
            if body.unstuffed_dots > 0 {
                format_bad.push(format!(
                    "message {n}: {} lines start with an unstuffed \".\"",
                    body.unstuffed_dots
                ));
            }
            if kept.len() < TOP_MESSAGES && body.content.len() <= TOP_KEEP {
                kept.push((n, body.content));
            }
        }
        if let Some(m) = self.mailbox.as_mut() {
            m.retrieved = retrieved;
        }
        if too_big > 0 {
            self.note(format!(
                "{too_big} messages over --max-message-size were not retrieved"
            ));
        }
        let checked = format!("{retrieved} of {} messages retrieved", entries.len());
        if size_bad.is_empty() {
            self.pass("retr-size", format!("{checked}, every size exact"));
        } else {
            let more = size_bad.len().saturating_sub(5);
            size_bad.truncate(5);
            if more > 0 {
                size_bad.push(format!("{more} more"));
            }
            self.fail("retr-size", size_bad.join("; "));
        }
        if format_bad.is_empty() {
            self.pass("retr-format", checked);
        } else {
            format_bad.truncate(6);
            self.fail("retr-format", format_bad.join("; "));
        }
        self.top_checks(c, &kept).await
    }

    async fn top_checks(&mut self, c: &mut Conn, kept: &[(u64, Vec<u8>)]) -> Result<(), WireError> {
        let announced = self.all_caps().any(|c| c.top);
        let mut bad = Vec::new();
        let mut ran = 0;
        for (n, content) in kept {
            for lines in [0u64, 2] {
                let (raw, cls, _) = self.ask(c, &format!("TOP {n} {lines}")).await?;
                if !cls.is_ok() {
                    let line = printable(&raw, 100);
                    if announced {
                        self.fail(
                            "top",
                            format!("TOP is announced but TOP {n} {lines} answered {line:?}"),
                        );
                    } else {
                        self.skip(
                            "top",
                            format!("TOP answered {line:?} (optional, not announced)"),
                        );
                    }
                    return Ok(());
                }
                let wire = c.body(content.len() * 2 + (64 << 10)).await?;
                let got = parse::split_body(&wire);
                let want = parse::top_prefix(content, lines);
                ran += 1;
                if got.content != want {
                    bad.push(format!(
                        "TOP {n} {lines}: {} octets in {} lines, expected {} octets in {} lines",
                        got.content.len(),
                        got.lines,
                        want.len(),
                        want.iter().filter(|&&b| b == b'\n').count()
                    ));
                }
            }
        }
        if !bad.is_empty() {
            self.fail("top", bad.join("; "));
        } else if ran > 0 {
            self.pass(
                "top",
                format!("{ran} TOP answers match the header and body lines of RETR"),
            );
        }
        Ok(())
    }

    /// Sessions B and C: QUIT without DELE keeps everything; ids persist.
    async fn keeps_session(
        &mut self,
        how: How,
        method: Method,
        user: &str,
        pass: &[u8],
        first: &Snapshot,
    ) {
        let r = async {
            let mut c = self
                .login(how, method, user, pass)
                .await
                .map_err(|e| e.text())?;
            let (_, _, _) = self.ask(&mut c, "STAT").await.map_err(wire_err)?;
            let (raw, q, _) = self.ask(&mut c, "QUIT").await.map_err(wire_err)?;
            c.shutdown().await;
            if !q.is_ok() {
                return Err(format!("QUIT answered {:?}", printable(&raw, 100)));
            }
            let mut c = self
                .login(how, method, user, pass)
                .await
                .map_err(|e| e.text())?;
            let (raw, cls, _) = self.ask(&mut c, "STAT").await.map_err(wire_err)?;
            let stat = if cls.is_ok() {
                parse::parse_stat(&cls.text)
            } else {
                None
            };
            let stat = stat.ok_or_else(|| format!("STAT answered {:?}", printable(&raw, 100)))?;
            let uids = if first.uids.is_some() {
                let (_, cls, _) = self.ask(&mut c, "UIDL").await.map_err(wire_err)?;
                if cls.is_ok() {
                    let b = self.listing(&mut c, "UIDL").await.map_err(wire_err)?;
                    Some(
                        b.content_lines()
                            .filter_map(parse::parse_uidl)
                            .collect::<Vec<_>>(),
                    )
                } else {
                    None
                }
            } else {
                None
            };
            self.quit(c).await;
            Ok((stat, uids))
        }
        .await;
        match r {
            Ok((stat, uids)) => {
                if stat == first.stat {
                    self.pass(
                        "quit-keeps",
                        format!("after QUIT: still {} messages, {} octets", stat.0, stat.1),
                    );
                } else {
                    self.fail(
                        "quit-keeps",
                        format!(
                            "STAT was {} {}, after a QUIT without DELE {} {}",
                            first.stat.0, first.stat.1, stat.0, stat.1
                        ),
                    );
                }
                if let Some(before) = &first.uids {
                    match uids {
                        Some(after) if &after == before => {
                            self.pass("uidl-persistent", "the same ids in a later session")
                        }
                        Some(after) => {
                            let a: HashSet<&String> = before.iter().map(|u| &u.1).collect();
                            let changed = after.iter().filter(|u| !a.contains(&u.1)).count();
                            self.fail(
                                "uidl-persistent",
                                format!(
                                    "{changed} of {} ids differ in a later session",
                                    after.len()
                                ),
                            );
                        }
                        None => self.fail("uidl-persistent", "UIDL failed in a later session"),
                    }
                }
            }
            Err(e) => {
                self.fail("quit-keeps", format!("could not check: {e}"));
                if first.uids.is_some() {
                    self.skip("uidl-persistent", format!("could not check: {e}"));
                }
            }
        }
    }

    /// Sessions D and E (only with allow_delete).
    async fn delete_sessions(&mut self, how: How, method: Method, user: &str, pass: &[u8]) {
        let r = self.delete_checks(how, method, user, pass).await;
        if let Err(e) = r {
            self.note(format!("DELE checks: {e}"));
            for id in ["dele", "rset", "quit-deletes"] {
                self.skip(id, format!("broke off: {e}"));
            }
        }
    }

    async fn delete_checks(
        &mut self,
        how: How,
        method: Method,
        user: &str,
        pass: &[u8],
    ) -> Result<(), String> {
        let mut c = self
            .login(how, method, user, pass)
            .await
            .map_err(|e| e.text())?;
        let (n, o) = self.stat_of(&mut c).await?;
        if n == 0 {
            self.quit(c).await;
            for id in ["dele", "rset", "quit-deletes"] {
                self.skip(id, "the maildrop is empty");
            }
            return Ok(());
        }
        let sizes = self.list_of(&mut c).await?;
        let uids = self.uids_of(&mut c).await?;
        let size1 = sizes.first().map(|e| e.1).unwrap_or(0);
        let mut problems = Vec::new();
        let (raw, cls, _) = self.ask(&mut c, "DELE 1").await.map_err(wire_err)?;
        if !cls.is_ok() {
            self.fail(
                "dele",
                format!("DELE 1 answered {:?}", printable(&raw, 100)),
            );
            self.quit_no_update(c).await;
            self.skip("rset", "DELE failed");
            self.skip("quit-deletes", "DELE failed");
            return Ok(());
        }
        for cmd in ["DELE 1", "RETR 1", "LIST 1"] {
            let (raw, cls, _) = self.ask(&mut c, cmd).await.map_err(wire_err)?;
            if cls.is_ok() {
                problems.push(format!(
                    "{cmd} after DELE 1 answered {:?}",
                    printable(&raw, 100)
                ));
                if cmd == "RETR 1" {
                    c.body(MAX_LISTING).await.map_err(wire_err)?;
                }
            }
        }
        let after = self.stat_of(&mut c).await?;
        if after != (n - 1, o.saturating_sub(size1)) {
            problems.push(format!(
                "STAT after DELE 1 is {} {}, expected {} {}",
                after.0,
                after.1,
                n - 1,
                o.saturating_sub(size1)
            ));
        }
        let listed = self.list_of(&mut c).await?;
        if listed.iter().any(|e| e.0 == 1) || listed.len() as u64 != n - 1 {
            problems.push("LIST after DELE 1 still lists message 1".into());
        }
        if problems.is_empty() {
            self.pass(
                "dele",
                "DELE 1: gone from STAT, LIST and RETR; a second DELE 1 answered -ERR",
            );
        } else {
            self.fail("dele", problems.join("; "));
        }
        let (raw, cls, _) = self.ask(&mut c, "RSET").await.map_err(wire_err)?;
        let back = self.stat_of(&mut c).await?;
        if cls.is_ok() && back == (n, o) {
            self.pass("rset", "RSET restored STAT");
        } else {
            self.fail(
                "rset",
                format!(
                    "RSET answered {:?}; STAT then {} {} (was {n} {o})",
                    printable(&raw, 100),
                    back.0,
                    back.1
                ),
            );
            // Do not let QUIT delete message 1.
            self.quit_no_update(c).await;
            self.skip(
                "quit-deletes",
                "RSET failed; the session was dropped without QUIT",
            );
            return Ok(());
        }
        // Delete the last message for real.
        let (raw, cls, _) = self
            .ask(&mut c, &format!("DELE {n}"))
            .await
            .map_err(wire_err)?;
        if !cls.is_ok() {
            self.fail(
                "quit-deletes",
                format!("DELE {n} answered {:?}", printable(&raw, 100)),
            );
            self.quit_no_update(c).await;
            return Ok(());
        }
        let (raw, q, _) = self.ask(&mut c, "QUIT").await.map_err(wire_err)?;
        c.shutdown().await;
        if !q.is_ok() {
            self.fail(
                "quit-deletes",
                format!("QUIT answered {:?}", printable(&raw, 100)),
            );
            return Ok(());
        }
        if let Some(m) = self.mailbox.as_mut() {
            m.deleted += 1;
        }
        let mut c = self
            .login(how, method, user, pass)
            .await
            .map_err(|e| e.text())?;
        let now = self.stat_of(&mut c).await?;
        let size_n = sizes.last().map(|e| e.1).unwrap_or(0);
        let uids_now = self.uids_of(&mut c).await?;
        self.quit(c).await;
        let mut problems = Vec::new();
        if now != (n - 1, o.saturating_sub(size_n)) {
            problems.push(format!(
                "STAT after QUIT is {} {}, expected {} {}",
                now.0,
                now.1,
                n - 1,
                o.saturating_sub(size_n)
            ));
        }
        if let (Some(before), Some(after)) = (&uids, &uids_now) {
            let expect: Vec<&String> = before
                .iter()
                .take(before.len().saturating_sub(1))
                .map(|u| &u.1)
                .collect();
            let got: Vec<&String> = after.iter().map(|u| &u.1).collect();
            if expect != got {
                problems.push(
                    "the remaining unique ids are not the ones before minus the deleted one".into(),
                );
            }
        }
        if problems.is_empty() {
            self.pass(
                "quit-deletes",
                format!("message {n} deleted; the other {} remain", n - 1),
            );
        } else {
            self.fail("quit-deletes", problems.join("; "));
        }
        Ok(())
    }

    /// Ends a session without QUIT, so that the server enters no UPDATE state.
    async fn quit_no_update(&mut self, mut c: Conn) {
        c.shutdown().await;
    }

    async fn stat_of(&mut self, c: &mut Conn) -> Result<(u64, u64), String> {
        let (raw, cls, _) = self.ask(c, "STAT").await.map_err(wire_err)?;
        let s = if cls.is_ok() {
            parse::parse_stat(&cls.text)
        } else {
            None
        };
        s.ok_or_else(|| format!("STAT answered {:?}", printable(&raw, 100)))
    }

    async fn list_of(&mut self, c: &mut Conn) -> Result<Vec<(u64, u64)>, String> {
        let (raw, cls, _) = self.ask(c, "LIST").await.map_err(wire_err)?;
        if !cls.is_ok() {
            return Err(format!("LIST answered {:?}", printable(&raw, 100)));
        }
        let b = self.listing(c, "LIST").await.map_err(wire_err)?;
        Ok(b.content_lines().filter_map(parse::parse_scan).collect())
    }

    async fn uids_of(&mut self, c: &mut Conn) -> Result<Option<Vec<(u64, String)>>, String> {
        let (_, cls, _) = self.ask(c, "UIDL").await.map_err(wire_err)?;
        if !cls.is_ok() {
            return Ok(None);
        }
        let b = self.listing(c, "UIDL").await.map_err(wire_err)?;
        Ok(Some(
            b.content_lines().filter_map(parse::parse_uidl).collect(),
        ))
    }

    // ---- enumeration and delays ------------------------------------------------------

    async fn enumeration_phase(&mut self) {
        let logins = [
            "user-enumeration-answer",
            "user-enumeration-timing",
            "failed-login-delay",
        ];
        if self.opts.samples == 0 {
            for id in logins {
                self.skip(id, "--samples 0");
            }
        } else {
            self.sample_logins().await;
        }
        let announced = self.all_caps().find_map(|c| c.login_delay);
        match announced {
            Some(d) => self.pass(
                "login-delay",
                format!(
                    "LOGIN-DELAY {}{}",
                    d.seconds,
                    if d.per_user { " USER" } else { "" }
                ),
            ),
            None => self.info(
                "login-delay",
                "not announced: clients cannot know how often they may log in (RFC 2449 §6.5)",
            ),
        }
    }

    async fn sample_logins(&mut self) {
        // A wrong password is no secret, but the test account's name is: without a
        // channel fit for its password, only the unknown user is sampled.
        let (how, known) = match self.login_channel(false) {
            Ok(h) => (h, self.opts.user.clone()),
            Err(_) => {
                if self.opts.user.is_some() {
                    self.note("no TLS: the test account was not used for failed-login samples");
                }
                (How::Plain, None)
            }
        };
        let method = match self.login_method(how) {
            Ok(m) => m,
            Err(e) => {
                for id in [
                    "user-enumeration-answer",
                    "user-enumeration-timing",
                    "failed-login-delay",
                ] {
                    self.skip(id, e.clone());
                }
                return;
            }
        };
        let unknown = format!("probe-{}", self.random_hex(12));
        let mut sides: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
        // Per round, the test account's time over the unknown user's.
        let mut ratios: Vec<f64> = Vec::new();
        // With a test account, an even number of rounds: in alternating order a delay
        // that grows with every failure (doubling, or by steps) cancels out of the
        // product of the per-round ratios.
        let rounds = if known.is_some() {
            self.opts.samples.div_ceil(2) * 2
        } else {
            self.opts.samples
        };
        'rounds: for round in 0..rounds {
            // Alternate the order so that a delay growing with each failure falls on
            // both sides alike.
            let mut order = vec![(0, unknown.clone())];
            if let Some(k) = &known {
                if round % 2 == 0 {
                    order.push((1, k.clone()));
                } else {
                    order.insert(0, (1, k.clone()));
                }
            }
            let mut times = [None, None];
            for (side, name) in order {
                match self.failed_login(how, method, &name).await {
                    Ok(s) => {
                        times[side] = Some(s.time);
                        sides[side].push(s);
                    }
                    Err(e) => {
                        self.note(format!("failed-login sampling stopped: {e}"));
                        break 'rounds;
                    }
                }
            }
            if let [Some(u), Some(k)] = times {
                ratios.push(k.as_secs_f64().max(1e-4) / u.as_secs_f64().max(1e-4));
            }
        }
        let side = |v: &[Sample]| -> Side {
            let times: Vec<Duration> = v.iter().map(|s| s.time).collect();
            Side {
                user_answer: v.first().and_then(|s| s.user_answer.clone()),
                pass_answer: v.first().and_then(|s| s.pass_answer.clone()),
                times_ms: times.iter().map(|&t| ms(t)).collect(),
                median_ms: median(&times).map(ms),
            }
        };
        let [u, k] = sides;
        let unknown_side = side(&u);
        let known_side = known.as_ref().map(|_| side(&k));
        let mu = median(&u.iter().map(|s| s.time).collect::<Vec<_>>());
        let mk = median(&k.iter().map(|s| s.time).collect::<Vec<_>>());
        // In the order taken: does the delay grow with each failure?
        let mut sequence: Vec<Duration> = Vec::new();
        let (mut iu, mut ik) = (u.iter(), k.iter());
        for round in 0..u.len().max(k.len()) {
            let pair = if round % 2 == 0 || known.is_none() {
                [iu.next(), ik.next()]
            } else {
                [ik.next(), iu.next()]
            };
            sequence.extend(pair.into_iter().flatten().map(|s| s.time));
        }
        let growing = sequence.len() >= 2
            && sequence.windows(2).all(|w| w[1] >= w[0])
            && sequence[sequence.len() - 1] >= sequence[0] * 2
            && sequence[0] >= NO_DELAY_BELOW;
        let shown: Vec<String> = sequence.iter().map(|&t| format!("{}", ms(t))).collect();
        // Failed-login delay: the faster side counts.
        match [mu, mk].into_iter().flatten().min() {
            Some(_) if growing => self.pass(
                "failed-login-delay",
                format!("the delay grows with each failure: {} ms", shown.join(", ")),
            ),
            Some(m) if m >= NO_DELAY_BELOW => {
                self.pass("failed-login-delay", format!("median {} ms", ms(m)))
            }
            Some(m) => self.fail(
                "failed-login-delay",
                format!("failed logins answered in a median {} ms", ms(m)),
            ),
            None => self.skip("failed-login-delay", "no sample"),
        }
        if known.is_some() {
            // Answers: every sample of a side should agree with the other side's.
            let texts = |v: &[Sample]| -> HashSet<(Option<String>, Option<String>)> {
                v.iter()
                    .map(|s| (s.user_answer.clone(), s.pass_answer.clone()))
                    .collect()
            };
            let (tu, tk) = (texts(&u), texts(&k));
            if u.is_empty() || k.is_empty() {
                self.skip("user-enumeration-answer", "no sample");
            } else if tu == tk {
                self.pass("user-enumeration-answer", "the same answers for both");
            } else {
                let show = |s: &Side| {
                    format!(
                        "USER {:?}, PASS {:?}",
                        s.user_answer.as_deref().unwrap_or("-"),
                        s.pass_answer.as_deref().unwrap_or("(not sent)")
                    )
                };
                let k_side = known_side.clone().unwrap_or_default();
                self.fail(
                    "user-enumeration-answer",
                    format!(
                        "unknown user: {}; test account: {}",
                        show(&unknown_side),
                        show(&k_side)
                    ),
                );
            }
            match (mu, mk) {
                (Some(a), Some(b)) if ratios.len() >= 2 => {
                    // The geometric mean of the paired ratios (see above); a difference
                    // counts when it is both relative (25 %) and absolute (30 ms).
                    let n = ratios.len() as f64;
                    let factor = (ratios.iter().map(|r| r.ln()).sum::<f64>() / n).exp();
                    let diff = a.abs_diff(b);
                    let d = format!(
                        "medians {} ms (unknown user) and {} ms (test account); paired ratio {:.2} over {} rounds",
                        ms(a),
                        ms(b),
                        factor,
                        ratios.len()
                    );
                    if !(0.8..=1.25).contains(&factor) && diff > Duration::from_millis(30) {
                        self.fail("user-enumeration-timing", d);
                    } else {
                        self.pass("user-enumeration-timing", d);
                    }
                }
                _ => self.skip(
                    "user-enumeration-timing",
                    format!(
                        "fewer than two complete rounds of samples (failed logins took {} ms)",
                        shown.join(", ")
                    ),
                ),
            }
        } else {
            let need = if self.opts.user.is_some() {
                "needs a channel fit for the test account (TLS, or --allow-cleartext)"
            } else {
                "needs a test account (--user)"
            };
            let what = format!(
                "{need}; an unknown user got USER {:?}, PASS {:?}",
                unknown_side.user_answer.as_deref().unwrap_or("-"),
                unknown_side.pass_answer.as_deref().unwrap_or("(not sent)")
            );
            self.skip("user-enumeration-answer", what);
            self.skip("user-enumeration-timing", need);
        }
        self.enumeration = Some(Enumeration {
            samples: rounds,
            unknown_user: unknown_side,
            known_user: known_side,
        });
    }

    /// One login with a random wrong password.
    async fn failed_login(
        &mut self,
        how: How,
        method: Method,
        name: &str,
    ) -> Result<Sample, String> {
        let mut o = self.open(how).await?;
        if !o.cls.is_ok() {
            return Err(format!("greeting {:?}", printable(&o.greeting, 100)));
        }
        let wrong = format!("wrong-{}", self.random_hex(16));
        let c = &mut o.conn;
        let clean = |raw: &[u8]| printable(raw, 150).replace(name, "<user>");
        let sample = match method {
            Method::UserPass => {
                let (raw, cls, t) = self
                    .ask(c, &format!("USER {name}"))
                    .await
                    .map_err(wire_err)?;
                if !cls.is_ok() {
                    Sample {
                        user_answer: Some(clean(&raw)),
                        pass_answer: None,
                        time: t,
                    }
                } else {
                    let (praw, _, t) = self
                        .ask(c, &format!("PASS {wrong}"))
                        .await
                        .map_err(wire_err)?;
                    Sample {
                        user_answer: Some(clean(&raw)),
                        pass_answer: Some(clean(&praw)),
                        time: t,
                    }
                }
            }
            Method::SaslPlain => {
                let ir = B64.encode(format!("\0{name}\0{wrong}"));
                let (raw, _, t) = self
                    .ask(c, &format!("AUTH PLAIN {ir}"))
                    .await
                    .map_err(wire_err)?;
                Sample {
                    user_answer: None,
                    pass_answer: Some(clean(&raw)),
                    time: t,
                }
            }
        };
        if sample
            .pass_answer
            .as_deref()
            .is_some_and(|a| a.starts_with("+OK"))
        {
            self.note(format!("a random password was accepted for {name}!"));
        }
        self.quit(o.conn).await;
        Ok(sample)
    }

    // ---- the report ------------------------------------------------------------------

    fn finish(&mut self) {
        let n = self.status_lines;
        match self.lower_case.take() {
            Some(d) => self.fail("status-case", d),
            None => self.pass("status-case", format!("{n} status lines")),
        }
        match self.bare_lf.take() {
            Some(d) => self.fail("line-ending", d),
            None => self.pass("line-ending", format!("{n} status lines and every listing")),
        }
        match self.too_long.take() {
            Some(d) => self.fail("line-length", d),
            None => self.pass("line-length", format!("{n} status lines")),
        }
    }

    fn report(mut self, started: SystemTime, took: Duration) -> Report {
        let mut checks = Vec::new();
        let mut summary = Summary::default();
        for d in CHECKS {
            let o = self.results.remove(d.id).unwrap_or(Outcome {
                status: Status::Skip,
                severity: None,
                detail: "not reached".into(),
            });
            match o.status {
                Status::Pass => summary.passed += 1,
                Status::Fail => {
                    summary.failed += 1;
                    match o.severity.unwrap_or(d.severity) {
                        Severity::High => summary.high += 1,
                        Severity::Medium => summary.medium += 1,
                        Severity::Low => summary.low += 1,
                    }
                }
                Status::Skip => summary.skipped += 1,
                Status::Info => summary.info += 1,
            }
            checks.push(CheckResult {
                id: d.id,
                section: d.section,
                rfc: d.rfc,
                title: d.title,
                status: o.status,
                severity: (o.status == Status::Fail).then(|| o.severity.unwrap_or(d.severity)),
                detail: o.detail,
            });
        }
        let secs = started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        Report {
            schema: "correio-probe/1",
            target: TargetInfo {
                url: self.opts.url.clone(),
                host: self.target.host.clone(),
                port: self.target.port,
                implicit_tls: self.target.implicit_tls,
                user: self.opts.user.clone(),
                allow_delete: self.opts.allow_delete,
            },
            started: x509::format_time(secs),
            duration_ms: took.as_millis() as u64,
            offer: self.offer,
            mailbox: self.mailbox,
            account_error: self.account_error,
            enumeration: self.enumeration,
            checks,
            summary,
            notes: self.notes,
        }
    }
}

/// What the first account session saw.
struct Snapshot {
    stat: (u64, u64),
    uids: Option<Vec<(u64, String)>>,
}

fn join_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(" ")
    }
}
