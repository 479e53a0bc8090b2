//! A CGI client: runs a program with a request's CGI variables in its environment and its body
//! on stdin, and reads the answer from stdout. Of this process's environment only `PATH`,
//! `LD_LIBRARY_PATH`, `PYTHONPATH` and `HOME` are passed on (those that are set), so that the
//! program finds its libraries and interpreter.

use std::io::{self, Read, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use bytes::BytesMut;

use super::{FrontEnd, Reply, WireBody, WireRequest, cgi_vars, read_reply};

/// The most a run keeps of the program's stdout, and of its stderr: a program that writes
/// without end is cut there (and killed at the timeout).
pub const MAX_OUTPUT: u64 = 64 << 20;

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
/// program must not read past `CONTENT_LENGTH`). A program still running after
/// [`DEFAULT_TIMEOUT`](super::DEFAULT_TIMEOUT) is killed, and the run is a `TimedOut` error;
/// at most [`MAX_OUTPUT`] bytes of each output are kept.
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
    let collect = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            if let Some(pipe) = pipe {
                let mut pipe = pipe.take(MAX_OUTPUT);
                let _ = pipe.read_to_end(&mut kept);
                // What goes past the cap is read and dropped, so the program is not held up.
                let _ = io::copy(pipe.get_mut(), &mut io::sink());
            }
            kept
        })
    };
    let stdout = collect(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = collect(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + super::DEFAULT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the CGI program ran past {:?}", super::DEFAULT_TIMEOUT),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let _ = writer.join();
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let reply = read_reply(
        &mut &stdout[..],
        &mut BytesMut::new(),
        request.method == "HEAD",
    );
    Ok(CgiRun {
        reply,
        exit_code: status.code(),
        stderr,
    })
}
