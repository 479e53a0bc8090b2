//! `gateway-conformance`: runs the conformance suite against a server.
//!
//! ```text
//! gateway-conformance (--http URL | --fastcgi ADDR | --uwsgi ADDR | --cgi PROGRAM | --builtin PROTOCOL)
//!     [--format table|markdown|json] [--only ID]... [--max-body BYTES] [--all-roles]
//!     [--wait SECONDS]
//!     [-- COMMAND ARGS...]
//! gateway-conformance --list
//! ```
//!
//! The server serves the echo app (`gateway_testkit::echo`, or an equivalent one). With a
//! command after `--`, the program starts it, waits for the address to accept connections,
//! runs the suite, stops it and then prints the report. It refuses to start the command when
//! something accepts connections at the address already (the suite would test that instead),
//! and fails (exit 2) when the command exits before the address accepts connections. `--builtin http`, `fastcgi` or `uwsgi` serves the suite's own
//! app on this project's server in this process, behind a strict validator: every case runs,
//! and a case also fails when the validator saw the server break a rule. `--builtin cgi` runs
//! this program as the CGI script (run as CGI, with `GATEWAY_INTERFACE` set, it serves the
//! suite's app), with no validator; every CGI case runs. `--all-roles` says the FastCGI
//! application plays every role, which the `fcgi-authorizer` and `fcgi-filter` cases need
//! (`--builtin fastcgi` sets it).
//!
//! The table and the Markdown report end with the number of cases skipped, then
//! `N passed, M failed`; the exit code is 0 when nothing failed, 1 otherwise, 2 on bad usage.

use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use gateway_testkit::conformance::{self, Builtin, Limits, Options, Protocol, Target};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Markdown,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BuiltinProtocol {
    Http,
    Fastcgi,
    Uwsgi,
    Cgi,
}

