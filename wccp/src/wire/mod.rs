//! Bytes ⇄ typed WCCPv2 messages and components.
