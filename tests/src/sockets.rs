//! Low-level socket helpers the engine-side tests, the e2e proxy and the lab all need. They
//! live here once because each is unsafe libc code that is easy to get subtly wrong in a copy.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A listening socket on 0.0.0.0:`port` in the calling thread's namespace.
///
/// `transparent` sets `IP_TRANSPARENT`: the kernel hands a redirected flow addressed to a
/// foreign destination (what the engine data plane delivers) only to such a socket.
/// `reuse_addr` sets `SO_REUSEADDR` so a restarted proxy can bind again at once.
pub fn wildcard_listener(
    port: u16,
    transparent: bool,
    reuse_addr: bool,
    backlog: i32,
) -> io::Result<TcpListener> {
    let fail = |what: &str| {
        let e = io::Error::last_os_error();
        io::Error::new(e.kind(), format!("{what}: {e}"))
    };
    // SAFETY: socket, setsockopt, bind and listen on a descriptor we own; the option values
    // and the address are initialised and of the sizes passed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(fail("socket"));
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let mut options = Vec::new();
        if transparent {
            options.push((libc::SOL_IP, libc::IP_TRANSPARENT, "IP_TRANSPARENT"));
        }
        if reuse_addr {
            options.push((libc::SOL_SOCKET, libc::SO_REUSEADDR, "SO_REUSEADDR"));
        }
        for (level, option, name) in options {
            let rc = libc::setsockopt(
                fd.as_raw_fd(),
                level,
                option,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            );
            if rc != 0 {
                return Err(fail(name));
            }
        }
        let mut sin: libc::sockaddr_in = std::mem::zeroed();
        sin.sin_family = libc::AF_INET as u16;
        sin.sin_port = port.to_be();
        let rc = libc::bind(
            fd.as_raw_fd(),
            &sin as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        if rc != 0 {
            return Err(fail("bind"));
        }
        if libc::listen(fd.as_raw_fd(), backlog) != 0 {
            return Err(fail("listen"));
        }
        Ok(TcpListener::from(fd))
    }
}

/// `ETHTOOL_STXCSUM`: transmit checksum offload on or off.
pub const ETHTOOL_STXCSUM: u32 = 0x17;
/// `ETHTOOL_SGRO`: generic receive offload on or off.
pub const ETHTOOL_SGRO: u32 = 0x2c;

/// One `ethtool` set command (`cmd`, `value`) on `ifname` by the legacy `SIOCETHTOOL`
/// ioctl, in the calling thread's namespace: no ethtool binary needed.
pub fn ethtool_set(ifname: &str, cmd: u32, value: u32) -> anyhow::Result<()> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut EthtoolValue,
        pad: [u8; 16],
    }
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    let mut v = EthtoolValue { cmd, data: value };
    let mut req = IfReq {
        name: [0; 16],
        data: &mut v,
        pad: [0; 16],
    };
    anyhow::ensure!(ifname.len() < 16, "interface name {ifname} too long");
    req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: a socket we own; the request and the value it points to outlive the call.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        anyhow::ensure!(fd >= 0, "socket: {}", io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let rc = libc::ioctl(fd.as_raw_fd(), SIOCETHTOOL as _, &mut req);
        anyhow::ensure!(
            rc == 0,
            "ethtool {cmd:#x} on {ifname}: {}",
            io::Error::last_os_error()
        );
    }
    Ok(())
}

/// `ethtool -K IF tx off`. A veth hands its peer TCP segments whose checksum covers only the
/// pseudo-header (CHECKSUM_PARTIAL); an XDP program that sends such a frame on (XDP_TX,
/// redirect) drops that state and the receiver sees a bad checksum. Real NICs deliver
/// complete checksums, so senders in the tests must compute them.
pub fn tx_checksum_off(ifname: &str) -> anyhow::Result<()> {
    ethtool_set(ifname, ETHTOOL_STXCSUM, 0)
}

