//! The transport under both async-imap and our own reader: plain TCP or rustls, with the
//! framing guard (see `guard.rs`) watching every byte read.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::guard::FrameGuard;

#[derive(Debug)]
pub struct Stream {
    io: Io,
    guard: FrameGuard,
}

#[derive(Debug)]
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A framing limit the server went past, carried inside the `io::Error` async-imap sees.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct FramingError(pub(crate) String);

impl Stream {
    pub(crate) fn plain(tcp: TcpStream) -> Self {
        Self { io: Io::Plain(tcp), guard: FrameGuard::default() }
    }

    /// A fresh guard too: after STARTTLS nothing said before counts (RFC 3501 §6.2.1).
    pub(crate) fn tls(tls: TlsStream<TcpStream>) -> Self {
        Self { io: Io::Tls(Box::new(tls)), guard: FrameGuard::default() }
    }

    /// The TCP stream under a plaintext session (for STARTTLS).
    pub(crate) fn into_plain(self) -> Option<TcpStream> {
        match self.io {
            Io::Plain(tcp) => Some(tcp),
            Io::Tls(_) => None,
        }
    }

    /// The negotiated TLS version and the server's certificate (`None` in plaintext).
    pub(crate) fn peer_tls(&self) -> Option<mailferry_model::tls::PeerTls> {
        match &self.io {
            Io::Plain(_) => None,
            Io::Tls(s) => Some(mailferry_model::tls::PeerTls::of_connection(s.get_ref().1)),
        }
    }

    /// We read the connection ourselves from now on, with our own bounds.
    pub(crate) fn relax_limits(&mut self) {
        self.guard.relax();
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let start = buf.filled().len();
        match &mut this.io {
            Io::Plain(s) => ready!(Pin::new(s).poll_read(cx, buf))?,
            Io::Tls(s) => ready!(Pin::new(s).poll_read(cx, buf))?,
        }
        match this.guard.check(&buf.filled()[start..]) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(why) => Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, FramingError(why)))),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
