//! A connection's socket once its handshake is done, clear or TLS, cut into the
//! reader's half and the driver's.
//!
//! Clear TCP on dedicated threads is one blocking socket, read and written by direct
//! calls from two threads. On the shared threads it stays in the reactor, and both
//! halves await it. TLS cannot be cut into two sockets (one rustls state encrypts and
//! decrypts), so its stream keeps the async socket and is split with
//! `futures_lite::io::split`: both halves share it behind a lock held only for each read
//! or write call. Either half can shut the socket down, which ends the other's wait.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use futures_lite::io::{AsyncReadExt, AsyncWriteExt};

use crate::tls::TlsStream;

/// A connection that has done its handshake.
pub(crate) enum Stream {
    /// Clear text, on a blocking socket (dedicated threads).
    Tcp(std::net::TcpStream),
    /// Clear text, on the reactor's socket (shared threads).
    Async(async_net::TcpStream),
    /// TLS over the reactor's socket.
    Tls(Box<TlsStream>),
}

/// The reader's half.
pub(super) enum ReadHalf {
    Tcp(std::net::TcpStream),
    Async(async_net::TcpStream),
    Tls {
        half: futures_lite::io::ReadHalf<TlsStream>,
        /// The TCP socket under the TLS stream, to shut down.
        socket: async_net::TcpStream,
    },
}

/// The driver's half.
pub(super) enum WriteHalf {
    Tcp(std::net::TcpStream),
    Async(async_net::TcpStream),
    Tls {
        half: futures_lite::io::WriteHalf<TlsStream>,
        /// The TCP socket under the TLS stream, to shut down.
        socket: async_net::TcpStream,
    },
}

impl Stream {
    pub(super) fn split(self) -> io::Result<(ReadHalf, WriteHalf)> {
        match self {
            Stream::Tcp(s) => Ok((ReadHalf::Tcp(s.try_clone()?), WriteHalf::Tcp(s))),
            Stream::Async(s) => Ok((ReadHalf::Async(s.clone()), WriteHalf::Async(s))),
            Stream::Tls(tls) => {
                let socket = tls.get_ref().0.clone();
                let (r, w) = futures_lite::io::split(*tls);
                Ok((
                    ReadHalf::Tls {
                        half: r,
                        socket: socket.clone(),
                    },
                    WriteHalf::Tls { half: w, socket },
                ))
            }
        }
    }
}

impl ReadHalf {
    /// Reads into `buf`: a blocking call on a blocking socket (its reader thread has
    /// nothing else to do), an await on the others.
    pub(super) async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ReadHalf::Tcp(s) => s.read(buf),
            ReadHalf::Async(s) => s.read(buf).await,
            ReadHalf::Tls { half, .. } => half.read(buf).await,
        }
    }

    /// Ends the connection: the writer's next write fails, a blocked one too.
    pub(super) fn shutdown(&self) {
        let _ = match self {
            ReadHalf::Tcp(s) => s.shutdown(Shutdown::Both),
            ReadHalf::Async(s) => s.shutdown(Shutdown::Both),
            ReadHalf::Tls { socket, .. } => socket.shutdown(Shutdown::Both),
        };
    }
}

impl WriteHalf {
    /// Writes all of `buf`: with one blocking call on clear TCP (a full socket holds up
    /// the driver's thread, which has nothing else to do meanwhile), encrypted and
    /// flushed on TLS.
    pub(super) async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            WriteHalf::Tcp(s) => s.write_all(buf),
            WriteHalf::Async(s) => s.write_all(buf).await,
            WriteHalf::Tls { half, .. } => {
                half.write_all(buf).await?;
                half.flush().await
            }
        }
    }

    /// Ends the connection: the reader's read returns.
    pub(super) fn shutdown(&self) {
        let _ = match self {
            WriteHalf::Tcp(s) => s.shutdown(Shutdown::Both),
            WriteHalf::Async(s) => s.shutdown(Shutdown::Both),
            WriteHalf::Tls { socket, .. } => socket.shutdown(Shutdown::Both),
        };
    }
}
