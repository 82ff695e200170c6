//! The policy routing that makes marked packets for foreign addresses local, added and
//! removed by rtnetlink with the plain socket API: two fixed messages do not justify an
//! async netlink stack in this crate.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_NEWRULE: u16 = 32;
const RTM_DELRULE: u16 = 33;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const FRA_PRIORITY: u16 = 6;
const FRA_FWMARK: u16 = 10;
const FRA_TABLE: u16 = 15;
const FRA_FWMASK: u16 = 16;
const FR_ACT_TO_TBL: u8 = 1;
const RTA_OIF: u16 = 4;
const RTA_TABLE: u16 = 15;
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_HOST: u8 = 254;
const RTN_LOCAL: u8 = 2;
/// Where the kernel puts rules that name no priority, counting down from 32766 (main).
/// A fixed one lets removal name exactly our rule.
pub const DEFAULT_RULE_PRIORITY: u32 = 2048;

/// The rule `fwmark MARK lookup TABLE` and the route `local 0.0.0.0/0 dev lo table
/// TABLE`, in the network namespace where [`LocalDelivery::install`] ran; both are
/// removed on drop (or [`LocalDelivery::remove`]), from that namespace whichever thread
/// drops it.
#[derive(Debug)]
pub struct LocalDelivery {
    socket: OwnedFd,
    mark: u32,
    table: u32,
    priority: u32,
    /// `lo`'s index in the socket's namespace, resolved at install.
    lo: u32,
    removed: bool,
}

/// Appends one netlink attribute (type, 4-byte value).
fn attr_u32(buf: &mut Vec<u8>, kind: u16, value: u32) {
    buf.extend_from_slice(&8u16.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&value.to_ne_bytes());
}

/// `struct fib_rule_hdr` + attributes of our rule.
fn rule_body(mark: u32, table: u32, priority: u32) -> Vec<u8> {
    let mut b = vec![
        libc::AF_INET as u8,
        0,
        0,
        0,
        0, // table: RT_TABLE_UNSPEC, FRA_TABLE says it
        0,
        0,
        FR_ACT_TO_TBL,
    ];
    b.extend_from_slice(&0u32.to_ne_bytes());
    attr_u32(&mut b, FRA_PRIORITY, priority);
    attr_u32(&mut b, FRA_FWMARK, mark);
    attr_u32(&mut b, FRA_FWMASK, u32::MAX);
    attr_u32(&mut b, FRA_TABLE, table);
    b
}

/// `struct rtmsg` + attributes of our route.
fn route_body(table: u32, lo: u32) -> Vec<u8> {
    let mut b = vec![
        libc::AF_INET as u8,
        0, // dst_len: 0.0.0.0/0
        0,
        0,
        0, // table: RTA_TABLE says it
        RTPROT_STATIC,
        RT_SCOPE_HOST,
        RTN_LOCAL,
    ];
    b.extend_from_slice(&0u32.to_ne_bytes());
    attr_u32(&mut b, RTA_TABLE, table);
    attr_u32(&mut b, RTA_OIF, lo);
    b
}

impl LocalDelivery {
    /// Adds the rule and the route in the calling thread's network namespace. A rule or
    /// route already there (left by a process that died) is taken over, and removed with
    /// ours.
    pub fn install(mark: u32, table: u32, priority: u32) -> io::Result<Self> {
        // SAFETY: plain socket/bind calls; the address is zeroed except its family.
        let socket = unsafe {
            let fd = libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as u16;
            if libc::bind(
                fd.as_raw_fd(),
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            fd
        };
        // SAFETY: a NUL-terminated name.
        let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        if lo == 0 {
            return Err(io::Error::last_os_error());
        }
        let mut this = Self {
            socket,
            mark,
            table,
            priority,
            lo,
            removed: true,
        };
        match this.request(
            RTM_NEWRULE,
            NLM_F_CREATE | NLM_F_EXCL,
            &rule_body(mark, table, priority),
        ) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
        this.removed = false;
        // From here on, drop removes the rule if the route fails.
        this.request(
            RTM_NEWROUTE,
            NLM_F_CREATE | NLM_F_REPLACE,
            &route_body(table, lo),
        )?;
        Ok(this)
    }

    /// The mark the rule matches.
    pub fn mark(&self) -> u32 {
        self.mark
    }

    /// The table the rule sends marked packets to.
    pub fn table(&self) -> u32 {
        self.table
    }

    /// Removes the rule and the route now, reporting failures (drop ignores them).
    pub fn remove(mut self) -> io::Result<()> {
        self.remove_both()
    }

    fn remove_both(&mut self) -> io::Result<()> {
        if std::mem::replace(&mut self.removed, true) {
            return Ok(());
        }
        let lo = self.lo;
        let gone = |r: io::Result<()>| match r {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => other,
        };
        let route = gone(self.request(RTM_DELROUTE, 0, &route_body(self.table, lo)));
        let rule = gone(self.request(
            RTM_DELRULE,
            0,
            &rule_body(self.mark, self.table, self.priority),
        ));
        route.and(rule)
    }

    /// Sends one request and waits for its acknowledgement.
    fn request(&self, kind: u16, flags: u16, body: &[u8]) -> io::Result<()> {
        let len = 16 + body.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
        msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        msg.extend_from_slice(body);
        // SAFETY: the buffer outlives the call; the socket is ours.
        let sent = unsafe {
            libc::send(
                self.socket.as_raw_fd(),
                msg.as_ptr() as *const libc::c_void,
                msg.len(),
                0,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut reply = [0u8; 4096];
        loop {
            // SAFETY: recv writes at most reply.len() bytes into reply.
            let n = unsafe {
                libc::recv(
                    self.socket.as_raw_fd(),
                    reply.as_mut_ptr() as *mut libc::c_void,
                    reply.len(),
                    0,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            if n < 20 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "short netlink reply",
                ));
            }
            let reply_kind = u16::from_ne_bytes([reply[4], reply[5]]);
            if reply_kind != NLMSG_ERROR {
                continue;
            }
            let code = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
            return if code == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(-code))
            };
        }
    }
}

impl Drop for LocalDelivery {
    fn drop(&mut self) {
        let _ = self.remove_both();
    }
}
