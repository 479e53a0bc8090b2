//! The launcher: one call that serves an app on whatever interface the process finds itself in.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use gateway_core::App;

use crate::fastcgi::protocol::{Roles, Settings};
use crate::fastcgi::server::Options;
use crate::fastcgi::web_server_addrs::WebServerAddrs;
use crate::runtime::{
    Bind, BoundSocket, Config, Runtime, Shutdown, Supervision, inherited_fd0, run_master,
    run_master_with_stats, serve_as_worker, stats,
};

/// The launcher's flags. Example programs add their own with `#[command(flatten)]`:
///
/// ```
/// use clap::Parser;
/// use gateway_servers::LauncherArgs;
///
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     launcher: LauncherArgs,
///     /// A flag of the program's own.
///     #[arg(long)]
///     greeting: Option<String>,
/// }
///
/// let cli = Cli::parse_from(["prog", "--http", "127.0.0.1:9000", "--threads", "4", "--greeting", "hi"]);
/// assert_eq!(cli.launcher.threads, 4);
/// ```
#[derive(Debug, Clone, clap::Args)]
// The doc comment above is for rustdoc; without this, clap shows it as the program's help text.
#[command(about = None, long_about = None)]
#[non_exhaustive]
pub struct LauncherArgs {
    /// Serve HTTP on HOST:PORT, unix:PATH, fd:N or systemd (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub http: Vec<Bind>,
    /// Serve FastCGI on HOST:PORT, unix:PATH, fd:N or systemd. When the environment variable
    /// FCGI_WEB_SERVER_ADDRS is set (comma-separated IP addresses), TCP connections from any
    /// other address are closed at once.
    #[arg(long, value_name = "ADDR")]
    pub fastcgi: Option<Bind>,
    /// Serve the uwsgi protocol on HOST:PORT, unix:PATH, fd:N or systemd.
    #[arg(long, value_name = "ADDR")]
    pub uwsgi: Option<Bind>,
    /// Threads of the worker pool that runs the app.
    #[arg(long, default_value_t = Config::default().threads)]
    pub threads: usize,
    /// Connections open at once, over all the sockets served.
    #[arg(long, default_value_t = Config::default().max_connections)]
    pub max_connections: usize,
    /// Requests in progress at once, per process (more get 503). Not --max-requests, which
    /// recycles workers.
    #[arg(long, default_value_t = Config::default().max_requests)]
    pub max_concurrent_requests: usize,
    /// Largest request head in bytes (larger gets 431), for HTTP.
    #[arg(long, default_value_t = Config::default().max_head_size)]
    pub max_head_size: usize,
    /// Most request headers (more gets 431; at most 10000).
    #[arg(long, default_value_t = Config::default().max_headers, value_parser = parse_max_headers)]
    pub max_headers: usize,
    /// Largest request body in bytes (larger gets 413).
    #[arg(long, default_value_t = Config::default().max_body_size)]
    pub max_body_size: u64,
    /// Request bodies up to this many bytes, of a declared length, are read whole before the
    /// app is called (0: never; longer bodies stream to the app).
    #[arg(long, value_name = "BYTES", default_value_t = Config::default().body_buffer_size)]
    pub body_buffer_size: u64,
    /// Seconds a client may take to send a request head (then 408): the first of a connection
    /// from its start, a later one from its first byte.
    #[arg(long, value_name = "SECONDS", default_value_t = Config::default().header_read_timeout.as_secs_f64())]
    pub header_timeout: f64,
    /// Seconds a connection kept alive may wait for its next request (HTTP/1: for its first
    /// byte; FastCGI: a kept connection with no request); then it is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = Config::default().keep_alive_timeout.as_secs_f64())]
    pub keep_alive_timeout: f64,
    /// Seconds a client may go without sending body bytes the app waits for (then 408).
    #[arg(long, value_name = "SECONDS", default_value_t = Config::default().body_read_timeout.as_secs_f64())]
    pub body_timeout: f64,
    /// Seconds a response may wait for the client to take more of it (a client that stops
    /// reading); then the connection is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = Config::default().send_timeout.as_secs_f64())]
    pub send_timeout: f64,
    /// Seconds the server goes on reading a request body the app left unread, after the
    /// response, so that a client that sends the whole body first can read the answer (0: close
    /// at once).
    #[arg(long, value_name = "SECONDS", default_value_t = Config::default().linger_timeout.as_secs_f64())]
    pub linger_timeout: f64,
    /// Seconds shutdown waits for requests in progress.
    #[arg(long, value_name = "SECONDS", default_value_t = Config::default().shutdown_timeout.as_secs_f64())]
    pub shutdown_timeout: f64,
    /// FastCGI roles the app plays, comma-separated: responder, authorizer, filter (others
    /// are answered FCGI_UNKNOWN_ROLE).
    #[arg(long, value_name = "ROLES", default_value = "responder", value_parser = parse_roles)]
    pub fastcgi_roles: Roles,
    /// Serve one FastCGI request per connection at a time: FCGI_GET_VALUES reports
    /// FCGI_MPXS_CONNS=0, and a second request on a busy connection gets FCGI_CANT_MPX_CONN.
    #[arg(long)]
    pub fastcgi_no_multiplex: bool,
    /// The path prefix the app is mounted at behind a FastCGI front end that sends the whole
    /// path in SCRIPT_NAME (nginx's fastcgi_pass): a request under PREFIX gets SCRIPT_NAME=PREFIX
    /// and the rest as PATH_INFO.
    #[arg(long, value_name = "PREFIX", value_parser = parse_mount)]
    pub fastcgi_mount: Option<String>,
    /// Largest uwsgi vars block in bytes (larger gets 431); the protocol's own limit by
    /// default.
    #[arg(long, default_value_t = crate::uwsgi::codec::MAX_VARS_SIZE)]
    pub uwsgi_max_vars: usize,
    /// Seconds a FastCGI or uwsgi TCP connection may wait for its first bytes before the
    /// server accepts it (Linux's TCP_DEFER_ACCEPT, as nginx's `listen ... deferred`): a web
    /// server sends its request as soon as it connects, and a connection accepted with its
    /// request in hand saves a read and a wake-up. 0 accepts at once. HTTP listeners always
    /// accept at once (browsers open connections ahead of use).
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub defer_accept: f64,
    /// Permissions of Unix socket files, in octal (default 660: the owner and the group may
    /// connect).
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    pub socket_mode: Option<u32>,
    /// The app never blocks its thread (it waits inside its body, asynchronously): run it on
    /// the event loop instead of the worker pool.
    #[arg(long)]
    pub non_blocking: bool,
    /// Keep the event loop's threads under the default scheduling policy. By default they run
    /// under Linux's SCHED_BATCH: woken, they wait for the running thread to sleep or end its
    /// time slice rather than preempting it, so that a core shared with the worker pool or
    /// the front end hands work over in batches (same CPU share; a later wake-up while other
    /// programs keep every core busy).
    #[arg(long)]
    pub no_batch_scheduling: bool,
    /// Serve from N worker processes: a master process binds the sockets, forks N workers
    /// that serve on them, and replaces any that dies. Signals to the master: TERM stops
    /// gracefully, INT or QUIT at once, HUP reloads (new workers first, then the old ones
    /// finish their requests), TTIN and TTOU add and remove a worker. Without it, and without
    /// --max-requests, --harakiri and --max-rss, one process serves (no master).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub workers: Option<u32>,
    /// Recycle a worker once it has served N requests (plus a random 0 to
    /// --max-requests-jitter): it stops accepting, finishes its requests and exits, and the
    /// master starts another; 0 never. Starts a master (one worker unless --workers). The
    /// limit of requests in progress is --max-concurrent-requests.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_requests: u64,
    /// Up to this many more requests before a worker is recycled, chosen at random per worker
    /// (so that workers started together are not recycled together).
    #[arg(long, value_name = "J", default_value_t = 0)]
    pub max_requests_jitter: u64,
    /// Kill (SIGKILL) and replace a worker in which a request has run this long, logging the
    /// request's method and path; off by default. Counted from when a thread runs the app; the
    /// time it waits for the client (its request body, or taking the response) does not
    /// count (with --non-blocking, only the wait for the client to take the response is left
    /// out). Starts a master (one worker unless --workers).
    #[arg(long, value_name = "SECONDS")]
    pub harakiri: Option<f64>,
    /// Recycle a worker gracefully once its resident memory passes MB megabytes (checked
    /// every second); off by default. Starts a master (one worker unless --workers).
    #[arg(long, value_name = "MB")]
    pub max_rss: Option<u64>,
    /// Each connection to the --http sockets begins with a PROXY protocol header (versions 1
    /// and 2: HAProxy's send-proxy and send-proxy-v2, nginx's proxy_protocol), as a load
    /// balancer that relays TCP sends it: the client's address in it becomes REMOTE_ADDR and
    /// REMOTE_PORT. A connection without a valid one is closed. Only for sockets that nothing
    /// but the load balancer can reach: whoever connects may claim any address
    #[arg(long)]
    pub proxy_protocol: bool,
    /// Serve HTTPS on the --http sockets with the certificate chain in this PEM file (the
    /// server's certificate first, then its intermediates); needs --tls-key. HTTP/2 and
    /// HTTP/1.1 by ALPN. Read at start, and by each new worker (a HUP brings in a renewed one)
    #[cfg(feature = "tls")]
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert, in a PEM file (PKCS#8, PKCS#1 or SEC1)
    #[cfg(feature = "tls")]
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Ask HTTPS clients for a certificate signed by one of the authorities in this PEM file,
    /// and refuse those that show none (see --tls-client-optional) or one that does not
    /// verify. The app sees SSL_CLIENT_VERIFY (SUCCESS, or NONE) and SSL_CLIENT_CERT (the
    /// client's certificate in PEM), as Apache's mod_ssl names them
    #[cfg(feature = "tls")]
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_client_ca: Option<std::path::PathBuf>,
    /// With --tls-client-ca, serve clients that show no certificate too (SSL_CLIENT_VERIFY is
    /// NONE for them)
    #[cfg(feature = "tls")]
    #[arg(long, requires = "tls_client_ca")]
    pub tls_client_optional: bool,
    /// Log one line per request (tracing target gateway::access, level info, on stderr): the
    /// Combined Log Format (host, user, time, request line, status, body bytes, referer, user
    /// agent) followed by the duration in seconds and the pid of the process that served it.
    /// Off by default: front ends usually log requests already, and each line costs a write.
    #[arg(long)]
    pub access_log: bool,
    /// Serve statistics over HTTP on ADDR (HOST:PORT, unix:PATH, fd:N or systemd), off by
    /// default:
    /// GET /metrics (Prometheus text format) and GET /stats.json give requests served, in
    /// flight, a latency histogram, bytes in and out, connections, the limits hit (400, 408,
    /// 413, 414, 431, 503, harakiri, max-rss and max-requests recycles) and each worker's pid,
    /// requests, requests in flight and resident memory. With workers, a process of its own
    /// serves it from counters the workers share with it.
    #[arg(long, value_name = "ADDR")]
    pub stats: Option<Bind>,
    /// Format of the log on stderr: text (one line per event, in color only on a terminal
    /// and without NO_COLOR) or json (one JSON object per line, with timestamp, level, target,
    /// message and the event's fields, for a log collector).
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The format of the log a launched program writes on stderr (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event, for a person (tracing's own format). In color on a terminal, when
    /// the `NO_COLOR` environment variable is not set; never in a file, a pipe or the journal.
    #[default]
    Text,
    /// One JSON object per line, for a log collector: `timestamp`, `level`, `target`,
    /// `message` and the event's other fields at the top level.
    Json,
}

/// Sends the log to stderr in `format`, filtered by `RUST_LOG` (`info` by default). Does
/// nothing when the program set a subscriber of its own first.
fn init_log(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let log = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let installed = match format {
        LogFormat::Text => {
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
            log.with_ansi(std::io::stderr().is_terminal() && !no_color)
                .try_init()
        }
        LogFormat::Json => log.json().flatten_event(true).try_init(),
    };
    // With the log ours (not a subscriber the program set up), panics go to it too: one event
    // each, a JSON line under `--log-format json`, where Rust's own report would break the
    // format with lines of plain text.
    if installed.is_ok() {
        std::panic::set_hook(Box::new(log_panic));
    }
}

/// Logs a panic as one `tracing` event (error level, target `gateway::panic`): the message,
/// where it happened and the thread, and a backtrace when `RUST_BACKTRACE` (or
/// `RUST_LIB_BACKTRACE`) asks for one. The server carries on: an app's panic fails its request
/// alone (a 500).
fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a payload that is not text)");
    let location = info.location().map(ToString::to_string);
    let thread = std::thread::current();
    let thread = thread.name().unwrap_or("(unnamed)");
    let backtrace = std::backtrace::Backtrace::capture();
    match backtrace.status() {
        std::backtrace::BacktraceStatus::Captured => tracing::error!(
            target: "gateway::panic",
            thread,
            location,
            %backtrace,
            "panicked: {message}"
        ),
        _ => tracing::error!(target: "gateway::panic", thread, location, "panicked: {message}"),
    }
}

fn parse_roles(s: &str) -> Result<Roles, String> {
    let mut roles: Option<Roles> = None;
    for name in s.split(',').map(str::trim) {
        let role = match name {
            "responder" => Roles::RESPONDER,
            "authorizer" => Roles::AUTHORIZER,
            "filter" => Roles::FILTER,
            other => return Err(format!("unknown FastCGI role `{other}`")),
        };
        roles = Some(roles.map_or(role, |r| r.union(role)));
    }
    roles.ok_or_else(|| "no FastCGI role given".to_owned())
}

fn parse_mount(s: &str) -> Result<String, String> {
    if s.starts_with('/') {
        Ok(s.to_owned())
    } else {
        Err(format!("the mount prefix `{s}` does not start with `/`"))
    }
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("`{s}` is not an octal mode"))
}

