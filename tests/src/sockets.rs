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
