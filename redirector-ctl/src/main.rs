//! `redirector-ctl`: the router side of WCCPv2.

fn main() {}
