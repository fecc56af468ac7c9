//! Vectors as Redis stores them: raw little-endian f32, 4 bytes a component, then the input's
//! token count as a little-endian u32; no other framing. The length alone says whether a value
//! fits the model; anything else is a miss.

use citadel_embeddings::CachedEmbedding;

pub(crate) fn encode(entry: &CachedEmbedding) -> Vec<u8> {
    let mut out = Vec::with_capacity(entry.vector.len() * 4 + 4);
    entry
        .vector
        .iter()
        .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
    out.extend_from_slice(&entry.tokens.to_le_bytes());
    out
}

/// `None` for a value of the wrong length or with a non-finite component (corrupt or written
/// by something else): the caller treats it as a miss and overwrites it.
pub(crate) fn decode(bytes: &[u8], dims: usize) -> Option<CachedEmbedding> {
    if bytes.len() != dims * 4 + 4 {
        return None;
    }
    let (floats, tokens) = bytes.split_at(dims * 4);
    let vector: Vec<f32> = floats
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let tokens = u32::from_le_bytes([tokens[0], tokens[1], tokens[2], tokens[3]]);
    vector
        .iter()
        .all(|x| x.is_finite())
        .then(|| CachedEmbedding {
            vector: vector.into(),
            tokens,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(v: &[f32], tokens: u32) -> CachedEmbedding {
        CachedEmbedding {
            vector: v.into(),
            tokens,
        }
    }

    #[test]
    fn round_trips_and_refuses_wrong_lengths() {
        let e = entry(&[0.5, -1.25, 3.0], 7);
        let bytes = encode(&e);
        assert_eq!(bytes.len(), 16);
        assert_eq!(decode(&bytes, 3), Some(e));
        assert_eq!(decode(&bytes, 4), None);
        assert_eq!(decode(&bytes[..15], 3), None);
        assert_eq!(decode(&encode(&entry(&[f32::NAN], 1)), 1), None);
    }
}
