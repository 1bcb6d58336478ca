//! The `lz4` feature's frame sections (`docs/protocol.md` §3, capabilities):
//! `uncompressed_len:u32be ‖ LZ4 block`.

/// An `objects` frame's binary section compressed, or `None` when it is small
/// or compression does not save a tenth.
pub(super) fn compress(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < 4096 {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() / 2 + 8);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(&lz4_flex::block::compress(data));
    (out.len() < data.len() * 9 / 10).then_some(out)
}

/// A compressed section, refused when it claims more than `max` bytes.
pub(super) fn decompress(data: &[u8], max: usize) -> Result<Vec<u8>, String> {
    if data.len() < 4 {
        return Err("compressed section too short".into());
    }
    let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    if len > max {
        return Err(format!(
            "compressed section claims {len} bytes, above the limit"
        ));
    }
    let mut out = vec![0u8; len];
    let n =
        lz4_flex::block::decompress_into(&data[4..], &mut out).map_err(|e| format!("lz4: {e}"))?;
    if n != len {
        return Err("compressed section length mismatch".into());
    }
    Ok(out)
}
