//! The error stream (`wsgi.errors`): where an app writes what the server should log.

use std::fmt;
use std::io::{self, Write};
use std::ops::Deref;
use std::sync::Arc;

/// Where the lines written to an [`ErrorStream`] go: the server's log.
///
/// A server chooses the sink: CGI writes to stderr (the web server's error log), FastCGI sends
/// `FCGI_STDERR` records, the network servers emit `tracing` events. Closures `Fn(&[u8])` are
/// sinks.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::io::Write;
/// use gateway_core::ErrorStream;
///
/// let lines = Arc::new(Mutex::new(Vec::new()));
/// let seen = lines.clone();
/// let mut errors = ErrorStream::new(move |line: &[u8]| seen.lock().unwrap().push(line.to_vec()));
/// errors.write_all(b"first\nsecond").unwrap();
/// errors.flush().unwrap();
/// assert_eq!(*lines.lock().unwrap(), vec![b"first\n".to_vec(), b"second".to_vec()]);
/// ```
pub trait ErrorSink: Send + Sync + 'static {
    /// Logs one message: a complete line with its `\n`, or what was flushed before a line ended.
    fn write_message(&self, message: &[u8]);
}

impl<F> ErrorSink for F
where
    F: Fn(&[u8]) + Send + Sync + 'static,
{
    fn write_message(&self, message: &[u8]) {
        self(message)
    }
}

/// The default sink: the process's standard error, one message at a time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

impl ErrorSink for Stderr {
    fn write_message(&self, message: &[u8]) {
        let mut stderr = io::stderr().lock();
        // Nothing sensible can be done when stderr itself fails.
        let _ = stderr.write_all(message);
        let _ = stderr.flush();
    }
}

/// A handle to an [`ErrorSink`], as an [`ErrorStream`] holds it: a sink shared by reference
/// counting, or a `'static` one. Cloning a static handle costs nothing (no atomic operation),
/// which is why servers whose sink lives as long as the process give it as a static.
///
/// ```
/// use gateway_core::{ErrorSink, SharedSink, Stderr};
///
/// static STDERR: Stderr = Stderr;
/// let sink = SharedSink::from_static(&STDERR);
/// sink.clone().write_message(b"to stderr\n");
/// ```
#[derive(Clone)]
pub struct SharedSink(SinkRepr);

#[derive(Clone)]
enum SinkRepr {
    Static(&'static dyn ErrorSink),
    Counted(Arc<dyn ErrorSink>),
}

impl SharedSink {
    /// A handle to a sink that lives as long as the process.
    pub const fn from_static(sink: &'static dyn ErrorSink) -> Self {
        SharedSink(SinkRepr::Static(sink))
    }

    /// A handle to a reference-counted sink.
    pub fn from_arc(sink: Arc<dyn ErrorSink>) -> Self {
        SharedSink(SinkRepr::Counted(sink))
    }
}

impl Deref for SharedSink {
    type Target = dyn ErrorSink;

    fn deref(&self) -> &(dyn ErrorSink + 'static) {
        match &self.0 {
            SinkRepr::Static(sink) => *sink,
            SinkRepr::Counted(sink) => &**sink,
        }
    }
}

impl fmt::Debug for SharedSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.0 {
            SinkRepr::Static(_) => "static",
            SinkRepr::Counted(_) => "counted",
        };
        f.debug_tuple("SharedSink").field(&kind).finish()
    }
}

/// The largest message an [`ErrorStream`] holds back while it waits for the end of a line.
pub const MAX_ERROR_LINE: usize = 16 * 1024;

/// `wsgi.errors`: an [`io::Write`] whose output the server logs.
///
/// Output is passed to the [`ErrorSink`] a line at a time, so that lines from concurrent
/// requests do not interleave; `flush` passes on an incomplete line, and so does dropping the
/// stream. A line longer than [`MAX_ERROR_LINE`] is passed on in pieces of that size.
/// Cloning gives a stream to the same sink with its own line buffer.
pub struct ErrorStream {
    sink: SharedSink,
    line: Vec<u8>,
}

impl ErrorStream {
    /// A stream whose lines go to `sink`.
    pub fn new(sink: impl ErrorSink) -> Self {
        ErrorStream::from_arc(Arc::new(sink))
    }

    /// A stream to a sink shared with other streams (a server shares one between requests).
    pub fn from_arc(sink: Arc<dyn ErrorSink>) -> Self {
        ErrorStream::from_sink(SharedSink::from_arc(sink))
    }

    /// A stream to a sink that lives as long as the process: making, cloning and dropping such
    /// streams costs nothing but the line buffer (which allocates only when written to).
    pub const fn from_static(sink: &'static dyn ErrorSink) -> Self {
        ErrorStream::from_sink(SharedSink::from_static(sink))
    }

    /// A stream to the sink of `sink`.
    pub const fn from_sink(sink: SharedSink) -> Self {
        ErrorStream {
            sink,
            line: Vec::new(),
        }
    }

    /// A stream to the process's standard error.
    pub const fn stderr() -> Self {
        static STDERR: Stderr = Stderr;
        ErrorStream::from_static(&STDERR)
    }

    /// The sink this stream writes to.
    pub fn sink(&self) -> &SharedSink {
        &self.sink
    }

