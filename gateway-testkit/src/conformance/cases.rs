//! The cases. Each is a function of a [`Ctx`]; the table at the end gives its stable id, what
//! it checks and the rule it comes from ("rule N" is the rule numbered N in the project's
//! digest of PEP 3333 and its lints, which is kept outside this repository; the validator's
//! `Rule` ids use the same numbers).

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::app::{ERROR_LINE, FIRST_CHUNK, LAST_CHUNK};
use super::{Case, Ctx, Needs, Protocol};
use crate::clients::{WireRequest, fastcgi, http, uwsgi};
use gateway_servers::fastcgi::codec::{ProtocolStatus, Record, Role, StreamKind};

use Protocol::{Cgi, FastCgi, Http, Uwsgi};

type Outcome = Result<(), String>;

fn eq<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Outcome {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

fn check(ok: bool, why: impl FnOnce() -> String) -> Outcome {
    if ok { Ok(()) } else { Err(why()) }
}

fn sha(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A body of `n` bytes that is not all the same.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn body_echoed(cx: &Ctx<'_>, request: WireRequest, want: &[u8]) -> Outcome {
    let echo = cx.echo(&request)?;
    eq("body_len", echo.body_len(), Some(want.len() as u64))?;
    eq("body_sha256", echo.body_sha256(), Some(sha(want)))
}

// ----- the environ -----

fn env_required(cx: &Ctx<'_>) -> Outcome {
    let echo = cx.echo(&WireRequest::get("/x?y=1"))?;
    for name in [
        "REQUEST_METHOD",
        "SCRIPT_NAME",
        "PATH_INFO",
        "QUERY_STRING",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
    ] {
        check(echo.var(name).is_some(), || format!("{name} is missing"))?;
    }
    for name in ["REQUEST_METHOD", "SERVER_NAME", "SERVER_PORT"] {
        check(echo.var(name) != Some(""), || format!("{name} is empty"))?;
    }
    Ok(())
}

fn env_method(cx: &Ctx<'_>) -> Outcome {
    for method in ["GET", "DELETE", "OPTIONS", "PATCH"] {
        let echo = cx.echo(&WireRequest::new(method, "/m"))?;
        eq("REQUEST_METHOD", echo.var("REQUEST_METHOD"), Some(method))?;
    }
    Ok(())
}

fn env_protocol(cx: &Ctx<'_>) -> Outcome {
    let echo = cx.echo(&WireRequest::get("/p"))?;
    eq(
        "SERVER_PROTOCOL",
        echo.var("SERVER_PROTOCOL"),
        Some("HTTP/1.1"),
    )
}

fn env_script_name(cx: &Ctx<'_>) -> Outcome {
    let echo = cx.echo(&WireRequest::get("/s/t"))?;
    let script = echo.var("SCRIPT_NAME").unwrap_or("");
    check(script != "/", || "SCRIPT_NAME is \"/\"".into())?;
    check(script.is_empty() || script.starts_with('/'), || {
        format!("SCRIPT_NAME {script:?} does not start with /")
    })?;
    let path = echo.var("PATH_INFO").unwrap_or("");
    eq(
        "SCRIPT_NAME + PATH_INFO",
        format!("{script}{path}"),
        "/s/t".to_owned(),
    )
}

fn env_url_scheme(cx: &Ctx<'_>) -> Outcome {
    let echo = cx.echo(&WireRequest::get("/"))?;
    eq("wsgi.url_scheme", echo.var("wsgi.url_scheme"), Some("http"))
}

fn env_remote_addr(cx: &Ctx<'_>) -> Outcome {
    let echo = cx.echo(&WireRequest::get("/"))?;
    let addr = echo.var("REMOTE_ADDR").unwrap_or("");
    check(addr.parse::<std::net::IpAddr>().is_ok(), || {
        format!("REMOTE_ADDR {addr:?} is not an address")
    })
}

// ----- paths and queries -----

fn path_decoded(cx: &Ctx<'_>) -> Outcome {
    let echo = cx.echo(&WireRequest::get("/a%20b/c%2Cd"))?;
    eq("PATH_INFO", echo.var("PATH_INFO"), Some("/a b/c,d"))
}

fn path_decoded_once(cx: &Ctx<'_>) -> Outcome {
    let echo = cx.echo(&WireRequest::get("/x%252c"))?;
    eq("PATH_INFO", echo.var("PATH_INFO"), Some("/x%2c"))
}

fn path_latin1(cx: &Ctx<'_>) -> Outcome {
    let echo = cx.echo(&WireRequest::get("/caf%E9"))?;
    eq("PATH_INFO", echo.var("PATH_INFO"), Some("/caf\u{e9}"))
}

fn path_raw_target(cx: &Ctx<'_>) -> Outcome {
    let echo = cx.echo(&WireRequest::get("/a%2Fb%20c?q=%20"))?;
    // REQUEST_URI (PSGI, mod_wsgi, uWSGI, this project) or RAW_URI (gunicorn): rule 20 takes
    // either name.
    let raw = echo.var("REQUEST_URI").or_else(|| echo.var("RAW_URI"));
    eq("REQUEST_URI (or RAW_URI)", raw, Some("/a%2Fb%20c?q=%20"))
}

fn path_root(cx: &Ctx<'_>) -> Outcome {
    let echo = cx.echo(&WireRequest::get("/"))?;
    eq("SCRIPT_NAME", echo.var("SCRIPT_NAME").unwrap_or(""), "")?;
    eq("PATH_INFO", echo.var("PATH_INFO"), Some("/"))
}

fn query_empty(cx: &Ctx<'_>) -> Outcome {
    let echo = cx.echo(&WireRequest::get("/q"))?;
    eq("QUERY_STRING", echo.var("QUERY_STRING"), Some(""))
}

fn query_raw(cx: &Ctx<'_>) -> Outcome {
    let echo = cx.echo(&WireRequest::get("/q?a=1&b=%20c&d&e=%2F"))?;
    eq(
        "QUERY_STRING",
        echo.var("QUERY_STRING"),
        Some("a=1&b=%20c&d&e=%2F"),
    )
}

fn query_question_mark(cx: &Ctx<'_>) -> Outcome {
    let echo = cx.echo(&WireRequest::get("/q?a=?b?"))?;
    eq("QUERY_STRING", echo.var("QUERY_STRING"), Some("a=?b?"))?;
    eq("PATH_INFO", echo.var("PATH_INFO"), Some("/q"))
}

// ----- request headers -----

fn hdr_passed(cx: &Ctx<'_>) -> Outcome {
    let echo = cx.echo(&WireRequest::get("/").header("X-Custom-Thing", "v 1"))?;
    eq(
        "HTTP_X_CUSTOM_THING",
        echo.var("HTTP_X_CUSTOM_THING"),
        Some("v 1"),
    )
}

fn hdr_repeated(cx: &Ctx<'_>) -> Outcome {
    let request = WireRequest::get("/")
        .header("X-Multi", "a")
        .header("X-Multi", "b");
    let echo = cx.echo(&request)?;
    let got = echo.var("HTTP_X_MULTI").unwrap_or("");
    check(got == "a, b" || got == "a,b", || {
        format!("HTTP_X_MULTI: got {got:?}, want \"a, b\"")
    })
}

fn hdr_underscore(cx: &Ctx<'_>) -> Outcome {
    let request = WireRequest::get("/")
        .header("X-Auth-User", "real")
        .header("X_Auth_User", "spoofed");
    let echo = cx.echo(&request)?;
    eq(
        "HTTP_X_AUTH_USER",
        echo.var("HTTP_X_AUTH_USER"),
        Some("real"),
    )
}

fn hdr_content_type(cx: &Ctx<'_>) -> Outcome {
    let request = WireRequest::post("/", "{}").header("Content-Type", "application/json");
    let echo = cx.echo(&request)?;
    eq(
        "CONTENT_TYPE",
        echo.var("CONTENT_TYPE"),
        Some("application/json"),
    )?;
    eq("HTTP_CONTENT_TYPE", echo.var("HTTP_CONTENT_TYPE"), None)
}

fn hdr_content_length(cx: &Ctx<'_>) -> Outcome {
    let echo = cx.echo(&WireRequest::post("/", "12345"))?;
    eq("CONTENT_LENGTH", echo.var("CONTENT_LENGTH"), Some("5"))?;
    eq("HTTP_CONTENT_LENGTH", echo.var("HTTP_CONTENT_LENGTH"), None)
}

fn hdr_no_content_headers(cx: &Ctx<'_>) -> Outcome {
    let echo = cx.echo(&WireRequest::get("/"))?;
    for name in ["CONTENT_TYPE", "CONTENT_LENGTH"] {
        let value = echo.var(name);
        check(value.is_none() || value == Some(""), || {
            format!("{name} is {value:?} for a request without that header")
        })?;
    }
    Ok(())
}

fn hdr_host(cx: &Ctx<'_>) -> Outcome {
    let request = WireRequest::get("/")
        .without_header("Host")
        .header("Host", "example.test:8080");
    let echo = cx.echo(&request)?;
    eq(
        "HTTP_HOST",
        echo.var("HTTP_HOST"),
        Some("example.test:8080"),
    )?;
    eq("SERVER_NAME", echo.var("SERVER_NAME"), Some("example.test"))
}

fn hdr_proxy(cx: &Ctx<'_>) -> Outcome {
    let echo = cx.echo(&WireRequest::get("/").header("Proxy", "http://evil.test:1"))?;
    eq("HTTP_PROXY", echo.var("HTTP_PROXY"), None)
}

/// The same request through a front end that does not defend itself: the client sends the
/// `HTTP_PROXY` variable (what `fastcgi_params` makes of a `Proxy` header).
fn hdr_proxy_var(cx: &Ctx<'_>) -> Outcome {
    hdr_proxy(cx)
}

fn hdr_large(cx: &Ctx<'_>) -> Outcome {
    let value = "v".repeat(6000);
    let echo = cx.echo(&WireRequest::get("/").header("X-Large", value.clone()))?;
    eq(
        "HTTP_X_LARGE length",
        echo.var("HTTP_X_LARGE").map(str::len),
        Some(6000),
    )
}

fn hdr_many(cx: &Ctx<'_>) -> Outcome {
    let mut request = WireRequest::get("/");
    for i in 0..60 {
        request = request.header(&format!("X-H{i}"), format!("{i}"));
    }
    let echo = cx.echo(&request)?;
    for i in 0..60 {
        eq(
            &format!("HTTP_X_H{i}"),
            echo.var(&format!("HTTP_X_H{i}")),
            Some(&*i.to_string()),
        )?;
    }
    Ok(())
}

// ----- response heads -----

fn resp_json(cx: &Ctx<'_>) -> Outcome {
    let echo = cx.echo(&WireRequest::get("/"))?;
    eq(
        "Content-Type",
        echo.reply.header("content-type"),
        Some("application/json"),
    )?;
    eq(
        "Content-Length",
        echo.reply.header("content-length").map(str::to_owned),
        Some(echo.reply.body.len().to_string()),
    )
}

fn resp_repeated(cx: &Ctx<'_>) -> Outcome {
    let reply = cx.send(&WireRequest::get(
        "/headers?x-rep=1&x-rep=2&set-cookie=a%3D1&set-cookie=b%3D2",
    ))?;
    eq(
        "x-rep",
        reply.header_all("x-rep"),
        vec!["1".to_owned(), "2".to_owned()],
    )?;
    eq(
        "set-cookie",
        reply.header_all("set-cookie"),
        vec!["a=1".to_owned(), "b=2".to_owned()],
    )
}

fn resp_value(cx: &Ctx<'_>) -> Outcome {
    let reply = cx.send(&WireRequest::get("/headers?x-words=two%20words%2C%20three"))?;
    eq("x-words", reply.header("x-words"), Some("two words, three"))
}

fn status_of(cx: &Ctx<'_>, code: u16) -> Outcome {
    let reply = cx.send(&WireRequest::get(format!("/status/{code}")))?;
    eq("status", reply.status, code)?;
    let json = reply.json()?;
    eq(
        "PATH_INFO in the body",
        json["environ"]["PATH_INFO"].as_str(),
        Some(&*format!("/status/{code}")),
    )
}

fn status_201(cx: &Ctx<'_>) -> Outcome {
    status_of(cx, 201)
}

fn status_404(cx: &Ctx<'_>) -> Outcome {
    status_of(cx, 404)
}

fn status_503(cx: &Ctx<'_>) -> Outcome {
    status_of(cx, 503)
}

fn bodiless(cx: &Ctx<'_>, code: u16) -> Outcome {
    let request = WireRequest::get(format!("/status/{code}"));
    let reply = cx.send(&request)?;
    eq("status", reply.status, code)?;
    eq(
        "body",
        String::from_utf8_lossy(&reply.body).into_owned(),
        String::new(),
    )?;
    if cx.target.protocol() != Cgi {
        // A client ignores a body after such a head: look at the wire itself.
        let after = cx.raw_body_after_head(&request)?;
        check(after.is_empty(), || {
            format!("{} body bytes followed the head of a {code}", after.len())
        })?;
    }
    check(
        reply
            .header("content-length")
            .is_none_or(|l| l == "0" || code == 304),
        || {
            format!(
                "Content-Length {:?} on a {code}",
                reply.header("content-length")
            )
        },
    )
}

fn status_204(cx: &Ctx<'_>) -> Outcome {
    bodiless(cx, 204)
}

fn status_304(cx: &Ctx<'_>) -> Outcome {
    bodiless(cx, 304)
}

fn head_no_body(cx: &Ctx<'_>) -> Outcome {
    let get = cx.send(&WireRequest::get("/h"))?;
    let head = cx.send(&WireRequest::new("HEAD", "/h"))?;
    eq("status", head.status, 200)?;
    eq("body", head.body.len(), 0)?;
    check(
        cx.raw_body_after_head(&WireRequest::new("HEAD", "/h"))?
            .is_empty(),
        || "body bytes followed the head of a HEAD answer".into(),
    )?;
    // The length GET would get, give or take the variables that differ (the method's name,
    // the client's port): kept, not zeroed.
    let length = head
        .header("content-length")
        .and_then(|l| l.parse::<usize>().ok());
    check(
        length.is_none_or(|l| l.abs_diff(get.body.len()) <= 8),
        || {
            format!(
                "HEAD Content-Length {length:?} for a GET body of {}",
                get.body.len()
            )
        },
    )
}

// ----- request bodies -----

fn body_empty(cx: &Ctx<'_>) -> Outcome {
    body_echoed(cx, WireRequest::post("/b", Vec::new()), b"")
}

fn body_small(cx: &Ctx<'_>) -> Outcome {
    body_echoed(cx, WireRequest::post("/b", "hello"), b"hello")
}

fn body_binary(cx: &Ctx<'_>) -> Outcome {
    let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    body_echoed(cx, WireRequest::post("/b", all.clone()), &all)
}

fn body_64k(cx: &Ctx<'_>) -> Outcome {
    let data = pattern(64 * 1024);
    body_echoed(cx, WireRequest::post("/b", data.clone()), &data)
}

fn body_1m(cx: &Ctx<'_>) -> Outcome {
    let data = pattern(1024 * 1024);
    body_echoed(cx, WireRequest::new("PUT", "/b").body(data.clone()), &data)
}

fn body_past_length(cx: &Ctx<'_>) -> Outcome {
    // The app reads CONTENT_LENGTH bytes: a server must not hand it more.
    let mut connection = cx.http_connection()?;
    connection
        .send_raw(b"POST /b HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabcGET /next HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let first = connection.read_reply(false).map_err(|e| e.to_string())?;
    let json = first.json()?;
    eq("body_len", json["body_len"].as_u64(), Some(3))?;
    let second = connection.read_reply(false).map_err(|e| e.to_string())?;
    let json = second.json()?;
    eq(
        "the next request's PATH_INFO",
        json["environ"]["PATH_INFO"].as_str(),
        Some("/next"),
    )
}

fn chunked_body(cx: &Ctx<'_>) -> Outcome {
    let chunks: Vec<Vec<u8>> = pattern(100_000).chunks(7_000).map(<[u8]>::to_vec).collect();
    let data = chunks.concat();
    let echo = cx.echo(&WireRequest::new("POST", "/c").chunked(chunks))?;
    eq("body_len", echo.body_len(), Some(data.len() as u64))?;
    eq("body_sha256", echo.body_sha256(), Some(sha(&data)))?;
    let length = echo.var("CONTENT_LENGTH").unwrap_or("");
    check(
        length.is_empty() || length == data.len().to_string(),
        || {
            format!(
                "CONTENT_LENGTH {length:?} for a chunked body of {}",
                data.len()
            )
        },
    )
}

fn chunked_empty(cx: &Ctx<'_>) -> Outcome {
    body_echoed(cx, WireRequest::new("POST", "/c").chunked(Vec::new()), b"")
}

fn chunked_many_small(cx: &Ctx<'_>) -> Outcome {
    let chunks: Vec<Vec<u8>> = (0..1000).map(|i| vec![b'a' + (i % 26) as u8; 7]).collect();
    let data = chunks.concat();
    body_echoed(cx, WireRequest::new("POST", "/c").chunked(chunks), &data)
}

fn expect_continue(cx: &Ctx<'_>) -> Outcome {
    let mut connection = cx.http_connection()?;
    let body = b"continued body";
    let request = WireRequest::post("/e", body.to_vec()).header("Expect", "100-continue");
    connection
        .send_raw(&http::encode_head(&request))
        .map_err(|e| e.to_string())?;
    let early = connection
        .read_available(Duration::from_secs(3))
        .map_err(|e| e.to_string())?;
    check(early.starts_with(b"HTTP/1.1 100"), || {
        format!(
            "no 100 Continue within 3 s of the head (got {:?})",
            String::from_utf8_lossy(&early)
        )
    })?;
    connection.send_raw(body).map_err(|e| e.to_string())?;
    let reply = connection.read_reply(false).map_err(|e| e.to_string())?;
    eq("interim statuses", reply.interim.clone(), vec![100])?;
    eq(
        "body_len",
        reply.json()?["body_len"].as_u64(),
        Some(body.len() as u64),
    )
}

// ----- streaming -----

fn stream_chunks(cx: &Ctx<'_>) -> Outcome {
    let reply = cx.send(&WireRequest::get("/stream/5"))?;
    eq("status", reply.status, 200)?;
    eq("body", reply.body.clone(), vec![b'x'; 5000])
}

fn stream_http10(cx: &Ctx<'_>) -> Outcome {
    let reply = cx.send(&WireRequest::get("/stream/3").http10())?;
    eq("status", reply.status, 200)?;
    check(!reply.chunked, || {
        "a chunked answer to an HTTP/1.0 request".into()
    })?;
    eq("body", reply.body.clone(), vec![b'x'; 3000])
}

fn stream_unbuffered(cx: &Ctx<'_>) -> Outcome {
    let hooks = cx.hooks.ok_or("needs the suite's app in-process")?;
    let id = cx.unique("gate");
    let mut exchange = cx.raw_exchange(&WireRequest::get(format!("/__suite/gate/{id}")))?;
    let first = exchange.read_until(FIRST_CHUNK, Duration::from_secs(3));
    hooks.open(&id);
    check(first, || {
        "the first chunk did not arrive before the app produced the last (the server buffers)"
            .into()
    })?;
    check(
        exchange.read_until(LAST_CHUNK, Duration::from_secs(5)),
        || "the last chunk never arrived".into(),
    )
}

// ----- failures -----

fn fail_before_head(cx: &Ctx<'_>) -> Outcome {
    let reply = cx.send(&WireRequest::get("/__suite/fail-before"))?;
    eq("status", reply.status, 500)
}

fn fail_after_head(cx: &Ctx<'_>) -> Outcome {
    match cx.target.protocol() {
        FastCgi => {
            let (reply, outcome) = cx.fastcgi_exchange(&WireRequest::get("/__suite/fail-after"))?;
            let cut = outcome.app_status != 0 || !outcome.stdout_closed;
            check(cut, || {
                format!(
                    "the answer ended as a complete one (app status 0, body {:?})",
                    String::from_utf8_lossy(&reply.body)
                )
            })
        }
        Cgi => {
            let run = cx.cgi_run(&WireRequest::get("/__suite/fail-after"))?;
            check(run.exit_code != Some(0), || {
                "the CGI program exited 0 after a failed response".into()
            })
        }
        // The connection ends within moments (not at a timeout), and what came of the answer
        // is shown by its framing to be cut short. Nothing at all may come: a server that had
        // the head and the first chunk still in its buffer when the failure came (hyper)
        // drops them with the connection, which the client sees as a failure all the same.
        _ => {
            let mut exchange = cx.raw_exchange(&WireRequest::get("/__suite/fail-after"))?;
            check(exchange.read_to_close(Duration::from_secs(5)), || {
                "the connection stayed open after the app failed".into()
            })?;
            match exchange.seen.is_empty() {
                true => Ok(()),
                false => cut_short(&exchange.seen),
            }
        }
    }
}

/// Whether a raw HTTP/1.1 answer (head and body) is shown by its framing to be incomplete: a
/// chunked body without its last chunk, or a body shorter than its `Content-Length`. A body
/// delimited by the end of the connection cannot show it.
fn cut_short(raw: &[u8]) -> Outcome {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no whole head")?;
    let (head, body) = (&raw[..end], &raw[end + 4..]);
    let head = String::from_utf8_lossy(head).to_ascii_lowercase();
    check(head.starts_with("http/1.1 200"), || {
        format!("the head was not the app's 200: {head:?}")
    })?;
    let field = |name: &str| {
        head.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':').map(str::trim))
            .map(str::to_owned)
    };
    if field("transfer-encoding").is_some_and(|te| te.ends_with("chunked")) {
        return check(!body.ends_with(b"0\r\n\r\n"), || {
            "the chunked body ended with its last chunk: the answer looks complete".into()
        });
    }
    match field("content-length").and_then(|n| n.parse::<usize>().ok()) {
        Some(length) => check(body.len() < length, || {
            format!("all {length} bytes of the body came: the answer looks complete")
        }),
        None => Err(
            "the body is delimited by the connection's end: a client cannot tell the \
                     failure from a complete answer"
                .into(),
        ),
    }
}

fn disconnect_closes_body(cx: &Ctx<'_>) -> Outcome {
    let hooks = cx.hooks.ok_or("needs the suite's app in-process")?;
    let id = cx.unique("hold");
    let mut exchange = cx.raw_exchange(&WireRequest::get(format!("/__suite/hold/{id}")))?;
    check(
        exchange.read_until(FIRST_CHUNK, Duration::from_secs(5)),
        || "the first chunk never arrived".into(),
    )?;
    drop(exchange);
    check(hooks.closed_within(&id, Duration::from_secs(3)), || {
        "the app's body was not closed within 3 s of the client leaving".into()
    })
}

// ----- connections -----

fn ka_sequence(cx: &Ctx<'_>) -> Outcome {
    let mut connection = cx.http_connection()?;
    for i in 0..5 {
        let reply = connection
            .exchange(&WireRequest::get(format!("/ka/{i}")))
            .map_err(|e| format!("request {i} on the kept-alive connection: {e}"))?;
        eq(
            "PATH_INFO",
            reply.json()?["environ"]["PATH_INFO"].as_str(),
            Some(&*format!("/ka/{i}")),
        )?;
    }
    Ok(())
}

fn ka_pipelined(cx: &Ctx<'_>) -> Outcome {
    let mut connection = cx.http_connection()?;
    let mut wire = Vec::new();
    for i in 0..3 {
        wire.extend(http::encode_head(&WireRequest::get(format!("/pipe/{i}"))));
    }
    connection.send_raw(&wire).map_err(|e| e.to_string())?;
    for i in 0..3 {
        let reply = connection
            .read_reply(false)
            .map_err(|e| format!("answer {i}: {e}"))?;
        eq(
            "PATH_INFO",
            reply.json()?["environ"]["PATH_INFO"].as_str(),
            Some(&*format!("/pipe/{i}")),
        )?;
    }
    Ok(())
}

fn ka_close(cx: &Ctx<'_>) -> Outcome {
    let mut connection = cx.http_connection()?;
    let reply = connection
        .exchange(&WireRequest::get("/c").header("Connection", "close"))
        .map_err(|e| e.to_string())?;
    eq("status", reply.status, 200)?;
    check(connection.closed_within(Duration::from_secs(3)), || {
        "the connection stayed open after Connection: close".into()
    })
}

fn ka_http10(cx: &Ctx<'_>) -> Outcome {
    let mut connection = cx.http_connection()?;
    let reply = connection
        .exchange(&WireRequest::get("/old").http10())
        .map_err(|e| e.to_string())?;
    eq("status", reply.status, 200)?;
    eq(
        "SERVER_PROTOCOL",
        reply.json()?["environ"]["SERVER_PROTOCOL"].as_str(),
        Some("HTTP/1.0"),
    )?;
    check(connection.closed_within(Duration::from_secs(3)), || {
        "the connection stayed open after an HTTP/1.0 request without keep-alive".into()
    })
}

fn concurrent(cx: &Ctx<'_>) -> Outcome {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                scope.spawn(move || {
                    let body = format!("request number {i}").into_bytes();
                    let echo = cx.echo(&WireRequest::post(format!("/conc/{i}"), body.clone()))?;
                    eq(
                        "PATH_INFO",
                        echo.var("PATH_INFO"),
                        Some(&*format!("/conc/{i}")),
                    )?;
                    eq("body_sha256", echo.body_sha256(), Some(sha(&body)))
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err("a client thread panicked".into()))
        })
    })
}

