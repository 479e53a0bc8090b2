//! Property tests of the contract: a request survives the trip through an environ, a generated
//! environ passes the validator's checks, and the driver never lets body bytes out before the
//! head and always drops the app's body.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use gateway_core::convert::{
    ServerContext, environ_from_request, percent_decode, request_from_environ,
};
use gateway_core::driver::{self, INTERNAL_ERROR_BODY};
use gateway_core::{Body, BoxError, Builder, Environ, ErrorStream, StartResponse};
use gateway_testkit::{Mode, Validator, strategies};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body::{Body as _, Frame};
use proptest::prelude::*;

fn joined(headers: &HeaderMap, name: &http::HeaderName) -> Vec<u8> {
    let separator: &[u8] = if name == http::header::COOKIE {
        b"; "
    } else {
        b", "
    };
    headers
        .get_all(name)
        .iter()
        .map(|v| v.as_bytes().to_vec())
        .collect::<Vec<_>>()
        .join(separator)
}

proptest! {
    #[test]
    fn a_request_survives_the_trip_through_an_environ(request in strategies::request()) {
        let (parts, body) = request.into_parts();
        let original = http::Request::from_parts(parts.clone(), http_body_util::Full::new(body));
        let environ = environ_from_request(original, &ServerContext::default());
        prop_assert_eq!(environ.request_method(), parts.method.as_str());
        prop_assert_eq!(&*environ.path(), &percent_decode(parts.uri.path().as_bytes())[..]);
        let back = request_from_environ(environ).unwrap();
        prop_assert_eq!(back.method(), &parts.method);
        prop_assert_eq!(
            percent_decode(back.uri().path().as_bytes()),
            percent_decode(parts.uri.path().as_bytes())
        );
        prop_assert_eq!(back.uri().query().unwrap_or(""), parts.uri.query().unwrap_or(""));
        for name in parts.headers.keys() {
            prop_assert_eq!(joined(back.headers(), name), joined(&parts.headers, name), "{}", name);
        }
    }
}

proptest! {
    #[test]
    fn generated_environs_pass_the_validators_environ_checks(mut environ in strategies::environ()) {
        let validator = Validator::new(Mode::Warn);
        let report = validator.report();
        let app = Builder::new().with(validator).app(|_: Environ, start: StartResponse| {
            let _ = start.start(StatusCode::NO_CONTENT, HeaderMap::new());
            Body::empty()
        });
        let script_name = environ.script_name().to_vec();
        environ.set_errors(ErrorStream::new(|_: &[u8]| {}));
        gateway_core::block_on(driver::call(&app, environ));
        let violations = report.violations();
        prop_assert!(
            violations.is_empty(),
            "SCRIPT_NAME {:?}: {:?}",
            String::from_utf8_lossy(&script_name),
            violations
        );
    }
}

/// What an arbitrary app does.
#[derive(Debug, Clone)]
struct Behaviour {
    /// Before which chunk the app starts (0: in the call); `None`: never.
    start_before: Option<usize>,
    chunks: Vec<Bytes>,
    status: StatusCode,
    declared: Option<usize>,
    /// At which chunk the body fails (an error, or a panic).
    fail_at: Option<(usize, bool)>,
    head: bool,
}

fn behaviour() -> impl Strategy<Value = Behaviour> {
    (
        proptest::option::of(0..4usize),
        proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..5).prop_map(Bytes::from),
            0..4,
        ),
        prop_oneof![Just(200u16), Just(204), Just(304), Just(404)],
        proptest::option::of(0..12usize),
        proptest::option::of((0..4usize, any::<bool>())),
        any::<bool>(),
    )
        .prop_map(
            |(start_before, chunks, status, declared, fail_at, head)| Behaviour {
                start_before,
                chunks,
                status: StatusCode::from_u16(status).unwrap(),
                declared,
                fail_at,
                head,
            },
        )
}

/// The app's body: yields the chunks, starting and failing where the behaviour says; records
/// the bytes it yielded before the start and its drop.
struct Scripted {
    behaviour: Behaviour,
    next: usize,
    start: Option<StartResponse>,
    before_start: Arc<Mutex<Vec<u8>>>,
    dropped: Arc<AtomicBool>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

impl Scripted {
    fn start_now(&mut self) {
        if let Some(start) = self.start.take() {
            let mut headers = HeaderMap::new();
            if let Some(declared) = self.behaviour.declared {
                headers.insert("content-length", HeaderValue::from(declared));
            }
            let _ = start.start(self.behaviour.status, headers);
        }
    }
}

impl http_body::Body for Scripted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let i = self.next;
        self.next += 1;
        if self.behaviour.start_before == Some(i) {
            self.start_now();
        }
        if let Some((at, panics)) = self.behaviour.fail_at
            && at == i
        {
            assert!(!panics, "scripted panic");
            return Poll::Ready(Some(Err("scripted failure".into())));
        }
        let Some(chunk) = self.behaviour.chunks.get(i).cloned() else {
            return Poll::Ready(None);
        };
        if self.start.is_some() {
            self.before_start.lock().unwrap().extend_from_slice(&chunk);
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
}

proptest! {
    #[test]
    fn the_driver_sends_no_byte_before_the_head_and_always_drops_the_body(b in behaviour()) {
        let before_start = Arc::new(Mutex::new(Vec::new()));
        let dropped = Arc::new(AtomicBool::new(false));
        let script = Mutex::new(Some((b.clone(), before_start.clone(), dropped.clone())));
        let app = move |_: Environ, start: StartResponse| {
            let (behaviour, before_start, dropped) = script.lock().unwrap().take().unwrap();
            let mut body = Scripted { behaviour, next: 0, start: Some(start), before_start, dropped };
            if body.behaviour.start_before == Some(0) {
                body.start_now();
                body.behaviour.start_before = None;
            }
            Body::new(body)
        };
        let mut environ = Environ::new();
        environ.set("REQUEST_METHOD", if b.head { "HEAD" } else { "GET" });
        environ.set_errors(gateway_core::ErrorStream::new(|_: &[u8]| {}));
        let response = gateway_core::block_on(driver::call(&app, environ));
        let status = response.status();
        let failed_before_head = response.extensions().get::<Arc<gateway_core::Error>>().is_some();
        let mut body = response.into_body();
        let mut out = Vec::new();
        let mut aborted = false;
        while let Some(frame) = gateway_core::block_on(std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))) {
            match frame {
                Ok(frame) => {
                    let data = frame.into_data().unwrap_or_default();
                    prop_assert!(!data.is_empty(), "no empty frames");
                    out.extend_from_slice(&data);
                }
                Err(_) => { aborted = true; break; }
            }
        }
        drop(body);
        prop_assert!(dropped.load(Ordering::SeqCst), "the app's body was dropped");

