//! `correio probe`: a report on any POP3 server — what it offers, what it gets wrong
//! against RFC 1939, 2449, 2595 and 5034 as a client can see it, and its exposure.
//!
//! [`probe`] connects several times (each check group on its own connection, so that
//! a server that closes after a few bad commands still gets every check), reads raw
//! lines through a bounded reader (timeout per read, 8 KiB per status line, a byte
//! bound per multi-line answer) and returns a [`Report`]. The report prints as text
//! ([`Report::to_text`]) or as JSON (`serde_json::to_string(&report)`).
//!
//! # What it does to the server
//! Read-only by default: with a test account it logs in several times and runs STAT,
//! LIST, UIDL, RETR, TOP, NOOP and QUIT, never DELE. A session that retrieved
//! messages ends without QUIT (RFC 1939 §6: no UPDATE state, so a server that
//! deletes retrieved mail at QUIT, `EXPIRE 0`, keeps it); and when `EXPIRE 0` is
//! announced, RETR and TOP are skipped. Only with [`Options::allow_delete`] does it
//! DELE: it marks the first message, checks STAT/LIST/RETR, RSETs, then deletes the
//! *last* message and QUITs — one message of the account is gone afterwards.
//!
//! The failed-login checks make `samples` failed logins for a random user name and,
//! with a test account, as many with a random wrong password for it (`samples` is
//! then rounded up to an even number: the two are sampled in alternating order, and
//! the per-round ratios of their times are combined so that a delay growing with each
//! failure cancels out). A server with account lockout may lock the test account. Passwords are sent only over TLS with a trusted certificate (or with
//! [`Options::insecure_skip_verify`]), or in cleartext to a loopback address or with
//! [`Options::allow_cleartext`].
//!
//! # Checks
//! Every check has a stable id (see [`CHECKS`]), a section (`conformance` or
//! `exposure`), the RFC section it comes from, a severity used when it fails, and a
//! status: `pass`, `fail`, `skip` (not applicable, or not possible here; the detail
//! says why) or `info` (an observation, never a failure).
//!
//! # JSON schema (`correio-probe/1`)
//! Fields are only ever added within one schema version; a removal or change of
//! meaning bumps the version.
//!
//! ```text
//! {
//!   "schema": "correio-probe/1",
//!   "target": { "url": str, "host": str, "port": int, "implicit_tls": bool,
//!               "user": str|null, "allow_delete": bool },
//!   "started": str (RFC 3339, UTC), "duration_ms": int,
//!   "offer": {
//!     "greeting": str|null, "apop_timestamp": str|null,
//!     "capa": { "cleartext": [str]|null, "tls": [str]|null, "transaction": [str]|null },
//!     "sasl": { "cleartext": [str]|null, "tls": [str]|null },
//!     "auth_listing": { "cleartext": [str]|null, "tls": [str]|null },
//!     "stls": bool, "user": bool, "top": bool, "uidl": bool, "pipelining": bool,
//!     "resp_codes": bool, "implementation": str|null,
//!     "expire": str|null, "login_delay": str|null,
//!     "tls": {
//!       "trust": str,
//!       "versions": [ { "version": "TLS 1.2"|"TLS 1.3", "supported": bool,
//!                       "cipher_suite": str|null, "error": str|null } ],
//!       "certificate": null | { "subject": str, "issuer": str, "self_issued": bool,
//!         "san": [str], "not_before": str, "not_after": str, "days_left": int,
//!         "serial": str, "sha256": str, "chain_length": int,
//!         "trusted": bool, "trust_error": str|null,
//!         "hostname": str, "hostname_matches": bool, "hostname_error": str|null }
//!     }
//!   },
//!   "mailbox": null | { "user": str, "messages": int, "octets": int,
//!                       "retrieved": int, "deleted": int },
//!   "account_error": str|null,
//!   "enumeration": null | { "samples": int,
//!     "unknown_user": { "user_answer": str|null, "pass_answer": str|null,
//!                       "times_ms": [float], "median_ms": float|null },
//!     "known_user": same|null },
//!   "checks": [ { "id": str, "section": "conformance"|"exposure", "rfc": str,
//!                 "title": str, "status": "pass"|"fail"|"skip"|"info",
//!                 "severity": "low"|"medium"|"high"|null (set when status is fail),
//!                 "detail": str } ],
//!   "summary": { "passed": int, "failed": int, "skipped": int, "info": int,
//!                "high": int, "medium": int, "low": int },
//!   "notes": [str]
//! }
//! ```