// ----- limits and bad requests -----

fn limit_head(cx: &Ctx<'_>) -> Outcome {
    let reply = cx.send(&WireRequest::get("/").header("X-Huge", "h".repeat(200 * 1024)));
    match reply {
        Ok(reply) => eq("status", reply.status, 431),
        Err(error) => Err(format!("no answer to a 200 KiB header ({error}): want 431")),
    }
}

fn limit_bad_request(cx: &Ctx<'_>) -> Outcome {
    let mut connection = cx.http_connection()?;
    connection
        .send_raw(b"THIS IS NOT HTTP\r\n\r\n")
        .map_err(|e| e.to_string())?;
    match connection.read_reply(false) {
        Ok(reply) => eq("status", reply.status, 400),
        Err(error) => Err(format!(
            "no answer to a malformed request ({error}): want 400"
        )),
    }
}

fn limit_body(cx: &Ctx<'_>) -> Outcome {
    let limit = cx.limits.max_body.ok_or("needs the server's body limit")?;
    let data = pattern(usize::try_from(limit).unwrap_or(usize::MAX / 2) + 1);
    let reply = cx.send(&WireRequest::post("/big", data))?;
    eq("status", reply.status, 413)
}

// ----- FastCGI -----

fn fcgi_connection(cx: &Ctx<'_>) -> Result<fastcgi::Connection, String> {
    fastcgi::Connection::connect(cx.target.address()).map_err(|e| format!("connect: {e}"))
}

