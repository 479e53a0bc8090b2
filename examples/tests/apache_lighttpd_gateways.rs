//! The `echo` program on FastCGI and uwsgi behind real Apache (mod_proxy_fcgi, with and without
//! connection reuse; mod_proxy_uwsgi) and lighttpd (mod_fastcgi over TCP and in spawn mode, where
//! lighttpd starts the program with the listening socket on fd 0; mod_scgi speaking uwsgi),
//! checked field by field.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Counted, ECHO, TempDir, check_front_end, free_port, install_script, start_apache,
    start_lighttpd, wait_for,
};

/// A backend program, killed when dropped.
struct Backend(Child);

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Echo serving `flag` (`--fastcgi` or `--uwsgi`) on `port`, and with `--stats` on
/// `stats` if given.
fn backend(flag: &str, port: u16, stats: Option<u16>) -> Backend {
    let mut command = Command::new(ECHO);
    command.args([flag, &format!("127.0.0.1:{port}")]);
    if let Some(stats) = stats {
        command.args(["--stats", &format!("127.0.0.1:{stats}")]);
    }
    let child = command.stderr(Stdio::null()).spawn().unwrap();
    let backend = Backend(child);
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the backend did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(stats) = stats {
        wait_for(stats);
    }
    backend
}

#[test]
fn echo_behind_apache_proxy_fcgi_and_proxy_uwsgi() {
    let (fcgi_port, kept_port, uwsgi_port) = (free_port(), free_port(), free_port());
    let (fcgi_stats, kept_stats) = (free_port(), free_port());
    let _fcgi = backend("--fastcgi", fcgi_port, Some(fcgi_stats));
    let _kept = backend("--fastcgi", kept_port, Some(kept_stats));
    let _uwsgi = backend("--uwsgi", uwsgi_port, None);
    let dir = TempDir::new("apache-gateways");
    // /k has a backend of its own: a ProxyPass to the URL of an earlier one shares that one's
    // worker and ignores enablereuse=on (AH01146). One child process: each has a pool of
    // connections of its own, and a request another child takes opens one there.
    let directives = format!(
        "StartServers 1\n\
         ServerLimit 1\n\
         ThreadsPerChild 25\n\
         MaxRequestWorkers 25\n\
         MinSpareThreads 1\n\
         MaxSpareThreads 50\n\
         SetEnvIf Request_URI \"^/f/\" proxy-fcgi-pathinfo=unescape\n\
         SetEnvIf Request_URI \"^/k/\" proxy-fcgi-pathinfo=unescape\n\
         ProxyPass \"/f/\" \"fcgi://127.0.0.1:{fcgi_port}/\"\n\
         ProxyPass \"/k/\" \"fcgi://127.0.0.1:{kept_port}/\" enablereuse=on\n\
         ProxyPass \"/u/\" \"uwsgi://127.0.0.1:{uwsgi_port}/\"\n"
    );
    let server = start_apache(
        &dir.0,
        &["setenvif", "proxy", "proxy_fcgi", "proxy_uwsgi"],
        &directives,
    );
    // Apache strips Content-Length from CGI-like responses (CVE-2024-24795), and refuses
    // chunked requests to uwsgi backends with 411.
    // Without reuse, a connection for each request (counted as it is accepted;
    // a request, as its response ends).
    let plain = Counted::during(fcgi_stats, || {
        check_front_end(&server, "/f", "/f", true, false);
    });
    assert!(
        plain.requests > 0 && plain.connections >= plain.requests,
        "{plain:?}"
    );
    // Twice with enablereuse=on: the second run opens none.
    check_front_end(&server, "/k", "/k", true, false);
    let kept = Counted::during(kept_stats, || {
        check_front_end(&server, "/k", "/k", true, false);
    });
    assert!(kept.requests > 0 && kept.connections == 0, "{kept:?}");
    check_front_end(&server, "/u", "/u", false, true);
}

#[test]
fn echo_behind_lighttpd_fastcgi_spawn_mode_and_uwsgi() {
    let (fcgi_port, uwsgi_port) = (free_port(), free_port());
    let _fcgi = backend("--fastcgi", fcgi_port, None);
    let _uwsgi = backend("--uwsgi", uwsgi_port, None);
    let dir = TempDir::new("lighttpd-gateways");
    let docroot = dir.0.join("docroot");
    std::fs::create_dir(&docroot).unwrap();
    // Spawn mode: lighttpd starts this copy with the listening socket on fd 0.
    install_script(&dir.0, "echo-spawned");
    let root = dir.0.display();
    let config = format!(
        "server.modules = (\"mod_fastcgi\", \"mod_scgi\")\n\
         fastcgi.server = (\n\
           \"/f\" => ((\"host\" => \"127.0.0.1\", \"port\" => {fcgi_port}, \"check-local\" => \"disable\")),\n\
           \"/s\" => ((\"socket\" => \"{root}/spawned.sock\", \"bin-path\" => \"{root}/echo-spawned\",\n\
                     \"max-procs\" => 1, \"check-local\" => \"disable\"))\n\
         )\n\
         scgi.protocol = \"uwsgi\"\n\
         scgi.server = (\"/u\" => ((\"host\" => \"127.0.0.1\", \"port\" => {uwsgi_port}, \"check-local\" => \"disable\")))\n"
    );
    let server = start_lighttpd(&dir.0, &config);
    check_front_end(&server, "/f", "/f", true, true);
    check_front_end(&server, "/s", "/s", true, true);
    check_front_end(&server, "/u", "/u", true, true);
}
