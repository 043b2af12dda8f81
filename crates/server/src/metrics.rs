//! Prometheus metrics (the `prometheus-client` crate) and the listener that serves
//! them at `GET /metrics` (hyper), off by default (`[metrics] listen`).
//!
//! Names follow Prometheus conventions: counters end in `_total`, durations are
//! `_seconds`, sizes `_bytes`; every name starts with `correio_`. Label values come
//! from small fixed sets (listener kinds, mechanism names, command keywords that
//! exist, results), never from what a client sends, so a client cannot grow the
//! number of series.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tracing::{info, warn};

/// Which listener a connection came in on.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Listener {
    /// Cleartext POP3 (STLS possible).
    pop3,
    /// Implicit TLS.
    pop3s,
    /// Cleartext behind a PROXY-protocol proxy.
    pop3_proxy,
    /// Implicit TLS behind a PROXY-protocol proxy.
    pop3s_proxy,
}

/// Labels of the connection metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnLabels {
    /// The listener.
    pub listener: Listener,
}

/// The result of a login attempt.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum LoginResult {
    /// Logged in.
    success,
    /// Wrong user name or password (one answer for both).
    wrong_credentials,
    /// Right credentials, refused by LOGIN-DELAY.
    throttled,
    /// The user database or mailbox was unavailable.
    unavailable,
}

/// Labels of the login counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginLabels {
    /// `USER`, `APOP` or the SASL mechanism.
    pub mechanism: String,
    /// What happened.
    pub result: LoginResult,
}

/// Labels of the command histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    /// The command keyword (upper case), or `UNKNOWN`.
    pub command: String,
}

/// Labels of the TLS handshake failure counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsLabels {
    /// `pop3s` (implicit) or `stls`.
    pub kind: String,
}

/// Labels of the LMTP delivery counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// `delivered`, `temporary_failure`, `permanent_failure` or `unknown_user`.
    pub result: String,
}

