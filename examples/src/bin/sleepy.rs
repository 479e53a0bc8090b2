//! `sleepy`: an app that takes its time, to try the server's limits on: `/sleep/SECONDS`
//! blocks its thread that long in the app's own code (as a slow query would), then answers
//! `slept SECONDS s`; `/panic` panics in the app's code (a bug: the server answers that request
//! 500, logs the panic, and carries on); any other path answers `awake` at once. It shows
//! `--harakiri` killing a worker whose request runs too long, `--threads` running other
//! requests meanwhile, and `--shutdown-timeout` waiting for a request in progress. Same flags
//! as `hello`.

use std::time::Duration;

use gateway_core::{Body, Environ, StartResponse};
use http::{HeaderMap, StatusCode};

fn sleepy(environ: Environ, start: StartResponse) -> Body {
    if environ.path_info() == b"/panic" {
        panic!("sleepy was asked to panic");
    }
    let seconds = environ
        .path_info()
        .strip_prefix(b"/sleep/")
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse::<f64>().ok())
        .and_then(|s| Duration::try_from_secs_f64(s).ok());
    let answer = match seconds {
        Some(duration) => {
            std::thread::sleep(duration);
            format!("slept {} s\n", duration.as_secs_f64())
        }
        None => "awake\n".to_owned(),
    };
    match start.start(StatusCode::OK, HeaderMap::new()) {
        Ok(_) => Body::from(answer),
        Err(error) => Body::error(error),
    }
}

fn main() -> std::process::ExitCode {
    gateway_servers::run(sleepy)
}