/// The most headers `--max-headers` allows: hyper makes room for that many on every parse of
/// a request head, so a huge number costs memory per request, or aborts on the first.
const MAX_HEADERS: u16 = 10_000;

fn parse_max_headers(s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .filter(|n| (1..=usize::from(MAX_HEADERS)).contains(n))
        .ok_or_else(|| format!("`{s}` is not a number from 1 to {MAX_HEADERS}"))
}

/// The longest duration a flag takes: a year. Longer ones would only overflow the clock's
/// arithmetic (a deadline past what an `Instant` can hold).
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

fn seconds(value: f64, flag: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|_| value <= MAX_SECONDS)
        .ok_or_else(|| format!("--{flag} must be a number of seconds, at most {MAX_SECONDS}"))
}

impl LauncherArgs {
    /// The HTTPS configuration the `--tls-*` flags describe, read from their files: `None`
    /// without `--tls-cert`.
    #[cfg(feature = "tls")]
    pub fn tls_config(&self) -> Option<std::io::Result<crate::tls::TlsConfig>> {
        let (cert, key) = (self.tls_cert.as_ref()?, self.tls_key.as_ref()?);
        Some(match &self.tls_client_ca {
            Some(ca) => crate::tls::TlsConfig::from_pem_files_with_client_ca(
                cert,
                key,
                ca,
                !self.tls_client_optional,
            ),
            None => crate::tls::TlsConfig::from_pem_files(cert, key),
        })
    }

