//! The OAuth2 grants: token requests (RFC 6749 §4.1.3, §6, §4.4), authorization code
//! with PKCE and a loopback redirect (RFC 7636, RFC 8252 §7.3), and the device
//! authorization grant (RFC 8628). HTTP goes through `reqwest` (rustls); the loopback
//! redirect is received by a one-shot `hyper` server bound to `127.0.0.1:0`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rand::Rng;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{OAuth, OAuthError, TokenSet, now_secs};

/// How long the loopback listener waits for the browser.
pub const BROWSER_WAIT: Duration = Duration::from_secs(300);

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Most bytes of a token endpoint answer.
const MAX_ANSWER: usize = 64 * 1024;

fn http() -> Result<reqwest::Client, OAuthError> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .user_agent("correio")
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| OAuthError::Http(e.to_string()))
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// An OAuth2 error answer, or the parsed success.
enum Answer<T> {
    Ok(T),
    Err(ErrorAnswer),
}

async fn post<T: for<'de> Deserialize<'de>>(
    url: &str,
    form: &[(&str, &str)],
    endpoint: &'static str,
) -> Result<Answer<T>, OAuthError> {
    let resp = http()?
        .post(url)
        .header("Accept", "application/json")
        .form(form)
        .send()
        .await
        .map_err(|e| OAuthError::Http(format!("{endpoint} endpoint: {}", without_url(&e))))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| OAuthError::Http(format!("{endpoint} endpoint: {}", without_url(&e))))?;
    if body.len() > MAX_ANSWER {
        return Err(OAuthError::Http(format!(
            "{endpoint} endpoint: answer too large"
        )));
    }
    if status.is_success() {
        return serde_json::from_slice(&body).map(Answer::Ok).map_err(|e| {
            OAuthError::Http(format!("{endpoint} endpoint: unexpected answer ({e})"))
        });
    }
    match serde_json::from_slice::<ErrorAnswer>(&body) {
        Ok(e) => Ok(Answer::Err(e)),
        Err(_) => Err(OAuthError::Http(format!(
            "{endpoint} endpoint answered HTTP {status}"
        ))),
    }
}

/// The error and its causes, without the URL (whose query may carry a code).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = match e.url() {
        Some(u) => e
            .to_string()
            .replace(&format!(" ({})", u.as_str()), "")
            .replace(u.as_str(), "URL"),
        None => e.to_string(),
    };
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

fn token_set(a: TokenAnswer) -> TokenSet {
    TokenSet {
        access_token: a.access_token,
        refresh_token: a.refresh_token,
        // No expires_in: assume an hour (what both big providers issue).
        expires_at: now_secs().saturating_add(a.expires_in.unwrap_or(3600)),
        scope: a.scope,
    }
}

async fn token_request(
    o: &OAuth,
    mut form: Vec<(&str, String)>,
) -> Result<Result<TokenSet, ErrorAnswer>, OAuthError> {
    form.push(("client_id", o.client_id.clone()));
    if let Some(s) = o.secret()? {
        form.push(("client_secret", s));
    }
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Ok(
        match post::<TokenAnswer>(&o.token_url, &pairs, "token").await? {
            Answer::Ok(a) => Ok(token_set(a)),
            Answer::Err(e) => Err(e),
        },
    )
}

fn provider_error(endpoint: &'static str, e: ErrorAnswer) -> OAuthError {
    OAuthError::Provider {
        endpoint,
        error: e.error,
        description: e.error_description,
    }
}

