//! The checks every mutating request passes before its handler runs:
//! read-only mode, same origin, CSRF token.

use crate::State;
use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{HOST, ORIGIN};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

/// The form field that carries the CSRF token.
pub(crate) const CSRF_FIELD: &str = "csrf";

/// The largest form body accepted (a selection of a few hundred ids).
const MAX_FORM: usize = 1 << 20;

/// A token from 32 bytes of the system's randomness, hashed so the secret
/// itself never appears in a page.
pub(crate) fn new_token() -> Result<String, String> {
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).map_err(|e| e.to_string())?;
    Ok(derive(&secret))
}

/// A weaker token for a system without a random source: the time, the
/// process id and two hasher keys the standard library seeds per process.
pub(crate) fn fallback_token() -> String {
    let mut seed = Vec::new();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    seed.extend_from_slice(&nanos.to_le_bytes());
    seed.extend_from_slice(&std::process::id().to_le_bytes());
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(0);
        seed.extend_from_slice(&h.finish().to_le_bytes());
    }
    derive(&seed)
}

fn derive(secret: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"resq-web csrf v1\0");
    h.update(secret);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two byte strings in time that depends only on their lengths.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn forbidden(why: &str) -> Response {
    (StatusCode::FORBIDDEN, format!("forbidden: {why}\n")).into_response()
}

/// Whether the request's `Sec-Fetch-Site` and `Origin` say it comes from
/// this site (absent headers pass: old browsers and scripts send none,
/// and the CSRF token still has to match).
fn same_origin(req: &Request) -> bool {
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site") {
        match site.to_str() {
            Ok("same-origin") | Ok("none") => {}
            _ => return false,
        }
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok()) else {
            return false;
        };
        let authority = origin.split_once("://").map(|(_, rest)| rest).unwrap_or("");
        if !authority.eq_ignore_ascii_case(host) {
            return false;
        }
    }
    true
}

/// The middleware: GET and HEAD pass; anything else must be allowed by the
/// configuration, come from this site and carry the token in its form.
pub(crate) async fn check(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    req: Request,
    next: Next,
) -> Response {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return next.run(req).await;
    }
    if state.config.read_only {
        return forbidden("the dashboard is read-only");
    }
    if !same_origin(&req) {
        return forbidden("cross-site request");
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_FORM).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "form too large\n").into_response(),
    };
    let token_ok = url::form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == CSRF_FIELD)
        .is_some_and(|(_, v)| ct_eq(v.as_bytes(), state.csrf.as_bytes()));
    if !token_ok {
        return forbidden("missing or wrong CSRF token; reload the page");
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_and_compare() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_ne!(fallback_token(), a);
        assert!(ct_eq(a.as_bytes(), a.as_bytes()));
        assert!(!ct_eq(a.as_bytes(), b.as_bytes()));
        assert!(!ct_eq(b"ab", b"abc"));
    }
}
