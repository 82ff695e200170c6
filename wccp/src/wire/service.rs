//! Service Info (component 1, draft-01 section 5.6.2): which traffic a service group
//! redirects and how its hash key is built.

use serde::{Deserialize, Serialize};

use super::address::{Address, VisitAddresses};
use super::codec::{wire_flags, Reader, Writer};
use super::component::{component_api, kind, ComponentBody};
use super::Error;

/// The well-known service 0, HTTP to port 80, that routers know without a description.
pub const SERVICE_WEB_CACHE: u8 = 0;

/// Priority the draft gives well-known services.
pub const WELL_KNOWN_PRIORITY: u8 = 240;

mod field {
    use crate::wire::codec::Field;

    pub const SERVICE_TYPE: usize = 0;
    pub const PORTS: Field = 8..24;
}

/// Body size of a Service Info component.
pub const SERVICE_INFO_LEN: usize = field::PORTS.end;

/// Whether the router knows the service by number or needs it described.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServiceType {
    /// 0: well known; only the service id matters (the draft wants the rest zero).
    Standard,
    /// 1: described by protocol, flags and ports.
    Dynamic,
}

impl ServiceType {
    /// The wire value.
    pub const fn to_u8(self) -> u8 {
        match self {
            ServiceType::Standard => 0,
            ServiceType::Dynamic => 1,
        }
    }
}

wire_flags! {
    /// Service flags: which packet fields make the primary and alternate hash keys, and how
    /// the port list applies. The bit values are the draft's (0x0040 is revision 1's).
    pub struct ServiceFlags(u32) {
        /// Source address in the primary hash.
        const SRC_IP_HASH = 0x0001, "src_ip_hash";
        /// Destination address in the primary hash.
        const DST_IP_HASH = 0x0002, "dst_ip_hash";
        /// Source port in the primary hash.
        const SRC_PORT_HASH = 0x0004, "src_port_hash";
        /// Destination port in the primary hash.
        const DST_PORT_HASH = 0x0008, "dst_port_hash";
        /// The port list applies.
        const PORTS_DEFINED = 0x0010, "ports_defined";
        /// The port list names source ports (else destination ports).
        const PORTS_SOURCE = 0x0020, "ports_source";
        /// Revision 1 (Wireshark's name for the bit): redirect only IP protocol 0.
        const REDIRECT_ONLY_PROTOCOL_0 = 0x0040, "redirect_only_protocol_0";
        /// Source address in the alternate hash.
        const SRC_IP_ALT_HASH = 0x0100, "src_ip_alt_hash";
        /// Destination address in the alternate hash.
        const DST_IP_ALT_HASH = 0x0200, "dst_ip_alt_hash";
        /// Source port in the alternate hash.
        const SRC_PORT_ALT_HASH = 0x0400, "src_port_alt_hash";
        /// Destination port in the alternate hash.
        const DST_PORT_ALT_HASH = 0x0800, "dst_port_alt_hash";
    }
}

/// The Service Info component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// Standard or dynamic.
    pub service_type: ServiceType,
    /// The service group number (0 to 255; 0 is the well-known web-cache service).
    pub service_id: u8,
    /// Match order, highest first.
    pub priority: u8,
    /// IP protocol number.
    pub protocol: u8,
    /// Hash and port flags.
    pub flags: ServiceFlags,
    /// Up to eight ports, zero-terminated (used when `PORTS_DEFINED` is set).
    pub ports: [u16; 8],
}

impl ServiceInfo {
    /// The well-known web-cache service, as Squid sends it: every field but the id zero.
    pub const fn web_cache() -> ServiceInfo {
        ServiceInfo {
            service_type: ServiceType::Standard,
            service_id: SERVICE_WEB_CACHE,
            priority: 0,
            protocol: 0,
            flags: ServiceFlags::empty(),
            ports: [0; 8],
        }
    }

    /// A dynamic service; `ports` beyond eight are an error of the caller's configuration,
    /// so only the first eight are kept.
    pub fn dynamic(
        service_id: u8,
        priority: u8,
        protocol: u8,
        flags: ServiceFlags,
        ports: &[u16],
    ) -> ServiceInfo {
        let mut p = [0u16; 8];
        for (slot, port) in p.iter_mut().zip(ports) {
            *slot = *port;
        }
        ServiceInfo {
            service_type: ServiceType::Dynamic,
            service_id,
            priority,
            protocol,
            flags,
            ports: p,
        }
    }