    /// The runtime config the flags describe.
    pub fn config(&self) -> Result<Config, String> {
        #[cfg(feature = "tls")]
        let tls = match self.tls_config() {
            Some(tls) => Some(tls.map_err(|error| format!("--tls-*: {error}"))?),
            None => None,
        };
        Ok(Config {
            #[cfg(feature = "tls")]
            tls,
            threads: self.threads.max(1),
            max_connections: self.max_connections.max(1),
            max_requests: self.max_concurrent_requests.max(1),
            max_head_size: self.max_head_size,
            max_headers: self.max_headers,
            max_body_size: self.max_body_size,
            body_buffer_size: self.body_buffer_size,
            header_read_timeout: seconds(self.header_timeout, "header-timeout")?,
            keep_alive_timeout: seconds(self.keep_alive_timeout, "keep-alive-timeout")?,
            body_read_timeout: seconds(self.body_timeout, "body-timeout")?,
            send_timeout: seconds(self.send_timeout, "send-timeout")?,
            linger_timeout: seconds(self.linger_timeout, "linger-timeout")?,
            shutdown_timeout: seconds(self.shutdown_timeout, "shutdown-timeout")?,
            blocking: !self.non_blocking,
            batch_scheduling: !self.no_batch_scheduling,
            proxy_protocol: self.proxy_protocol,
            ..Config::default()
        })
    }

