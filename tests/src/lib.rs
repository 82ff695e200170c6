//! Harness for the project's integration tests: capture files our messages can be written
//! to, independent decoders to read them back, and network namespaces ([`netns`]) with veths,
//! bridges and processes that are torn down even when a test fails.

pub mod checksum;
pub mod daemons;
pub mod netns;
pub mod pcap;
pub mod rng;
pub mod sockets;
pub mod tshark;
