//! A bounds-checked cursor over one framed packet. Every read fails with
//! `Malformed` instead of panicking when the packet is shorter than its
//! grammar requires; binary fields are zero-copy slices of the packet.

use bytes::Bytes;

use super::DecodeError;

/// Largest value a variable byte integer can carry (§1.5.5).
pub(crate) const VARINT_MAX: u32 = 268_435_455;

const SHORT: DecodeError = DecodeError::Malformed("packet shorter than its fields");

/// Reads fields from `rest`, a suffix of `packet`.
pub(crate) struct Reader<'a> {
    packet: &'a Bytes,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `packet` from `offset` (past the fixed header).
    pub(crate) fn at(packet: &'a Bytes, offset: usize) -> Self {
        Reader {
            packet,
            rest: packet.get(offset..).unwrap_or_default(),
        }
    }

    /// True once every byte has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Fails with `Malformed` if bytes are left over (§1.5: trailing data).
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed("unexpected bytes at end of packet"))
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.rest.len() {
            return Err(SHORT);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// Splits off a sub-reader over the next `n` bytes.
    pub(crate) fn sub(&mut self, n: usize) -> Result<Reader<'a>, DecodeError> {
        let rest = self.take(n)?;
        Ok(Reader {
            packet: self.packet,
            rest,
        })
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        match self.rest.split_first() {
            Some((&b, tail)) => {
                self.rest = tail;
                Ok(b)
            }
            None => Err(SHORT),
        }
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A variable byte integer (§1.5.5) inside a packet.
    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        match parse_varint(self.rest)? {
            Some((value, len)) => {
                self.rest = self.rest.get(len..).unwrap_or_default();
                Ok(value)
            }
            None => Err(SHORT),
        }
    }

    /// Everything that is left, as a zero-copy slice (PUBLISH payload).
    pub(crate) fn rest_bytes(&mut self) -> Bytes {
        let rest = self.take_rest();
        self.packet.slice_ref(rest)
    }

    /// Everything that is left, borrowed.
    pub(crate) fn take_rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// Two-byte length-prefixed binary data (§1.5.6), zero-copy.
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = usize::from(self.u16()?);
        let data = self.take(len)?;
        Ok(self.packet.slice_ref(data))
    }

    /// The raw bytes of a length-prefixed field, unchecked (protocol name).
    pub(crate) fn raw_field(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = usize::from(self.u16()?);
        self.take(len)
    }

    /// A UTF-8 encoded string (§1.5.4): well-formed and free of U+0000.
    /// Rust's UTF-8 check already rejects surrogates and overlong forms.
    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        let len = usize::from(self.u16()?);
        let raw = self.take(len)?;
        let s = std::str::from_utf8(raw).map_err(|_| DecodeError::Malformed("invalid UTF-8"))?;
        if raw.contains(&0) {
            return Err(DecodeError::Malformed("U+0000 in string"));
        }
        Ok(s.to_owned())
    }
}

/// Parses a variable byte integer at the front of `buf`: `Ok(None)` if
/// `buf` ends before it does. Longer than four bytes, or not in its
/// shortest form ([MQTT-1.5.5-1]), is malformed.
pub(crate) fn parse_varint(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (i, &byte) in buf.iter().enumerate() {
        if i == 4 {
            break;
        }
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err(DecodeError::Malformed("variable byte integer not minimal"));
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        Err(DecodeError::Malformed(
            "variable byte integer longer than 4 bytes",
        ))
    } else {
        Ok(None)
    }
}