#[derive(Debug, Parser)]
#[command(
    name = "gateway-conformance",
    about = "Run the gateway conformance suite against a server serving the echo app"
)]
struct Cli {
    /// An HTTP server: http://HOST:PORT (or HOST:PORT).
    #[arg(long, value_name = "URL", group = "target")]
    http: Option<String>,
    /// A FastCGI application: HOST:PORT or unix:/path.
    #[arg(long, value_name = "ADDR", group = "target")]
    fastcgi: Option<String>,
    /// A uwsgi server: HOST:PORT or unix:/path.
    #[arg(long, value_name = "ADDR", group = "target")]
    uwsgi: Option<String>,
    /// A CGI program (arguments separated by spaces).
    #[arg(long, value_name = "PROGRAM", group = "target")]
    cgi: Option<String>,
    /// This project's own server for a protocol, serving the suite's app: in this process
    /// behind a validator (http, fastcgi, uwsgi), or this program run as CGI (cgi).
    #[arg(long, value_enum, value_name = "PROTOCOL", group = "target")]
    builtin: Option<BuiltinProtocol>,
    /// How to print the results.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Run only the cases whose id starts with this (repeatable).
    #[arg(long, value_name = "ID")]
    only: Vec<String>,
    /// The server's request body limit, in bytes (enables the limit-body case).
    #[arg(long, value_name = "BYTES")]
    max_body: Option<u64>,
    /// The FastCGI application plays every role (enables the Authorizer and Filter cases).
    #[arg(long)]
    all_roles: bool,
    /// How long to wait for the server to accept connections.
    #[arg(long, value_name = "SECONDS", default_value_t = 15.0)]
    wait: f64,
    /// List the cases and exit.
    #[arg(long)]
    list: bool,
    /// A command that starts the server (stopped when the run ends).
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// The server the program started, stopped when dropped.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `address` accepts connections, for `wait` at most, or until `started` (the
/// server the program started, if any) exits.
fn wait_for(address: &str, wait: Duration, started: Option<&mut Started>) -> Result<(), String> {
    let deadline = Instant::now() + wait;
    let mut started = started;
    while !accepts(address) {
        if let Some(Started(child)) = started.as_deref_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            return Err(format!(
                "the server's command exited ({status}) before {address} accepted connections"
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!("nothing accepts connections at {address}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Whether something accepts connections at `address` now.
fn accepts(address: &str) -> bool {
    gateway_testkit::clients::Stream::connect(address).is_ok()
}

fn main() -> ExitCode {
    if gateway_servers::is_cgi() {
        return gateway_servers::cgi::run(conformance::SuiteApp::new().0);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return gateway_servers::flag_error(&error),
    };
    if cli.list {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        for case in conformance::cases() {
            let protocols = if case.protocols.is_empty() {
                "all".to_owned()
            } else {
                case.protocols
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let line = format!("{}\t{}\t{}\t{}", case.id, protocols, case.rule, case.title);
            // A reader that stops early (`| head`) ends the list; it is not an error.
            if writeln!(out, "{line}").is_err() {
                break;
            }
        }
        return ExitCode::SUCCESS;
    }
    // A filter that selects nothing would end in "0 passed, 0 failed" and success.
    if let Some(unmatched) = cli.only.iter().find(|prefix| {
        !conformance::cases()
            .iter()
            .any(|c| c.id.starts_with(prefix.as_str()))
    }) {
        eprintln!("error: --only {unmatched:?} matches no case (--list lists them)");
        return ExitCode::from(2);
    }
    let builtin;
    let (target, mut options) = match (&cli.http, &cli.fastcgi, &cli.uwsgi, &cli.cgi, cli.builtin) {
        (Some(url), ..) => {
            let address = url.strip_prefix("http://").unwrap_or(url);
            (
                Target::Http(address.trim_end_matches('/').to_owned()),
                Options::default(),
            )
        }
        (_, Some(address), ..) => (Target::FastCgi(address.clone()), Options::default()),
        (_, _, Some(address), ..) => (Target::Uwsgi(address.clone()), Options::default()),
        (_, _, _, Some(program), _) => (
            Target::Cgi(program.split_whitespace().map(str::to_owned).collect()),
            Options::default(),
        ),
        (.., Some(protocol)) => {
            let protocol = match protocol {
                BuiltinProtocol::Http => Protocol::Http,
                BuiltinProtocol::Fastcgi => Protocol::FastCgi,
                BuiltinProtocol::Uwsgi => Protocol::Uwsgi,
                BuiltinProtocol::Cgi => Protocol::Cgi,
            };
            let myself = std::env::current_exe()
                .map(|path| vec![path.to_string_lossy().into_owned()])
                .ok();
            builtin = Builtin::start(protocol, myself);
            (builtin.target.clone(), builtin.options.clone())
        }
        _ => {
            eprintln!("error: give a server: --http, --fastcgi, --uwsgi, --cgi or --builtin");
            return ExitCode::from(2);
        }
    };
    options.only = cli.only.clone();
    options.all_roles |= cli.all_roles;
    if let Some(max_body) = cli.max_body {
        options.limits = Limits {
            max_body: Some(max_body),
        };
    }
    let listens = !matches!(target, Target::Cgi(_));
    if !cli.command.is_empty() && listens && accepts(target.address()) {
        eprintln!(
            "error: something accepts connections at {} already: stop it first, or leave out \
             the command to test it",
            target.address()
        );
        return ExitCode::from(2);
    }
    let mut started = match cli.command.split_first() {
        Some((program, args)) => match Command::new(program).args(args).spawn() {
            Ok(child) => Some(Started(child)),
            Err(error) => {
                eprintln!("error: cannot start {program}: {error}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    if listens {
        let wait = Duration::try_from_secs_f64(cli.wait).unwrap_or(Duration::from_secs(15));
        if let Err(message) = wait_for(target.address(), wait, started.as_mut()) {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    }
    let report = conformance::run(&target, &options);
    // Stopped before the report, so that what it logs as it stops comes before it.
    drop(started);
    match cli.format {
        Format::Table => print!("{}", report.table()),
        Format::Markdown => print!("{}", report.markdown()),
        Format::Json => println!("{}", report.json()),
    }
    if report.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
