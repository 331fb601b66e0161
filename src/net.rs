//! One socket type for both sides: plain TCP or TLS over TCP.
//!
//! [`Stream`] is what the client task and [`ServerConn`](crate::server::ServerConn)
//! hold. It implements `AsyncRead`/`AsyncWrite`, and [`Stream::split`] gives the
//! session loop a reader and a writer it can poll at the same time: the zero-cost
//! `TcpStream::split` for plain sockets, `tokio::io::split` for TLS (whose record
//! layer needs one owner for both directions).
//!
//! TLS writes acknowledge bytes only once they have left for the socket (see
//! [`Stream::poll_write`]): rustls accepts plaintext into an internal buffer even when
//! the socket is full, and the session loop stops calling `write` once its queue is
//! empty, so bytes left in that buffer would never be sent.

pub mod clock;
pub mod coarse;
pub mod dormant;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

thread_local! {
    /// Which worker runtime drives this thread (see [`worker`]).
    static WORKER: std::cell::Cell<u16> = const { std::cell::Cell::new(NO_WORKER) };
}

/// [`worker`] on a thread that is not one of the worker threads: the control
/// runtime, a test's runtime, a blocking-pool thread.
pub const NO_WORKER: u16 = u16::MAX;

/// Most bytes read and dropped from a peer while its connection closes
/// ([`Stream::close_after_reading`]).
pub const CLOSE_DRAIN_MAX: usize = 1 << 20;
/// Longest a closing connection waits for its peer to close
/// ([`Stream::close_after_reading`]).
pub const CLOSE_DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// The worker runtime the calling thread belongs to. Sockets registered by a
/// task on worker `w` are driven by `w`'s event loop; a pool hands a server to a
/// client on another worker only after [`Stream::rehome`].
pub fn worker() -> u16 {
    WORKER.with(|w| w.get())
}

/// Sleep until `at`, or forever: the timer branch of an event loop's select
/// when there may be no deadline.
pub async fn until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Mark the calling thread as worker `id`'s (once, when the thread starts).
pub fn set_worker(id: u16) {
    WORKER.with(|w| w.set(id));
}

/// A TLS-wrapped socket with the bookkeeping of [`Stream::poll_write`].
pub struct Tls<T> {
    inner: T,
    /// Bytes accepted by rustls for the last write, while the flush is pending.
    accepted: usize,
}

/// A client or server socket.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS where shardbouncer is the TLS server (a client connection).
    TlsServer(Box<Tls<tokio_rustls::server::TlsStream<TcpStream>>>),
    /// TLS where shardbouncer is the TLS client (a Postgres connection).
    TlsClient(Box<Tls<tokio_rustls::client::TlsStream<TcpStream>>>),
    /// Transient state while a socket is being upgraded (or after a failed upgrade):
    /// every operation fails.
    Closed,
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Stream {
        Stream::Plain(s)
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection is closed")
}