/// `ethtool -K IF gro on`: frames an XDP program redirects into a veth arrive at its peer
/// only when the peer runs NAPI (an XDP program or GRO there).
pub fn gro_on(ifname: &str) -> anyhow::Result<()> {
    ethtool_set(ifname, ETHTOOL_SGRO, 1)
}

/// `ETH_P_ALL`: every protocol, in network order where the kernel wants it.
const ETH_P_ALL: u16 = 0x0003;

/// A raw `AF_PACKET` socket bound to one interface: how the tests put hand-made frames on
/// a wire and see exactly what crossed it (GRE included), where no stack would hand them
/// to a normal socket. Open it inside the namespace (it stays bound to it afterwards).
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
}

/// One frame read from a [`PacketSocket`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The frame, Ethernet header first.
    pub bytes: Vec<u8>,
    /// Sent by this host (the socket sees both directions).
    pub outgoing: bool,
}

impl PacketSocket {
    /// Binds to `ifindex` of the calling thread's namespace; [`PacketSocket::recv`] gives
    /// up after `timeout`.
    pub fn open(ifindex: u32, timeout: std::time::Duration) -> anyhow::Result<Self> {
        use anyhow::ensure;
        // SAFETY: socket, bind and setsockopt on a descriptor we own, with initialised
        // arguments of the sizes passed.
        unsafe {
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ALL.to_be()),
            );
            ensure!(fd >= 0, "socket: {}", io::Error::last_os_error());
            let fd = OwnedFd::from_raw_fd(fd);
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = ETH_P_ALL.to_be();
            sll.sll_ifindex = ifindex as i32;
            ensure!(
                libc::bind(
                    fd.as_raw_fd(),
                    &sll as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                ) == 0,
                "bind to interface {ifindex}: {}",
                io::Error::last_os_error()
            );
            let tv = libc::timeval {
                tv_sec: timeout.as_secs() as libc::time_t,
                tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
            };
            ensure!(
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    &tv as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::timeval>() as u32,
                ) == 0,
                "SO_RCVTIMEO: {}",
                io::Error::last_os_error()
            );
            Ok(Self { fd, ifindex })
        }
    }

    /// Raises the receive buffer past the system limit (`SO_RCVBUFFORCE`, root), for
    /// captures that arrive in bursts faster than the test reads them.
    pub fn set_receive_buffer(&self, bytes: i32) -> anyhow::Result<()> {
        // SAFETY: setsockopt reads an initialised c_int of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                &bytes as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        anyhow::ensure!(rc == 0, "SO_RCVBUFFORCE: {}", io::Error::last_os_error());
        Ok(())
    }

    /// Sends one frame as it is, out of the bound interface.
    pub fn send(&self, frame: &[u8]) -> anyhow::Result<()> {
        // SAFETY: sockaddr_ll is fully initialised; sendto reads frame.len() bytes.
        let n = unsafe {
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = self.ifindex as i32;
            sll.sll_halen = 6;
            let mac = frame.len().min(6);
            sll.sll_addr[..mac].copy_from_slice(&frame[..mac]);
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        anyhow::ensure!(
            n == frame.len() as isize,
            "AF_PACKET send on interface {}: {}",
            self.ifindex,
            io::Error::last_os_error()
        );
        Ok(())
    }

    /// The next frame in either direction, or `None` after the timeout.
    pub fn recv(&self) -> Option<Received> {
        let mut buf = vec![0u8; 65536];
        // SAFETY: recvfrom writes at most buf.len() bytes into buf and a sockaddr_ll of
        // the size given.
        unsafe {
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            let n = libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
                &mut sll as *mut _ as *mut libc::sockaddr,
                &mut len,
            );
            if n <= 0 {
                return None;
            }
            buf.truncate(n as usize);
            Some(Received {
                bytes: buf,
                outgoing: sll.sll_pkttype == libc::PACKET_OUTGOING,
            })
        }
    }
}