    /// The worker processes the flags ask for: `None` when one process serves (no
    /// `--workers`, `--max-requests`, `--harakiri` or `--max-rss`).
    pub fn supervision(&self, config: &Config) -> Result<Option<Supervision>, String> {
        if self.workers.is_none()
            && self.max_requests == 0
            && self.harakiri.is_none()
            && self.max_rss.is_none()
        {
            return Ok(None);
        }
        let mut supervision = Supervision::new(config.shutdown_timeout);
        supervision.workers = self.workers.map_or(1, |n| n as usize);
        supervision.max_requests = self.max_requests;
        supervision.max_requests_jitter = self.max_requests_jitter;
        supervision.harakiri = match self.harakiri {
            Some(value) => Some(seconds(value, "harakiri")?).filter(|d| !d.is_zero()),
            None => None,
        };
        supervision.max_rss = self.max_rss.map(|mb| mb.saturating_mul(1024 * 1024));
        Ok(Some(supervision))
    }

    /// The FastCGI protocol settings the flags describe, with the limits of `config`.
    pub fn fastcgi_settings(&self, config: &Config) -> Settings {
        Settings {
            max_conns: config.max_connections,
            max_reqs: config.max_requests,
            multiplex: !self.fastcgi_no_multiplex,
            roles: self.fastcgi_roles,
            ..Settings::default()
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    about = "Serve a gateway app: CGI when run by a web server, else HTTP, FastCGI or uwsgi."
)]
struct Cli {
    #[command(flatten)]
    launcher: LauncherArgs,
}

/// Whether the process runs as a CGI script (`GATEWAY_INTERFACE` is set).
pub fn is_cgi() -> bool {
    std::env::var_os("GATEWAY_INTERFACE").is_some()
}

/// Serves `app` on whatever interface the process is in:
///
/// - CGI when `GATEWAY_INTERFACE` is set (checked before anything else, so a CGI process starts
///   no runtime and parses no flags);
/// - FastCGI on fd 0 when the process was spawned by a web server with a listening socket
///   there (lighttpd's `bin-path`, spawn-fcgi, mod_fcgid) and no address is given;
/// - otherwise the flags ([`LauncherArgs`]): `--http ADDR` (any number), `--fastcgi ADDR`,
///   `--uwsgi ADDR`, and the limits and timeouts;
/// - with no address, HTTP on 127.0.0.1:8000, said on stderr.
///
/// Bad flags give a one-line error and exit code 2; `--help` lists the flags.
///
/// Unless the program has set up a `tracing` subscriber of its own, the log goes to stderr
/// (`--log-format`, filtered by `RUST_LOG`), and so do panics: each one event at the error
/// level with the target `gateway::panic` (its message, `location`, `thread`, and a `backtrace`
/// when `RUST_BACKTRACE=1`). An app's panic fails its own request (500) and nothing else.
pub fn run<A: App + 'static>(app: A) -> ExitCode {
    if is_cgi() {
        return crate::cgi::run(app);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return flag_error(&error),
    };
    run_with(app, cli.launcher)
}