/// Refreshes with `refresh_token` (RFC 6749 §6). `invalid_grant` becomes
/// [`OAuthError::Reauthorize`].
pub async fn refresh(o: &OAuth, refresh_token: &str) -> Result<TokenSet, OAuthError> {
    let mut form = vec![
        ("grant_type", "refresh_token".to_owned()),
        ("refresh_token", refresh_token.to_owned()),
    ];
    // Microsoft's v2.0 endpoint wants the scopes again on a refresh (RFC 6749 §6
    // makes the parameter optional; Google does not need it).
    if o.provider == super::Provider::Microsoft {
        form.push(("scope", o.scopes.join(" ")));
    }
    match token_request(o, form).await? {
        Ok(t) => Ok(t),
        Err(e) if e.error == "invalid_grant" => Err(OAuthError::Reauthorize {
            account: o.account.clone(),
            error: e.error,
            description: e.error_description,
            command: o.reauthorize_command.clone(),
        }),
        Err(e) => Err(provider_error("token", e)),
    }
}

/// Client credentials (RFC 6749 §4.4): the application's own token.
pub async fn client_credentials(o: &OAuth) -> Result<TokenSet, OAuthError> {
    let form = vec![
        ("grant_type", "client_credentials".to_owned()),
        ("scope", o.scopes.join(" ")),
    ];
    token_request(o, form)
        .await?
        .map_err(|e| provider_error("token", e))
}

