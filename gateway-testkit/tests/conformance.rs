//! The conformance suite against this project's own servers, each serving the suite's app
//! (HTTP, FastCGI and uwsgi in this process behind a strict validator, so every case runs; CGI
//! by the `gateway-conformance` program run as the script), and the program's output and exit
//! code.

use gateway_testkit::conformance::{self, Builtin, Protocol, Verdict};

const PROGRAM: &str = env!("CARGO_BIN_EXE_gateway-conformance");

fn assert_all_pass(protocol: Protocol, cgi: Option<Vec<String>>, at_least: usize) {
    let builtin = Builtin::start(protocol, cgi);
    let report = builtin.run();
    assert!(
        report.failures().is_empty(),
        "{}: {:#?}",
        protocol.name(),
        report.failures()
    );
    assert!(
        report.passed() >= at_least,
        "{}: only {} cases ran\n{}",
        protocol.name(),
        report.passed(),
        report.table()
    );
}

#[test]
fn every_case_passes_on_the_http_server() {
    assert_all_pass(Protocol::Http, None, 55);
}

#[test]
fn every_case_passes_on_the_fastcgi_server() {
    assert_all_pass(Protocol::FastCgi, None, 55);
}

#[test]
fn every_case_passes_on_the_uwsgi_server() {
    assert_all_pass(Protocol::Uwsgi, None, 45);
}

#[test]
fn every_case_passes_on_cgi() {
    // The program serves the suite's app when run as CGI.
    assert_all_pass(Protocol::Cgi, Some(vec![PROGRAM.to_owned()]), 40);
}

#[test]
fn there_are_at_least_fifty_cases_with_unique_ids_and_rules() {
    let cases = conformance::cases();
    assert!(cases.len() >= 50, "{}", cases.len());
    let mut ids: Vec<&str> = cases.iter().map(|c| c.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), cases.len(), "ids are unique");
    for case in cases {
        assert!(
            !case.rule.is_empty() && !case.title.is_empty(),
            "{}",
            case.id
        );
    }
}

#[test]
fn the_program_prints_a_table_and_a_final_line_and_exits_by_the_result() {
    let output = std::process::Command::new(PROGRAM)
        .args(["--builtin", "http", "--only", "path-", "--only", "query-"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}");
    let last = stdout.lines().last().unwrap();
    assert_eq!(last, "8 passed, 0 failed", "{stdout}");
    let row: Vec<&str> = stdout
        .lines()
        .find(|line| line.starts_with("path-decoded-once "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(row, ["path-decoded-once", "pass"], "{stdout}");

    let json = std::process::Command::new(PROGRAM)
        .args(["--builtin", "uwsgi", "--only", "uwsgi-", "--format", "json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["passed"], 2);
    assert_eq!(report["cases"][0]["id"], "uwsgi-ping");

    let markdown = std::process::Command::new(PROGRAM)
        .args([
            "--builtin",
            "fastcgi",
            "--only",
            "fcgi-get",
            "--format",
            "markdown",
        ])
        .output()
        .unwrap();
    let markdown = String::from_utf8(markdown.stdout).unwrap();
    assert!(markdown.contains("| `fcgi-get-values` |"), "{markdown}");

    // Nothing listens there (a socket path no test can have bound): a usage error, not a
    // pass.
    let refused = std::process::Command::new(PROGRAM)
        .args([
            "--fastcgi",
            "unix:/nonexistent/gateway-conformance.sock",
            "--wait",
            "0.2",
        ])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));

    // A filter that selects no case: a usage error, before any server is started.
    let nothing = std::process::Command::new(PROGRAM)
        .args([
            "--builtin",
            "http",
            "--only",
            "path-",
            "--only",
            "no-such-case",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8(nothing.stderr).unwrap();
    assert_eq!(nothing.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("\"no-such-case\" matches no case"),
        "{stderr}"
    );
}

#[test]
fn a_server_that_fails_cases_makes_the_program_fail() {
    // A "server" that answers everything with the same canned reply: most cases fail.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 65536];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}");
        }
    });
    let output = std::process::Command::new(PROGRAM)
        .args(["--http", &address, "--only", "env-", "--only", "path-"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.lines().last().unwrap().ends_with("11 failed"),
        "{stdout}"
    );

    // A command to start a server, where one accepts connections already: refused (the suite
    // would test the server already there), and the command is not run.
    let marker = std::env::temp_dir().join(format!("conformance-not-run-{}", std::process::id()));
    let taken = std::process::Command::new(PROGRAM)
        .args(["--http", &address, "--", "touch"])
        .arg(&marker)
        .output()
        .unwrap();
    let stderr = String::from_utf8(taken.stderr).unwrap();
    assert_eq!(taken.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("accepts connections at"), "{stderr}");
    assert!(!marker.exists(), "the command ran");

    // A command that exits before anything accepts connections: an error that says so (not,
    // after the whole of `--wait`, that nothing accepts connections).
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let free_address = free.local_addr().unwrap().to_string();
    drop(free);
    let exited = std::process::Command::new(PROGRAM)
        .args(["--http", &free_address, "--wait", "60", "--", "false"])
        .output()
        .unwrap();
    let stderr = String::from_utf8(exited.stderr).unwrap();
    assert_eq!(exited.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("exited"), "{stderr}");

    let report = conformance::run(
        &conformance::Target::Http(address),
        &conformance::Options {
            only: vec!["env-required".into()],
            ..Default::default()
        },
    );
    assert!(matches!(report.outcomes[0].verdict, Verdict::Fail(_)));
}
