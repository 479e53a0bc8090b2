//! Listeners: TCP, Unix sockets, the socket a web server passes on fd 0, and systemd socket
//! activation.
#![allow(unsafe_code)]

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixListener;

use super::tcp::{self, LazyTcp};

/// Where to listen: `HOST:PORT` (IPv4 or `[IPv6]`), `unix:PATH`, `fd:N` (an inherited
/// listening socket), or `systemd` (the first socket of systemd socket activation).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Bind {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket path; a stale socket file there is replaced.
    Unix(PathBuf),
    /// A listening socket already open on this file descriptor.
    Fd(RawFd),
    /// The first socket systemd passed (`LISTEN_FDS`, `LISTEN_PID`).
    Systemd,
}

impl Bind {
    /// The descriptor an inherited socket is taken from (`fd:N`, or 3 for systemd's first):
    /// a process can take each one once.
    pub fn inherited_fd(&self) -> Option<RawFd> {
        match self {
            Bind::Fd(fd) => Some(*fd),
            Bind::Systemd => Some(3),
            Bind::Tcp(_) | Bind::Unix(_) => None,
        }
    }
}

/// A [`Bind`] that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseBindError(String);

impl fmt::Display for ParseBindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid address `{}`: expected HOST:PORT, unix:PATH, fd:N or systemd",
            self.0
        )
    }
}

impl std::error::Error for ParseBindError {}

impl FromStr for Bind {
    type Err = ParseBindError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = || ParseBindError(s.to_owned());
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(error());
            }
            return Ok(Bind::Unix(PathBuf::from(path)));
        }
        if let Some(fd) = s.strip_prefix("fd:") {
            return fd.parse().map(Bind::Fd).map_err(|_| error());
        }
        if s == "systemd" {
            return Ok(Bind::Systemd);
        }
        if let Ok(addr) = s.parse() {
            return Ok(Bind::Tcp(addr));
        }
        // `localhost:8000` and other names: resolved now.
        use std::net::ToSocketAddrs;
        s.to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .map(Bind::Tcp)
            .ok_or_else(error)
    }
}

impl fmt::Display for Bind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bind::Tcp(addr) => write!(f, "{addr}"),
            Bind::Unix(path) => write!(f, "unix:{}", path.display()),
            Bind::Fd(fd) => write!(f, "fd:{fd}"),
            Bind::Systemd => f.write_str("systemd"),
        }
    }
}

/// A connection from a [`Listener`]: a byte stream and the peer's address, if it has one.
pub struct Connection {
    /// The stream.
    pub stream: Box<dyn Stream>,
    /// The peer (TCP only).
    pub peer: Option<SocketAddr>,
    /// The local address (TCP only).
    pub local: Option<SocketAddr>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// A byte stream a connection runs on.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A listening socket of a runtime (TCP, or a Unix socket whose file is removed when the
/// listener is dropped).
#[derive(Debug)]
pub struct Listener {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Tcp {
        /// Accepted from with `accept4`, so that a connection joins the event loop only when
        /// it has to (see `deferred`).
        listener: AsyncFd<std::net::TcpListener>,
        /// The socket defers accept until a connection's first bytes: each connection is a
        /// [`LazyTcp`], registered with the event loop only once it has to wait (many never
        /// do). Else it is registered at once: its first read would most likely wait.
        deferred: bool,
        /// Each connection carries one response and ends with it (uwsgi): deferred ones hold
        /// their writes until a flush, the shutdown or the close, so that the response's last
        /// bytes go with the FIN ([`LazyTcp::ending_with_response`]).
        one_response: bool,
        /// The address the connections arrive at, when the socket is bound to one address (not
        /// to every address of the host): each connection's local address without a
        /// `getsockname` call.
        local: Option<SocketAddr>,
        /// Whether accepted sockets come with `TCP_NODELAY` set (Linux copies it from the
        /// listening socket, where it is set): [`NODELAY_UNKNOWN`] until the first connection
        /// tells.
        nodelay: AtomicU8,
    },
    Unix(UnixListener, Option<PathBuf>),
}

const NODELAY_UNKNOWN: u8 = 0;
const NODELAY_INHERITED: u8 = 1;
const NODELAY_SET_EACH: u8 = 2;

/// Makes way for a Unix socket at `path`: a socket file nobody listens on (connecting is
/// refused) is removed. A socket in use, one whose use cannot be told (connecting fails
/// otherwise, for instance for want of permission), and a file of any other kind are left where
/// they are, and binding fails.
fn remove_stale_socket(path: &std::path::Path) -> io::Result<()> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    if !metadata.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use", path.display()),
        )),
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path)
        }
        Err(error) => Err(io::Error::new(
            error.kind(),
            format!(
                "{} exists, and whether it is in use cannot be told: {error}",
                path.display()
            ),
        )),
    }
}

