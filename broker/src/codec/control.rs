//! DISCONNECT (§3.14) and AUTH (§3.15): a reason code and properties,
//! both omitted for a success code without properties.

use bytes::{BufMut, BytesMut};

use super::properties::{block_len, properties_len, put_properties, read_properties, Ctx};
use super::read::Reader;
use super::write::Sizes;
use super::{Auth, DecodeError, EncodeError, Properties, Protocol};

/// DISCONNECT reason codes (§3.14.2.1).
fn valid_disconnect_reason(code: u8) -> bool {
    matches!(code, 0x00 | 0x04 | 0x80..=0x83 | 0x87 | 0x89 | 0x8B | 0x8D..=0x90 | 0x93..=0xA2)
}

/// AUTH reason codes (§3.15.2.1).
fn valid_auth_reason(code: u8) -> bool {
    matches!(code, 0x00 | 0x18 | 0x19)
}

/// Reads an optional reason code and optional properties (5.0). An empty
/// body means reason 0; a lone reason byte means no properties.
fn decode_reasoned(
    r: &mut Reader<'_>,
    ctx: Ctx,
    valid: fn(u8) -> bool,
) -> Result<(u8, Properties), DecodeError> {
    let mut reason = 0;
    let mut properties = Properties::default();
    if !r.is_empty() {
        reason = r.u8()?;
        if !valid(reason) {
            return Err(DecodeError::Protocol(
                "reason code not allowed on this packet",
            ));
        }
        if !r.is_empty() {
            properties = read_properties(r, ctx)?;
        }
    }
    r.finish()?;
    Ok((reason, properties))
}

/// Decodes a DISCONNECT body; in 3.x it must be empty.
pub(crate) fn decode_disconnect(
    r: &mut Reader<'_>,
    protocol: Protocol,
) -> Result<super::Disconnect, DecodeError> {
    if !protocol.is_v5() {
        r.finish()?;
        return Ok(super::Disconnect::default());
    }
    let (reason, properties) = decode_reasoned(r, Ctx::Disconnect, valid_disconnect_reason)?;
    Ok(super::Disconnect { reason, properties })
}

/// Decodes an AUTH body (5.0 only; the caller rejects it in 3.x).
pub(crate) fn decode_auth(r: &mut Reader<'_>) -> Result<Auth, DecodeError> {
    let (reason, properties) = decode_reasoned(r, Ctx::Auth, valid_auth_reason)?;
    Ok(Auth { reason, properties })
}

/// Sizes of a DISCONNECT or AUTH in its shortest form: empty for success
/// without properties, a lone reason byte without properties.
pub(crate) fn reasoned_sizes(reason: u8, props: &Properties, protocol: Protocol) -> Sizes {
    if !protocol.is_v5() {
        return Sizes::default();
    }
    let props = properties_len(props);
    let remaining = match (reason, props) {
        (0, 0) => 0,
        (_, 0) => 1,
        _ => 1usize.saturating_add(block_len(props)),
    };
    Sizes {
        remaining,
        props,
        will_props: 0,
    }
}

/// Writes a DISCONNECT or AUTH body of the size `reasoned_sizes` chose.
pub(crate) fn put_reasoned(
    out: &mut BytesMut,
    reason: u8,
    props: &Properties,
    sizes: Sizes,
) -> Result<(), EncodeError> {
    if sizes.remaining > 0 {
        out.put_u8(reason);
    }
    if sizes.remaining > 1 {
        put_properties(out, props, sizes.props)?;
    }
    Ok(())
}