mod checks;
#[doc(hidden)]
pub mod fuzzing;
pub mod parse;
mod text;
pub mod tls;
pub mod wire;
pub mod x509;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use parse::Target;

/// What to probe and how far to go.
#[derive(Debug, Clone)]
pub struct Options {
    /// `pop3://HOST[:PORT]` or `pop3s://HOST[:PORT]`.
    pub url: String,
    /// A test account for the checks that need a login.
    pub user: Option<String>,
    /// Its password.
    pub password: Option<Vec<u8>>,
    /// Extra CA certificates (PEM) to trust besides the system's.
    pub ca: Option<PathBuf>,
    /// Send the test account's password over TLS even when the certificate is not
    /// trusted or does not name the host.
    pub insecure_skip_verify: bool,
    /// Send the password without TLS to a host that is not loopback.
    pub allow_cleartext: bool,
    /// Run the DELE checks (deletes one message of the test account).
    pub allow_delete: bool,
    /// Timeout of each read and of each connection attempt.
    pub timeout: Duration,
    /// Failed-login samples per user for the enumeration and delay checks (0: skip).
    pub samples: u32,
    /// Most messages retrieved for the size and format checks.
    pub max_messages: usize,
    /// Messages larger than this (by LIST) are not retrieved.
    pub max_message_size: u64,
}

impl Options {
    /// Defaults for `url`: no account, 10 s timeout, 5 samples, 50 messages of at most
    /// 16 MiB.
    pub fn new(url: &str) -> Options {
        Options {
            url: url.to_owned(),
            user: None,
            password: None,
            ca: None,
            insecure_skip_verify: false,
            allow_cleartext: false,
            allow_delete: false,
            timeout: Duration::from_secs(10),
            samples: 5,
            max_messages: 50,
            max_message_size: 16 << 20,
        }
    }
}

/// Why no report could be made at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The URL or an option is wrong.
    #[error("{0}")]
    Usage(String),
    /// Nothing answered at the address.
    #[error("cannot reach {target}: {reason}")]
    Unreachable {
        /// host:port
        target: String,
        /// What failed.
        reason: String,
    },
}

/// Where a check belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Section {
    /// What the RFCs require.
    Conformance,
    /// What exposes users or passwords.
    Exposure,
}

/// How bad a failed check is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Cosmetic or unlikely to matter.
    Low,
    /// Breaks some clients or weakens security.
    Medium,
    /// Loses mail, leaks passwords or breaks most clients.
    High,
}

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Checked, conforms.
    Pass,
    /// Checked, does not conform: a finding.
    Fail,
    /// Not run (not applicable or not possible; the detail says why).
    Skip,
    /// An observation, never a failure.
    Info,
}

/// One check of the table.
#[derive(Debug, Clone, Copy)]
pub struct CheckDef {
    /// Stable id.
    pub id: &'static str,
    /// Its section.
    pub section: Section,
    /// Where the rule comes from.
    pub rfc: &'static str,
    /// Severity when it fails (some checks raise it with context).
    pub severity: Severity,
    /// What passing means.
    pub title: &'static str,
}

const fn def(
    id: &'static str,
    section: Section,
    rfc: &'static str,
    severity: Severity,
    title: &'static str,
) -> CheckDef {
    CheckDef {
        id,
        section,
        rfc,
        severity,
        title,
    }
}

use Section::{Conformance as C, Exposure as E};
use Severity::{High, Low, Medium};

