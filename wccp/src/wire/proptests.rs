//! Property tests: for every component and for whole messages, `parse(emit(repr)) == repr`
//! and `emit(parse(bytes)) == bytes`; and parsing damaged bytes never panics and re-emits
//! exactly whatever it accepts.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::collection::vec;
use proptest::prelude::*;

use super::address::VisitAddresses;
use super::*;

fn address(mode: AddressMode) -> BoxedStrategy<Address> {
    match mode {
        AddressMode::Ipv4 => any::<u32>()
            .prop_map(|a| Address::V4(Ipv4Addr::from(a)))
            .boxed(),
        AddressMode::Indexed => any::<u16>().prop_map(Address::index).boxed(),
    }
}

fn mode() -> impl Strategy<Value = AddressMode> {
    prop_oneof![Just(AddressMode::Ipv4), Just(AddressMode::Indexed)]
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

fn security() -> impl Strategy<Value = SecurityInfo> {
    prop_oneof![
        Just(SecurityInfo::None),
        any::<[u8; 16]>().prop_map(|digest| SecurityInfo::Md5 { digest }),
    ]
}

fn service() -> impl Strategy<Value = ServiceInfo> {
    (
        any::<bool>(),
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        any::<u32>(),
        any::<[u16; 8]>(),
    )
        .prop_map(
            |(d, service_id, priority, protocol, flags, ports)| ServiceInfo {
                service_type: if d {
                    ServiceType::Dynamic
                } else {
                    ServiceType::Standard
                },
                service_id,
                priority,
                protocol,
                flags: ServiceFlags(flags),
                ports,
            },
        )
}

fn router_id(m: AddressMode) -> impl Strategy<Value = RouterIdElement> {
    (address(m), any::<u32>()).prop_map(|(address, receive_id)| RouterIdElement {
        address,
        receive_id,
    })
}

fn key(m: AddressMode) -> impl Strategy<Value = AssignmentKey> {
    (address(m), any::<u32>()).prop_map(|(address, change_number)| AssignmentKey {
        address,
        change_number,
    })
}

fn router_assignment(m: AddressMode) -> impl Strategy<Value = RouterAssignmentElement> {
    (address(m), any::<u32>(), any::<u32>()).prop_map(|(address, receive_id, change_number)| {
        RouterAssignmentElement {
            address,
            receive_id,
            change_number,
        }
    })
}

fn mask_element() -> impl Strategy<Value = MaskElement> {
    (any::<u32>(), any::<u32>(), any::<u16>(), any::<u16>()).prop_map(
        |(src_addr, dst_addr, src_port, dst_port)| MaskElement {
            src_addr,
            dst_addr,
            src_port,
            dst_port,
        },
    )
}

fn value_element(m: AddressMode) -> impl Strategy<Value = ValueElement> {
    (
        address(m),
        address(m),
        any::<u16>(),
        any::<u16>(),
        address(m),
    )
        .prop_map(
            |(src_addr, dst_addr, src_port, dst_port, cache)| ValueElement {
                src_addr,
                dst_addr,
                src_port,
                dst_port,
                cache,
            },
        )
}

fn sets(m: AddressMode) -> impl Strategy<Value = Vec<MaskValueSet>> {
    vec(
        (mask_element(), vec(value_element(m), 0..4))
            .prop_map(|(mask, values)| MaskValueSet { mask, values }),
        0..3,
    )
}

fn alt_sets(m: AddressMode) -> impl Strategy<Value = Vec<AltMaskValueSet>> {
    let wc = (address(m), vec(any::<u32>(), 0..4))
        .prop_map(|(cache, values)| WebCacheValueElement { cache, values });
    vec(
        (mask_element(), vec(wc, 0..3)).prop_map(|(mask, caches)| AltMaskValueSet { mask, caches }),
        0..3,
    )
}

fn bucket_table() -> impl Strategy<Value = BucketTable> {
    vec(any::<u8>(), BUCKETS).prop_map(|v| {
        let mut a = [0u8; BUCKETS];
        a.copy_from_slice(&v);
        BucketTable(Box::new(a))
    })
}

fn hash_assignment(m: AddressMode) -> impl Strategy<Value = HashAssignment> {
    (vec(address(m), 0..5), bucket_table())
        .prop_map(|(caches, buckets)| HashAssignment { caches, buckets })
}

fn hash_data() -> impl Strategy<Value = HashAssignmentData> {
    (any::<[u8; 32]>(), any::<u16>(), any::<u16>()).prop_map(|(b, weight, status)| {
        HashAssignmentData {
            buckets: BucketSet(b),
            weight,
            status,
        }
    })
}

fn mask_data(m: AddressMode) -> impl Strategy<Value = MaskAssignmentData> {
    (sets(m), any::<u16>(), any::<u16>()).prop_map(|(sets, weight, status)| MaskAssignmentData {
        sets,
        weight,
        status,
    })
}

fn extended(m: AddressMode) -> impl Strategy<Value = ExtendedAssignmentData> {
    prop_oneof![
        hash_data().prop_map(ExtendedAssignmentData::Hash),
        mask_data(m).prop_map(ExtendedAssignmentData::Mask),
        (vec(alt_sets(m), 0..3), any::<u16>(), any::<u16>()).prop_map(|(lists, weight, status)| {
            ExtendedAssignmentData::AltMask(AltMaskAssignmentData {
                lists,
                weight,
                status,
            })
        }),
        (any::<u16>(), any::<u16>())
            .prop_map(|(weight, status)| ExtendedAssignmentData::WeightStatus { weight, status }),
        (4u16.., bytes(12)).prop_map(|(kind, data)| ExtendedAssignmentData::Unknown { kind, data }),
    ]
}

fn identity(m: AddressMode) -> impl Strategy<Value = WebCacheIdentity> {
    let data = prop_oneof![
        hash_data().prop_map(AssignmentData::Hash),
        mask_data(m).prop_map(AssignmentData::Mask),
        Just(AssignmentData::NotPresent),
        extended(m).prop_map(AssignmentData::Extended),
    ];
    (address(m), any::<u16>(), any::<u16>(), data).prop_map(
        |(address, hash_revision, flags, assignment)| WebCacheIdentity {
            address,
            hash_revision,
            flags: IdentityFlags(flags & !ASSIGNMENT_TYPE_BITS),
            assignment,
        },
    )
}

fn capability() -> impl Strategy<Value = Capability> {
    prop_oneof![
        any::<u32>().prop_map(|v| Capability::ForwardingMethods(ForwardingMethods(v))),
        any::<u32>().prop_map(|v| Capability::AssignmentMethods(AssignmentMethods(v))),
        any::<u32>().prop_map(|v| Capability::ReturnMethods(ReturnMethods(v))),
        (any::<u16>(), any::<u16>()).prop_map(|(upper_ms, lower_ms)| Capability::TransmitT(
            TransmitT { upper_ms, lower_ms }
        )),
        any::<[u8; 4]>().prop_map(|b| Capability::TimerScale(TimerScale {
            timeout_upper: b[0],
            timeout_lower: b[1],
            ra_upper: b[2],
            ra_lower: b[3],
        })),
        (prop_oneof![Just(0u16), 6u16..], bytes(9))
            .prop_map(|(kind, value)| Capability::Other { kind, value }),
    ]
}

fn command(m: AddressMode) -> impl Strategy<Value = Command> {
    prop_oneof![
        address(m).prop_map(Command::Shutdown),
        address(m).prop_map(Command::ShutdownResponse),
        (prop_oneof![Just(0u16), 3u16..], bytes(9))
            .prop_map(|(kind, data)| Command::Other { kind, data }),
    ]
}

fn address_table() -> impl Strategy<Value = AddressTable> {
    prop_oneof![
        vec(any::<u32>().prop_map(Ipv4Addr::from), 0..5).prop_map(AddressTable::V4),
        vec(any::<u128>().prop_map(Ipv6Addr::from), 0..5).prop_map(AddressTable::V6),
    ]
}

/// One component of every known type (the Address Table apart) or an unknown one.
fn component(m: AddressMode) -> BoxedStrategy<Component> {
    prop_oneof![
        security().prop_map(Component::Security),
        service().prop_map(Component::Service),
        (router_id(m), address(m), vec(address(m), 0..4)).prop_map(
            |(router, sent_to, received_from)| Component::RouterIdentity(RouterIdentityInfo {
                router,
                sent_to,
                received_from
            })
        ),
        identity(m)
            .prop_map(|identity| Component::WebCacheIdentity(WebCacheIdentityInfo { identity })),
        (
            any::<u32>(),
            key(m),
            vec(address(m), 0..4),
            vec(identity(m), 0..3)
        )
            .prop_map(
                |(member_change, key, routers, caches)| Component::RouterView(RouterViewInfo {
                    member_change,
                    key,
                    routers,
                    caches
                })
            ),
        (any::<u32>(), vec(router_id(m), 0..4), vec(address(m), 0..4)).prop_map(
            |(change_number, routers, caches)| Component::WebCacheView(WebCacheViewInfo {
                change_number,
                routers,
                caches
            })
        ),
        (key(m), vec(router_assignment(m), 0..3), hash_assignment(m)).prop_map(
            |(key, routers, hash)| Component::AssignmentInfo(AssignmentInfo { key, routers, hash })
        ),
        (router_id(m), address(m), address(m)).prop_map(|(router, sent_to, target)| {
            Component::RouterQuery(RouterQueryInfo {
                router,
                sent_to,
                target,
            })
        }),
        vec(capability(), 0..5)
            .prop_map(|capabilities| Component::Capabilities(CapabilitiesInfo { capabilities })),
        (
            key(m),
            vec(router_assignment(m), 0..3),
            prop_oneof![
                hash_assignment(m).prop_map(AltAssignmentData::Hash),
                sets(m).prop_map(AltAssignmentData::Mask),
                alt_sets(m).prop_map(AltAssignmentData::AltMask),
                (3u16.., bytes(12))
                    .prop_map(|(kind, data)| AltAssignmentData::Unknown { kind, data }),
            ]
        )
            .prop_map(
                |(key, routers, data)| Component::AltAssignment(AltAssignment {
                    key,
                    routers,
                    data
                })
            ),
        sets(m).prop_map(|sets| Component::AssignmentMap(AssignmentMap { sets })),
        vec(command(m), 0..4)
            .prop_map(|commands| Component::CommandExtension(CommandExtension { commands })),
        prop_oneof![
            (key(m), vec(router_assignment(m), 0..3), hash_assignment(m)).prop_map(
                |(key, routers, hash)| AltAssignmentMap::Hash(AssignmentInfo {
                    key,
                    routers,
                    hash
                })
            ),
            sets(m).prop_map(AltAssignmentMap::Mask),
            alt_sets(m).prop_map(AltAssignmentMap::AltMask),
            (3u16.., bytes(12)).prop_map(|(kind, data)| AltAssignmentMap::Unknown { kind, data }),
        ]
        .prop_map(Component::AltAssignmentMap),
        (
            any::<u16>().prop_filter("unknown type", |k| !kind::is_known(*k)),
            bytes(20)
        )
            .prop_map(|(kind, body)| Component::Unknown { kind, body }),
    ]
    .boxed()
}

/// A message: known components at most once each, in any order, unknown ones anywhere, and
/// an Address Table exactly when the addresses are indexes.
fn message() -> impl Strategy<Value = Message> {
    mode().prop_flat_map(|m| {
        (
            prop_oneof![Just(Version::V2), Just(Version::V2Rev1)],
            prop_oneof![
                Just(MessageType::HereIAm),
                Just(MessageType::ISeeYou),
                Just(MessageType::RedirectAssign),
                Just(MessageType::RemovalQuery),
            ],
            vec(component(m), 0..8),
            address_table(),
            any::<prop::sample::Index>(),
        )
            .prop_map(move |(version, message_type, comps, table, at)| {
                let mut seen = std::collections::HashSet::new();
                let mut components: Vec<Component> = comps
                    .into_iter()
                    .filter(|c| !kind::is_known(c.kind()) || seen.insert(c.kind()))
                    .collect();
                if m == AddressMode::Indexed {
                    let i = at.index(components.len() + 1);
                    components.insert(i, Component::AddressTable(table));
                }
                Message {
                    version,
                    message_type,
                    components,
                }
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn component_round_trip(c in mode().prop_flat_map(component)) {
        let mut mode = AddressMode::Ipv4;
        c.visit_addresses(&mut |_, a| mode = a.mode());
        let mut buf = vec![0u8; c.buffer_len()];
        prop_assert_eq!(c.emit(&mut buf)?, buf.len());
        let back = Component::parse(&buf, mode)?;
        prop_assert_eq!(&back, &c);
        let mut again = vec![0u8; back.buffer_len()];
        back.emit(&mut again)?;
        prop_assert_eq!(again, buf);
    }

    #[test]
    fn address_table_round_trip(t in address_table()) {
        let mut buf = vec![0u8; t.buffer_len()];
        t.emit(&mut buf)?;
        prop_assert_eq!(AddressTable::parse(&buf, AddressMode::Ipv4)?, t);
    }

    #[test]
    fn message_round_trip(m in message()) {
        let bytes = m.to_bytes()?;
        prop_assert_eq!(bytes.len(), m.buffer_len());
        let back = Message::parse(&bytes)?;
        prop_assert_eq!(&back, &m);
        prop_assert_eq!(back.to_bytes()?, bytes);
        // JSON is a faithful copy too.
        let json = serde_json::to_string(&m).unwrap();
        let from_json: Message = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(from_json, m);
    }

    #[test]
    fn damaged_messages_never_panic(
        m in message(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let mut bytes = m.to_bytes()?;
        for (i, v) in edits {
            let i = i.index(bytes.len());
            bytes[i] = v;
        }
        if do_cut {
            let n = cut.index(bytes.len() + 1);
            bytes.truncate(n);
        }
        if let Ok(p) = Message::parse(&bytes) {
            prop_assert_eq!(p.to_bytes()?, bytes.clone());
        }
        let _ = md5_verify(&bytes, b"pw");
    }

    #[test]
    fn md5_round_trip(m in message(), pw in bytes(12)) {
        let mut m = m;
        m.components.retain(|c| c.kind() != kind::SECURITY_INFO);
        m.components.insert(0, Component::Security(SecurityInfo::md5_unsigned()));
        let signed = m.to_bytes_signed(&pw)?;
        prop_assert!(md5_verify(&signed, &pw).is_ok());
        let mut other = [0u8; MAX_PASSWORD_LEN];
        let n = pw.len().min(MAX_PASSWORD_LEN);
        other[..n].copy_from_slice(&pw[..n]);
        other[0] ^= 1;
        prop_assert_eq!(md5_verify(&signed, &other), Err(Error::Md5Mismatch));
    }

    #[test]
    fn gre_and_redirect_round_trip(
        checksum in any::<Option<u16>>(),
        key in any::<Option<u32>>(),
        sequence in any::<Option<u32>>(),
        protocol in any::<u16>(),
        flags in any::<[bool; 3]>(),
        rest in any::<[u8; 3]>(),
    ) {
        let g = GreRepr { checksum, key, sequence, protocol };
        let mut buf = vec![0u8; g.buffer_len()];
        g.emit(&mut buf)?;
        prop_assert_eq!(GreRepr::parse(&GrePacket::new_checked(&buf[..])?)?, g);
        for layout in [RedirectLayout::Wireshark, RedirectLayout::Draft01] {
            let r = RedirectHeaderRepr {
                dynamic: flags[0],
                alt_bucket_used: flags[1],
                ignore: flags[2] && layout == RedirectLayout::Wireshark,
                service_id: rest[0],
                alt_bucket: rest[1],
                primary_bucket: rest[2],
            };
            let mut b = [0u8; 4];
            r.emit(&mut b, layout)?;
            prop_assert_eq!(RedirectHeaderRepr::parse(&RedirectHeader::new_checked(&b[..])?, layout)?, r);
        }
    }
}