    /// Logs one complete message at once, bypassing the line buffer (servers use this for
    /// their own reports about a request).
    pub fn log(&self, message: &str) {
        log_line(&*self.sink, message);
    }
}

/// Passes `message` to `sink` as one line, adding the `\n` if it has none.
pub(crate) fn log_line(sink: &dyn ErrorSink, message: &str) {
    let mut line = String::with_capacity(message.len() + 1);
    line.push_str(message);
    if !line.ends_with('\n') {
        line.push('\n');
    }
    sink.write_message(line.as_bytes());
}

impl Default for ErrorStream {
    fn default() -> Self {
        ErrorStream::stderr()
    }
}

impl Clone for ErrorStream {
    fn clone(&self) -> Self {
        ErrorStream::from_sink(self.sink.clone())
    }
}

/// Passes a whole line on to `sink`, in pieces of [`MAX_ERROR_LINE`] bytes if longer.
fn pass_on(sink: &SharedSink, line: &[u8]) {
    for piece in line.chunks(MAX_ERROR_LINE) {
        sink.write_message(piece);
    }
}

impl fmt::Debug for ErrorStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorStream")
            .field("buffered", &self.line.len())
            .finish_non_exhaustive()
    }
}

impl Write for ErrorStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(end + 1);
            if self.line.is_empty() {
                pass_on(&self.sink, line);
            } else {
                self.line.extend_from_slice(line);
                pass_on(&self.sink, &self.line);
                self.line.clear();
            }
            rest = tail;
        }
        self.line.extend_from_slice(rest);
        while self.line.len() >= MAX_ERROR_LINE {
            self.sink.write_message(&self.line[..MAX_ERROR_LINE]);
            self.line.drain(..MAX_ERROR_LINE);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.line.is_empty() {
            self.sink.write_message(&self.line);
            self.line.clear();
        }
        Ok(())
    }
}

impl Drop for ErrorStream {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// A request's bytes as a field of an access log line: `"` and `\` escaped with a backslash,
/// and any byte outside printable ASCII (a newline, a control byte, non-ASCII) written as
/// `\xHH`, as Apache and nginx write them, so that a client can neither end the line nor move
/// its fields. The one escaper of the project's access logs (the `AccessLog` middleware's and
/// the servers' `--access-log`).
///
/// ```
/// assert_eq!(gateway_core::log_escape(b"x\" 200 0\n\xe9"), "x\\\" 200 0\\x0a\\xe9");
/// ```
pub fn log_escape(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

/// A time as the Common and Combined Log Formats write it, in UTC:
/// `10/Oct/2000:13:55:36 +0000`. The one formatter of the project's access logs (the
/// `AccessLog` middleware's and the servers' `--access-log`).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let at = |secs| gateway_core::clf_time(UNIX_EPOCH + Duration::from_secs(secs));
/// assert_eq!(at(0), "01/Jan/1970:00:00:00 +0000");
/// assert_eq!(at(971_182_536), "10/Oct/2000:12:55:36 +0000");
/// assert_eq!(at(951_782_400), "29/Feb/2000:00:00:00 +0000");
/// assert_eq!(at(1_795_478_399), "23/Nov/2026:23:59:59 +0000");
/// ```
pub fn clf_time(time: std::time::SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[usize::try_from(month - 1).unwrap_or(0)],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn recording() -> (ErrorStream, Arc<Mutex<Vec<Vec<u8>>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        let stream = ErrorStream::new(move |m: &[u8]| seen.lock().unwrap().push(m.to_vec()));
        (stream, lines)
    }

    #[test]
    fn lines_are_passed_on_whole_and_the_tail_on_drop() {
        let (mut stream, lines) = recording();
        stream.write_all(b"a").unwrap();
        stream.write_all(b"b\ncd\nef").unwrap();
        assert_eq!(
            *lines.lock().unwrap(),
            vec![b"ab\n".to_vec(), b"cd\n".to_vec()]
        );
        drop(stream);
        assert_eq!(lines.lock().unwrap()[2], b"ef");
    }

    #[test]
    fn overlong_lines_are_split_at_the_limit() {
        let (mut stream, lines) = recording();
        stream.write_all(&vec![b'x'; MAX_ERROR_LINE + 3]).unwrap();
        assert_eq!(lines.lock().unwrap().len(), 1);
        assert_eq!(lines.lock().unwrap()[0].len(), MAX_ERROR_LINE);
        stream.flush().unwrap();
        assert_eq!(lines.lock().unwrap()[1], b"xxx");

        // A long line that ends within one write, alone or after a held-back start.
        let (mut stream, lines) = recording();
        let mut long = vec![b'y'; 2 * MAX_ERROR_LINE + 5];
        long.push(b'\n');
        stream.write_all(&long).unwrap();
        stream.write_all(b"zz").unwrap();
        stream.write_all(&long).unwrap();
        let lengths: Vec<usize> = lines.lock().unwrap().iter().map(Vec::len).collect();
        let max = MAX_ERROR_LINE;
        assert_eq!(lengths, [max, max, 6, max, max, 8]);
    }

    #[test]
    fn log_adds_the_newline_and_clones_share_the_sink() {
        let (stream, lines) = recording();
        stream.clone().log("server said");
        assert_eq!(*lines.lock().unwrap(), vec![b"server said\n".to_vec()]);
    }
}
