//! `hello`: answers every request with "Hello, world!", on whatever interface the launcher
//! finds (HTTP on 127.0.0.1:8000 by default; `--help` for the flags).

fn main() -> std::process::ExitCode {
    gateway_servers::run(examples::hello)
}