/// Every check, in report order.
pub const CHECKS: &[CheckDef] = &[
    def(
        "greeting",
        C,
        "RFC 1939 §4",
        High,
        "The greeting is a positive response (+OK)",
    ),
    def(
        "status-case",
        C,
        "RFC 1939 §3",
        Low,
        "+OK and -ERR are sent in upper case",
    ),
    def(
        "line-ending",
        C,
        "RFC 1939 §3",
        Medium,
        "Response lines end with CRLF",
    ),
    def(
        "line-length",
        C,
        "RFC 2449 §4",
        Low,
        "First lines of responses are at most 512 octets with CRLF",
    ),
    def(
        "apop-timestamp",
        C,
        "RFC 1939 §7",
        Medium,
        "The APOP timestamp is a msg-id and differs in every greeting",
    ),
    def(
        "capa",
        C,
        "RFC 2449 §5",
        Low,
        "CAPA answers a well-formed capability list (lines of at most 512 octets)",
    ),
    def(
        "command-case",
        C,
        "RFC 1939 §3",
        Medium,
        "Command keywords are case-insensitive",
    ),
    def(
        "pipelining",
        C,
        "RFC 2449 §6.6",
        Medium,
        "With PIPELINING, commands sent together are all answered in order",
    ),
    def(
        "unknown-command",
        C,
        "RFC 1939 §3",
        Medium,
        "An unknown command is answered -ERR (before and after login)",
    ),
    def(
        "wrong-state",
        C,
        "RFC 1939 §3",
        Medium,
        "A command in the wrong state is answered -ERR",
    ),
    def(
        "quit-authorization",
        C,
        "RFC 1939 §4",
        Low,
        "QUIT before login is answered +OK and the connection closed",
    ),
    def(
        "auth-unknown-mechanism",
        C,
        "RFC 5034 §4",
        Medium,
        "AUTH with an unknown mechanism is answered -ERR",
    ),
    def(
        "auth-cancel",
        C,
        "RFC 5034 §4",
        Medium,
        "An AUTH exchange cancelled with \"*\" is answered -ERR",
    ),
    def(
        "auth-listing",
        C,
        "RFC 5034 §3",
        Low,
        "AUTH without a mechanism lists what CAPA SASL announces",
    ),
    def(
        "stls-capa",
        C,
        "RFC 2595 §4",
        Medium,
        "Under TLS, CAPA no longer offers STLS",
    ),
    def(
        "stls-repeat",
        C,
        "RFC 2595 §4",
        Medium,
        "STLS under TLS is refused with -ERR",
    ),
    def(
        "stls-immediate",
        C,
        "RFC 2595 §4",
        Medium,
        "After +OK to STLS the server sends nothing before the TLS handshake",
    ),
    def(
        "capa-transaction",
        C,
        "RFC 2449 §5",
        Low,
        "CAPA is answered after login as well",
    ),
    def(
        "stat",
        C,
        "RFC 1939 §5",
        Medium,
        "STAT answers +OK count octets",
    ),
    def(
        "list",
        C,
        "RFC 1939 §5",
        Medium,
        "LIST agrees with STAT (count, total, numbering) and with LIST n",
    ),
    def(
        "uidl-format",
        C,
        "RFC 1939 §7",
        Medium,
        "Unique ids are 1 to 70 characters in 0x21-0x7E",
    ),
    def(
        "uidl-unique",
        C,
        "RFC 1939 §7",
        High,
        "Unique ids are unique within the maildrop",
    ),
    def(
        "uidl-list",
        C,
        "RFC 1939 §7",
        Low,
        "UIDL lists the messages LIST lists, and UIDL n agrees",
    ),
    def(
        "uidl-persistent",
        C,
        "RFC 1939 §7",
        High,
        "Unique ids stay the same across sessions",
    ),
    def(
        "retr-size",
        C,
        "RFC 1939 §5, §11",
        Medium,
        "LIST sizes equal the octets RETR sends (CRLF line ends, without stuffing dots)",
    ),
    def(
        "retr-format",
        C,
        "RFC 1939 §3",
        Medium,
        "RETR bodies are CRLF lines, dot-stuffed, with the terminating line",
    ),
    def(
        "no-such-message",
        C,
        "RFC 1939 §5",
        Medium,
        "RETR and LIST of a message that does not exist are answered -ERR",
    ),
    def(
        "top",
        C,
        "RFC 1939 §7",
        Medium,
        "TOP m n sends the header, the blank line and n body lines",
    ),
    def("noop", C, "RFC 1939 §5", Low, "NOOP is answered +OK"),
    def(
        "quit-keeps",
        C,
        "RFC 1939 §6",
        High,
        "QUIT without DELE leaves every message in place",
    ),
    def(
        "dele",
        C,
        "RFC 1939 §5",
        Medium,
        "A deleted message leaves STAT, LIST and RETR until QUIT",
    ),
    def(
        "rset",
        C,
        "RFC 1939 §5",
        High,
        "RSET unmarks deleted messages",
    ),
    def(
        "quit-deletes",
        C,
        "RFC 1939 §6",
        Medium,
        "QUIT removes the deleted message and no other",
    ),
    def(
        "tls-offered",
        E,
        "RFC 8314",
        High,
        "TLS is available (STLS or implicit TLS)",
    ),
    def(
        "tls-versions",
        E,
        "RFC 8996",
        High,
        "TLS 1.2 or TLS 1.3 can be negotiated",
    ),
    def(
        "cert-trusted",
        E,
        "RFC 5280 §6",
        High,
        "The certificate chain leads to a trusted root",
    ),
    def(
        "cert-hostname",
        E,
        "RFC 2595 §2.4",
        High,
        "The certificate names the host",
    ),
    def(
        "cert-expiry",
        E,
        "RFC 5280 §4.1.2.5",
        Low,
        "The certificate is valid for at least 14 more days",
    ),
    def(
        "cleartext-login",
        E,
        "RFC 2595 §2.3",
        Medium,
        "No password login is accepted without TLS",
    ),
    def(
        "stls-injection",
        E,
        "RFC 2595 §4; CVE-2011-0411",
        High,
        "Commands sent before the TLS handshake are not run inside TLS",
    ),
    def(
        "user-enumeration-answer",
        E,
        "RFC 1939 §7 (USER)",
        Medium,
        "An unknown user and a wrong password get the same answers",
    ),
    def(
        "user-enumeration-timing",
        E,
        "none (operational)",
        Medium,
        "An unknown user and a wrong password are answered in about the same time",
    ),
    def(
        "failed-login-delay",
        E,
        "none (operational)",
        Low,
        "Failed logins are answered after a delay (slows password guessing)",
    ),
    def(
        "login-delay",
        E,
        "RFC 2449 §6.5",
        Low,
        "LOGIN-DELAY is announced",
    ),
];

