//! A request body the app does not read, behind real nginx (Debian's): the `hello` program,
//! which answers without reading its body, on HTTP (`proxy_pass`, with upstream keep-alive),
//! uwsgi (`uwsgi_pass`) and FastCGI (`fastcgi_pass`, with and without `fastcgi_keep_conn`).
//! nginx sends the whole body to the backend before it reads the answer; a backend that closes with the body unread makes nginx's writes
//! fail, and nginx answers 502 in its place. Here every answer must arrive, the app's 200 and
//! the server's own 413 for a declared length over `--max-body-size` alike.

mod common;

use common::{Group, TempDir, curl, free_port, start_nginx, wait_for};

const HELLO: &str = env!("CARGO_BIN_EXE_hello");

/// 8 MiB: more than loopback's socket buffers hold, so nginx is still sending when the app has
/// answered.
const BODY: usize = 8 << 20;

/// How nginx passes to each backend: a label, the backend's protocol flag, the directives.
const FRONTS: [(&str, &str, &str); 4] = [
    (
        "http",
        "http",
        "proxy_pass http://{up}; proxy_http_version 1.1; proxy_set_header Connection \"\";",
    ),
    (
        "uwsgi",
        "uwsgi",
        "include /etc/nginx/uwsgi_params; uwsgi_pass {up};",
    ),
    (
        "fastcgi-kept",
        "fastcgi",
        "include /etc/nginx/fastcgi_params; fastcgi_pass {up}; fastcgi_keep_conn on;",
    ),
    // nginx's default: a connection per request, closed by the backend.
    (
        "fastcgi",
        "fastcgi",
        "include /etc/nginx/fastcgi_params; fastcgi_pass {up};",
    ),
];

#[test]
fn a_body_the_app_does_not_read_loses_no_answer_behind_nginx() {
    let dir = TempDir::new("nginx-unread-body");
    let limit = (BODY / 2).to_string();
    let mut backends = Vec::new();
    let (mut upstreams, mut locations) = (String::new(), String::new());
    for (label, protocol, pass) in FRONTS {
        // Two backends each: one with the default limits, one whose body limit the body passes.
        for (name, extra) in [("open", None), ("limited", Some(limit.as_str()))] {
            let port = free_port();
            let address = format!("127.0.0.1:{port}");
            let mut args = vec![format!("--{protocol}"), address.clone()];
            if let Some(limit) = extra {
                args.extend(["--max-body-size".to_owned(), limit.to_owned()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            backends.push(Group::spawn(HELLO, &args));
            wait_for(port);
            let upstream = format!("{label}_{name}");
            upstreams.push_str(&format!(
                "upstream {upstream} {{ server {address}; keepalive 4; }}\n"
            ));
            let pass = pass.replace("{up}", &upstream);
            locations.push_str(&format!("  location /{label}/{name}/ {{ {pass} }}\n"));
        }
    }
    let port = free_port();
    let http = format!(
        "client_max_body_size 64m;\n{upstreams}server {{\n  listen 127.0.0.1:{port};\n{locations}}}\n"
    );
    let server = start_nginx(&dir.0, port, &http);
    let body = vec![b'x'; BODY];
    for (label, _, _) in FRONTS {
        for (name, status, answer) in [
            ("open", 200, "Hello, world!\n"),
            ("limited", 413, "413 Payload Too Large\n"),
        ] {
            // Twice: the second request may reuse a kept-alive upstream connection.
            for round in 0..2 {
                let url = server.url(&format!("/{label}/{name}/"));
                let fetched = curl(&["--data-binary", "@-", &url], Some(&body));
                assert_eq!(
                    (
                        fetched.status,
                        String::from_utf8_lossy(&fetched.body).as_ref()
                    ),
                    (status, answer),
                    "{label} ({name}), round {round}; nginx's log: {}",
                    std::fs::read_to_string(dir.0.join("error.log")).unwrap_or_default()
                );
            }
        }
    }
    drop(server);
    drop(backends);
}
