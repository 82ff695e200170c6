//! `engine-agent`: the engine side of WCCPv2.

fn main() {}
