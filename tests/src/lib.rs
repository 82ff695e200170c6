//! A small network-namespace harness: hosts, veths, bridges, processes inside a
//! namespace, and teardown that runs even when a test fails.
