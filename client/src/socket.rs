//! UDP sockets for QUIC endpoints, with buffers sized for bulk transfers. Every Bunsan endpoint
//! (clients, nodes, the benchmark's floor) binds through [`bind_udp`].
//!
//! Why: QUIC runs over UDP, and a socket whose receive buffer fills while its process waits
//! for a core drops datagrams. The default (212 KiB on Linux) holds about 150 full packets,
//! less than one 1 MiB share in flight; on a busy two-core machine the benchmark measured
//! thousands of drops a second, each answered by QUIC's loss recovery (a retransmission after
//! a probe timeout, a halved congestion window): puts of 1 MiB shares slowed to a third and
//! their p99 rose to a second. A few MiB of buffer absorb the scheduling gaps.

use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// The receive and send buffer each endpoint asks for: 8 MiB. The kernel caps the request at
/// `net.core.rmem_max` / `wmem_max` (often 4 MiB or less); asking for more is harmless.
pub const SOCKET_BUFFER_BYTES: usize = 8 << 20;

/// Binds a UDP socket at `address` with [`SOCKET_BUFFER_BYTES`] of receive and send buffer
/// (as much of it as the kernel allows: a refused size keeps the default, it is not an error).
pub fn bind_udp(address: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.bind(&address.into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_with_a_larger_receive_buffer_than_the_default() {
        let socket = bind_udp(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
        let buffer = Socket::from(socket).recv_buffer_size().expect("size");
        // Linux reports double the granted size; the default grant is 212 992 bytes.
        assert!(buffer >= 2 * 212_992, "{buffer}");
    }
}
