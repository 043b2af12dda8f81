//! A local OAuth2 authorization server: a **stand-in for Google's and Microsoft's**,
//! which tests cannot reach. It implements the published protocols the fetcher uses,
//! not any provider's quirks:
//!
//! - `GET /authorize` — authorization code request (RFC 6749 §4.1.1) with PKCE
//!   (RFC 7636, `S256` only); the "user" approves at once and the browser is
//!   redirected (302) to the loopback `redirect_uri` with `code` and `state`.
//! - `POST /token` — grants `authorization_code` (checks `redirect_uri`, client and
//!   `code_verifier`), `refresh_token` (§6; rotates the refresh token),
//!   `urn:ietf:params:oauth:grant-type:device_code` (RFC 8628 §3.4, answering
//!   `authorization_pending` and, once if asked, `slow_down`) and
//!   `client_credentials` (§4.4, secret checked).
//! - `POST /device` — device authorization (RFC 8628 §3.1); `POST /device/approve`
//!   with `user_code` is the user entering the code.
//! - `POST /introspect` — token introspection (RFC 7662): `active`, `username`,
//!   `scope`, `exp`, `client_id`. Dovecot's `oauth2` passdb validates tokens here.
//!
//! Tests revoke consent ([`AuthServer::revoke_refresh_tokens`]: refreshes then get
//! `invalid_grant`) and set the access token lifetime. One thread, blocking, one
//! request per connection (`Connection: close`); stopped on drop.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// A registered client.
#[derive(Debug, Clone)]
pub struct OAuthClient {
    /// client_id
    pub id: String,
    /// client_secret (required for client credentials).
    pub secret: Option<String>,
    /// For client credentials: the mailbox the application token may open.
    pub app_user: Option<String>,
}

/// What the stand-in knows.
#[derive(Debug, Clone)]
pub struct AuthServerConfig {
    /// Registered clients.
    pub clients: Vec<OAuthClient>,
    /// The user who approves in the browser and at the device page.
    pub user: String,
    /// Access token lifetime in seconds (`expires_in`).
    pub access_lifetime: u64,
    /// Device flow polling interval in seconds.
    pub device_interval: u64,
    /// Answer the first device poll with `slow_down`.
    pub slow_down_once: bool,
}

#[derive(Debug, Clone)]
struct Grant {
    username: String,
    client_id: String,
    scope: String,
}

#[derive(Debug)]
struct Device {
    user_code: String,
    grant: Grant,
    approved: bool,
    polls: u32,
    last_poll: Option<Instant>,
    interval: u64,
}

#[derive(Debug, Default)]
struct State {
    codes: HashMap<String, (Grant, String, String)>, // code -> grant, redirect_uri, challenge
    access: HashMap<String, (Grant, u64)>,           // token -> grant, exp (unix)
    refresh: HashMap<String, Grant>,
    devices: HashMap<String, Device>,
    revoked: bool,
    access_lifetime: u64,
    /// Grants issued, by grant type.
    grants: HashMap<String, u32>,
    introspections: u32,
    early_polls: u32,
    log: Vec<String>,
}

/// The running stand-in; stopped on drop.
#[derive(Debug)]
pub struct AuthServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

static COUNTER: AtomicU64 = AtomicU64::new(1);

