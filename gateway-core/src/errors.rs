//! The error stream (`wsgi.errors`): where an app writes what the server should log.

use std::fmt;
use std::io::{self, Write};
use std::sync::{Arc, OnceLock};

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

/// The largest message an [`ErrorStream`] holds back while it waits for the end of a line.
pub const MAX_ERROR_LINE: usize = 16 * 1024;

/// `wsgi.errors`: an [`io::Write`] whose output the server logs.
///
/// Output is passed to the [`ErrorSink`] a line at a time, so that lines from concurrent
/// requests do not interleave; `flush` passes on an incomplete line, and so does dropping the
/// stream. A line longer than [`MAX_ERROR_LINE`] is passed on in pieces of that size.
/// Cloning gives a stream to the same sink with its own line buffer.
pub struct ErrorStream {
    sink: Arc<dyn ErrorSink>,
    line: Vec<u8>,
}

impl ErrorStream {
    /// A stream whose lines go to `sink`.
    pub fn new(sink: impl ErrorSink) -> Self {
        ErrorStream::from_arc(Arc::new(sink))
    }

    /// A stream to a sink shared with other streams (a server shares one between requests).
    pub fn from_arc(sink: Arc<dyn ErrorSink>) -> Self {
        ErrorStream {
            sink,
            line: Vec::new(),
        }
    }

    /// A stream to the process's standard error. All such streams share one sink, so making
    /// one does not allocate.
    pub fn stderr() -> Self {
        static STDERR: OnceLock<Arc<dyn ErrorSink>> = OnceLock::new();
        ErrorStream::from_arc(STDERR.get_or_init(|| Arc::new(Stderr)).clone())
    }

    /// The sink this stream writes to.
    pub fn sink(&self) -> &Arc<dyn ErrorSink> {
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
        ErrorStream::from_arc(self.sink.clone())
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
                self.sink.write_message(line);
            } else {
                self.line.extend_from_slice(line);
                self.sink.write_message(&self.line);
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
    }

    #[test]
    fn log_adds_the_newline_and_clones_share_the_sink() {
        let (stream, lines) = recording();
        stream.clone().log("server said");
        assert_eq!(*lines.lock().unwrap(), vec![b"server said\n".to_vec()]);
    }
}