impl Stream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::TlsServer(t) => Some(t.inner.get_ref().0),
            Stream::TlsClient(t) => Some(t.inner.get_ref().0),
            Stream::Closed => None,
        }
    }

    /// Move this socket's readiness registration to the runtime of the calling
    /// task (see [`worker`]). The socket, its TLS session and anything buffered
    /// stay as they are; only which event loop watches the descriptor changes.
    ///
    /// Why: each worker thread runs its own single-threaded runtime, and a
    /// server socket registered with another worker's event loop would cost two
    /// thread wake-ups per message instead of none. The descriptor is
    /// duplicated, the duplicate registered here, and the old one (and its
    /// registration there) dropped; edge-triggered registration reports input
    /// that is already waiting, so nothing is missed.
    pub fn rehome(&mut self) -> io::Result<()> {
        let tcp = match self {
            Stream::Plain(s) => s,
            Stream::TlsServer(t) => t.inner.get_mut().0,
            Stream::TlsClient(t) => t.inner.get_mut().0,
            Stream::Closed => return Err(closed()),
        };
        let dup = std::os::fd::AsFd::as_fd(&*tcp).try_clone_to_owned()?;
        let fresh = TcpStream::from_std(std::net::TcpStream::from(dup))?;
        drop(std::mem::replace(tcp, fresh));
        Ok(())
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::TlsServer(_) | Stream::TlsClient(_))
    }

    /// Perform the server side of a TLS handshake on a plain socket (after answering
    /// an SSLRequest with 'S'). On failure the stream is left [`Stream::Closed`].
    pub async fn accept_tls(&mut self, acceptor: &tokio_rustls::TlsAcceptor) -> io::Result<()> {
        let Stream::Plain(tcp) = std::mem::replace(self, Stream::Closed) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "TLS requested on a connection that is not plain TCP",
            ));
        };
        let tls = acceptor.accept(tcp).await?;
        *self = Stream::TlsServer(Box::new(Tls {
            inner: tls,
            accepted: 0,
        }));
        Ok(())
    }

    /// Perform the client side of a TLS handshake on a plain socket (after the server
    /// answered our SSLRequest with 'S'). On failure the stream is left [`Stream::Closed`].
    pub async fn connect_tls(
        &mut self,
        connector: &tokio_rustls::TlsConnector,
        name: rustls_pki_types::ServerName<'static>,
    ) -> io::Result<()> {
        let Stream::Plain(tcp) = std::mem::replace(self, Stream::Closed) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "TLS requested on a connection that is not plain TCP",
            ));
        };
        let tls = connector.connect(name, tcp).await?;
        *self = Stream::TlsClient(Box::new(Tls {
            inner: tls,
            accepted: 0,
        }));
        Ok(())
    }

    /// Non-blocking: has the peer sent bytes (or closed) that nobody has read yet?
    ///
    /// Looks at the socket without consuming (a TLS record must stay for rustls), and
    /// uses tokio's cached readiness, so nothing is paid when nothing arrived. For TLS
    /// any record counts, including a close_notify alert.
    pub fn has_pending_input(&self) -> bool {
        let Some(tcp) = self.tcp() else {
            return true;
        };
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        // Ready with data, EOF (0 bytes) or an error: all mean "not idle".
        tcp.poll_peek(&mut cx, &mut buf).is_ready()
    }

    /// End the connection so that what was written to it reaches the peer:
    /// our end of the stream is sent behind the data still queued, then what
    /// the peer sends is read and dropped until it closes, for at most
    /// [`CLOSE_DRAIN_TIME`] and [`CLOSE_DRAIN_MAX`] bytes. Closed with its input unread,
    /// the kernel resets the connection instead, which can drop the data still
    /// on its way: a client's last error (probe II: libpq then reported
    /// "server closed the connection unexpectedly", with no SQLSTATE).
    pub async fn close_after_reading(&mut self) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let drain = async {
            if self.shutdown().await.is_err() {
                return;
            }
            let mut buf = vec![0u8; 4096];
            let mut left = CLOSE_DRAIN_MAX;
            while left > 0 {
                match self.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_DRAIN_TIME, drain).await;
    }

    /// Write what the socket takes now, without waiting: `None` when that
    /// cannot be known without a wait (TLS, whose records rustls must flush
    /// in a poll), `Some(Err(WouldBlock))` when the socket takes nothing now.
    pub fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> Option<io::Result<usize>> {
        match self {
            Stream::Plain(s) => Some(s.try_write_vectored(bufs)),
            _ => None,
        }
    }

    /// Split into a reader and a writer that can be polled concurrently.
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        match self {
            Stream::Plain(s) => {
                let (r, w) = s.split();
                (ReadHalf::Plain(r), WriteHalf::Plain(w))
            }
            other => {
                let (r, w) = tokio::io::split(other);
                (ReadHalf::Shared(r), WriteHalf::Shared(w))
            }
        }
    }
}

