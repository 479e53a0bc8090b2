//! `authorizer`: a FastCGI Authorizer that decides by a token, for the tests that put it behind
//! real web servers (lighttpd's `"mode" => "authorizer"`, Apache's mod_authnz_fcgi). Run it
//! with `--fastcgi ADDR --fastcgi-roles authorizer`.
//!
//! - no `X-Token` header: 401 with `WWW-Authenticate: Token realm="gateway"` and a short body;
//! - `X-Token: open-sesame`: 200 with `Variable-AUTH_USER: friend`, `Variable-AUTHORIZED_URI`
//!   (the `REQUEST_URI` it saw) and `Variable-AUTHORIZER_ROLE` (its `FCGI_ROLE`), which the web
//!   server passes on to the Responder as variables;
//! - any other token: 403 with a short body.
//!
//! (The echo app answers 200 to everything an authorizer is sent, so it cannot show a denial.)

use gateway_core::{Body, Environ, StartResponse};
use http::header::{CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use http::{HeaderMap, StatusCode};

/// The token that is let through.
const TOKEN: &[u8] = b"open-sesame";

fn authorize(environ: Environ, start: StartResponse) -> Body {
    let mut headers = HeaderMap::new();
    let (status, body) = match environ.get("HTTP_X_TOKEN") {
        Some(token) if token == TOKEN => {
            headers.insert("variable-auth_user", HeaderValue::from_static("friend"));
            for (name, var) in [
                ("variable-authorized_uri", "REQUEST_URI"),
                ("variable-authorizer_role", "FCGI_ROLE"),
            ] {
                if let Some(value) = environ
                    .get(var)
                    .and_then(|v| HeaderValue::from_bytes(v).ok())
                {
                    headers.insert(name, value);
                }
            }
            (StatusCode::OK, "")
        }
        Some(_) => (StatusCode::FORBIDDEN, "this token is refused\n"),
        None => {
            headers.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Token realm=\"gateway\""),
            );
            (StatusCode::UNAUTHORIZED, "a token is required\n")
        }
    };
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    match start.start(status, headers) {
        Ok(_) => Body::from(body),
        Err(error) => Body::error(error),
    }
}

fn main() -> std::process::ExitCode {
    gateway_servers::run(authorize)
}
