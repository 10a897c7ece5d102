//! The HTTP listener. With `TRELLIS_REUSE_PORT` several `trellis serve` processes on one
//! machine share a port and the kernel spreads new connections over them. On a small
//! machine one single-threaded process per core keeps each request's data on one core,
//! which held the users list at a steady rate where one two-threaded process moves
//! between two, at a longer p99 for larger answers (`docs/benchmarks.md`, session 20).

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Connections waiting to be accepted before the kernel refuses more (what
/// `TcpListener::bind` asks for too).
const BACKLOG: u32 = 1024;

/// Listens on `addr`; with `reuse_port`, alongside other sockets of this user that
/// listen on it with `SO_REUSEPORT` too.
///
/// # Errors
/// When the address cannot be bound (taken without `reuse_port` on both sides, or not
/// ours to bind).
pub fn listen(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted server can bind while the old one's
    // connections are still in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}