/// Labels of the build information.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// The package version.
    pub version: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs … ~26 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// Every metric the server keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Connections open now.
    pub connections_open: Family<ConnLabels, Gauge>,
    /// Connections accepted.
    pub connections: Family<ConnLabels, Counter>,
    /// Login attempts.
    pub logins: Family<LoginLabels, Counter>,
    /// Command latency (line in to reply queued, including the store's work).
    pub commands: HistogramFamily<CommandLabels>,
    /// Message bytes sent (RETR and TOP bodies, wire form).
    pub sent_bytes: Counter,
    /// Of `sent_bytes`, those handed to the socket from the file (`sendfile`).
    pub sendfile_bytes: Counter,
    /// Messages sent whole (RETR).
    pub messages_sent: Counter,
    /// Messages removed at UPDATE (QUIT).
    pub deletions: Counter,
    /// LMTP deliveries per recipient.
    pub lmtp_deliveries: Family<DeliveryLabels, Counter>,
    /// Store operations that failed (open, read, update).
    pub store_errors: Counter,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures: Family<TlsLabels, Counter>,
    /// Delays imposed after failed logins.
    pub throttle_delay: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("correio");
        let m = Metrics {
            connections_open: Family::default(),
            connections: Family::default(),
            logins: Family::default(),
            commands: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            sent_bytes: Counter::default(),
            sendfile_bytes: Counter::default(),
            messages_sent: Counter::default(),
            deletions: Counter::default(),
            lmtp_deliveries: Family::default(),
            store_errors: Counter::default(),
            tls_handshake_failures: Family::default(),
            throttle_delay: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            registry: Registry::default(),
        };
        registry.register(
            "connections_open",
            "POP3 connections open now",
            m.connections_open.clone(),
        );
        registry.register(
            "connections",
            "POP3 connections accepted",
            m.connections.clone(),
        );
        registry.register(
            "logins",
            "Login attempts by mechanism and result",
            m.logins.clone(),
        );
        registry.register_with_unit(
            "command_duration",
            "POP3 command latency, from the line to its reply",
            Unit::Seconds,
            m.commands.clone(),
        );
        registry.register_with_unit(
            "sent",
            "Message bytes sent (RETR and TOP bodies)",
            Unit::Bytes,
            m.sent_bytes.clone(),
        );
        registry.register_with_unit(
            "sendfile",
            "Of the message bytes sent, those sent from the file with sendfile(2)",
            Unit::Bytes,
            m.sendfile_bytes.clone(),
        );
        registry.register(
            "messages_sent",
            "Messages sent whole with RETR",
            m.messages_sent.clone(),
        );
        registry.register(
            "deletions",
            "Messages removed at UPDATE",
            m.deletions.clone(),
        );
        registry.register(
            "lmtp_deliveries",
            "LMTP deliveries per recipient by result",
            m.lmtp_deliveries.clone(),
        );
        registry.register(
            "store_errors",
            "Mailbox operations that failed",
            m.store_errors.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            m.tls_handshake_failures.clone(),
        );
        registry.register_with_unit(
            "auth_failure_delay",
            "Delays imposed after failed logins",
            Unit::Seconds,
            m.throttle_delay.clone(),
        );
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register("build_info", "Build information", build);
        Metrics { registry, ..m }
    }

    /// The text exposition format (OpenMetrics).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a login attempt.
    pub fn login(&self, mechanism: &str, result: LoginResult) {
        self.logins
            .get_or_create(&LoginLabels {
                mechanism: mechanism.to_owned(),
                result,
            })
            .inc();
    }

    /// Counts a failed TLS handshake (`pop3s` or `stls`).
    pub fn tls_failure(&self, kind: &str) {
        self.tls_handshake_failures
            .get_or_create(&TlsLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Counts an LMTP delivery result.
    pub fn delivery(&self, result: &str) {
        self.lmtp_deliveries
            .get_or_create(&DeliveryLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Records one command's latency; `keyword` must come from [`command_keyword`].
    pub fn command(&self, keyword: &'static str, seconds: f64) {
        self.commands
            .get_or_create(&CommandLabels {
                command: keyword.to_owned(),
            })
            .observe(seconds);
    }
}

/// The command keyword of a line, from the fixed set of POP3 commands (anything else
/// is `UNKNOWN`), so labels never carry client text.
pub fn command_keyword(line: &[u8]) -> &'static str {
    const KNOWN: [&str; 17] = [
        "USER", "PASS", "APOP", "AUTH", "STLS", "CAPA", "STAT", "LIST", "UIDL", "RETR", "TOP",
        "DELE", "RSET", "NOOP", "QUIT", "UTF8", "LANG",
    ];
    let word = line.split(|&b| b == b' ').next().unwrap_or_default();
    KNOWN
        .iter()
        .find(|k| k.as_bytes().eq_ignore_ascii_case(word))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves. Anything else is a
/// 404; each connection is bounded by hyper's HTTP/1 parser and a read timeout.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future,
) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::{Request, Response, StatusCode};
    if let Ok(a) = listener.local_addr() {
        info!(addr = %a, "metrics listening");
    }
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let metrics = Arc::clone(&metrics);
                async move {
                    let resp =
                        if req.method() == hyper::Method::GET && req.uri().path() == "/metrics" {
                            Response::builder()
                                .header(
                                    "content-type",
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )
                                .body(Full::new(Bytes::from(metrics.encode())))
                        } else {
                            Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::from_static(b"not found\n")))
                        };
                    resp.map_err(std::io::Error::other)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .header_read_timeout(std::time::Duration::from_secs(10))
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(60), conn).await;
        });
    }
}

/// Binds the metrics listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = Metrics::new();
        m.login("PLAIN", LoginResult::success);
        m.command(command_keyword(b"retr 1"), 0.001);
        m.command(command_keyword(b"X-EVIL-\xff"), 0.001);
        m.sent_bytes.inc_by(10);
        let text = m.encode();
        for want in [
            "correio_logins_total{mechanism=\"PLAIN\",result=\"success\"} 1",
            "correio_command_duration_seconds_count{command=\"RETR\"} 1",
            "correio_command_duration_seconds_count{command=\"UNKNOWN\"} 1",
            "correio_sent_bytes_total 10",
            "correio_build_info{version=",
            "# TYPE correio_connections_open gauge",
        ] {
            assert!(text.contains(want), "{want} missing in:\n{text}");
        }
    }
}
