//! `balancer`: spreads requests over backend servers, forwarding each over HTTP, FastCGI or
//! uwsgi, served on whatever interface the launcher's flags say.
//!
//! ```text
//! balancer [launcher flags] --backend URL --backend URL ... \
//!     [--strategy round-robin|weighted|least|hash:HEADER] [--health PATH]
//! ```
//!
//! A URL is `http://HOST:PORT`, `fastcgi://HOST:PORT` or `uwsgi://HOST:PORT`, with
//! `unix:/path` in place of `HOST:PORT` for a Unix socket, and an optional weight after it:
//! `http://127.0.0.1:8001,weight=3` (`;`, a space or `?` also separate it). Each response
//! names the backend that answered in `X-Backend` (`--backend-header` changes the name; an
//! empty one turns it off).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use gateway_middleware::balancer::{Balancer, MAX_WEIGHT, Strategy};
use gateway_middleware::remote::{BackendUrl, Remote};
use gateway_servers::LauncherArgs;
use http::HeaderName;

#[derive(Debug, Parser)]
#[command(about = "Spread requests over HTTP, FastCGI and uwsgi backends")]
struct Cli {
    #[command(flatten)]
    launcher: LauncherArgs,
    /// A backend: http://HOST:PORT, fastcgi://HOST:PORT or uwsgi://HOST:PORT (or unix:/path
    /// for HOST:PORT), optionally followed by ,weight=N. Repeat for each backend.
    #[arg(long = "backend", value_name = "URL", value_parser = parse_backend, required = true)]
    backends: Vec<(BackendUrl, u32)>,
    /// round-robin, weighted, least, hash:HEADER, hash:cookie:NAME or hash:client.
    #[arg(long, default_value = "round-robin")]
    strategy: Strategy,
    /// Check each backend with GET PATH at every --health-interval.
    #[arg(long, value_name = "PATH")]
    health: Option<String>,
    /// Seconds between active health checks.
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    health_interval: f64,
    /// Failures in a row that eject a backend (0: never).
    #[arg(long, default_value_t = gateway_middleware::balancer::DEFAULT_MAX_FAILS)]
    max_fails: u32,
    /// Seconds an ejected backend stays out before a probe request.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    cool_down: f64,
    /// Most requests at once per backend (none by default).
    #[arg(long, value_name = "N")]
    max_per_backend: Option<usize>,
    /// Seconds to connect to a backend (then 504).
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    backend_connect_timeout: f64,
    /// Seconds a backend may take to answer, and between two reads of its body (then 504).
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    backend_timeout: f64,
    /// The response header that names the backend that answered ("" for none).
    #[arg(long, value_name = "NAME", default_value = "x-backend")]
    backend_header: String,
}

/// `URL[,weight=N]` (also `;`, ` ` or `?` before `weight=`).
fn parse_backend(text: &str) -> Result<(BackendUrl, u32), String> {
    let (url, weight) = match text.find("weight=") {
        Some(at) => {
            let weight = text[at + "weight=".len()..]
                .parse::<u32>()
                .ok()
                .filter(|weight| (1..=MAX_WEIGHT).contains(weight))
                .ok_or_else(|| {
                    format!("{text:?}: weight=N takes a whole number from 1 to {MAX_WEIGHT}")
                })?;
            let url = text[..at].trim_end_matches([',', ';', ' ', '?', '#', '/']);
            (url, weight)
        }
        None => (text, 1),
    };
    Ok((url.parse()?, weight))
}

fn seconds(value: f64, flag: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|_| format!("--{flag} must be a number of seconds"))
}

fn balancer(cli: &Cli) -> Result<Balancer, String> {
    let mut builder = Balancer::builder()
        .strategy(cli.strategy.clone())
        .max_fails(cli.max_fails)
        .cool_down(seconds(cli.cool_down, "cool-down")?);
    for (url, weight) in &cli.backends {
        let remote = Remote::builder(url.clone())
            .connect_timeout(seconds(
                cli.backend_connect_timeout,
                "backend-connect-timeout",
            )?)
            .response_timeout(seconds(cli.backend_timeout, "backend-timeout")?)
            .build();
        builder = builder.weighted_backend(url.to_string(), remote, *weight);
    }
    if let Some(path) = &cli.health {
        let interval = seconds(cli.health_interval, "health-interval")?;
        builder = builder.health_check(path.clone(), interval);
    }
    if let Some(max) = cli.max_per_backend {
        builder = builder.max_outstanding(max);
    }
    if !cli.backend_header.is_empty() {
        let name = HeaderName::try_from(cli.backend_header.as_str()).map_err(|_| {
            format!(
                "--backend-header: {:?} is not a header name",
                cli.backend_header
            )
        })?;
        builder = builder.backend_header(name);
    }
    Ok(builder.build())
}

fn main() -> ExitCode {
    let mut cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return gateway_servers::flag_error(&error),
    };
    let app = match balancer(&cli) {
        Ok(app) => app,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    // Forwarding waits on sockets, never on the thread: no need for the worker pool.
    cli.launcher.non_blocking = true;
    gateway_servers::run_with(app, cli.launcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_with_and_without_weights() {
        for (text, url, weight) in [
            ("http://127.0.0.1:8001", "http://127.0.0.1:8001", 1),
            ("http://127.0.0.1:8001,weight=3", "http://127.0.0.1:8001", 3),
            (
                "fastcgi://unix:/tmp/a.sock;weight=2",
                "fastcgi://unix:/tmp/a.sock",
                2,
            ),
            ("uwsgi://h:1 weight=5", "uwsgi://h:1", 5),
            ("http://h:1/?weight=4", "http://h:1", 4),
        ] {
            let (parsed, w) = parse_backend(text).unwrap();
            assert_eq!((parsed.to_string().as_str(), w), (url, weight), "{text}");
        }
        assert!(parse_backend("http://h:1,weight=x").is_err());
        assert!(parse_backend("gopher://h:1").is_err());
    }
}