/// The definition of a check by id.
pub fn check_def(id: &str) -> Option<&'static CheckDef> {
    CHECKS.iter().find(|c| c.id == id)
}

/// The report. See the module docs for its JSON form.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `correio-probe/1`.
    pub schema: &'static str,
    /// What was probed.
    pub target: TargetInfo,
    /// When the probe started (RFC 3339, UTC).
    pub started: String,
    /// How long it took.
    pub duration_ms: u64,
    /// What the server offers.
    pub offer: Offer,
    /// The test account's maildrop, when logged in.
    pub mailbox: Option<Mailbox>,
    /// Why the account checks did not run, when they did not.
    pub account_error: Option<String>,
    /// The enumeration samples.
    pub enumeration: Option<Enumeration>,
    /// Every check in [`CHECKS`] order.
    pub checks: Vec<CheckResult>,
    /// Counts.
    pub summary: Summary,
    /// Things that went wrong on the way (a connection that failed, ...).
    pub notes: Vec<String>,
}

/// What was probed.
#[derive(Debug, Clone, Serialize)]
pub struct TargetInfo {
    /// As given.
    pub url: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `pop3s://`.
    pub implicit_tls: bool,
    /// The test account.
    pub user: Option<String>,
    /// Whether DELE was allowed.
    pub allow_delete: bool,
}

/// Lists per TLS state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PerState {
    /// On a cleartext connection (`null` for pop3s or when not obtained).
    pub cleartext: Option<Vec<String>>,
    /// Under TLS.
    pub tls: Option<Vec<String>>,
}

/// CAPA lines as sent, per state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CapaSets {
    /// Cleartext, before login.
    pub cleartext: Option<Vec<String>>,
    /// Under TLS, before login.
    pub tls: Option<Vec<String>>,
    /// After login.
    pub transaction: Option<Vec<String>>,
}

/// What the server offers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Offer {
    /// The greeting line (printable form).
    pub greeting: Option<String>,
    /// The APOP timestamp in it.
    pub apop_timestamp: Option<String>,
    /// CAPA lines.
    pub capa: CapaSets,
    /// SASL mechanisms from CAPA.
    pub sasl: PerState,
    /// Mechanisms listed by a bare `AUTH`.
    pub auth_listing: PerState,
    /// STLS offered on the cleartext connection.
    pub stls: bool,
    /// USER offered (any state).
    pub user: bool,
    /// TOP offered.
    pub top: bool,
    /// UIDL offered.
    pub uidl: bool,
    /// PIPELINING offered.
    pub pipelining: bool,
    /// RESP-CODES offered.
    pub resp_codes: bool,
    /// IMPLEMENTATION text.
    pub implementation: Option<String>,
    /// EXPIRE arguments, as announced (the latest state that announced it).
    pub expire: Option<String>,
    /// LOGIN-DELAY arguments, as announced.
    pub login_delay: Option<String>,
    /// TLS.
    pub tls: TlsOffer,
}

