//! Turning a file of examples into the values a network's input tensor holds: pixels
//! scaled to [0, 1] and normalised, class indices expanded to one-hot vectors, token ids
//! stored as integer bit patterns.

use super::idx::{self, IdxError};
use nnc_compiler::ir::graph::InputEncoding;
use nnc_compiler::ir::shape::Shape;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(transparent)]
    Idx(#[from] IdxError),
    #[error("`{path}`: {reason}")]
    Shape { path: String, reason: String },
}

/// How the network wants its input.
#[derive(Clone, Debug)]
pub struct InputSpec {
    pub shape: Shape,
    pub encoding: InputEncoding,
    /// Per-channel normalisation `(x − mean) / std` for dense inputs (empty: none).
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl InputSpec {
    /// Values per example in the input tensor.
    pub fn elements(&self) -> usize {
        self.shape.elements() as usize
    }
}

/// Examples ready to copy into an input tensor: `count` rows of `spec.elements()` values.
#[derive(Clone, Debug)]
pub struct Examples {
    pub count: usize,
    pub values: Vec<f32>,
}

/// How the values of a one-hot sequence input are given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    /// One class id per step.
    Ids,
    /// The one-hot vectors themselves, one value per step and class.
    OneHot,
}

impl Reading {
    pub fn name(self) -> &'static str {
        match self {
            Reading::Ids => "ids",
            Reading::OneHot => "onehot",
        }
    }
}

/// Reads examples from an IDX file (bytes are pixels, scaled by 1/255) or a raw file of
/// little-endian f32; `reading` says how a one-hot sequence input is given, when its
/// values fit more than one.
pub fn read(path: &Path, spec: &InputSpec, reading: Option<Reading>) -> Result<Examples, InputError> {
    let name = path.display().to_string();
    let err = |reason: String| InputError::Shape { path: name.clone(), reason };
    let (values, per_file_example, scaled) = if idx::looks_like_idx(path) {
        let data = idx::read(path)?;
        let per: usize = data.dims[1..].iter().product();
        let per = if data.dims.len() == 1 { 1 } else { per };
        (data.values, per, data.bytes)
    } else {
        let bytes = idx::read_bytes(path)?;
        if bytes.len() % 4 != 0 {
            return Err(err(format!("{} bytes is not a whole number of f32 values", bytes.len())));
        }
        let v: Vec<f32> =
            bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        (v, 0, false)
    };
    prepare(values, per_file_example, scaled, spec, reading).map_err(err)
}

