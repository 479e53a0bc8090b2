//! The FastCGI Authorizer role behind real web servers: the `authorizer` program (this
//! project's launcher with `--fastcgi-roles authorizer`) in front of the `echo` program, under
//! lighttpd (`"mode" => "authorizer"`, then the request goes on to echo over uwsgi) and Apache
//! (mod_authnz_fcgi, then mod_proxy_fcgi to echo). A 200 lets the request through to echo,
//! with the authorizer's `Variable-NAME` headers as variables NAME; a 401 or 403 is what the
//! client gets.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    ECHO, Fetched, TempDir, WebServer, curl, free_port, sha256_hex, start_apache, start_lighttpd,
};

const AUTHORIZER: &str = env!("CARGO_BIN_EXE_authorizer");

/// A backend program, killed when dropped.
struct Backend(Child);

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn backend(program: &str, args: &[&str], port: u16) -> Backend {
    let child = Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let backend = Backend(child);
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{program} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    backend
}

fn authorizer(port: u16) -> Backend {
    let bind = format!("127.0.0.1:{port}");
    backend(
        AUTHORIZER,
        &["--fastcgi", &bind, "--fastcgi-roles", "authorizer"],
        port,
    )
}

fn get(server: &WebServer, path: &str, token: Option<&str>) -> Fetched {
    let header = token.map(|t| format!("X-Token: {t}"));
    let mut args = Vec::new();
    if let Some(header) = &header {
        args.extend(["-H", header.as_str()]);
    }
    let url = server.url(path);
    args.push(&url);
    curl(&args, None)
}

/// What every front end must do with the authorizer in front of echo at `/p`.
fn check_authorizer(server: &WebServer) {
    // No token: the authorizer's 401, its challenge and its body reach the client.
    let denied = get(server, "/p/x", None);
    assert_eq!(denied.status, 401);
    assert_eq!(
        denied.header("www-authenticate"),
        Some("Token realm=\"gateway\"")
    );
    let body = String::from_utf8_lossy(&denied.body);
    assert!(body.contains("a token is required"), "{body}");

    // A wrong token: the authorizer's 403.
    let refused = get(server, "/p/x", Some("guess"));
    assert_eq!(refused.status, 403);
    let body = String::from_utf8_lossy(&refused.body);
    assert!(body.contains("this token is refused"), "{body}");

    // The right token: echo answers, with the authorizer's variables in its environ.
    let allowed = get(server, "/p/x?q=1", Some("open-sesame"));
    assert_eq!(allowed.status, 200);
    let json = allowed.json();
    let environ = &json["environ"];
    assert_eq!(environ["PATH_INFO"], "/x", "{environ}");
    assert_eq!(environ["QUERY_STRING"], "q=1");
    assert_eq!(environ["AUTH_USER"], "friend", "{environ}");
    assert_eq!(environ["AUTHORIZER_ROLE"], "AUTHORIZER", "{environ}");
    assert_eq!(environ["AUTHORIZED_URI"], "/p/x?q=1", "{environ}");
    assert!(
        allowed
            .headers
            .iter()
            .all(|(name, _)| !name.starts_with("variable-")),
        "the authorizer's variables are not headers of the answer: {:?}",
        allowed.headers
    );

    // A body goes to the responder (the authorizer gets none).
    let payload: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let url = server.url("/p/upload");
    let post = curl(
        &[
            "-H",
            "X-Token: open-sesame",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            "@-",
            &url,
        ],
        Some(&payload),
    );
    assert_eq!(post.status, 200);
    let json = post.json();
    assert_eq!(json["body_len"], 20_000);
    assert_eq!(json["body_sha256"], sha256_hex(&payload));
    let refused = curl(
        &["-H", "X-Token: guess", "--data-binary", "@-", &url],
        Some(&payload),
    );
    assert_eq!(refused.status, 403);
}

#[test]
fn lighttpd_fastcgi_authorizer_mode() {
    let (auth_port, echo_port) = (free_port(), free_port());
    let _authorizer = authorizer(auth_port);
    let bind = format!("127.0.0.1:{echo_port}");
    let _echo = backend(ECHO, &["--uwsgi", &bind], echo_port);
    let dir = TempDir::new("lighttpd-authorizer");
    // The authorizer guards /p; on a 200 the request goes on to the next handler, echo over
    // uwsgi (mod_scgi), which receives the authorizer's variables.
    let config = format!(
        "server.modules = (\"mod_fastcgi\", \"mod_scgi\")\n\
         fastcgi.server = (\"/p\" => ((\"host\" => \"127.0.0.1\", \"port\" => {auth_port},\n\
                                        \"mode\" => \"authorizer\", \"check-local\" => \"disable\")))\n\
         scgi.protocol = \"uwsgi\"\n\
         scgi.server = (\"/p\" => ((\"host\" => \"127.0.0.1\", \"port\" => {echo_port}, \"check-local\" => \"disable\")))\n"
    );
    let server = start_lighttpd(&dir.0, &config);
    check_authorizer(&server);
}

#[test]
fn apache_mod_authnz_fcgi() {
    let (auth_port, echo_port) = (free_port(), free_port());
    let _authorizer = authorizer(auth_port);
    let bind = format!("127.0.0.1:{echo_port}");
    let _echo = backend(ECHO, &["--fastcgi", &bind], echo_port);
    let dir = TempDir::new("apache-authorizer");
    // The generic FastCGI authorizer (authentication and authorization in one call); the user
    // is the authorizer's Variable-AUTH_USER.
    let directives = format!(
        "AuthnzFcgiDefineProvider authnz Gate fcgi://127.0.0.1:{auth_port}/\n\
         SetEnvIf Request_URI \"^/p/\" proxy-fcgi-pathinfo=unescape\n\
         <Location \"/p/\">\n\
           AuthType Token\n\
           AuthName \"gateway\"\n\
           AuthnzFcgiCheckAuthnProvider Gate Authoritative On RequireBasicAuth Off UserExpr \"%{{reqenv:AUTH_USER}}\"\n\
           Require Gate\n\
         </Location>\n\
         ProxyPass \"/p/\" \"fcgi://127.0.0.1:{echo_port}/\"\n"
    );
    let server = start_apache(
        &dir.0,
        &[
            "authn_core",
            "authnz_fcgi",
            "setenvif",
            "proxy",
            "proxy_fcgi",
        ],
        &directives,
    );
    check_authorizer(&server);
    // Apache makes the authorizer's user the request's.
    let allowed = get(&server, "/p/x", Some("open-sesame"));
    assert_eq!(allowed.json()["environ"]["REMOTE_USER"], "friend");
}