/// TLS as offered.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TlsOffer {
    /// Which roots the chain was checked against.
    pub trust: String,
    /// Per version tried.
    pub versions: Vec<TlsVersion>,
    /// The server certificate.
    pub certificate: Option<Certificate>,
}

/// One TLS version tried on its own.
#[derive(Debug, Clone, Serialize)]
pub struct TlsVersion {
    /// `TLS 1.2` or `TLS 1.3`.
    pub version: &'static str,
    /// Whether the handshake succeeded.
    pub supported: bool,
    /// The cipher suite negotiated.
    pub cipher_suite: Option<String>,
    /// Why the handshake failed.
    pub error: Option<String>,
}

/// The server certificate.
#[derive(Debug, Clone, Serialize)]
pub struct Certificate {
    /// Subject DN.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// Subject equals issuer.
    pub self_issued: bool,
    /// subjectAltName entries.
    pub san: Vec<String>,
    /// notBefore (RFC 3339).
    pub not_before: String,
    /// notAfter (RFC 3339).
    pub not_after: String,
    /// Whole days until notAfter (negative: expired).
    pub days_left: i64,
    /// Serial number (hex).
    pub serial: String,
    /// SHA-256 of the DER, colon hex.
    pub sha256: String,
    /// Certificates the server sent.
    pub chain_length: usize,
    /// The chain leads to a trusted root.
    pub trusted: bool,
    /// Why not.
    pub trust_error: Option<String>,
    /// The name checked.
    pub hostname: String,
    /// The certificate is valid for it.
    pub hostname_matches: bool,
    /// Why not.
    pub hostname_error: Option<String>,
}

/// The test account's maildrop.
#[derive(Debug, Clone, Serialize)]
pub struct Mailbox {
    /// Login name.
    pub user: String,
    /// STAT count at the first login.
    pub messages: u64,
    /// STAT octets at the first login.
    pub octets: u64,
    /// Messages retrieved and checked.
    pub retrieved: u64,
    /// Messages deleted (only with allow_delete).
    pub deleted: u64,
}

/// Failed-login samples.
#[derive(Debug, Clone, Serialize)]
pub struct Enumeration {
    /// Samples per user.
    pub samples: u32,
    /// A random user name that surely does not exist.
    pub unknown_user: Side,
    /// The test account with a wrong password.
    pub known_user: Option<Side>,
}

/// Samples for one user.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Side {
    /// The answer to USER (the name replaced by `<user>`).
    pub user_answer: Option<String>,
    /// The answer to PASS (or AUTH PLAIN).
    pub pass_answer: Option<String>,
    /// Time from sending the password to the answer, per sample.
    pub times_ms: Vec<f64>,
    /// Their median.
    pub median_ms: Option<f64>,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// Stable id.
    pub id: &'static str,
    /// Section.
    pub section: Section,
    /// RFC reference.
    pub rfc: &'static str,
    /// What passing means.
    pub title: &'static str,
    /// Outcome.
    pub status: Status,
    /// Set when failed.
    pub severity: Option<Severity>,
    /// What was seen.
    pub detail: String,
}

/// Counts of the checks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Passed.
    pub passed: usize,
    /// Failed (findings).
    pub failed: usize,
    /// Skipped.
    pub skipped: usize,
    /// Informational.
    pub info: usize,
    /// Failed with high severity.
    pub high: usize,
    /// Failed with medium severity.
    pub medium: usize,
    /// Failed with low severity.
    pub low: usize,
}

impl Report {
    /// The failed checks.
    pub fn findings(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| c.status == Status::Fail)
    }

    /// A check's result by id.
    pub fn check(&self, id: &str) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// The report as text for people.
    pub fn to_text(&self) -> String {
        text::render(self)
    }
}

/// Probes the server `opts.url` names. `Err` only when there was nothing to probe
/// (bad URL, nothing answering); everything else is in the report.
pub async fn probe(opts: &Options) -> Result<Report, ProbeError> {
    let target = parse::parse_url(&opts.url).map_err(ProbeError::Usage)?;
    if opts.password.is_some() != opts.user.is_some() {
        return Err(ProbeError::Usage(
            "a user needs a password and a password a user".into(),
        ));
    }
    let tls = tls::TlsSetup::new(opts.ca.as_deref()).map_err(ProbeError::Usage)?;
    checks::Prober::new(opts, target, tls).run().await
}