/// Shapes raw values into examples for `spec`. `per_example` is the file's own example
/// size (0 if it has none, as for raw f32); `pixels` says whether values are 0–255 bytes.
pub fn prepare(
    values: Vec<f32>,
    per_example: usize,
    pixels: bool,
    spec: &InputSpec,
    reading: Option<Reading>,
) -> Result<Examples, String> {
    let elements = spec.elements();
    if reading.is_some() && spec.encoding != InputEncoding::OneHot {
        return Err("--input-format is for networks that read one-hot sequences".into());
    }
    match spec.encoding {
        InputEncoding::Dense => {
            if per_example != 0 && per_example != elements {
                return Err(format!(
                    "each example has {per_example} values, but the network's input {} has {elements}",
                    spec.shape
                ));
            }
            if values.is_empty() || !values.len().is_multiple_of(elements) {
                return Err(format!(
                    "{} values is not a whole number of examples of {elements}",
                    values.len()
                ));
            }
            let mut values = values;
            if pixels {
                values.iter_mut().for_each(|v| *v /= 255.0);
            }
            normalise(&mut values, spec);
            Ok(Examples { count: values.len() / elements, values })
        }
        InputEncoding::OneHot => {
            let (steps, classes) = match spec.shape {
                Shape::Seq { steps, features } => (steps as usize, features as usize),
                _ => return Err("one-hot inputs are sequences".into()),
            };
            // Either class ids (one per step) or the one-hot vectors themselves; a file whose
            // values fit both must say which it holds.
            let onehot = !values.is_empty()
                && values.len().is_multiple_of(steps * classes)
                && per_example != steps
                && values
                    .chunks(classes)
                    .all(|v| v.iter().all(|&x| x == 0.0 || x == 1.0) && v.iter().sum::<f32>() == 1.0);
            let ids = !values.is_empty()
                && values.len().is_multiple_of(steps)
                && per_example != steps * classes
                && values.iter().all(|&v| class(v, classes).is_ok());
            let reading = match (reading, onehot, ids) {
                (Some(r), ..) => r,
                (None, true, true) => {
                    return Err(format!(
                        "{} values can be read as {} sequence(s) of one-hot vectors or as {} sequence(s) \
                         of class ids; say which with --input-format onehot or --input-format ids",
                        values.len(),
                        values.len() / elements,
                        values.len() / steps
                    ));
                }
                (None, true, false) => Reading::OneHot,
                (None, false, _) => Reading::Ids,
            };
            if reading == Reading::OneHot {
                if !onehot {
                    return Err(format!(
                        "{} values are not sequences of {steps} one-hot vectors of {classes}",
                        values.len()
                    ));
                }
                return Ok(Examples { count: values.len() / elements, values });
            }
            if values.is_empty() || !values.len().is_multiple_of(steps) {
                return Err(format!(
                    "{} values is not a whole number of sequences of {steps} steps",
                    values.len()
                ));
            }
            let mut out = vec![0.0; values.len() * classes];
            for (i, v) in values.iter().enumerate() {
                let c = class(*v, classes)?;
                out[i * classes + c] = 1.0;
            }
            Ok(Examples { count: values.len() / steps, values: out })
        }
        InputEncoding::Tokens => {
            let (steps, vocab) = match spec.shape {
                Shape::Tokens { steps, vocab } => (steps as usize, vocab as usize),
                _ => return Err("token inputs are sequences of ids".into()),
            };
            if values.is_empty() || !values.len().is_multiple_of(steps) {
                return Err(format!(
                    "{} values is not a whole number of sequences of {steps} tokens",
                    values.len()
                ));
            }
            let ids = values
                .iter()
                .map(|v| class(*v, vocab).map(|c| f32::from_bits(c as u32)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Examples { count: ids.len() / steps, values: ids })
        }
    }
}

fn class(v: f32, n: usize) -> Result<usize, String> {
    if v.fract() != 0.0 || v < 0.0 || v >= n as f32 {
        return Err(format!("{v} is not a class or token id below {n}"));
    }
    Ok(v as usize)
}

/// `(x − mean[c]) / std[c]` per channel (or one value for all).
fn normalise(values: &mut [f32], spec: &InputSpec) {
    if spec.mean.is_empty() && spec.std.is_empty() {
        return;
    }
    let channels = match spec.shape {
        Shape::Image { c, .. } => c as usize,
        _ => 1,
    };
    let plane = spec.elements() / channels;
    let pick = |v: &[f64], c: usize, default: f64| {
        if v.is_empty() { default } else { v[if v.len() == 1 { 0 } else { c }] }
    };
    for (i, x) in values.iter_mut().enumerate() {
        let c = (i % spec.elements()) / plane;
        let (m, s) = (pick(&spec.mean, c, 0.0), pick(&spec.std, c, 1.0));
        *x = ((*x as f64 - m) / s) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(shape: Shape, encoding: InputEncoding) -> InputSpec {
        InputSpec { shape, encoding, mean: Vec::new(), std: Vec::new() }
    }

    #[test]
    fn pixels_are_scaled_and_normalised_per_channel() {
        let mut s = spec(Shape::Image { c: 2, h: 1, w: 1 }, InputEncoding::Dense);
        s.mean = vec![0.5, 0.0];
        s.std = vec![0.5, 2.0];
        let e = prepare(vec![255.0, 255.0, 0.0, 51.0], 2, true, &s, None).unwrap();
        assert_eq!(e.count, 2);
        assert_eq!(e.values, [1.0, 0.5, -1.0, 0.1]);
    }

    #[test]
    fn class_indices_become_one_hot_and_ids_bit_patterns() {
        let s = spec(Shape::Seq { steps: 2, features: 3 }, InputEncoding::OneHot);
        let e = prepare(vec![2.0, 0.0], 2, false, &s, None).unwrap();
        assert_eq!(e.values, [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
        let t = spec(Shape::Tokens { steps: 2, vocab: 10 }, InputEncoding::Tokens);
        let e = prepare(vec![7.0, 3.0], 2, false, &t, None).unwrap();
        assert_eq!(e.values.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), [7, 3]);
        assert!(prepare(vec![12.0, 3.0], 2, false, &t, None).unwrap_err().contains("below 10"));
    }

    #[test]
    fn a_sequence_that_fits_two_readings_must_say_which() {
        let s = spec(Shape::Seq { steps: 2, features: 3 }, InputEncoding::OneHot);
        // Three sequences of ids, which are also one sequence of one-hot vectors.
        let both = vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        let e = prepare(both.clone(), 0, false, &s, None).unwrap_err();
        assert!(e.contains("1 sequence(s) of one-hot vectors or as 3 sequence(s) of class ids"), "{e}");
        assert_eq!(prepare(both.clone(), 0, false, &s, Some(Reading::Ids)).unwrap().count, 3);
        assert_eq!(prepare(both, 0, false, &s, Some(Reading::OneHot)).unwrap().count, 1);
        // Ids that are not one-hot vectors are read as ids, whatever their count.
        let ids = vec![2.0, 1.0, 0.0, 2.0, 2.0, 1.0];
        let e = prepare(ids.clone(), 0, false, &s, None).unwrap();
        assert_eq!(e.count, 3);
        assert_eq!(&e.values[..6], [0.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
        assert!(prepare(ids, 0, false, &s, Some(Reading::OneHot)).unwrap_err().contains("not sequences"));
    }

    #[test]
    fn mismatched_sizes_are_explained() {
        let s = spec(Shape::Image { c: 1, h: 28, w: 28 }, InputEncoding::Dense);
        assert!(prepare(vec![0.0; 100], 100, true, &s, None).unwrap_err().contains("has 784"));
    }
}
