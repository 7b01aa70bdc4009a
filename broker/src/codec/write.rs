//! Encoding primitives and their sizes. Sizes saturate instead of
//! wrapping, so an absurd packet is reported as too large, never panics.

use bytes::{BufMut, BytesMut};

use super::read::VARINT_MAX;
use super::EncodeError;

/// Bytes a variable byte integer takes (values past the maximum count as
/// four; writing them fails).
pub(crate) fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Bytes a length-prefixed string or binary field takes.
pub(crate) fn field_len(len: usize) -> usize {
    len.saturating_add(2)
}

/// Writes a variable byte integer; `what` names the field on error.
pub(crate) fn put_varint(
    out: &mut BytesMut,
    value: usize,
    what: &'static str,
) -> Result<(), EncodeError> {
    if value > VARINT_MAX as usize {
        return Err(EncodeError::FieldTooLong(what));
    }
    let mut v = value;
    loop {
        let byte = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            out.put_u8(byte);
            return Ok(());
        }
        out.put_u8(byte | 0x80);
    }
}

/// Writes two-byte length-prefixed data (a string's bytes or binary data).
pub(crate) fn put_field(
    out: &mut BytesMut,
    data: &[u8],
    what: &'static str,
) -> Result<(), EncodeError> {
    let len = u16::try_from(data.len()).map_err(|_| EncodeError::FieldTooLong(what))?;
    out.put_u16(len);
    out.put_slice(data);
    Ok(())
}

/// Writes the fixed header: first byte and remaining length.
pub(crate) fn put_header(
    out: &mut BytesMut,
    byte1: u8,
    remaining: usize,
) -> Result<(), EncodeError> {
    if remaining > VARINT_MAX as usize {
        return Err(EncodeError::PacketTooLarge);
    }
    out.put_u8(byte1);
    put_varint(out, remaining, "remaining length")
}

/// What `encode` must know before writing: the remaining length and the
/// lengths of the property blocks' contents (5.0), computed once.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sizes {
    /// Remaining length of the packet.
    pub(crate) remaining: usize,
    /// Length of the packet's properties (without the length prefix).
    pub(crate) props: usize,
    /// Length of the will properties (CONNECT only).
    pub(crate) will_props: usize,
}

/// Sums lengths without overflow (an absurd total is caught as too large).
pub(crate) fn sum(parts: &[usize]) -> usize {
    parts.iter().fold(0usize, |acc, &n| acc.saturating_add(n))
}
