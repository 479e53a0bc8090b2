//! A CGI client: runs a program with a request's CGI variables in its environment (and
//! nothing else of this process's) and its body on stdin, and reads the answer from stdout.

use std::io::{self, Write};
use std::process::{Command, Stdio};

use bytes::BytesMut;

use super::{FrontEnd, Reply, WireBody, WireRequest, cgi_vars, read_reply};

/// What a CGI run gave.
#[derive(Debug)]
pub struct CgiRun {
    /// The answer read from stdout.
    pub reply: io::Result<Reply>,
    /// The exit code (`None` when killed by a signal).
    pub exit_code: Option<i32>,
    /// What it wrote to stderr.
    pub stderr: Vec<u8>,
}

/// Runs `program` for `request` (a chunked body is sent whole, with no `CONTENT_LENGTH`: the
/// program reads to the end of stdin), with `extra_stdin` written after the body (a CGI
/// program must not read past `CONTENT_LENGTH`).
pub fn run(
    program: &[String],
    request: &WireRequest,
    front: &FrontEnd,
    extra_stdin: &[u8],
) -> io::Result<CgiRun> {
    let (path, args) = program
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no program"))?;
    let mut command = Command::new(path);
    command.args(args).env_clear();
    // The program may need to find its libraries and interpreter.
    for keep in ["PATH", "LD_LIBRARY_PATH", "PYTHONPATH", "HOME"] {
        if let Some(value) = std::env::var_os(keep) {
            command.env(keep, value);
        }
    }
    for (name, value) in cgi_vars(request, front) {
        use std::os::unix::ffi::OsStrExt;
        command.env(
            std::ffi::OsStr::from_bytes(&name),
            std::ffi::OsStr::from_bytes(&value),
        );
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut input = match &request.body {
        WireBody::None => Vec::new(),
        body => body.bytes(),
    };
    input.extend_from_slice(extra_stdin);
    // A program that exits without reading its input closes the pipe: not an error here.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output()?;
    let _ = writer.join();
    let mut stdout: &[u8] = &output.stdout;
    let reply = read_reply(&mut stdout, &mut BytesMut::new(), request.method == "HEAD");
    Ok(CgiRun {
        reply,
        exit_code: output.status.code(),
        stderr: output.stderr,
    })
}
