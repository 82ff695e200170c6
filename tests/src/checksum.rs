//! The Internet checksum (RFC 1071) the tests' hand-built packets need, computed in full
//! so that it checks the data planes' incremental updates independently.

/// The one's-complement checksum of `data` (an odd last byte padded with zero).
pub fn internet(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