fn fcgi_get_values(cx: &Ctx<'_>) -> Outcome {
    let mut connection = fcgi_connection(cx)?;
    let values = connection
        .get_values(&["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"])
        .map_err(|e| e.to_string())?;
    let names: Vec<&str> = values.iter().map(|(n, _)| n.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    eq(
        "names",
        sorted,
        vec!["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"],
    )?;
    for (name, value) in &values {
        check(value.parse::<u64>().is_ok(), || {
            format!("{name} = {value:?} is not a number")
        })?;
    }
    Ok(())
}

fn fcgi_get_values_subset(cx: &Ctx<'_>) -> Outcome {
    let mut connection = fcgi_connection(cx)?;
    let values = connection
        .get_values(&["FCGI_MPXS_CONNS", "FCGI_NO_SUCH_VALUE"])
        .map_err(|e| e.to_string())?;
    let names: Vec<&str> = values.iter().map(|(n, _)| n.as_str()).collect();
    eq("names", names, vec!["FCGI_MPXS_CONNS"])
}

fn fcgi_unknown_type(cx: &Ctx<'_>) -> Outcome {
    let mut connection = fcgi_connection(cx)?;
    // A management record (request id 0) of type 99.
    connection
        .send_raw(&[1, 99, 0, 0, 0, 0, 0, 0])
        .map_err(|e| e.to_string())?;
    match connection.read_record().map_err(|e| e.to_string())? {
        Some(Record::UnknownType { record_type }) => eq("record_type", record_type, 99),
        other => Err(format!("want FCGI_UNKNOWN_TYPE, got {other:?}")),
    }
}

fn fcgi_keep_conn(cx: &Ctx<'_>) -> Outcome {
    let mut connection = fcgi_connection(cx)?;
    for i in 1..=3u16 {
        let vars = cx.vars(&WireRequest::get(format!("/kc/{i}")));
        connection
            .send_request(i, &vars, b"", true, 65535)
            .map_err(|e| e.to_string())?;
        let outcome = connection
            .read_until_end(i)
            .map_err(|e| format!("request {i}: {e}"))?;
        let reply = outcome.reply(false).map_err(|e| e.to_string())?;
        eq(
            "PATH_INFO",
            reply.json()?["environ"]["PATH_INFO"].as_str(),
            Some(&*format!("/kc/{i}")),
        )?;
    }
    check(
        !connection.closed_within(Duration::from_millis(300)),
        || "the connection closed although FCGI_KEEP_CONN was set".into(),
    )
}

fn fcgi_close_without_keep_conn(cx: &Ctx<'_>) -> Outcome {
    let mut connection = fcgi_connection(cx)?;
    let vars = cx.vars(&WireRequest::get("/nk"));
    connection
        .send_request(1, &vars, b"", false, 65535)
        .map_err(|e| e.to_string())?;
    connection.read_until_end(1).map_err(|e| e.to_string())?;
    check(connection.closed_within(Duration::from_secs(3)), || {
        "the connection stayed open without FCGI_KEEP_CONN".into()
    })
}

fn fcgi_multiplex(cx: &Ctx<'_>) -> Outcome {
    let mut connection = fcgi_connection(cx)?;
    let multiplexes = connection
        .get_values(&["FCGI_MPXS_CONNS"])
        .map_err(|e| e.to_string())?
        .first()
        .is_some_and(|(_, v)| v == "1");
    let (one, two) = (
        cx.vars(&WireRequest::get("/mpx/1")),
        cx.vars(&WireRequest::get("/mpx/2")),
    );
    // Interleaved: both begin, then the params of each, then the stdin of each.
    connection
        .begin(1, Role::Responder, true)
        .map_err(|e| e.to_string())?;
    connection
        .begin(2, Role::Responder, true)
        .map_err(|e| e.to_string())?;
    connection.params(2, &two, 40).map_err(|e| e.to_string())?;
    connection.params(1, &one, 40).map_err(|e| e.to_string())?;
    connection
        .stream_data(2, StreamKind::Stdin, b"", 1, true)
        .map_err(|e| e.to_string())?;
    connection
        .stream_data(1, StreamKind::Stdin, b"", 1, true)
        .map_err(|e| e.to_string())?;
    let second = connection.read_until_end(2).map_err(|e| e.to_string())?;
    let first = connection.read_until_end(1).map_err(|e| e.to_string())?;
    if multiplexes {
        for (id, outcome) in [(1, first), (2, second)] {
            let reply = outcome.reply(false).map_err(|e| e.to_string())?;
            eq(
                "PATH_INFO",
                reply.json()?["environ"]["PATH_INFO"].as_str(),
                Some(&*format!("/mpx/{id}")),
            )?;
        }
        Ok(())
    } else {
        // Without multiplexing the second request must be refused as such.
        eq(
            "the second request's status",
            second.protocol_status,
            ProtocolStatus::CantMpxConn,
        )
    }
}

fn fcgi_abort(cx: &Ctx<'_>) -> Outcome {
    let mut connection = fcgi_connection(cx)?;
    let vars = cx.vars(&WireRequest::post("/abort", vec![b'a'; 10]));
    connection
        .begin(1, Role::Responder, true)
        .map_err(|e| e.to_string())?;
    connection
        .params(1, &vars, 65535)
        .map_err(|e| e.to_string())?;
    connection.abort(1).map_err(|e| e.to_string())?;
    connection
        .read_until_end(1)
        .map(|_| ())
        .map_err(|e| format!("no FCGI_END_REQUEST after FCGI_ABORT_REQUEST: {e}"))
}

fn fcgi_unknown_role(cx: &Ctx<'_>) -> Outcome {
    let mut connection = fcgi_connection(cx)?;
    // FCGI_BEGIN_REQUEST with role 99, then empty params and stdin, as a web server sends them
    // (the specification does not say when an application must refuse the role).
    connection
        .send_raw(&[1, 1, 0, 1, 0, 8, 0, 0, 0, 99, 0, 0, 0, 0, 0, 0])
        .map_err(|e| e.to_string())?;
    // An application that refused at once may have closed: what it sent is still there.
    let _ = connection
        .stream_data(1, StreamKind::Params, b"", 1, true)
        .and_then(|()| connection.stream_data(1, StreamKind::Stdin, b"", 1, true));
    let outcome = connection.read_until_end(1).map_err(|e| e.to_string())?;
    eq(
        "protocol status",
        outcome.protocol_status,
        ProtocolStatus::UnknownRole,
    )
}

fn fcgi_split_records(cx: &Ctx<'_>) -> Outcome {
    let mut connection = fcgi_connection(cx)?;
    let body = pattern(3000);
    let vars = cx.vars(&WireRequest::post("/split?x=1", body.clone()).header("X-Split", "yes"));
    // Params in 7-byte records (pairs cut anywhere), stdin in 1-byte records.
    connection
        .begin(1, Role::Responder, false)
        .map_err(|e| e.to_string())?;
    connection.params(1, &vars, 7).map_err(|e| e.to_string())?;
    connection
        .stream_data(1, StreamKind::Stdin, &body, 1, true)
        .map_err(|e| e.to_string())?;
    let reply = connection
        .read_until_end(1)
        .and_then(|o| o.reply(false))
        .map_err(|e| e.to_string())?;
    let json = reply.json()?;
    eq(
        "HTTP_X_SPLIT",
        json["environ"]["HTTP_X_SPLIT"].as_str(),
        Some("yes"),
    )?;
    eq(
        "body_sha256",
        json["body_sha256"].as_str().map(str::to_owned),
        Some(sha(&body)),
    )
}

fn fcgi_status_line(cx: &Ctx<'_>) -> Outcome {
    let (reply, _) = cx.fastcgi_exchange(&WireRequest::get("/"))?;
    check(
        reply
            .first_line
            .to_ascii_lowercase()
            .starts_with("status: 200"),
        || {
            format!(
                "the answer starts with {:?}, not a Status: line",
                reply.first_line
            )
        },
    )
}

fn fcgi_stderr(cx: &Ctx<'_>) -> Outcome {
    let (_, outcome) = cx.fastcgi_exchange(&WireRequest::get("/__suite/errors"))?;
    let stderr = String::from_utf8_lossy(&outcome.stderr);
    check(stderr.contains(ERROR_LINE), || {
        format!("FCGI_STDERR had {stderr:?}, not the app's wsgi.errors line")
    })
}

/// Runs one request in `role` (params as for a GET, `data` as the FCGI_DATA stream of a
/// Filter) and returns the echo app's JSON.
fn fcgi_role(cx: &Ctx<'_>, role: Role, data: Option<&[u8]>) -> Result<serde_json::Value, String> {
    let mut connection = fcgi_connection(cx)?;
    let mut vars = cx.vars(&WireRequest::get("/role"));
    if let Some(data) = data {
        vars.push(("FCGI_DATA_LENGTH".into(), data.len().to_string().into()));
        vars.push(("FCGI_DATA_LAST_MOD".into(), "1700000000".into()));
    }
    let io = |r: std::io::Result<()>| r.map_err(|e| e.to_string());
    io(connection.begin(1, role, false))?;
    io(connection.params(1, &vars, 65535))?;
    io(connection.stream_data(1, StreamKind::Stdin, b"", 1, true))?;
    if let Some(data) = data {
        io(connection.stream_data(1, StreamKind::Data, data, 100, true))?;
    }
    let outcome = connection.read_until_end(1).map_err(|e| e.to_string())?;
    eq(
        "protocol status",
        outcome.protocol_status,
        ProtocolStatus::RequestComplete,
    )?;
    let reply = outcome.reply(false).map_err(|e| e.to_string())?;
    eq("status", reply.status, 200)?;
    reply.json()
}

fn fcgi_authorizer(cx: &Ctx<'_>) -> Outcome {
    let json = fcgi_role(cx, Role::Authorizer, None)?;
    eq(
        "FCGI_ROLE",
        json["environ"]["FCGI_ROLE"].as_str(),
        Some("AUTHORIZER"),
    )
}

fn fcgi_filter(cx: &Ctx<'_>) -> Outcome {
    let json = fcgi_role(cx, Role::Filter, Some(&pattern(1000)))?;
    eq(
        "FCGI_ROLE",
        json["environ"]["FCGI_ROLE"].as_str(),
        Some("FILTER"),
    )?;
    eq(
        "FCGI_DATA_LENGTH",
        json["environ"]["FCGI_DATA_LENGTH"].as_str(),
        Some("1000"),
    )
}

// ----- uwsgi -----

fn uwsgi_ping(cx: &Ctx<'_>) -> Outcome {
    let header = uwsgi::ping(cx.target.address()).map_err(|e| e.to_string())?;
    let header = header.ok_or("no answer to the ping")?;
    eq("modifier1", header.modifier1, 100)?;
    eq("datasize", header.datasize, 0)
}

fn uwsgi_status_line(cx: &Ctx<'_>) -> Outcome {
    let reply = cx.send(&WireRequest::get("/"))?;
    check(reply.first_line.starts_with("HTTP/1."), || {
        format!(
            "the answer starts with {:?}, not an HTTP status line",
            reply.first_line
        )
    })
}

// ----- CGI -----

fn cgi_exit_code(cx: &Ctx<'_>) -> Outcome {
    let run = cx.cgi_run(&WireRequest::get("/"))?;
    eq("exit code", run.exit_code, Some(0))?;
    eq("status", run.reply.map_err(|e| e.to_string())?.status, 200)
}

fn cgi_reads_only_content_length(cx: &Ctx<'_>) -> Outcome {
    let run = cx.cgi_run_with_extra(&WireRequest::post("/", "abc"), b"MORE BYTES")?;
    let reply = run.reply.map_err(|e| e.to_string())?;
    eq("body_len", reply.json()?["body_len"].as_u64(), Some(3))
}

fn cgi_status_line(cx: &Ctx<'_>) -> Outcome {
    let run = cx.cgi_run(&WireRequest::get("/status/404"))?;
    let reply = run.reply.map_err(|e| e.to_string())?;
    eq("status", reply.status, 404)?;
    check(
        reply
            .first_line
            .to_ascii_lowercase()
            .starts_with("status: 404"),
        || {
            format!(
                "the answer starts with {:?}, not a Status: line",
                reply.first_line
            )
        },
    )
}

/// Every case, in the order they run.
pub(super) const CASES: &[Case] = &[
    Case::new(
        "env-required",
        "REQUEST_METHOD, SCRIPT_NAME, PATH_INFO, QUERY_STRING, SERVER_NAME, SERVER_PORT and SERVER_PROTOCOL are present; the method, name and port not empty",
        "rules 14-24 (PEP 3333 required variables)",
        &[],
        Needs::Echo,
        env_required,
    ),
    Case::new(
        "env-method",
        "REQUEST_METHOD is the method sent, for GET, DELETE, OPTIONS and PATCH",
        "rule 14",
        &[],
        Needs::Echo,
        env_method,
    ),
    Case::new(
        "env-protocol",
        "SERVER_PROTOCOL is the protocol of the request (HTTP/1.1)",
        "rule 24",
        &[],
        Needs::Echo,
        env_protocol,
    ),
    Case::new(
        "env-script-name",
        "SCRIPT_NAME is empty or starts with / and is never \"/\"; SCRIPT_NAME + PATH_INFO is the path",
        "rules 15-17",
        &[],
        Needs::Echo,
        env_script_name,
    ),
    Case::new(
        "env-url-scheme",
        "wsgi.url_scheme is http for a plain request",
        "rule 29",
        &[],
        Needs::Echo,
        env_url_scheme,
    ),
    Case::new(
        "env-remote-addr",
        "REMOTE_ADDR is an IP address",
        "RFC 3875 §4.1.8",
        &[],
        Needs::Echo,
        env_remote_addr,
    ),
    Case::new(
        "path-decoded",
        "PATH_INFO is percent-decoded (%20 and %2C)",
        "rule 19 (RFC 3875 §4.1.5)",
        &[],
        Needs::Echo,
        path_decoded,
    ),
    Case::new(
        "path-decoded-once",
        "PATH_INFO is decoded exactly once: %252c becomes %2c",
        "rule 19",
        &[],
        Needs::Echo,
        path_decoded_once,
    ),
    Case::new(
        "path-latin1",
        "a path byte that is not UTF-8 (%E9) reaches the app as one latin-1 code point",
        "rules 10, 19",
        &[],
        Needs::Echo,
        path_latin1,
    ),
    Case::new(
        "path-raw-target",
        "REQUEST_URI (or gunicorn's RAW_URI) is the request target as sent, not decoded",
        "rule 20",
        &[],
        Needs::Echo,
        path_raw_target,
    ),
    Case::new(
        "path-root",
        "a request for / has SCRIPT_NAME empty and PATH_INFO /",
        "rule 16",
        &[],
        Needs::Echo,
        path_root,
    ),
    Case::new(
        "query-empty",
        "QUERY_STRING is present and empty when there is no query",
        "rule 21",
        &[],
        Needs::Echo,
        query_empty,
    ),
    Case::new(
        "query-raw",
        "QUERY_STRING is the query as sent, not decoded",
        "RFC 3875 §4.1.7",
        &[],
        Needs::Echo,
        query_raw,
    ),
    Case::new(
        "query-question-mark",
        "the first ? splits path and query; later ones belong to the query",
        "RFC 3986 §3.4",
        &[],
        Needs::Echo,
        query_question_mark,
    ),
    Case::new(
        "hdr-passed",
        "a request header reaches the app as HTTP_* (upper case, - as _)",
        "rule 25",
        &[],
        Needs::Echo,
        hdr_passed,
    ),
    Case::new(
        "hdr-repeated",
        "a repeated request header reaches the app as one variable, values joined by commas",
        "rule 25 (RFC 9110 §5.3)",
        &[],
        Needs::Echo,
        hdr_repeated,
    ),
    Case::new(
        "hdr-underscore",
        "a header with _ in its name cannot pose as the dashed one",
        "rule 26",
        &[Http],
        Needs::Echo,
        hdr_underscore,
    ),
    Case::new(
        "hdr-content-type",
        "Content-Type becomes CONTENT_TYPE, never HTTP_CONTENT_TYPE",
        "rule 13",
        &[],
        Needs::Echo,
        hdr_content_type,
    ),
    Case::new(
        "hdr-content-length",
        "Content-Length becomes CONTENT_LENGTH, never HTTP_CONTENT_LENGTH",
        "rule 13",
        &[],
        Needs::Echo,
        hdr_content_length,
    ),
    Case::new(
        "hdr-no-content-headers",
        "CONTENT_TYPE and CONTENT_LENGTH are absent or empty when the request has neither header",
        "rule 22",
        &[],
        Needs::Echo,
        hdr_no_content_headers,
    ),
    Case::new(
        "hdr-host",
        "Host reaches the app as HTTP_HOST and gives SERVER_NAME",
        "PEP 3333 URL reconstruction; RFC 3875 §4.1.14",
        &[],
        Needs::Echo,
        hdr_host,
    ),
    Case::new(
        "hdr-proxy",
        "a Proxy request header never becomes HTTP_PROXY (httpoxy)",
        "CVE-2016-5385",
        &[Http],
        Needs::Echo,
        hdr_proxy,
    ),
    Case::new(
        "hdr-proxy-var",
        "an HTTP_PROXY variable from the front end is not passed on to the app (hardening: the front end should drop it, PEP 3333 and RFC 3875 do not ask the server to)",
        "CVE-2016-5385 (defence in depth)",
        &[FastCgi, Uwsgi, Cgi],
        Needs::Echo,
        hdr_proxy_var,
    ),
    Case::new(
        "hdr-large",
        "a 6,000-byte header value arrives whole",
        "RFC 9110 §5.4 (servers should take 8 KiB heads)",
        &[],
        Needs::Echo,
        hdr_large,
    ),
    Case::new(
        "hdr-many",
        "60 request headers all arrive",
        "RFC 9110 §5.4",
        &[],
        Needs::Echo,
        hdr_many,
    ),
    Case::new(
        "resp-json",
        "the app's Content-Type and Content-Length reach the client as set",
        "rules 46, 61",
        &[],
        Needs::Echo,
        resp_json,
    ),
    Case::new(
        "resp-repeated",
        "repeated response headers (Set-Cookie) go out as separate lines, in order",
        "rule 47",
        &[],
        Needs::Echo,
        resp_repeated,
    ),
    Case::new(
        "resp-value",
        "a response header value with spaces and commas arrives unchanged",
        "rule 43",
        &[],
        Needs::Echo,
        resp_value,
    ),
    Case::new(
        "status-201",
        "the app's status 201 reaches the client with its body",
        "rule 40",
        &[],
        Needs::Echo,
        status_201,
    ),
    Case::new(
        "status-404",
        "the app's status 404 reaches the client with its body",
        "rule 40",
        &[],
        Needs::Echo,
        status_404,
    ),
    Case::new(
        "status-503",
        "the app's status 503 reaches the client with its body",
        "rule 40",
        &[],
        Needs::Echo,
        status_503,
    ),
    Case::new(
        "status-204",
        "a 204 answer has no body",
        "rule 65 (RFC 9110 §15.3.5)",
        &[],
        Needs::Echo,
        status_204,
    ),
    Case::new(
        "status-304",
        "a 304 answer has no body",
        "rule 65 (RFC 9110 §15.4.5)",
        &[],
        Needs::Echo,
        status_304,
    ),
    Case::new(
        "head-no-body",
        "a HEAD answer has no body on the wire and keeps the length GET would get",
        "rule 64 (RFC 9110 §9.3.2)",
        &[Http, FastCgi, Uwsgi],
        Needs::Echo,
        head_no_body,
    ),
    Case::new(
        "body-empty",
        "an empty body with Content-Length 0 reads as empty",
        "rule 35",
        &[],
        Needs::Echo,
        body_empty,
    ),
    Case::new(
        "body-small",
        "a 5-byte body arrives whole",
        "rule 34",
        &[],
        Needs::Echo,
        body_small,
    ),
    Case::new(
        "body-binary",
        "every byte value arrives unchanged",
        "rule 59",
        &[],
        Needs::Echo,
        body_binary,
    ),
    Case::new(
        "body-64k",
        "a 64 KiB body arrives whole",
        "rule 34",
        &[],
        Needs::Echo,
        body_64k,
    ),
    Case::new(
        "body-1m",
        "a 1 MiB PUT body arrives whole",
        "rule 34",
        &[],
        Needs::Echo,
        body_1m,
    ),
    Case::new(
        "body-past-length",
        "the app gets CONTENT_LENGTH bytes and the next request on the connection is not eaten",
        "rule 35",
        &[Http],
        Needs::Echo,
        body_past_length,
    ),
    Case::new(
        "chunked-body",
        "a body of unknown length (chunked) arrives whole; CONTENT_LENGTH absent or right",
        "rules 27, 33",
        &[Http, FastCgi, Uwsgi],
        Needs::Echo,
        chunked_body,
    ),
    Case::new(
        "chunked-empty",
        "a chunked body with no data reads as empty",
        "rule 33",
        &[Http, FastCgi, Uwsgi],
        Needs::Echo,
        chunked_empty,
    ),
    Case::new(
        "chunked-many-small",
        "1,000 chunks of 7 bytes arrive whole",
        "rule 33",
        &[Http, FastCgi, Uwsgi],
        Needs::Echo,
        chunked_many_small,
    ),
    Case::new(
        "expect-continue",
        "Expect: 100-continue gets 100 Continue before the body is sent, then the answer",
        "rule 39 (RFC 9110 §10.1.1)",
        &[Http],
        Needs::Echo,
        expect_continue,
    ),
    Case::new(
        "stream-chunks",
        "a streamed answer of unknown length arrives whole",
        "rule 62",
        &[],
        Needs::Echo,
        stream_chunks,
    ),
    Case::new(
        "stream-http10",
        "a streamed answer to HTTP/1.0 is not chunked (it ends with the connection)",
        "RFC 9112 §7.1, rule 62",
        &[Http],
        Needs::Echo,
        stream_http10,
    ),
    Case::new(
        "stream-unbuffered",
        "the first chunk reaches the client before the app produces the last",
        "rule 60",
        &[Http, FastCgi, Uwsgi],
        Needs::InProcess,
        stream_unbuffered,
    ),
    Case::new(
        "fail-before-head",
        "an app that fails before its head gives 500",
        "rule 56",
        &[],
        Needs::SuiteApp,
        fail_before_head,
    ),
    Case::new(
        "fail-after-head",
        "an app that fails after its head gives a response cut short, not a complete one",
        "rule 56",
        &[Http, FastCgi, Cgi],
        Needs::SuiteApp,
        fail_after_head,
    ),
    Case::new(
        "disconnect-closes-body",
        "a client that leaves mid-answer gets the app's body closed",
        "rule 58",
        &[Http, FastCgi, Uwsgi],
        Needs::InProcess,
        disconnect_closes_body,
    ),
    Case::new(
        "ka-sequence",
        "five requests in turn on one kept-alive connection are all answered",
        "RFC 9112 §9.3",
        &[Http],
        Needs::Echo,
        ka_sequence,
    ),
    Case::new(
        "ka-pipelined",
        "three pipelined requests get three answers, in order",
        "RFC 9112 §9.3.2",
        &[Http],
        Needs::Echo,
        ka_pipelined,
    ),
    Case::new(
        "ka-close",
        "Connection: close ends the connection after the answer",
        "RFC 9112 §9.6",
        &[Http],
        Needs::Echo,
        ka_close,
    ),
    Case::new(
        "ka-http10",
        "an HTTP/1.0 request without keep-alive ends the connection after the answer",
        "RFC 9112 §9.3",
        &[Http],
        Needs::Echo,
        ka_http10,
    ),
    Case::new(
        "concurrent",
        "eight concurrent requests each get their own answer",
        "rule 2",
        &[],
        Needs::Echo,
        concurrent,
    ),
    Case::new(
        "limit-head",
        "a 200 KiB request header gets 431",
        "RFC 6585 §5",
        &[Http],
        Needs::Echo,
        limit_head,
    ),
    Case::new(
        "limit-bad-request",
        "a malformed request line gets 400",
        "RFC 9112 §3",
        &[Http],
        Needs::Echo,
        limit_bad_request,
    ),
    Case::new(
        "limit-body",
        "a body over the server's limit gets 413",
        "RFC 9110 §15.5.14",
        &[Http, FastCgi, Uwsgi],
        Needs::BodyLimit,
        limit_body,
    ),
    Case::new(
        "fcgi-get-values",
        "FCGI_GET_VALUES is answered with exactly the three names asked, as numbers",
        "FastCGI 1.0 §4.1",
        &[FastCgi],
        Needs::Echo,
        fcgi_get_values,
    ),
    Case::new(
        "fcgi-get-values-subset",
        "FCGI_GET_VALUES answers only the names it knows of those asked",
        "FastCGI 1.0 §4.1",
        &[FastCgi],
        Needs::Echo,
        fcgi_get_values_subset,
    ),
    Case::new(
        "fcgi-unknown-type",
        "an unknown management record gets FCGI_UNKNOWN_TYPE naming its type",
        "FastCGI 1.0 §4.2",
        &[FastCgi],
        Needs::Echo,
        fcgi_unknown_type,
    ),
    Case::new(
        "fcgi-keep-conn",
        "with FCGI_KEEP_CONN three requests in turn share one connection, which stays open",
        "FastCGI 1.0 §5.1",
        &[FastCgi],
        Needs::Echo,
        fcgi_keep_conn,
    ),
    Case::new(
        "fcgi-close",
        "without FCGI_KEEP_CONN the application closes the connection after the request",
        "FastCGI 1.0 §5.1",
        &[FastCgi],
        Needs::Echo,
        fcgi_close_without_keep_conn,
    ),
    Case::new(
        "fcgi-multiplex",
        "two interleaved requests on one connection are both answered (or the second refused with FCGI_CANT_MPX_CONN when FCGI_MPXS_CONNS is 0)",
        "FastCGI 1.0 §3.3, §5.5",
        &[FastCgi],
        Needs::Echo,
        fcgi_multiplex,
    ),
    Case::new(
        "fcgi-abort",
        "FCGI_ABORT_REQUEST ends the request with FCGI_END_REQUEST",
        "FastCGI 1.0 §5.4",
        &[FastCgi],
        Needs::Echo,
        fcgi_abort,
    ),
    Case::new(
        "fcgi-unknown-role",
        "a request for an unknown role ends with FCGI_UNKNOWN_ROLE",
        "FastCGI 1.0 §5.5",
        &[FastCgi],
        Needs::Echo,
        fcgi_unknown_role,
    ),
    Case::new(
        "fcgi-split-records",
        "params cut in 7-byte records (inside pairs) and stdin in 1-byte records are put back together",
        "FastCGI 1.0 §3.3",
        &[FastCgi],
        Needs::Echo,
        fcgi_split_records,
    ),
    Case::new(
        "fcgi-status-line",
        "the answer starts with a Status: line",
        "protocols.md §1 (front ends expect it)",
        &[FastCgi],
        Needs::Echo,
        fcgi_status_line,
    ),
    Case::new(
        "fcgi-stderr",
        "wsgi.errors goes out as FCGI_STDERR",
        "FastCGI 1.0 §5.3",
        &[FastCgi],
        Needs::SuiteApp,
        fcgi_stderr,
    ),
    Case::new(
        "fcgi-authorizer",
        "an Authorizer request is run with FCGI_ROLE=AUTHORIZER and answered",
        "FastCGI 1.0 §6.3 (libfcgi's FCGI_ROLE)",
        &[FastCgi],
        Needs::AllRoles,
        fcgi_authorizer,
    ),
    Case::new(
        "fcgi-filter",
        "a Filter request with an FCGI_DATA stream is run with FCGI_ROLE=FILTER and its FCGI_DATA_LENGTH",
        "FastCGI 1.0 §6.4",
        &[FastCgi],
        Needs::AllRoles,
        fcgi_filter,
    ),
    Case::new(
        "uwsgi-ping",
        "a ping (modifier1 100) gets uWSGI's answer: modifier1 100, no data",
        "uWSGI protocol (uwsgi --ping)",
        &[Uwsgi],
        Needs::Echo,
        uwsgi_ping,
    ),
    Case::new(
        "uwsgi-status-line",
        "the answer starts with an HTTP status line",
        "uWSGI protocol (front ends parse HTTP)",
        &[Uwsgi],
        Needs::Echo,
        uwsgi_status_line,
    ),
    Case::new(
        "cgi-exit-code",
        "a CGI program that answered exits 0",
        "RFC 3875 §6",
        &[Cgi],
        Needs::Echo,
        cgi_exit_code,
    ),
    Case::new(
        "cgi-content-length",
        "a CGI program reads CONTENT_LENGTH bytes of stdin and no more",
        "RFC 3875 §4.2",
        &[Cgi],
        Needs::Echo,
        cgi_reads_only_content_length,
    ),
    Case::new(
        "cgi-status-line",
        "a CGI answer starts with a Status: line with the app's status",
        "RFC 3875 §6.3.3",
        &[Cgi],
        Needs::Echo,
        cgi_status_line,
    ),
];