/// A listening socket opened outside any runtime: what the launcher binds before it starts a
/// runtime or forks worker processes. Each runtime (each worker process) makes its own
/// [`Listener`] from it with [`BoundSocket::listener`]; the socket stays open here, so
/// connections wait in its backlog while no worker accepts, and a Unix socket's file is removed
/// only when the `BoundSocket` is dropped.
#[derive(Debug)]
pub struct BoundSocket {
    fd: OwnedFd,
    unix: bool,
    /// The socket file to remove when dropped (a Unix socket this process bound).
    path: Option<PathBuf>,
}

impl BoundSocket {
    /// Opens a listening socket; needs no runtime. A Unix socket file gets `mode` (`0o660`
    /// when `None`), and a stale one (nobody listening) is replaced.
    pub fn bind(bind: &Bind, mode: Option<u32>) -> io::Result<BoundSocket> {
        match bind {
            Bind::Tcp(addr) => {
                let socket = match addr {
                    SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                    SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
                };
                socket.set_reuseaddr(true)?;
                if addr.is_ipv6() {
                    // IPv6 only, as nginx binds: on Linux a `[::]` socket takes IPv4 too by
                    // default, and a second listener on `0.0.0.0` with the same port would
                    // then fail to bind.
                    let only: libc::c_int = 1;
                    // SAFETY: `setsockopt` on a socket we own, with a pointer to a `c_int` that
                    // lives across the call and its size; failure is checked.
                    let set = unsafe {
                        libc::setsockopt(
                            socket.as_raw_fd(),
                            libc::IPPROTO_IPV6,
                            libc::IPV6_V6ONLY,
                            (&raw const only).cast(),
                            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                        )
                    };
                    if set != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                socket.bind(*addr)?;
                // SAFETY: `into_raw_fd` hands over the socket's descriptor, open and owned by
                // nothing else from here on.
                let fd = unsafe { OwnedFd::from_raw_fd(socket.into_raw_fd()) };
                // SAFETY: plain call on a descriptor we own; failure is checked.
                if unsafe { libc::listen(fd.as_raw_fd(), 1024) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(BoundSocket {
                    fd,
                    unix: false,
                    path: None,
                })
            }
            Bind::Unix(path) => {
                remove_stale_socket(path)?;
                let listener = std::os::unix::net::UnixListener::bind(path)?;
                let socket = BoundSocket {
                    fd: OwnedFd::from(listener),
                    unix: true,
                    path: Some(path.clone()),
                };
                std::fs::set_permissions(
                    path,
                    std::fs::Permissions::from_mode(mode.unwrap_or(0o660)),
                )?;
                Ok(socket)
            }
            Bind::Fd(fd) => BoundSocket::from_fd(*fd),
            Bind::Systemd => {
                let pid_ok = std::env::var("LISTEN_PID")
                    .ok()
                    .and_then(|p| p.parse::<u32>().ok())
                    .is_some_and(|p| p == std::process::id());
                let count = std::env::var("LISTEN_FDS")
                    .ok()
                    .and_then(|n| n.parse::<u32>().ok())
                    .unwrap_or(0);
                if !pid_ok || count == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        "no socket from systemd (LISTEN_PID/LISTEN_FDS not set for this process)",
                    ));
                }
                BoundSocket::from_fd(3)
            }
        }
    }

    /// Takes over a listening socket open on `fd`, and marks it close-on-exec (programs the
    /// app runs do not inherit it).
    fn from_fd(fd: RawFd) -> io::Result<BoundSocket> {
        if !is_listening_socket(fd) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("file descriptor {fd} is not a listening socket"),
            ));
        }
        // SAFETY: `fd` is an open listening socket (checked just above) that this process owns
        // and hands to the listener for good; nothing else in the process uses it afterwards.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `fcntl` on a descriptor we own; failure is checked.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let unix = socket_domain(fd.as_raw_fd())? == libc::AF_UNIX;
        Ok(BoundSocket {
            fd,
            unix,
            path: None,
        })
    }

    /// Hands connections to `accept` only once their first bytes arrived, or after `wait`
    /// (Linux's `TCP_DEFER_ACCEPT`, rounded up to whole seconds; zero turns it off). For a
    /// protocol whose client speaks first, at once (a web server speaking FastCGI or uwsgi),
    /// this saves a read that finds nothing and a wake-up per connection; nginx's
    /// `listen ... deferred` does the same. A [`Listener`] made from the socket afterwards
    /// leaves each connection out of the event loop until a read or a write has to wait: a
    /// request answered at once costs no registration. A client that connects and stays silent
    /// is accepted after `wait` (from then the header timeout runs), and meanwhile does not
    /// count as a connection. Does nothing on a Unix socket.
    pub fn defer_accept(&self, wait: Duration) -> io::Result<()> {
        if self.unix {
            return Ok(());
        }
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let seconds = libc::c_int::try_from(seconds).unwrap_or(libc::c_int::MAX);
        setsockopt_int(
            self.fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            seconds,
        )
    }

    /// A listener on this socket for the current tokio runtime (a duplicate of the descriptor:
    /// dropping the listener leaves the socket open here, and its file in place).
    pub fn listener(&self) -> io::Result<Listener> {
        let fd = self.fd.try_clone()?;
        if self.unix {
            let std = std::os::unix::net::UnixListener::from(fd);
            std.set_nonblocking(true)?;
            Ok(Listener {
                kind: Kind::Unix(UnixListener::from_std(std)?, None),
            })
        } else {
            // Set on the listening socket, TCP_NODELAY comes with each accepted one, which
            // saves a system call per connection (checked on the first; see `accept`).
            let _ = setsockopt_int(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
            let deferred =
                getsockopt_int_at(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT)
                    .is_some_and(|seconds| seconds > 0);
            let std = std::net::TcpListener::from(fd);
            std.set_nonblocking(true)?;
            let local = std.local_addr().ok().filter(|a| !a.ip().is_unspecified());
            Ok(Listener {
                kind: Kind::Tcp {
                    // SAFETY: the listener owns its descriptor, open until it is dropped (after
                    // the registration), and always reports that same descriptor.
                    listener: unsafe {
                        AsyncFd::register_with_interest(std, tokio::io::Interest::READABLE)?
                    },
                    deferred,
                    one_response: false,
                    local,
                    nodelay: AtomicU8::new(NODELAY_UNKNOWN),
                },
            })
        }
    }

    /// The listener of the current tokio runtime, taking the socket over (a Unix socket's file
    /// is then removed when the listener is dropped).
    pub fn into_listener(mut self) -> io::Result<Listener> {
        let mut listener = self.listener()?;
        if let Kind::Unix(_, path) = &mut listener.kind {
            *path = self.path.take();
        }
        Ok(listener)
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Listener {
    /// Marks the listener's connections as carrying one response each, ended by the
    /// connection's end (uwsgi): a TCP connection accepted with deferred accept then holds
    /// its writes until a flush, its shutdown or its close, and its last segment carries the
    /// FIN. Its users must flush what has to leave before they wait for something else.
    pub(crate) fn one_response_per_connection(mut self) -> Self {
        if let Kind::Tcp { one_response, .. } = &mut self.kind {
            *one_response = true;
        }
        self
    }

    /// Opens a listener. Must run inside a tokio runtime. A Unix socket file gets `mode`
    /// (`0o660` when `None`), and a stale one (nobody listening) is replaced.
    pub fn bind(bind: &Bind, mode: Option<u32>) -> io::Result<Listener> {
        BoundSocket::bind(bind, mode)?.into_listener()
    }

    /// The local address of a TCP listener.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.kind {
            Kind::Tcp { listener, .. } => listener.get_ref().local_addr().ok(),
            Kind::Unix(..) => None,
        }
    }

    /// Waits for the next connection. A TCP connection gets `TCP_NODELAY`: a response's last
    /// small write must not wait for the acknowledgement of the one before.
    pub async fn accept(&self) -> io::Result<Connection> {
        match &self.kind {
            Kind::Tcp {
                listener,
                deferred,
                one_response,
                local,
                nodelay,
            } => {
                let (stream, peer) = loop {
                    let mut ready = listener.readable().await?;
                    if let Ok(accepted) = ready.try_io(|listener| tcp::accept(listener.get_ref())) {
                        break accepted?;
                    }
                };
                match nodelay.load(Ordering::Relaxed) {
                    NODELAY_INHERITED => {}
                    NODELAY_UNKNOWN if stream.nodelay().unwrap_or(false) => {
                        nodelay.store(NODELAY_INHERITED, Ordering::Relaxed);
                    }
                    _ => {
                        nodelay.store(NODELAY_SET_EACH, Ordering::Relaxed);
                        let _ = stream.set_nodelay(true);
                    }
                }
                let local = local.or_else(|| stream.local_addr().ok());
                let stream: Box<dyn Stream> = if *deferred && *one_response {
                    Box::new(LazyTcp::ending_with_response(stream))
                } else if *deferred {
                    Box::new(LazyTcp::new(stream))
                } else {
                    Box::new(tokio::net::TcpStream::from_std(stream)?)
                };
                Ok(Connection {
                    stream,
                    peer: Some(peer),
                    local,
                })
            }
            Kind::Unix(listener, _) => {
                let (stream, _) = listener.accept().await?;
                Ok(Connection {
                    stream: Box::new(stream),
                    peer: None,
                    local: None,
                })
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Kind::Unix(_, Some(path)) = &self.kind {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn getsockopt_int(fd: RawFd, option: libc::c_int) -> Option<libc::c_int> {
    getsockopt_int_at(fd, libc::SOL_SOCKET, option)
}

fn getsockopt_int_at(fd: RawFd, level: libc::c_int, option: libc::c_int) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes of a c_int and a socklen_t, as the call
    // requires; an invalid `fd` makes the call fail with EBADF/ENOTSOCK, which is checked.
    let result = unsafe {
        libc::getsockopt(
            fd,
            level,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (result == 0).then_some(value)
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    option: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a valid c_int for reads of the length passed; an invalid `fd` or
    // option makes the call fail, which is checked.
    let result = unsafe {
        libc::setsockopt(
            fd,
            level,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `fd` is a socket in the listening state.
pub fn is_listening_socket(fd: RawFd) -> bool {
    getsockopt_int(fd, libc::SO_ACCEPTCONN) == Some(1)
}

fn socket_domain(fd: RawFd) -> io::Result<libc::c_int> {
    getsockopt_int(fd, libc::SO_DOMAIN).ok_or_else(io::Error::last_os_error)
}

/// Whether the process was started with a listening socket on fd 0, as web servers that spawn
/// FastCGI applications do (`FCGI_LISTENSOCK_FILENO`).
pub fn inherited_fd0() -> bool {
    is_listening_socket(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_parse() {
        assert_eq!(
            "127.0.0.1:8000".parse(),
            Ok(Bind::Tcp("127.0.0.1:8000".parse().unwrap()))
        );
        assert_eq!(
            "[::1]:80".parse(),
            Ok(Bind::Tcp("[::1]:80".parse().unwrap()))
        );
        assert_eq!(
            "unix:/tmp/x.sock".parse(),
            Ok(Bind::Unix("/tmp/x.sock".into()))
        );
        assert_eq!("fd:0".parse(), Ok(Bind::Fd(0)));
        assert_eq!("systemd".parse(), Ok(Bind::Systemd));
        assert!("unix:".parse::<Bind>().is_err());
        assert!("nonsense".parse::<Bind>().is_err());
        assert!("127.0.0.1:99999".parse::<Bind>().is_err());
        assert_eq!(Bind::Unix("/a".into()).to_string(), "unix:/a");
    }

    #[test]
    fn stdin_of_a_test_is_not_a_listening_socket() {
        assert!(!is_listening_socket(-1));
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        use std::os::fd::AsRawFd;
        assert!(is_listening_socket(socket.as_raw_fd()));
        let stream = std::net::TcpStream::connect(socket.local_addr().unwrap()).unwrap();
        assert!(!is_listening_socket(stream.as_raw_fd()));
    }

    #[tokio::test]
    async fn tcp_connections_get_nodelay_and_the_local_address_without_asking_each() {
        let listener = Listener::bind(&"127.0.0.1:0".parse().unwrap(), None).unwrap();
        let addr = listener.local_addr().unwrap();
        let Kind::Tcp { local, nodelay, .. } = &listener.kind else {
            panic!("a TCP listener")
        };
        assert_eq!(
            *local,
            Some(addr),
            "bound to one address: it is every connection's"
        );
        assert_eq!(nodelay.load(Ordering::Relaxed), NODELAY_UNKNOWN);
        for _ in 0..2 {
            let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let connection = listener.accept().await.unwrap();
            assert_eq!(connection.local, Some(addr));
            // Linux copies TCP_NODELAY from the listening socket to each accepted one.
            assert_eq!(nodelay.load(Ordering::Relaxed), NODELAY_INHERITED);
        }

        let any = Listener::bind(&"0.0.0.0:0".parse().unwrap(), None).unwrap();
        let port = any.local_addr().unwrap().port();
        let Kind::Tcp { local, .. } = &any.kind else {
            panic!("a TCP listener")
        };
        assert_eq!(*local, None, "bound to every address: asked per connection");
        let _client = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let connection = any.accept().await.unwrap();
        assert_eq!(connection.local, Some(([127, 0, 0, 1], port).into()));
    }

    #[tokio::test]
    async fn with_deferred_accept_a_connection_comes_once_it_has_sent_bytes() {
        let socket = BoundSocket::bind(&"127.0.0.1:0".parse().unwrap(), None).unwrap();
        socket.defer_accept(Duration::from_secs(5)).unwrap();
        let listener = socket.listener().unwrap();
        let addr = listener.local_addr().unwrap();
        // The silent client connects first; without the deferral it would be accepted first.
        let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut speaking = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut speaking, b"request")
            .await
            .unwrap();
        let connection = tokio::time::timeout(Duration::from_secs(4), listener.accept())
            .await
            .expect("the speaking client is accepted at once")
            .unwrap();
        assert_eq!(connection.peer, Some(speaking.local_addr().unwrap()));
        assert_ne!(connection.peer, Some(silent.local_addr().unwrap()));
        let mut read = [0; 7];
        let mut stream = connection.stream;
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut read)
            .await
            .unwrap();
        assert_eq!(&read, b"request");
        // Turned off, a silent connection is accepted at once.
        let socket = BoundSocket::bind(&"127.0.0.1:0".parse().unwrap(), None).unwrap();
        socket.defer_accept(Duration::ZERO).unwrap();
        let listener = socket.listener().unwrap();
        let _silent = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(4), listener.accept())
            .await
            .expect("accepted at once")
            .unwrap();
    }

    #[tokio::test]
    async fn unix_sockets_get_their_mode_and_replace_stale_files() {
        let path =
            std::env::temp_dir().join(format!("gateway-listener-{}.sock", std::process::id()));
        std::fs::write(&path, b"stale").unwrap_or(());
        let _ = std::fs::remove_file(&path);
        // A stale socket: bound once, then the listener is leaked away without removing it.
        let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(stale);
        let listener = Listener::bind(&Bind::Unix(path.clone()), Some(0o600)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            Listener::bind(&Bind::Unix(path.clone()), None).is_err(),
            "in use"
        );
        drop(listener);
        assert!(!path.exists(), "removed when dropped");
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_socket_is_never_removed_to_make_way() {
        let path =
            std::env::temp_dir().join(format!("gateway-listener-{}.txt", std::process::id()));
        std::fs::write(&path, b"notes").unwrap();
        let error = Listener::bind(&Bind::Unix(path.clone()), None).unwrap_err();
        assert!(error.to_string().contains("not a socket"), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), b"notes");
        std::fs::remove_file(&path).unwrap();
    }

    #[tokio::test]
    async fn an_ipv6_listener_leaves_ipv4_on_its_port_to_another() {
        let Ok(any6) = Listener::bind(&Bind::Tcp("[::]:0".parse().unwrap()), None) else {
            return; // No IPv6 on this machine.
        };
        let port = any6.local_addr().unwrap().port();
        let v4 = Listener::bind(&Bind::Tcp(format!("0.0.0.0:{port}").parse().unwrap()), None);
        assert!(
            v4.is_ok(),
            "0.0.0.0:{port} beside [::]:{port}: {:?}",
            v4.err()
        );
    }
}
