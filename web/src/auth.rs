//! Authentication for the standalone server.

use crate::guard::ct_eq;
use axum::extract::Request;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Who may use the standalone dashboard. Mounted in a host app, use the
/// host's middleware instead (see the crate documentation).
#[derive(Clone, Default)]
pub enum Auth {
    /// Anyone who reaches the address (bind it to a private interface).
    #[default]
    None,
    /// HTTP basic authentication with these credentials.
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// `Authorization: Bearer TOKEN`. A browser can also send the token as
    /// the basic-auth password (any user name), which it prompts for.
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secrets.
        match self {
            Auth::None => f.write_str("Auth::None"),
            Auth::Basic { user, .. } => write!(f, "Auth::Basic {{ user: {user:?}, .. }}"),
            Auth::Bearer(_) => f.write_str("Auth::Bearer(..)"),
        }
    }
}

impl Auth {
    /// Parses `USER:PASS` (the password may hold colons) into
    /// [`Auth::Basic`]; `None` when there is no colon or the user is empty.
    pub fn basic_from(text: &str) -> Option<Auth> {
        let (user, password) = text.split_once(':')?;
        if user.is_empty() {
            return None;
        }
        Some(Auth::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    }

    /// Whether the `Authorization` header value `header` is accepted.
    pub fn accepts(&self, header: Option<&str>) -> bool {
        match self {
            Auth::None => true,
            Auth::Basic { user, password } => {
                let Some(given) = header.and_then(basic_credentials) else {
                    return false;
                };
                let expected = format!("{user}:{password}");
                ct_eq(given.as_bytes(), expected.as_bytes())
            }
            Auth::Bearer(token) => {
                let Some(header) = header else {
                    return false;
                };
                if let Some(given) = strip_scheme(header, "Bearer") {
                    return ct_eq(given.trim().as_bytes(), token.as_bytes());
                }
                match basic_credentials(header) {
                    Some(given) => match given.split_once(':') {
                        Some((_, pass)) => ct_eq(pass.as_bytes(), token.as_bytes()),
                        None => false,
                    },
                    None => false,
                }
            }
        }
    }

    /// `router` behind this check: a request without accepted credentials
    /// answers 401 (with a basic-auth challenge, so browsers prompt).
    pub fn protect(self, router: axum::Router) -> axum::Router {
        if matches!(self, Auth::None) {
            return router;
        }
        router.layer(axum::middleware::from_fn(move |req: Request, next: Next| {
            let auth = self.clone();
            async move {
                let header = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
                if auth.accepts(header) {
                    next.run(req).await
                } else {
                    unauthorized()
                }
            }
        }))
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(WWW_AUTHENTICATE, "Basic realm=\"resq\", charset=\"UTF-8\"")],
        "authentication required\n",
    )
        .into_response()
}

/// The text after `scheme ` in a header, the scheme matched ignoring case.
fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = header.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then_some(rest)
}

/// `user:pass` from a `Basic …` header.
fn basic_credentials(header: &str) -> Option<String> {
    let encoded = strip_scheme(header, "Basic")?.trim();
    String::from_utf8(base64_decode(encoded)?).ok()
}

/// Standard base64 with padding (RFC 4648 §4), as browsers send it.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&three[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_base64() {
        assert_eq!(
            base64_decode("YWxhZGRpbjpvcGVuc2VzYW1l").unwrap(),
            b"aladdin:opensesame"
        );
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert!(base64_decode("YQ=").is_none());
        assert!(base64_decode("Y!==").is_none());
    }

    #[test]
    fn checks_credentials() {
        let basic = Auth::basic_from("aladdin:opensesame").unwrap();
        assert!(basic.accepts(Some("Basic YWxhZGRpbjpvcGVuc2VzYW1l")));
        assert!(!basic.accepts(Some("Basic YQ==")));
        assert!(!basic.accepts(None));
        let bearer = Auth::Bearer("s3cret".into());
        assert!(bearer.accepts(Some("Bearer s3cret")));
        assert!(!bearer.accepts(Some("Bearer s3cre")));
        // "x:s3cret"
        assert!(bearer.accepts(Some("Basic eDpzM2NyZXQ=")));
        assert!(Auth::basic_from("nouser").is_none());
    }
}