        let early = before_start.lock().unwrap().clone();
        if !early.is_empty() {
            // Data before the start: a 500, and none of those bytes went out.
            prop_assert!(failed_before_head);
            prop_assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        }
        if failed_before_head {
            let expected: &[u8] = if b.head { b"" } else { INTERNAL_ERROR_BODY.as_bytes() };
            prop_assert_eq!(&out[..], expected);
            return Ok(());
        }
        prop_assert_eq!(status, b.status);
        let all: Vec<u8> = b.chunks.concat();
        if b.head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            prop_assert!(out.is_empty());
        } else {
            prop_assert!(all.starts_with(&out), "the output is the body, in order");
            if let Some(declared) = b.declared {
                prop_assert!(out.len() <= declared);
                if out.len() < declared {
                    prop_assert!(aborted, "a short body ends in an error");
                }
            }
        }
    }
}

/// The wire strategies, as an adapter author would use them: this project's decoders give
/// back what was encoded whatever the split, and never panic on corrupted bytes.
mod wire {
    use bytes::BytesMut;
    use gateway_servers::fastcgi::codec::{self, Pairs, Record, StreamKind};
    use gateway_servers::uwsgi::codec as uwsgi;
    use gateway_testkit::strategies::wire;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fastcgi_requests_decode_whatever_the_split(
            (request, pieces) in wire::fastcgi_request()
                .prop_flat_map(|r| (Just(r.clone()), wire::split(r.wire.clone())))
        ) {
            let mut buf = BytesMut::new();
            let mut records = Vec::new();
            for piece in pieces {
                buf.extend_from_slice(&piece);
                while let Some(record) = codec::decode_record(&mut buf).unwrap() {
                    records.push(record);
                }
            }
            prop_assert!(buf.is_empty());
            let mut params = Vec::new();
            let mut stdin = Vec::new();
            for record in &records[1..] {
                if let Record::Stream { request_id, kind, data } = record {
                    prop_assert_eq!(*request_id, request.request_id);
                    match kind {
                        StreamKind::Params => params.extend_from_slice(data),
                        StreamKind::Stdin => stdin.extend_from_slice(data),
                        _ => prop_assert!(false, "an unexpected stream"),
                    }
                }
            }
            let pairs: Vec<_> = Pairs::new(params.into()).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(pairs, request.params);
            prop_assert_eq!(&stdin[..], &request.stdin[..]);
            let begin = Record::BeginRequest {
                request_id: request.request_id,
                role: request.role,
                keep_conn: request.keep_conn,
            };
            prop_assert_eq!(&records[0], &begin);
        }

        #[test]
        fn corrupted_fastcgi_bytes_are_an_error_or_records_never_a_panic(
            bytes in wire::fastcgi_request().prop_flat_map(|r| wire::corrupted(r.wire))
        ) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(record)) = codec::decode_record(&mut buf) {
                if let Record::Stream { kind: StreamKind::Params, data, .. } = record {
                    let _ = Pairs::new(data).count();
                }
            }
        }

        #[test]
        fn uwsgi_packets_decode_whatever_the_split(
            (packet, pieces) in wire::uwsgi_packet()
                .prop_flat_map(|p| (Just(p.clone()), wire::split(p.wire.clone())))
        ) {
            let mut buf = BytesMut::new();
            let mut decoded = None;
            for piece in pieces {
                buf.extend_from_slice(&piece);
                if decoded.is_none() {
                    decoded = uwsgi::decode_packet(&mut buf, uwsgi::MAX_VARS_SIZE).unwrap();
                }
            }
            let decoded = decoded.expect("a whole packet");
            let vars: Vec<_> = decoded.vars().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(vars, packet.vars);
            prop_assert_eq!(&buf[..], &packet.body[..]);
        }

        #[test]
        fn corrupted_uwsgi_bytes_never_panic(
            bytes in wire::uwsgi_packet().prop_flat_map(|p| wire::corrupted(p.wire))
        ) {
            let mut buf = BytesMut::from(&bytes[..]);
            if let Ok(Some(packet)) = uwsgi::decode_packet(&mut buf, uwsgi::MAX_VARS_SIZE) {
                let _ = packet.vars().count();
            }
        }
    }
}
