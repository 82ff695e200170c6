//! Fixed-size information elements that several components share (draft-01 section 5.7).

use serde::{Deserialize, Serialize};

use super::address::{Address, VisitAddresses};
use super::codec::{Reader, Writer};
use super::Error;

/// Router ID Element (5.7.1): a router's address and its Receive ID, the counter that proves
/// two-way connectivity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RouterIdElement {
    /// The router's identifying address.
    pub address: Address,
    /// Incremented per I-See-You; never zero from a live router.
    pub receive_id: u32,
}

impl RouterIdElement {
    /// Bytes on the wire.
    pub const LEN: usize = 8;

    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(RouterIdElement {
            address: r.address("Router ID Element: address")?,
            receive_id: r.u32("Router ID Element: receive id")?,
        })
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) {
        w.address(&self.address);
        w.u32(self.receive_id);
    }
}

impl VisitAddresses for RouterIdElement {
    fn visit_addresses(&self, f: &mut dyn FnMut(&'static str, &Address)) {
        f("Router ID Element", &self.address);
    }
}

/// Assignment Key Element (5.7.3): names one assignment, so the designated engine can see in
/// the routers' views whether they have applied it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AssignmentKey {
    /// The designated engine's address.
    pub address: Address,
    /// Incremented on every new assignment.
    pub change_number: u32,
}

impl AssignmentKey {
    /// Bytes on the wire.
    pub const LEN: usize = 8;

    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(AssignmentKey {
            address: r.address("Assignment Key: address")?,
            change_number: r.u32("Assignment Key: change number")?,
        })
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) {
        w.address(&self.address);
        w.u32(self.change_number);
    }
}

impl VisitAddresses for AssignmentKey {
    fn visit_addresses(&self, f: &mut dyn FnMut(&'static str, &Address)) {
        f("Assignment Key", &self.address);
    }
}

/// Router Assignment Element (5.7.4): the receive id and member change number the designated
/// engine last saw from one router; a router ignores an assignment whose numbers are stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RouterAssignmentElement {
    /// The router's address.
    pub address: Address,
    /// Its last receive id.
    pub receive_id: u32,
    /// Its last member change number.
    pub change_number: u32,
}

impl RouterAssignmentElement {
    /// Bytes on the wire.
    pub const LEN: usize = 12;

    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(RouterAssignmentElement {
            address: r.address("Router Assignment Element: address")?,
            receive_id: r.u32("Router Assignment Element: receive id")?,
            change_number: r.u32("Router Assignment Element: change number")?,
        })
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) {
        w.address(&self.address);
        w.u32(self.receive_id);
        w.u32(self.change_number);
    }
}

impl VisitAddresses for RouterAssignmentElement {
    fn visit_addresses(&self, f: &mut dyn FnMut(&'static str, &Address)) {
        f("Router Assignment Element", &self.address);
    }
}

impl VisitAddresses for Address {
    fn visit_addresses(&self, f: &mut dyn FnMut(&'static str, &Address)) {
        f("address list", self);
    }
}

/// Reads a 32-bit count and that many elements of at least `min_len` bytes each.
pub(crate) fn parse_list<'a, T>(
    r: &mut Reader<'a>,
    what: &'static str,
    min_len: usize,
    mut item: impl FnMut(&mut Reader<'a>) -> Result<T, Error>,
) -> Result<Vec<T>, Error> {
    let n = r.count(what, min_len)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(item(r)?);
    }
    Ok(out)
}

/// Reads a counted list of address fields.
pub(crate) fn parse_addresses(
    r: &mut Reader<'_>,
    what: &'static str,
) -> Result<Vec<Address>, Error> {
    parse_list(r, what, 4, |r| r.address(what))
}

/// Writes a counted list of address fields.
pub(crate) fn emit_addresses(w: &mut Writer<'_>, list: &[Address]) {
    w.len32(list.len());
    for a in list {
        w.address(a);
    }
}