fn random_token(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let h = Sha256::digest(format!("{prefix}{n}{t}{}", std::process::id()));
    let hex: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{hex}")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Percent-decodes a form or query component (`+` is a space).
pub fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `a=b&c=d`.
pub fn parse_form(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn b64url_sha256(v: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let d = Sha256::digest(v.as_bytes());
    let mut out = String::new();
    for chunk in d.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

struct Reply {
    status: &'static str,
    headers: Vec<(String, String)>,
    body: String,
}

fn json(status: &'static str, body: String) -> Reply {
    Reply {
        status,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body,
    }
}

fn oauth_error(error: &str, desc: &str) -> Reply {
    json(
        "400 Bad Request",
        format!("{{\"error\":\"{error}\",\"error_description\":\"{desc}\"}}"),
    )
}

impl AuthServer {
    /// Starts on `127.0.0.1:0`.
    pub fn start(cfg: AuthServerConfig) -> AuthServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stand-in");
        let addr = listener.local_addr().expect("local addr");
        listener.set_nonblocking(false).ok();
        let state = Arc::new(Mutex::new(State {
            access_lifetime: cfg.access_lifetime,
            ..Default::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (Arc::clone(&state), Arc::clone(&stop));
        let cfg = Arc::new(cfg);
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (st, cfg) = (Arc::clone(&st), Arc::clone(&cfg));
                std::thread::spawn(move || {
                    let _ = serve(conn, &st, &cfg);
                });
            }
        });
        AuthServer {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The authorization endpoint.
    pub fn authorization_url(&self) -> String {
        format!("{}/authorize", self.base())
    }
    /// The token endpoint.
    pub fn token_url(&self) -> String {
        format!("{}/token", self.base())
    }
    /// The device authorization endpoint.
    pub fn device_url(&self) -> String {
        format!("{}/device", self.base())
    }
    /// The introspection endpoint.
    pub fn introspection_url(&self) -> String {
        format!("{}/introspect", self.base())
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Consent revoked: every refresh token is now refused with `invalid_grant`.
    pub fn revoke_refresh_tokens(&self) {
        self.with(|s| s.revoked = true);
    }

    /// Every access token issued so far becomes inactive (as when a provider revokes
    /// tokens before their expiry); refresh tokens stay valid.
    pub fn invalidate_access_tokens(&self) {
        self.with(|s| s.access.clear());
    }

    /// Lifetime of access tokens issued from now on.
    pub fn set_access_lifetime(&self, secs: u64) {
        self.with(|s| s.access_lifetime = secs);
    }

    /// How many tokens were issued by `grant_type` (`refresh_token`, …).
    pub fn grants(&self, grant_type: &str) -> u32 {
        self.with(|s| s.grants.get(grant_type).copied().unwrap_or(0))
    }

    /// Introspection requests served.
    pub fn introspections(&self) -> u32 {
        self.with(|s| s.introspections)
    }

    /// Device polls that came sooner than the interval allowed.
    pub fn early_polls(&self) -> u32 {
        self.with(|s| s.early_polls)
    }

    /// Whether `token` is an access token this server considers active now.
    pub fn is_active(&self, token: &str) -> bool {
        self.with(|s| s.access.get(token).is_some_and(|(_, exp)| *exp > now()))
    }

    /// The user "enters" `user_code` at the verification page.
    pub fn approve_device(&self, user_code: &str) -> bool {
        self.with(|s| {
            for d in s.devices.values_mut() {
                if d.user_code == user_code {
                    d.approved = true;
                    return true;
                }
            }
            false
        })
    }

    /// Requests served, one line each (no secrets).
    pub fn log(&self) -> String {
        self.with(|s| s.log.join("\n"))
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, st: &Mutex<State>, cfg: &AuthServerConfig) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut r = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("").to_owned();
    let mut len = 0usize;
    let mut basic: Option<String> = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                len = v.parse().unwrap_or(0).min(1 << 20);
            } else if k.eq_ignore_ascii_case("authorization") {
                basic = Some(v.to_owned());
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut form = parse_form(query);
    form.extend(parse_form(&String::from_utf8_lossy(&body)));
    let _ = basic;
    let reply = {
        let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
        s.log.push(format!(
            "{method} {path} {}",
            form.get("grant_type").map(String::as_str).unwrap_or("")
        ));
        handle(&method, path, &form, &mut s, cfg)
    };
    let mut out = Vec::new();
    write!(
        out,
        "HTTP/1.1 {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        reply.status,
        reply.body.len()
    )?;
    for (k, v) in &reply.headers {
        write!(out, "{k}: {v}\r\n")?;
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(reply.body.as_bytes());
    let mut w = conn;
    w.write_all(&out)?;
    w.flush()
}

fn client<'a>(cfg: &'a AuthServerConfig, id: Option<&String>) -> Option<&'a OAuthClient> {
    let id = id?;
    cfg.clients.iter().find(|c| &c.id == id)
}

fn issue(s: &mut State, grant: Grant, with_refresh: bool, grant_type: &str) -> Reply {
    let at = random_token("at");
    let exp = now() + s.access_lifetime;
    s.access.insert(at.clone(), (grant.clone(), exp));
    *s.grants.entry(grant_type.to_owned()).or_default() += 1;
    let refresh = if with_refresh {
        let rt = random_token("rt");
        s.refresh.insert(rt.clone(), grant.clone());
        format!(",\"refresh_token\":\"{rt}\"")
    } else {
        String::new()
    };
    json(
        "200 OK",
        format!(
            "{{\"access_token\":\"{at}\",\"token_type\":\"Bearer\",\"expires_in\":{},\"scope\":\"{}\"{refresh}}}",
            s.access_lifetime, grant.scope
        ),
    )
}

fn handle(
    method: &str,
    path: &str,
    f: &HashMap<String, String>,
    s: &mut State,
    cfg: &AuthServerConfig,
) -> Reply {
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    match (method, path) {
        ("GET", "/authorize") => {
            let redirect = get("redirect_uri");
            if client(cfg, f.get("client_id")).is_none() {
                return oauth_error("invalid_client", "unknown client");
            }
            if !redirect.starts_with("http://127.0.0.1:") {
                return oauth_error("invalid_request", "redirect_uri must be a loopback URI");
            }
            if get("response_type") != "code"
                || get("code_challenge_method") != "S256"
                || get("code_challenge").len() != 43
            {
                return oauth_error("invalid_request", "PKCE S256 required");
            }
            let code = random_token("code");
            s.codes.insert(
                code.clone(),
                (
                    Grant {
                        username: cfg.user.clone(),
                        client_id: get("client_id"),
                        scope: get("scope"),
                    },
                    redirect.clone(),
                    get("code_challenge"),
                ),
            );
            Reply {
                status: "302 Found",
                headers: vec![(
                    "Location".into(),
                    format!(
                        "{redirect}?code={}&state={}",
                        pct(&code),
                        pct(&get("state"))
                    ),
                )],
                body: String::new(),
            }
        }
        ("POST", "/token") => {
            let Some(c) = client(cfg, f.get("client_id")) else {
                return oauth_error("invalid_client", "unknown client");
            };
            if let Some(secret) = &c.secret
                && f.get("client_secret") != Some(secret)
            {
                return oauth_error("invalid_client", "bad client secret");
            }
            match get("grant_type").as_str() {
                "authorization_code" => {
                    let Some((grant, redirect, challenge)) = s.codes.remove(&get("code")) else {
                        return oauth_error("invalid_grant", "unknown or used code");
                    };
                    if redirect != get("redirect_uri") || grant.client_id != c.id {
                        return oauth_error("invalid_grant", "redirect_uri or client mismatch");
                    }
                    if b64url_sha256(&get("code_verifier")) != challenge {
                        return oauth_error("invalid_grant", "PKCE verification failed");
                    }
                    issue(s, grant, true, "authorization_code")
                }
                "refresh_token" => {
                    if s.revoked {
                        return oauth_error("invalid_grant", "Token has been expired or revoked.");
                    }
                    let Some(grant) = s.refresh.remove(&get("refresh_token")) else {
                        return oauth_error("invalid_grant", "unknown refresh token");
                    };
                    issue(s, grant, true, "refresh_token")
                }
                "urn:ietf:params:oauth:grant-type:device_code" => {
                    let dc = get("device_code");
                    let Some(d) = s.devices.get_mut(&dc) else {
                        return oauth_error("expired_token", "unknown device code");
                    };
                    let now_i = Instant::now();
                    if let Some(last) = d.last_poll
                        && now_i.duration_since(last) < Duration::from_secs(d.interval)
                    {
                        s.early_polls += 1;
                    }
                    let Some(d) = s.devices.get_mut(&dc) else {
                        return oauth_error("expired_token", "unknown device code");
                    };
                    d.last_poll = Some(now_i);
                    d.polls += 1;
                    if d.polls == 1 && cfg.slow_down_once {
                        d.interval += 5;
                        return oauth_error("slow_down", "polling too fast");
                    }
                    if !d.approved {
                        return oauth_error("authorization_pending", "waiting for the user");
                    }
                    let grant = d.grant.clone();
                    s.devices.remove(&dc);
                    issue(s, grant, true, "device_code")
                }
                "client_credentials" => {
                    if c.secret.is_none() {
                        return oauth_error("unauthorized_client", "a public client");
                    }
                    let Some(user) = c.app_user.clone() else {
                        return oauth_error("unauthorized_client", "no mailbox for this app");
                    };
                    let grant = Grant {
                        username: user,
                        client_id: c.id.clone(),
                        scope: get("scope"),
                    };
                    issue(s, grant, false, "client_credentials")
                }
                _ => oauth_error("unsupported_grant_type", "unknown grant_type"),
            }
        }
        ("POST", "/device") => {
            if client(cfg, f.get("client_id")).is_none() {
                return oauth_error("invalid_client", "unknown client");
            }
            let dc = random_token("dc");
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let user_code = format!("WDJB-{n:04}");
            s.devices.insert(
                dc.clone(),
                Device {
                    user_code: user_code.clone(),
                    grant: Grant {
                        username: cfg.user.clone(),
                        client_id: get("client_id"),
                        scope: get("scope"),
                    },
                    approved: false,
                    polls: 0,
                    last_poll: None,
                    interval: cfg.device_interval,
                },
            );
            json(
                "200 OK",
                format!(
                    "{{\"device_code\":\"{dc}\",\"user_code\":\"{user_code}\",\"verification_uri\":\"http://127.0.0.1/device\",\"expires_in\":600,\"interval\":{}}}",
                    cfg.device_interval
                ),
            )
        }
        ("POST", "/device/approve") => {
            let code = get("user_code");
            let mut ok = false;
            for d in s.devices.values_mut() {
                if d.user_code == code {
                    d.approved = true;
                    ok = true;
                }
            }
            json(if ok { "200 OK" } else { "404 Not Found" }, "{}".into())
        }
        ("POST", "/introspect") => {
            s.introspections += 1;
            match s.access.get(&get("token")) {
                Some((g, exp)) if *exp > now() => json(
                    "200 OK",
                    format!(
                        "{{\"active\":true,\"username\":\"{}\",\"scope\":\"{}\",\"client_id\":\"{}\",\"exp\":{exp},\"token_type\":\"Bearer\"}}",
                        g.username, g.scope, g.client_id
                    ),
                ),
                _ => json("200 OK", "{\"active\":false}".into()),
            }
        }
        _ => Reply {
            status: "404 Not Found",
            headers: Vec::new(),
            body: "not found".into(),
        },
    }
}

/// The browser's part of the authorization code flow: GETs the authorization `url`
/// (as printed by the client), follows the stand-in's redirect to the loopback
/// `redirect_uri`, and returns the status line the client's listener answered.
pub fn browser_visit(url: &str) -> anyhow::Result<String> {
    let (status, location) = http_get(url)?;
    anyhow::ensure!(
        status.contains(" 302 "),
        "authorization endpoint said {status}"
    );
    let location = location.ok_or_else(|| anyhow::anyhow!("no Location"))?;
    let (status, _) = http_get(&location)?;
    Ok(status)
}

/// A blocking HTTP GET of an `http://` URL: (status line, Location header).
pub fn http_get(url: &str) -> anyhow::Result<(String, Option<String>)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("not http: {url}"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut s = TcpStream::connect(hostport)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )?;
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status)?;
    let mut location = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("location")
        {
            location = Some(v.trim().to_owned());
        }
    }
    Ok((status.trim().to_owned(), location))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_matches_rfc7636_appendix_b() {
        assert_eq!(
            b64url_sha256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(form_decode("a%20b+c%2"), "a b c%2");
    }
}
