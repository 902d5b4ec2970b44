//! Base64 with the standard alphabet and `=` padding (RFC 4648 §4), as the reference's
//! persistence JSON carries weight blobs. Decoding is strict and names the offending offset.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let group = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[(group >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn sextet(c: u8) -> Option<u32> {
    match c {
        b'A'..=b'Z' => Some((c - b'A') as u32),
        b'a'..=b'z' => Some((c - b'a') as u32 + 26),
        b'0'..=b'9' => Some((c - b'0') as u32 + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Decode padded base64; the error says what is wrong and where (character offset).
pub fn decode(text: &str) -> Result<Vec<u8>, String> {
    let s = text.as_bytes();
    if !s.len().is_multiple_of(4) {
        return Err(format!("is not valid base64: {} characters is not a multiple of 4 (truncated?)", s.len()));
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (g, group) in s.chunks_exact(4).enumerate() {
        let last = (g + 1) * 4 == s.len();
        let pad = group.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) || group[..4 - pad].contains(&b'=') {
            let at = g * 4 + group.iter().position(|&c| c == b'=').unwrap_or(0);
            return Err(format!("is not valid base64: misplaced '=' at character {at}"));
        }
        let mut word = 0u32;
        for (k, &c) in group[..4 - pad].iter().enumerate() {
            let v = sextet(c).ok_or_else(|| format!("is not valid base64: character {:?} at offset {}", c as char, g * 4 + k))?;
            word |= v << (18 - 6 * k);
        }
        let bytes = [(word >> 16) as u8, (word >> 8) as u8, word as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors_round_trip() {
        for (plain, coded) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")] {
            assert_eq!(encode(plain.as_bytes()), coded);
            assert_eq!(decode(coded).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&all)).unwrap(), all);
    }

    #[test]
    fn bad_input_names_the_problem() {
        assert!(decode("Zm9").unwrap_err().contains("multiple of 4"));
        assert!(decode("Zm=v").unwrap_err().contains("misplaced"));
        assert!(decode("Zg==Zg==").unwrap_err().contains("misplaced"));
        assert!(decode("Zm9*").unwrap_err().contains("offset 3"));
    }
}
