//! The redirect program passes the verifier.

use redirector_ebpf::EbpfObject;

#[test]
fn redirect_program_loads() {
    let mut object = EbpfObject::open("redirect").unwrap_or_else(|e| panic!("{e}"));
    object
        .xdp("xdp_redirect")
        .unwrap_or_else(|e| panic!("{e:?}"));
}
