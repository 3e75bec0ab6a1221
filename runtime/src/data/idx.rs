//! The IDX format of the MNIST distribution: a big-endian header (two zero bytes, a type
//! code, the number of dimensions, then each dimension as a u32) followed by the values.
//! Files ending in `.gz` are decompressed on the fly.

use flate2::read::GzDecoder;
use std::io::Read;
use std::path::Path;

/// Largest file accepted after decompression (a full ImageNet-size IDX would be larger,
/// but nothing nnc trains or predicts on is).
const MAX_BYTES: u64 = 4 << 30;

#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    #[error("cannot read `{path}`: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("`{path}` is not an IDX file: {reason}")]
    Format { path: String, reason: String },
}

/// An IDX array, values converted to f32 (unsigned bytes keep their 0–255 values).
#[derive(Debug, Clone, PartialEq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub values: Vec<f32>,
    /// Whether the values were unsigned bytes (pixels, labels).
    pub bytes: bool,
}

/// Whether `bytes` start like an IDX file (or a gzip stream, which may hold one).
pub fn looks_like_idx(path: &Path) -> bool {
    let mut head = [0u8; 4];
    let Ok(mut f) = std::fs::File::open(path) else { return false };
    if f.read_exact(&mut head).is_err() {
        return false;
    }
    head[..2] == [0x1f, 0x8b]
        || (head[0] == 0 && head[1] == 0 && matches!(head[2], 0x08 | 0x09 | 0x0b | 0x0c | 0x0d | 0x0e))
}

/// Reads a file's bytes, decompressing gzip (detected by its magic bytes).
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, IdxError> {
    let name = path.display().to_string();
    let io = |source| IdxError::Io { path: name.clone(), source };
    if path.is_dir() {
        return Err(io(std::io::Error::other("it is a directory")));
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let mut raw = Vec::new();
    file.take(MAX_BYTES + 1).read_to_end(&mut raw).map_err(io)?;
    let mut bytes = Vec::new();
    if raw.starts_with(&[0x1f, 0x8b]) {
        GzDecoder::new(&raw[..]).take(MAX_BYTES + 1).read_to_end(&mut bytes).map_err(|e| {
            IdxError::Format { path: name.clone(), reason: format!("gzip data is corrupt: {e}") }
        })?;
    } else {
        bytes = raw;
    }
    if bytes.len() as u64 > MAX_BYTES {
        return Err(IdxError::Format { path: name, reason: format!("larger than {MAX_BYTES} bytes") });
    }
    Ok(bytes)
}

pub fn read(path: &Path) -> Result<Idx, IdxError> {
    parse(&read_bytes(path)?).map_err(|reason| IdxError::Format { path: path.display().to_string(), reason })
}

/// Parses IDX bytes.
pub fn parse(bytes: &[u8]) -> Result<Idx, String> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err("it does not start with the IDX magic number (two zero bytes, a type, a rank)".into());
    }
    let (size, bytes_type) = match bytes[2] {
        0x08 => (1, true),
        0x09 => (1, false),
        0x0b => (2, false),
        0x0c => (4, false),
        0x0d => (4, false),
        0x0e => (8, false),
        t => return Err(format!("unknown element type 0x{t:02x}")),
    };
    let rank = bytes[3] as usize;
    if rank == 0 {
        return Err("it has no dimensions".into());
    }
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(format!(
            "truncated header: {rank} dimensions need {header} bytes, found {}",
            bytes.len()
        ));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("four bytes")) as usize)
        .collect();
    let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("the dimensions overflow")?;
    let expected =
        count.checked_mul(size).and_then(|n| n.checked_add(header)).ok_or("the dimensions overflow")?;
    if bytes.len() != expected {
        return Err(format!(
            "dimensions {dims:?} need {} bytes of data, but the file has {}",
            expected - header,
            bytes.len() - header
        ));
    }
    let data = &bytes[header..];
    let values: Vec<f32> = match bytes[2] {
        0x08 => data.iter().map(|&b| b as f32).collect(),
        0x09 => data.iter().map(|&b| b as i8 as f32).collect(),
        0x0b => data.chunks_exact(2).map(|c| i16::from_be_bytes([c[0], c[1]]) as f32).collect(),
        0x0c => data.chunks_exact(4).map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]) as f32).collect(),
        0x0d => data.chunks_exact(4).map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect(),
        _ => data
            .chunks_exact(8)
            .map(|c| f64::from_be_bytes(c.try_into().expect("eight bytes")) as f32)
            .collect(),
    };
    Ok(Idx { dims, values, bytes: bytes_type })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(t: u8, dims: &[u32]) -> Vec<u8> {
        let mut b = vec![0, 0, t, dims.len() as u8];
        for d in dims {
            b.extend(d.to_be_bytes());
        }
        b
    }

    #[test]
    fn parses_bytes_and_floats() {
        let mut b = header(0x08, &[2, 2]);
        b.extend([0, 255, 7, 9]);
        let idx = parse(&b).unwrap();
        assert_eq!(idx.dims, [2, 2]);
        assert_eq!(idx.values, [0.0, 255.0, 7.0, 9.0]);
        let mut f = header(0x0d, &[1]);
        f.extend(1.5f32.to_be_bytes());
        assert_eq!(parse(&f).unwrap().values, [1.5]);
    }

    #[test]
    fn rejects_bad_files_with_reasons() {
        assert!(parse(b"PK\x03\x04").unwrap_err().contains("magic"));
        assert!(parse(&header(0x42, &[1])).unwrap_err().contains("unknown element type"));
        let mut short = header(0x08, &[10]);
        short.extend([1, 2, 3]);
        assert!(parse(&short).unwrap_err().contains("need 10 bytes of data, but the file has 3"));
        assert!(parse(&[0, 0, 8, 3, 0]).unwrap_err().contains("truncated header"));
        let huge = header(0x08, &[u32::MAX, u32::MAX, u32::MAX]);
        assert!(parse(&huge).is_err());
    }

    #[test]
    fn reads_the_shared_mnist_digits_when_present() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/mnist/test-images-idx3-ubyte.gz");
        if !path.exists() {
            return; // the project works without ../shared; this only checks real files when they are there
        }
        let idx = read(&path).unwrap();
        assert_eq!(idx.dims, [1000, 28, 28]);
        assert!(idx.bytes && idx.values.iter().all(|v| (0.0..=255.0).contains(v)));
    }
}