/// Reports a clap error as the launcher does: help and version as asked, anything else as one
/// line on stderr and exit code 2.
pub fn flag_error(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = error.print();
        return ExitCode::SUCCESS;
    }
    // clap puts some details on indented lines below the first (the names of the missing
    // arguments): they join it.
    let text = error.to_string();
    let mut lines = text.lines();
    let mut line = lines
        .next()
        .unwrap_or("invalid arguments")
        .trim_end()
        .to_owned();
    for detail in lines.take_while(|l| l.starts_with(char::is_whitespace) && !l.trim().is_empty()) {
        line.push(' ');
        line.push_str(detail.trim());
    }
    eprintln!("{line} (see --help)");
    ExitCode::from(2)
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

/// Whether the HTTP sockets speak TLS.
fn is_https(config: &Config) -> bool {
    #[cfg(feature = "tls")]
    return config.tls.is_some();
    #[cfg(not(feature = "tls"))]
    {
        let _ = config;
        false
    }
}

/// Serves `app` as the parsed `args` say (see [`run`]); for programs that add flags of their
/// own to [`LauncherArgs`].
pub fn run_with<A: App + 'static>(app: A, args: LauncherArgs) -> ExitCode {
    if is_cgi() {
        return crate::cgi::run(app);
    }
    let config = match args.config() {
        Ok(config) => config,
        Err(message) => return usage_error(&message),
    };
    // Spawned by a web server with a listening socket on fd 0 (FCGI_LISTENSOCK_FILENO): FastCGI.
    let fastcgi = match &args.fastcgi {
        Some(bind) => Some(bind.clone()),
        None if args.http.is_empty() && args.uwsgi.is_none() && inherited_fd0() => {
            Some(Bind::Fd(0))
        }
        None => None,
    };
    let web_server_addrs = match fastcgi.as_ref().map(|_| WebServerAddrs::from_env()) {
        Some(Err(error)) => return usage_error(&error.to_string()),
        Some(Ok(addrs)) => addrs,
        None => None,
    };
    init_log(args.log_format);
    let (http, scheme) = match is_https(&config) {
        true => ("HTTPS", "https"),
        false => ("HTTP", "http"),
    };
    let binds = if args.http.is_empty() && (args.uwsgi.is_some() || fastcgi.is_some()) {
        Vec::new()
    } else if args.http.is_empty() {
        let bind = Bind::Tcp(([127, 0, 0, 1], 8000).into());
        eprintln!("gateway: no address given: serving {http} on {scheme}://127.0.0.1:8000/");
        vec![bind]
    } else {
        args.http.clone()
    };
    let supervision = match args.supervision(&config) {
        Ok(supervision) => supervision,
        Err(message) => return usage_error(&message),
    };
    let defer_accept = match seconds(args.defer_accept, "defer-accept") {
        Ok(wait) => wait,
        Err(message) => return usage_error(&message),
    };
    // Every socket is bound here, before any runtime (and, with workers, before the fork).
    let mut sockets = Vec::new();
    let wanted = || {
        binds
            .iter()
            .map(|bind| (Protocol::Http, bind))
            .chain(fastcgi.iter().map(|bind| (Protocol::FastCgi, bind)))
            .chain(args.uwsgi.iter().map(|bind| (Protocol::Uwsgi, bind)))
    };
    // An inherited descriptor serves one protocol: two servers accepting on one socket would
    // each get some of its connections, whatever their protocol.
    let mut inherited: Vec<_> = wanted()
        .map(|(_, bind)| bind)
        .chain(&args.stats)
        .filter_map(Bind::inherited_fd)
        .collect();
    inherited.sort_unstable();
    if let Some(fd) = inherited.windows(2).find(|pair| pair[0] == pair[1]) {
        return usage_error(&format!(
            "file descriptor {} is given to more than one listener",
            fd[0]
        ));
    }
    for (protocol, bind) in wanted() {
        let bound = BoundSocket::bind(bind, args.socket_mode).and_then(|socket| {
            if protocol != Protocol::Http {
                socket.defer_accept(defer_accept)?;
            }
            Ok(socket)
        });
        match bound {
            Ok(socket) => sockets.push((protocol, bind.clone(), socket)),
            Err(error) => {
                eprintln!("error: cannot listen on {bind}: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    stats::set_access_log(args.access_log);
    let stats_socket = match &args.stats {
        None => None,
        Some(bind) => {
            // Mapped before the fork, so that the workers and the stats process share it.
            if let Err(error) = stats::enable() {
                eprintln!("error: cannot map the stats counters: {error}");
                return ExitCode::FAILURE;
            }
            match BoundSocket::bind(bind, args.socket_mode) {
                Ok(socket) => Some(socket),
                Err(error) => {
                    eprintln!("error: cannot listen on {bind} (--stats): {error}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let options = Options {
        settings: args.fastcgi_settings(&config),
        web_server_addrs,
        mount: args.fastcgi_mount.clone(),
    };
    let mut plan = Plan {
        sockets,
        options,
        uwsgi_max_vars: args.uwsgi_max_vars,
        stats: None,
    };
    let Some(supervision) = supervision else {
        // One process: it counts, and serves the stats itself.
        stats::claim();
        plan.stats = stats_socket;
        return match serve_process(app, config, &plan) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        };
    };
    // Each worker is a forked copy of this process that takes the app out of its own copy.
    let mut app = Some(app);
    #[cfg(feature = "tls")]
    let tls_args = args.clone();
    let worker = move || {
        let Some(app) = app.take() else {
            return 70;
        };
        #[allow(unused_mut)]
        let mut config = config.clone();
        // Each worker reads the certificate again, so that a HUP brings in a renewed one.
        #[cfg(feature = "tls")]
        if let Some(tls) = tls_args.tls_config() {
            match tls {
                Ok(tls) => config.tls = Some(tls),
                Err(error) => tracing::error!(
                    %error,
                    "worker: cannot read the certificate again: serving the one read at start"
                ),
            }
        }
        match serve_process(app, config, &plan) {
            Ok(()) => 0,
            Err(error) => {
                eprintln!("error: {error}");
                1
            }
        }
    };
    match stats_socket {
        None => run_master(&supervision, worker),
        Some(socket) => {
            run_master_with_stats(&supervision, worker, move || stats::serve_process(&socket))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http,
    FastCgi,
    Uwsgi,
}

/// What a serving process serves: the bound sockets and the protocols' options.
struct Plan {
    sockets: Vec<(Protocol, Bind, BoundSocket)>,
    options: Options,
    uwsgi_max_vars: usize,
    /// The stats endpoint, when this process serves it (no workers).
    stats: Option<BoundSocket>,
}

/// Puts the calling thread of the runtime under `SCHED_BATCH`, logging (once per process) why
/// it could not.
fn batch_scheduling_or_log() {
    static LOGGED: std::sync::Once = std::sync::Once::new();
    if let Err(error) = crate::runtime::batch_scheduling() {
        LOGGED.call_once(|| {
            tracing::warn!(%error, "the event loop keeps the default scheduling policy");
        });
    }
}

/// Serves `app` on the sockets of `plan` in a runtime of this process (the one process, or a
/// worker), until a shutdown.
fn serve_process<A: App + 'static>(app: A, config: Config, plan: &Plan) -> Result<(), String> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .enable_all()
        .max_blocking_threads(config.threads)
        .thread_name("gateway");
    // Every thread of the runtime is the event loop's: an app's synchronous read of its body
    // there fails rather than stall the loop (the worker pool's threads are not the runtime's).
    let batch = config.batch_scheduling;
    let https = is_https(&config);
    builder.on_thread_start(move || {
        gateway_core::mark_event_loop_thread();
        if batch {
            batch_scheduling_or_log();
        }
    });
    let runtime = builder
        .build()
        .map_err(|error| format!("cannot start the runtime: {error}"))?;
    // A connection accepted as the shutdown begins may hold a request not read yet: the drain
    // waits for its first bytes as long as its head may take, within half the shutdown time
    // (the other half is for the requests in progress, once the drain is over).
    let drain_grace = config.header_read_timeout.min(config.shutdown_timeout / 2);
    let served = runtime.block_on(async move {
        let shutdown = Shutdown::new();
        let server = Runtime::new(app, config);
        let mut tasks = Vec::new();
        for (protocol, bind, socket) in &plan.sockets {
            let listener = socket.listener().map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {bind}: {e}"))
            })?;
            let task = match protocol {
                Protocol::Http => {
                    match https {
                        true => tracing::info!(address = %bind, "serving HTTPS"),
                        false => tracing::info!(address = %bind, "serving HTTP"),
                    }
                    tokio::spawn(crate::http::serve(
                        listener,
                        server.clone(),
                        shutdown.clone(),
                    ))
                }
                Protocol::FastCgi => {
                    tracing::info!(address = %bind, "serving FastCGI");
                    tokio::spawn(crate::fastcgi::server::serve_with(
                        listener,
                        server.clone(),
                        shutdown.clone(),
                        plan.options.clone(),
                    ))
                }
                Protocol::Uwsgi => {
                    tracing::info!(address = %bind, "serving uwsgi");
                    tokio::spawn(crate::uwsgi::server::serve(
                        listener,
                        server.clone(),
                        shutdown.clone(),
                        plan.uwsgi_max_vars,
                    ))
                }
            };
            tasks.push(task);
        }
        if let Some(socket) = &plan.stats {
            let listener = socket.listener()?;
            tracing::info!("serving stats");
            tokio::spawn(stats::serve(listener, shutdown.clone()));
        }
        if crate::runtime::is_worker() {
            serve_as_worker(&shutdown, drain_grace)?;
        } else {
            shutdown.on_signals(drain_grace)?;
        }
        for task in tasks {
            task.await.map_err(std::io::Error::other)??;
        }
        Ok::<_, std::io::Error>(())
    });
    // Worker threads still blocked in an app are not waited for.
    runtime.shutdown_background();
    served.map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<LauncherArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("prog").chain(args.iter().copied())).map(|c| c.launcher)
    }

    #[test]
    fn flags_parse_into_a_config() {
        let args = parse(&[
            "--http",
            "127.0.0.1:9000",
            "--http",
            "unix:/tmp/s",
            "--threads",
            "4",
            "--max-body-size",
            "10",
            "--body-buffer-size",
            "0",
            "--header-timeout",
            "1.5",
            "--keep-alive-timeout",
            "5",
            "--socket-mode",
            "600",
        ])
        .unwrap();
        assert_eq!(args.http.len(), 2);
        let config = args.config().unwrap();
        assert_eq!(config.threads, 4);
        assert_eq!(config.max_body_size, 10);
        assert_eq!(config.body_buffer_size, 0);
        assert_eq!(config.header_read_timeout, Duration::from_millis(1500));
        assert_eq!(config.keep_alive_timeout, Duration::from_secs(5));
        assert_eq!(args.socket_mode, Some(0o600));
    }

    #[test]
    fn fastcgi_flags_make_the_settings() {
        let config = Config::default();
        let settings = parse(&[]).unwrap().fastcgi_settings(&config);
        assert!(settings.multiplex);
        assert_eq!(settings.roles, Roles::RESPONDER);
        assert_eq!(settings.max_conns, config.max_connections);
        let args = parse(&[
            "--fastcgi-no-multiplex",
            "--fastcgi-roles",
            "responder,authorizer",
            "--max-concurrent-requests",
            "7",
        ])
        .unwrap();
        let settings = args.fastcgi_settings(&args.config().unwrap());
        assert!(!settings.multiplex);
        assert_eq!(settings.roles, Roles::RESPONDER.union(Roles::AUTHORIZER));
        assert_eq!(settings.max_reqs, 7);
    }

    #[test]
    fn bad_flags_are_errors() {
        assert!(parse(&["--http", "nowhere"]).is_err());
        assert!(parse(&["--threads", "x"]).is_err());
        assert!(parse(&["--socket-mode", "999"]).is_err());
        assert!(parse(&["--fastcgi-mount", "app"]).is_err());
        assert_eq!(
            parse(&["--fastcgi-mount", "/app"])
                .unwrap()
                .fastcgi_mount
                .as_deref(),
            Some("/app")
        );
        assert!(parse(&["--unknown"]).is_err());
        assert!(parse(&["--header-timeout=-1"]).unwrap().config().is_err());
    }
}
