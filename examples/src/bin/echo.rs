//! `echo`: answers with the environ it saw and a digest of the request body, as JSON; the
//! program conformance runs use. Flags: `--http HOST:PORT`, `--fastcgi ADDR`, `--uwsgi ADDR`
//! (see `--help`), or CGI when `GATEWAY_INTERFACE` is set.

fn main() -> std::process::ExitCode {
    gateway_servers::run(examples::echo)
}
