//! Command Extension (component 15, draft-01 section 5.6.12): commands an engine passes to
//! its routers (shutdown) and status a router passes back (shutdown response).

use serde::{Deserialize, Serialize};

use super::address::{Address, VisitAddresses};
use super::codec::{Reader, Writer};
use super::component::{component_api, kind, ComponentBody};
use super::Error;

/// Command types.
pub mod command_type {
    /// 1: the engine is shutting down; stop sending it traffic.
    pub const SHUTDOWN: u16 = 1;
    /// 2: the router acknowledges an engine's shutdown.
    pub const SHUTDOWN_RESPONSE: u16 = 2;
}

/// One command.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Command {
    /// Type 1, carrying the engine's address.
    Shutdown(Address),
    /// Type 2, carrying the address of the engine whose shutdown is acknowledged.
    ShutdownResponse(Address),
    /// Another type (not 1 or 2), kept as bytes.
    Other {
        /// The command type.
        kind: u16,
        /// The command data.
        #[serde(with = "super::codec::hex")]
        data: Vec<u8>,
    },
}

impl Command {
    /// The command type.
    pub fn kind(&self) -> u16 {
        match self {
            Command::Shutdown(_) => command_type::SHUTDOWN,
            Command::ShutdownResponse(_) => command_type::SHUTDOWN_RESPONSE,
            Command::Other { kind, .. } => *kind,
        }
    }

    fn data_len(&self) -> usize {
        match self {
            Command::Other { data, .. } => data.len(),
            _ => 4,
        }
    }

    fn parse(r: &mut Reader<'_>) -> Result<Self, Error> {
        let start = r.offset();
        let kind = r.u16("Command Extension: command type")?;
        let len = usize::from(r.u16("Command Extension: command length")?);
        let mut d = r.sub(len, "Command Extension: command data")?;
        match kind {
            command_type::SHUTDOWN | command_type::SHUTDOWN_RESPONSE => {
                if len != 4 {
                    return Err(Error::LengthMismatch {
                        what: "Command Extension: command",
                        offset: start,
                        declared: len,
                        actual: 4,
                    });
                }
                let a = d.address("Command Extension: web-cache address")?;
                Ok(if kind == command_type::SHUTDOWN {
                    Command::Shutdown(a)
                } else {
                    Command::ShutdownResponse(a)
                })
            }
            other => Ok(Command::Other {
                kind: other,
                data: d.rest().to_vec(),
            }),
        }
    }

    fn emit(&self, w: &mut Writer<'_>) {
        w.u16(self.kind());
        w.len16(self.data_len());
        match self {
            Command::Shutdown(a) | Command::ShutdownResponse(a) => w.address(a),
            Command::Other { data, .. } => w.bytes(data),
        }
    }
}

/// The Command Extension component: commands in wire order (Wireshark reads as many as
/// the body holds).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CommandExtension {
    /// The commands.
    pub commands: Vec<Command>,
}

impl ComponentBody for CommandExtension {
    const KIND: u16 = kind::COMMAND_EXTENSION;
    const NAME: &'static str = "Command Extension";

    fn parse_body(r: &mut Reader<'_>) -> Result<Self, Error> {
        let mut commands = Vec::new();
        while !r.is_empty() {
            commands.push(Command::parse(r)?);
        }
        Ok(CommandExtension { commands })
    }

    fn body_len(&self) -> usize {
        self.commands.iter().map(|c| 4 + c.data_len()).sum()
    }

    fn emit_body(&self, w: &mut Writer<'_>) {
        for c in &self.commands {
            c.emit(w);
        }
    }

    fn check(&self) -> Result<(), Error> {
        match self.commands.iter().find(|c| {
            matches!(
                c,
                Command::Other {
                    kind: command_type::SHUTDOWN | command_type::SHUTDOWN_RESPONSE,
                    ..
                }
            )
        }) {
            Some(c) => Err(Error::BadValue {
                what: "Command Extension: other command type",
                offset: 0,
                value: u32::from(c.kind()),
            }),
            None => Ok(()),
        }
    }
}

impl VisitAddresses for CommandExtension {
    fn visit_addresses(&self, f: &mut dyn FnMut(&'static str, &Address)) {
        for c in &self.commands {
            if let Command::Shutdown(a) | Command::ShutdownResponse(a) = c {
                f("Command Extension: web-cache address", a);
            }
        }
    }
}

component_api!(CommandExtension);

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::AddressMode;
    use std::net::Ipv4Addr;

    static BYTES: [u8; 12] = [0, 15, 0, 8, 0, 1, 0, 4, 10, 0, 0, 2];

    #[test]
    fn parse_emit() {
        let c = CommandExtension {
            commands: vec![Command::Shutdown(Ipv4Addr::new(10, 0, 0, 2).into())],
        };
        assert_eq!(
            CommandExtension::parse(&BYTES, AddressMode::Ipv4).unwrap(),
            c
        );
        let mut out = [0; 12];
        c.emit(&mut out).unwrap();
        assert_eq!(out, BYTES);
    }

    #[test]
    fn several_and_other() {
        let c = CommandExtension {
            commands: vec![
                Command::ShutdownResponse(Address::index(2)),
                Command::Other {
                    kind: 7,
                    data: vec![9; 5],
                },
            ],
        };
        let mut out = vec![0; c.buffer_len()];
        c.emit(&mut out).unwrap();
        assert_eq!(
            CommandExtension::parse(&out, AddressMode::Indexed).unwrap(),
            c
        );
    }

    #[test]
    fn negative() {
        let mut b = BYTES;
        b[7] = 3;
        assert_eq!(
            CommandExtension::parse(&b, AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "length_mismatch"
        );
        let mut b = BYTES;
        b[7] = 5;
        assert_eq!(
            CommandExtension::parse(&b, AddressMode::Ipv4)
                .unwrap_err()
                .kind(),
            "truncated"
        );
        let bad = CommandExtension {
            commands: vec![Command::Other {
                kind: 1,
                data: vec![0; 4],
            }],
        };
        assert_eq!(bad.emit(&mut [0; 16]).unwrap_err().kind(), "bad_value");
    }
}
