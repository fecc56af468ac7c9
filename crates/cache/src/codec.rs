//! Vectors as Redis stores them: raw little-endian f32, 4 bytes a component, no framing. The
//! length alone says whether a value fits the model; anything else is a miss.

use citadel_embeddings::CachedVector;

pub(crate) fn encode(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// `None` for a value of the wrong length or with a non-finite component (corrupt or written
/// by something else): the caller treats it as a miss and overwrites it.
pub(crate) fn decode(bytes: &[u8], dims: usize) -> Option<CachedVector> {
    if bytes.len() != dims * 4 {
        return None;
    }
    let vector: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    vector.iter().all(|x| x.is_finite()).then(|| vector.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_wrong_lengths() {
        let v = [0.5f32, -1.25, 3.0];
        let bytes = encode(&v);
        assert_eq!(bytes.len(), 12);
        assert_eq!(decode(&bytes, 3).as_deref(), Some(&v[..]));
        assert_eq!(decode(&bytes, 4), None);
        assert_eq!(decode(&bytes[..11], 3), None);
        assert_eq!(decode(&encode(&[f32::NAN]), 1), None);
    }
}