/// A PKCE pair (RFC 7636): a 64-character verifier and its S256 challenge.
pub fn pkce_pair() -> (String, String) {
    const UNRESERVED: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
    let mut rng = rand::thread_rng();
    let verifier: String = (0..64)
        .map(|_| UNRESERVED[rng.gen_range(0..UNRESERVED.len())] as char)
        .collect();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn random_state() -> String {
    let bytes: [u8; 24] = rand::thread_rng().r#gen();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Authorization code with PKCE. Binds `127.0.0.1:0`, calls `show` with the URL the
/// user must open, waits (up to [`BROWSER_WAIT`]) for the provider to redirect the
/// browser back with `code` and the same `state`, and exchanges the code.
pub async fn browser(
    o: &OAuth,
    login_hint: Option<&str>,
    show: &mut (dyn FnMut(&str) + Send),
) -> Result<TokenSet, OAuthError> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| OAuthError::Http(format!("loopback redirect listener: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| OAuthError::Http(e.to_string()))?
        .port();
    let redirect_uri = format!("http://127.0.0.1:{port}/");
    let (verifier, challenge) = pkce_pair();
    let state = random_state();
    let scope = o.scopes.join(" ");
    let mut params: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", &o.client_id),
        ("redirect_uri", &redirect_uri),
        ("scope", &scope),
        ("state", &state),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ];
    if let Some(h) = login_hint {
        params.push(("login_hint", h));
    }
    params.extend_from_slice(o.provider.extra_authorization_params());
    let url = reqwest::Url::parse_with_params(&o.authorization_url, &params)
        .map_err(|e| OAuthError::Config(format!("authorization_url: {e}")))?;
    show(url.as_str());

    let (tx, mut rx) = mpsc::channel::<Result<String, String>>(1);
    let expected = state.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            let expected = expected.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    let expected = expected.clone();
                    async move {
                        let q: HashMap<String, String> = req
                            .uri()
                            .query()
                            .map(|q| {
                                reqwest::Url::parse(&format!("http://x/?{q}"))
                                    .map(|u| u.query_pairs().into_owned().collect())
                                    .unwrap_or_default()
                            })
                            .unwrap_or_default();
                        let (status, text) = if q.get("state") != Some(&expected) {
                            (
                                StatusCode::BAD_REQUEST,
                                "Unexpected request: this is correio waiting for the OAuth2 redirect.",
                            )
                        } else if let Some(code) = q.get("code") {
                            let _ = tx.send(Ok(code.clone())).await;
                            (
                                StatusCode::OK,
                                "correio: authorised. You can close this window.",
                            )
                        } else {
                            let err = q.get("error").cloned().unwrap_or_else(|| "no code".into());
                            let desc = q.get("error_description").cloned();
                            let _ = tx
                                .send(Err(match desc {
                                    Some(d) => format!("{err}: {d}"),
                                    None => err,
                                }))
                                .await;
                            (
                                StatusCode::OK,
                                "correio: authorisation refused. You can close this window.",
                            )
                        };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .header("Content-Type", "text/plain; charset=utf-8")
                                .header("Connection", "close")
                                .body(Full::new(Bytes::from_static(text.as_bytes())))
                                .unwrap_or_default(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let got = tokio::time::timeout(BROWSER_WAIT, rx.recv()).await;
    server.abort();
    let code = match got {
        Err(_) => {
            return Err(OAuthError::Http(format!(
                "no redirect to {redirect_uri} within {}s",
                BROWSER_WAIT.as_secs()
            )));
        }
        Ok(None) => return Err(OAuthError::Http("redirect listener stopped".into())),
        Ok(Some(Err(e))) => {
            return Err(OAuthError::Provider {
                endpoint: "authorization",
                error: e,
                description: None,
            });
        }
        Ok(Some(Ok(code))) => code,
    };
    let form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
    ];
    token_request(o, form)
        .await?
        .map_err(|e| provider_error("token", e))
}

#[derive(Deserialize)]
struct DeviceAnswer {
    device_code: String,
    user_code: String,
    #[serde(alias = "verification_url")]
    verification_uri: String,
    #[serde(default)]
    verification_uri_complete: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    interval: Option<u64>,
}

/// The device authorization grant (RFC 8628): asks for a user code, calls `show`
/// with what the user must do, then polls the token endpoint at the interval the
/// provider set, slowing down by 5 s on `slow_down`.
pub async fn device(
    o: &OAuth,
    show: &mut (dyn FnMut(&str) + Send),
) -> Result<TokenSet, OAuthError> {
    let url = o
        .device_url
        .as_deref()
        .ok_or_else(|| OAuthError::Config("no device authorization endpoint".into()))?;
    let scope = o.scopes.join(" ");
    let d = match post::<DeviceAnswer>(
        url,
        &[("client_id", &o.client_id), ("scope", &scope)],
        "device authorization",
    )
    .await?
    {
        Answer::Ok(d) => d,
        Answer::Err(e) => return Err(provider_error("device authorization", e)),
    };
    let mut text = format!(
        "To authorise, open {} and enter the code {}",
        d.verification_uri, d.user_code
    );
    if let Some(c) = &d.verification_uri_complete {
        text += &format!(" (or open {c})");
    }
    show(&text);
    let mut interval = Duration::from_secs(d.interval.unwrap_or(5).max(1));
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(d.expires_in.unwrap_or(900).min(3600));
    loop {
        tokio::time::sleep(interval).await;
        if tokio::time::Instant::now() > deadline {
            return Err(OAuthError::Provider {
                endpoint: "token",
                error: "expired_token".into(),
                description: Some("the user code expired before it was entered".into()),
            });
        }
        let form = vec![
            ("grant_type", DEVICE_GRANT.to_owned()),
            ("device_code", d.device_code.clone()),
        ];
        match token_request(o, form).await? {
            Ok(t) => return Ok(t),
            Err(e) if e.error == "authorization_pending" => {}
            Err(e) if e.error == "slow_down" => interval += Duration::from_secs(5),
            Err(e) => return Err(provider_error("token", e)),
        }
    }
}

/// Gets a first token by the account's flow.
pub async fn authorize(
    o: &OAuth,
    login_hint: Option<&str>,
    show: &mut (dyn FnMut(&str) + Send),
) -> Result<TokenSet, OAuthError> {
    let t = match o.flow {
        super::Flow::Browser => browser(o, login_hint, show).await?,
        super::Flow::Device => device(o, show).await?,
        super::Flow::ClientCredentials => client_credentials(o).await?,
    };
    t.save(&o.token_file)?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_is_s256_of_the_verifier() {
        // RFC 7636 appendix B.
        let v = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(
            URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes())),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let (v, c) = pkce_pair();
        assert_eq!(v.len(), 64);
        assert_eq!(c, URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes())));
    }
}