    /// The ports in use: those before the first zero.
    pub fn active_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports.iter().copied().take_while(|p| *p != 0)
    }
}

impl ComponentBody for ServiceInfo {
    const KIND: u16 = kind::SERVICE_INFO;
    const NAME: &'static str = "Service Info";

    fn parse_body(r: &mut Reader<'_>) -> Result<Self, Error> {
        let offset = r.offset();
        let t = r.u8("Service Info: service type")?;
        let service_type = match t {
            0 => ServiceType::Standard,
            1 => ServiceType::Dynamic,
            value => {
                return Err(Error::BadValue {
                    what: "Service Info: service type",
                    offset: offset + field::SERVICE_TYPE,
                    value: u32::from(value),
                })
            }
        };
        let service_id = r.u8("Service Info: service id")?;
        let priority = r.u8("Service Info: priority")?;
        let protocol = r.u8("Service Info: protocol")?;
        let flags = ServiceFlags(r.u32("Service Info: flags")?);
        let mut ports = [0u16; 8];
        for p in &mut ports {
            *p = r.u16("Service Info: ports")?;
        }
        Ok(ServiceInfo {
            service_type,
            service_id,
            priority,
            protocol,
            flags,
            ports,
        })
    }

    fn body_len(&self) -> usize {
        SERVICE_INFO_LEN
    }

    fn emit_body(&self, w: &mut Writer<'_>) {
        w.u8(self.service_type.to_u8());
        w.u8(self.service_id);
        w.u8(self.priority);
        w.u8(self.protocol);
        w.u32(self.flags.bits());
        for p in self.ports {
            w.u16(p);
        }
    }
}

impl VisitAddresses for ServiceInfo {
    fn visit_addresses(&self, _: &mut dyn FnMut(&'static str, &Address)) {}
}

component_api!(ServiceInfo);

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::AddressMode;

    static BYTES: [u8; 28] = [
        0x00, 0x01, 0x00, 0x18, // type 1, length 24
        0x01, 0x5a, 0x0a, 0x06, // dynamic, id 90, priority 10, TCP
        0x00, 0x00, 0x00, 0x12, // dst_ip_hash | ports_defined
        0x00, 0x50, 0x01, 0xbb, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // 80, 443
    ];

    fn repr() -> ServiceInfo {
        ServiceInfo::dynamic(
            90,
            10,
            6,
            ServiceFlags::DST_IP_HASH | ServiceFlags::PORTS_DEFINED,
            &[80, 443],
        )
    }

    #[test]
    fn parse() {
        let s = ServiceInfo::parse(&BYTES, AddressMode::Ipv4).unwrap();
        assert_eq!(s, repr());
        assert_eq!(s.active_ports().collect::<Vec<_>>(), vec![80, 443]);
        assert_eq!(s.flags.names(), vec!["dst_ip_hash", "ports_defined"]);
    }

    #[test]
    fn emit() {
        let mut buf = [0xa5u8; 28];
        repr().emit(&mut buf).unwrap();
        assert_eq!(buf, BYTES);
        assert_eq!(repr().buffer_len(), 28);
    }

    #[test]
    fn unknown_flag_bits_survive() {
        let mut b = BYTES;
        b[8] = 0x80;
        let s = ServiceInfo::parse(&b, AddressMode::Ipv4).unwrap();
        assert_eq!(s.flags.unknown_bits(), 0x8000_0000);
        let mut out = [0u8; 28];
        s.emit(&mut out).unwrap();
        assert_eq!(out, b);
    }

    #[test]
    fn negative() {
        let mut b = BYTES;
        b[4] = 2;
        assert_eq!(
            ServiceInfo::parse(&b, AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "bad_value"
        );
        let mut short = BYTES[..27].to_vec();
        short[3] = 23;
        assert_eq!(
            ServiceInfo::parse(&short, AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "truncated"
        );
        let mut long = BYTES.to_vec();
        long[3] = 26;
        long.extend([0, 0]);
        assert_eq!(
            ServiceInfo::parse(&long, AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "length_mismatch"
        );
    }

    #[test]
    fn json_shows_flag_names() {
        let j = serde_json::to_value(repr()).unwrap();
        assert_eq!(j["flags"]["bits"], 0x12);
        assert_eq!(j["flags"]["names"][1], "ports_defined");
        let back: ServiceInfo = serde_json::from_value(j).unwrap();
        assert_eq!(back, repr());
    }
}