/// Write through TLS, acknowledging bytes only once rustls has handed them to the
/// socket. If the socket blocks after rustls took `n` bytes, we return `Pending`
/// and remember `n`; the next call (which, as with any `AsyncWrite` after `Pending`,
/// re-presents the same data) finishes the flush and reports `n`.
fn tls_write<T: AsyncWrite + Unpin>(
    t: &mut Tls<T>,
    cx: &mut Context<'_>,
    write: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<usize>>,
) -> Poll<io::Result<usize>> {
    if t.accepted > 0 {
        match Pin::new(&mut t.inner).poll_flush(cx) {
            Poll::Ready(Ok(())) => return Poll::Ready(Ok(std::mem::take(&mut t.accepted))),
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
    let n = match write(Pin::new(&mut t.inner), cx) {
        Poll::Ready(Ok(n)) => n,
        other => return other,
    };
    if n == 0 {
        return Poll::Ready(Ok(0));
    }
    match Pin::new(&mut t.inner).poll_flush(cx) {
        Poll::Ready(Ok(())) => Poll::Ready(Ok(n)),
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => {
            t.accepted = n;
            Poll::Pending
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::TlsServer(t) => Pin::new(&mut t.inner).poll_read(cx, buf),
            Stream::TlsClient(t) => Pin::new(&mut t.inner).poll_read(cx, buf),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::TlsServer(t) => tls_write(t, cx, |s, cx| s.poll_write(cx, buf)),
            Stream::TlsClient(t) => tls_write(t, cx, |s, cx| s.poll_write(cx, buf)),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::TlsServer(t) => tls_write(t, cx, |s, cx| s.poll_write_vectored(cx, bufs)),
            Stream::TlsClient(t) => tls_write(t, cx, |s, cx| s.poll_write_vectored(cx, bufs)),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::TlsServer(t) => Pin::new(&mut t.inner).poll_flush(cx),
            Stream::TlsClient(t) => Pin::new(&mut t.inner).poll_flush(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::TlsServer(t) => Pin::new(&mut t.inner).poll_shutdown(cx),
            Stream::TlsClient(t) => Pin::new(&mut t.inner).poll_shutdown(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }
}

/// Reading half of [`Stream::split`].
pub enum ReadHalf<'a> {
    /// Plain TCP: borrowed half, no locking.
    Plain(tokio::net::tcp::ReadHalf<'a>),
    /// TLS: both halves share the stream.
    Shared(tokio::io::ReadHalf<&'a mut Stream>),
}

/// Writing half of [`Stream::split`].
pub enum WriteHalf<'a> {
    /// Plain TCP: borrowed half, no locking.
    Plain(tokio::net::tcp::WriteHalf<'a>),
    /// TLS: both halves share the stream.
    Shared(tokio::io::WriteHalf<&'a mut Stream>),
}

/// What [`ReadHalf::read_idle`] reads into before the session has a buffer:
/// one per runtime thread, so an idle client holds none of its own.
const IDLE_SCRATCH: usize = 16 * 1024;

thread_local! {
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; IDLE_SCRATCH].into_boxed_slice());
}

impl ReadHalf<'_> {
    /// Read into `buf`, which holds no memory (an idle client's): wait for the
    /// peer to send something, read it into a per-thread scratch buffer, and
    /// copy only what came into `buf`.
    ///
    /// Why not wait for readiness and then reserve: tokio's readiness is
    /// cleared only by a read that would block, so a socket whose last read
    /// took exactly what was there still reports readable, and an idle client
    /// would reserve a buffer it then holds while it waits.
    ///
    /// TLS reads into `buf` directly: decrypted data may be waiting in the TLS
    /// state with no socket readiness to wait on.
    pub async fn read_idle(&mut self, buf: &mut bytes::BytesMut) -> io::Result<usize> {
        match self {
            // Through `poll_read`, not `readable` + `try_read`: tokio's
            // `poll_read` also clears the readiness after a read that did not
            // fill the buffer (the socket is drained), so the next idle wait
            // does not begin with a read that would block (one system call
            // per transaction).
            ReadHalf::Plain(r) => {
                std::future::poll_fn(|cx| {
                    SCRATCH.with(|s| {
                        let mut s = s.borrow_mut();
                        let mut rb = ReadBuf::new(&mut s[..]);
                        std::task::ready!(Pin::new(&mut *r).poll_read(cx, &mut rb))?;
                        buf.extend_from_slice(rb.filled());
                        Poll::Ready(Ok(rb.filled().len()))
                    })
                })
                .await
            }
            ReadHalf::Shared(r) => {
                use tokio::io::AsyncReadExt;
                buf.reserve(8192);
                r.read_buf(buf).await
            }
        }
    }
}

impl AsyncRead for ReadHalf<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Plain(r) => Pin::new(r).poll_read(cx, buf),
            ReadHalf::Shared(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Plain(w) => Pin::new(w).poll_write(cx, buf),
            WriteHalf::Shared(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Plain(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            WriteHalf::Shared(w) => Pin::new(w).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(w) => Pin::new(w).poll_flush(cx),
            WriteHalf::Shared(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(w) => Pin::new(w).poll_shutdown(cx),
            WriteHalf::Shared(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

/// Whether the peer of socket `fd` has closed its side. On Linux, `POLLRDHUP`
/// says so even when bytes it sent before closing are still unread: libpq's
/// `PQfinish` and most drivers send a Terminate message first, and a TLS client
/// a close_notify alert, so "nothing left to read and end of file" would miss
/// every polite close and let the work of a client that left run anyway.
pub fn peer_closed(fd: std::os::fd::RawFd) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one pollfd and a zero timeout; poll only reads the
        // descriptor's state (an invalid one reports POLLNVAL). The caller
        // owns the socket `fd` for as long as it calls this.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        // Elsewhere: end of file with nothing unread, or an error.
        // SAFETY: the caller owns the socket `fd` for as long as it calls this.
        let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let mut b = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        match socket2::SockRef::from(&sock).peek(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            ),
        }
    }
}

/// Whether the peer of socket `fd` closed its side and nothing it sent is
/// left unread: the next read would be the end of the stream. (Elsewhere
/// than on Linux: never said.)
pub fn closed_and_drained(fd: std::os::fd::RawFd) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let mut unread: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int; the caller owns the socket `fd`
        // for as long as it calls this.
        let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut unread) };
        rc == 0 && unread == 0 && peer_closed(fd)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = fd;
        false
    }
}

/// Resolves once [`peer_closed`] says the peer of `fd` closed, looked at every
/// `every` (a plain sleep, not an `Interval`: most waits end before the first
/// look, and an interval costs a boxed timer and an immediate first tick).
pub async fn peer_gone(fd: std::os::fd::RawFd, every: std::time::Duration) {
    loop {
        coarse::sleep(every).await;
        if peer_closed(fd) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A socket registered with one runtime works on another after `rehome`,
    /// while the first runtime still exists but nobody drives it (a busy or
    /// parked worker); bytes that arrived before the move are not missed.
    #[test]
    fn a_rehomed_socket_is_driven_by_the_new_runtime() {
        let first = runtime();
        let (mut stream, peer) = first.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
            let (mut p, _) = l.accept().await.unwrap();
            let mut s = Stream::from(c);
            // Registered and read once here, so the registration is in use.
            p.write_all(b"one").await.unwrap();
            let mut b = [0u8; 3];
            s.read_exact(&mut b).await.unwrap();
            assert_eq!(&b, b"one");
            // Waiting in the socket before the move.
            p.write_all(b"two").await.unwrap();
            (s, p.into_std().unwrap())
        });
        let second = std::thread::spawn(move || {
            let rt = runtime();
            set_worker(7);
            rt.block_on(async move {
                assert_eq!(worker(), 7);
                stream.rehome().unwrap();
                let mut peer = TcpStream::from_std(peer).unwrap();
                // Without the move the reads wait on the undriven first runtime
                // for ever; the timeout turns that into a failure.
                let exchange = async {
                    let mut b = [0u8; 3];
                    stream.read_exact(&mut b).await.unwrap();
                    assert_eq!(&b, b"two");
                    peer.write_all(b"three").await.unwrap();
                    let mut b = [0u8; 5];
                    stream.read_exact(&mut b).await.unwrap();
                    assert_eq!(&b, b"three");
                    stream.write_all(b"back").await.unwrap();
                    let mut b = [0u8; 4];
                    peer.read_exact(&mut b).await.unwrap();
                    assert_eq!(&b, b"back");
                };
                tokio::time::timeout(std::time::Duration::from_secs(10), exchange)
                    .await
                    .expect("the moved socket is driven by this runtime");
            });
        });
        second.join().unwrap();
        drop(first);
        assert_eq!(worker(), NO_WORKER, "only the worker thread was marked");
    }

    #[test]
    fn a_closed_stream_cannot_be_rehomed() {
        assert!(Stream::Closed.rehome().is_err());
    }
}
