//! Examples as a network reads them: labelled images (scaled, fitted to the input,
//! augmented, normalised) or windows of text (one-hot or token ids, each step's target
//! the next character), filled into the input and label tensors one batch at a time.

use crate::data::augment;
use crate::data::labelled::Labelled;
use crate::data::text::{Vocabulary, Windows};
use crate::init::Rng;
use nnc_compiler::front::train::Augment;
use nnc_compiler::ir::graph::InputEncoding;
use nnc_compiler::ir::shape::Shape;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DatasetError {
    #[error("{name}: examples of {found:?} do not fit the network's input {input}")]
    Misfit { name: String, found: Vec<usize>, input: String },
    #[error("{name}: the labels go up to {label}, but the network has {classes} classes")]
    Classes { name: String, label: u32, classes: usize },
    #[error(
        "{name}: {what} needs a text file, and the network's input {input} is not a sequence of characters"
    )]
    NotText { name: String, what: &'static str, input: String },
    #[error("{name}: the text has {chars} distinct characters, more than the network's {classes} classes")]
    Vocabulary { name: String, chars: usize, classes: usize },
    #[error("{name} has {count} examples, fewer than one batch of {batch}")]
    TooFew { name: String, count: usize, batch: usize },
    #[error("`mean` and `std` give {given} values, but the input has {channels} channels")]
    Normalisation { given: usize, channels: usize },
}

/// How examples become input values.
#[derive(Clone, Debug)]
pub struct Preparation {
    pub shape: Shape,
    pub encoding: InputEncoding,
    /// Per-channel normalisation (one value applies to every channel; empty: none).
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub augment: Vec<Augment>,
}

enum Kind {
    Images { set: Labelled, from: (usize, usize, usize) },
    Text { ids: Vec<u32>, windows: Windows },
}

/// A set of training or evaluation examples for one network.
pub struct Dataset {
    pub name: String,
    kind: Kind,
    prep: Preparation,
    /// Per-channel (mean, 1/std).
    norm: Vec<(f32, f32)>,
}

/// The label of a padding row (the unfilled end of a last, partial batch): outside
/// every class, so the loss ignores it.
pub const PADDING: u32 = u32::MAX;

impl Dataset {
    /// Labelled images for a network whose input is `prep.shape` and whose output has
    /// `classes` classes. Grey images smaller than the input are centred on a black
    /// field and repeated across its channels (MNIST digits for a 3×32×32 network).
    pub fn images(
        name: &str,
        set: Labelled,
        prep: Preparation,
        classes: usize,
    ) -> Result<Dataset, DatasetError> {
        let Shape::Image { c, h, w } = prep.shape else {
            return Err(misfit(name, &set.example_dims, &prep.shape));
        };
        let (c, h, w) = (c as usize, h as usize, w as usize);
        let from = match set.example_dims[..] {
            [eh, ew] => (1, eh, ew),
            [ec, eh, ew] => (ec, eh, ew),
            _ => return Err(misfit(name, &set.example_dims, &prep.shape)),
        };
        if (from.0 != c && from.0 != 1) || from.1 > h || from.2 > w {
            return Err(misfit(name, &set.example_dims, &prep.shape));
        }
        if let Some(&label) = set.labels.iter().max()
            && label as usize >= classes
        {
            return Err(DatasetError::Classes { name: name.into(), label, classes });
        }
        let norm = normalisation(&prep, c)?;
        Ok(Dataset { name: name.into(), kind: Kind::Images { set, from }, prep, norm })
    }

    /// Text encoded with `vocab`, cut into windows of the network's sequence length.
    pub fn text(
        name: &str,
        ids: Vec<u32>,
        vocab: &Vocabulary,
        prep: Preparation,
    ) -> Result<Dataset, DatasetError> {
        let (steps, classes) = match (prep.shape, prep.encoding) {
            (Shape::Seq { steps, features }, InputEncoding::OneHot) => (steps as usize, features as usize),
            (Shape::Tokens { steps, vocab }, InputEncoding::Tokens) => (steps as usize, vocab as usize),
            _ => {
                return Err(DatasetError::NotText {
                    name: name.into(),
                    what: "training",
                    input: prep.shape.to_string(),
                });
            }
        };
        if vocab.len() > classes {
            return Err(DatasetError::Vocabulary { name: name.into(), chars: vocab.len(), classes });
        }
        let windows = Windows::new(ids.len(), steps);
        Ok(Dataset { name: name.into(), kind: Kind::Text { ids, windows }, prep, norm: Vec::new() })
    }

    /// Number of examples (windows, for text).
    pub fn len(&self) -> usize {
        match &self.kind {
            Kind::Images { set, .. } => set.count,
            Kind::Text { windows, .. } => windows.count,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks that a batch of `batch` can be drawn.
    pub fn check_batch(&self, batch: usize) -> Result<(), DatasetError> {
        if self.len() < batch {
            return Err(DatasetError::TooFew { name: self.name.clone(), count: self.len(), batch });
        }
        Ok(())
    }

    /// Label rows per example: 1 for images, the sequence length for text.
    pub fn rows_per_example(&self) -> usize {
        match &self.kind {
            Kind::Images { .. } => 1,
            Kind::Text { windows, .. } => windows.steps,
        }
    }

    /// The labels of example `i`.
    pub fn labels(&self, i: usize) -> &[u32] {
        match &self.kind {
            Kind::Images { set, .. } => std::slice::from_ref(&set.labels[i]),
            Kind::Text { ids, windows } => &ids[windows.target(i)],
        }
    }

    /// Writes examples `indices` into `input` and their labels into `labels`: class ids as
    /// i32 bits, or — when `labels` has room for a vector per row — one-hot targets (for
    /// a mean-squared-error loss). Rows past `indices.len()` are zero with [`PADDING`]
    /// labels. With `augment`, the train section's augmentation is drawn from `rng`.
    pub fn fill(
        &self,
        indices: &[usize],
        augment: bool,
        rng: &mut Rng,
        input: &mut [f32],
        labels: &mut [f32],
    ) {
        let per_in = self.prep.shape.elements() as usize;
        let rows = self.rows_per_example();
        let slots = input.len() / per_in.max(1);
        // Values per label row: 1 (a class id) or the number of classes (a target).
        let width = labels.len() / (slots * rows).max(1);
        input.fill(0.0);
        labels.fill(if width == 1 { f32::from_bits(PADDING) } else { 0.0 });
        for (slot, &i) in indices.iter().enumerate() {
            let x = &mut input[slot * per_in..(slot + 1) * per_in];
            match &self.kind {
                Kind::Images { set, from } => self.image(set, *from, i, augment, rng, x),
                Kind::Text { ids, windows } => match self.prep.encoding {
                    InputEncoding::OneHot => {
                        let classes = per_in / windows.steps;
                        for (step, &id) in ids[windows.input(i)].iter().enumerate() {
                            x[step * classes + id as usize] = 1.0;
                        }
                    }
                    _ => {
                        for (v, &id) in x.iter_mut().zip(&ids[windows.input(i)]) {
                            *v = f32::from_bits(id);
                        }
                    }
                },
            }
            for (r, &id) in self.labels(i).iter().enumerate() {
                let row = slot * rows + r;
                if width == 1 {
                    labels[row] = f32::from_bits(id);
                } else {
                    labels[row * width + id as usize] = 1.0;
                }
            }
        }
    }

    fn image(
        &self,
        set: &Labelled,
        (fc, fh, fw): (usize, usize, usize),
        i: usize,
        augment: bool,
        rng: &mut Rng,
        x: &mut [f32],
    ) {
        let Shape::Image { c, h, w } = self.prep.shape else { unreachable!("checked when built") };
        let (c, h, w) = (c as usize, h as usize, w as usize);
        let per = fc * fh * fw;
        let src = &set.values[i * per..(i + 1) * per];
        let scale = if set.pixels { 1.0 / 255.0 } else { 1.0 };
        // Centred, every channel from the example's own or its only one.
        let (top, left) = ((h - fh) / 2, (w - fw) / 2);
        for ch in 0..c {
            let from = if fc == 1 { 0 } else { ch };
            for y in 0..fh {
                let row = &src[(from * fh + y) * fw..(from * fh + y + 1) * fw];
                let at = (ch * h + top + y) * w + left;
                for (o, v) in x[at..at + fw].iter_mut().zip(row) {
                    *o = v * scale;
                }
            }
        }
        if augment {
            for a in &self.prep.augment {
                match *a {
                    Augment::RandomCrop { pad } => {
                        let original = x.to_vec();
                        augment::random_crop(&original, c, h, w, pad as usize, rng, x);
                    }
                    Augment::Hflip => {
                        if rng.below(2) == 1 {
                            augment::hflip(x, c, h, w);
                        }
                    }
                }
            }
        }
        for (ch, &(mean, inv)) in self.norm.iter().enumerate() {
            for v in &mut x[ch * h * w..(ch + 1) * h * w] {
                *v = (*v - mean) * inv;
            }
        }
    }
}

fn misfit(name: &str, found: &[usize], input: &Shape) -> DatasetError {
    DatasetError::Misfit { name: name.into(), found: found.to_vec(), input: input.to_string() }
}

/// Per-channel (mean, 1/std), or none.
fn normalisation(prep: &Preparation, channels: usize) -> Result<Vec<(f32, f32)>, DatasetError> {
    if prep.mean.is_empty() && prep.std.is_empty() {
        return Ok(Vec::new());
    }
    let pick = |v: &[f64], ch: usize, default: f64| match v.len() {
        0 => Ok(default),
        1 => Ok(v[0]),
        n if n == channels => Ok(v[ch]),
        n => Err(DatasetError::Normalisation { given: n, channels }),
    };
    (0..channels)
        .map(|ch| Ok((pick(&prep.mean, ch, 0.0)? as f32, (1.0 / pick(&prep.std, ch, 1.0)?) as f32)))
        .collect()
}

/// The order of examples in epoch `epoch`: a permutation drawn from the seed (the same
/// for the same seed and epoch, so that a resumed run sees what an uninterrupted one
/// would), or the stored order.
pub fn epoch_order(count: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..count).collect();
    if shuffle {
        let mut rng = Rng::stream(seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15), "shuffle");
        for i in (1..count).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits(prep_shape: Shape, augment: Vec<Augment>) -> Dataset {
        let set = crate::data::digits::split("test").unwrap();
        let prep = Preparation {
            shape: prep_shape,
            encoding: InputEncoding::Dense,
            mean: vec![0.5],
            std: vec![0.25],
            augment,
        };
        Dataset::images("digits", set, prep, 10).unwrap()
    }

    #[test]
    fn images_are_scaled_normalised_and_padded_rows_marked() {
        let d = digits(Shape::Image { c: 1, h: 28, w: 28 }, vec![]);
        let (mut x, mut y) = (vec![0.0; 3 * 784], vec![0.0; 3]);
        d.fill(&[4, 7], false, &mut Rng::new(1), &mut x, &mut y);
        let set = crate::data::digits::split("test").unwrap();
        for (i, &v) in x[784..2 * 784].iter().enumerate() {
            assert!((v - (set.values[7 * 784 + i] / 255.0 - 0.5) * 4.0).abs() < 1e-5);
        }
        assert_eq!(y[1].to_bits(), set.labels[7]);
        assert_eq!(y[2].to_bits(), PADDING);
        assert!(x[2 * 784..].iter().all(|v| *v == 0.0));
    }

    #[test]
    fn targets_for_a_squared_error_are_one_hot() {
        let d = digits(Shape::Image { c: 1, h: 28, w: 28 }, vec![]);
        let (mut x, mut y) = (vec![0.0; 2 * 784], vec![7.0; 2 * 10]);
        d.fill(&[3], false, &mut Rng::new(1), &mut x, &mut y);
        let label = crate::data::digits::split("test").unwrap().labels[3] as usize;
        let want: Vec<f32> = (0..10).map(|c| f32::from(u8::from(c == label))).collect();
        assert_eq!(&y[..10], &want[..]);
        assert_eq!(&y[10..], &[0.0; 10]);
    }

    #[test]
    fn small_grey_images_are_centred_and_repeated_over_channels() {
        let d = digits(Shape::Image { c: 3, h: 32, w: 32 }, vec![]);
        let (mut x, mut y) = (vec![0.0; 3 * 1024], vec![0.0; 1]);
        d.fill(&[0], false, &mut Rng::new(1), &mut x, &mut y);
        let background = (0.0 - 0.5) * 4.0;
        assert_eq!(x[0], background); // the border
        assert_eq!(&x[..1024], &x[1024..2048]);
        assert_eq!(&x[..1024], &x[2048..]);
        let set = crate::data::digits::split("test").unwrap();
        let inside = (2 * 32 + 2..2 * 32 + 30).map(|i| x[i]).collect::<Vec<_>>();
        let want: Vec<f32> = set.values[..28].iter().map(|v| (v / 255.0 - 0.5) * 4.0).collect();
        assert_eq!(inside, want);
    }

    #[test]
    fn images_that_do_not_fit_are_refused() {
        let set = crate::data::digits::split("test").unwrap();
        let prep = Preparation {
            shape: Shape::Image { c: 1, h: 20, w: 20 },
            encoding: InputEncoding::Dense,
            mean: vec![],
            std: vec![],
            augment: vec![],
        };
        assert!(matches!(
            Dataset::images("d", set.clone(), prep.clone(), 10),
            Err(DatasetError::Misfit { .. })
        ));
        let prep = Preparation { shape: Shape::Image { c: 1, h: 28, w: 28 }, ..prep };
        assert!(matches!(Dataset::images("d", set, prep, 5), Err(DatasetError::Classes { label: 9, .. })));
    }

    #[test]
    fn augmentation_changes_images_reproducibly() {
        let d =
            digits(Shape::Image { c: 1, h: 28, w: 28 }, vec![Augment::RandomCrop { pad: 2 }, Augment::Hflip]);
        let run = |seed| {
            let (mut x, mut y) = (vec![0.0; 784 * 8], vec![0.0; 8]);
            d.fill(&[0, 1, 2, 3, 4, 5, 6, 7], true, &mut Rng::new(seed), &mut x, &mut y);
            x
        };
        let (mut plain, mut y) = (vec![0.0; 784 * 8], vec![0.0; 8]);
        d.fill(&[0, 1, 2, 3, 4, 5, 6, 7], false, &mut Rng::new(1), &mut plain, &mut y);
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), plain);
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn text_windows_predict_the_next_character() {
        let text = "abcabcabcab";
        let vocab = Vocabulary::from_text(text);
        let ids = crate::data::text::encode(text, &vocab).unwrap();
        let prep = Preparation {
            shape: Shape::Seq { steps: 3, features: 4 },
            encoding: InputEncoding::OneHot,
            mean: vec![],
            std: vec![],
            augment: vec![],
        };
        let d = Dataset::text("t", ids, &vocab, prep).unwrap();
        assert_eq!(d.len(), 3);
        let (mut x, mut y) = (vec![0.0; 2 * 12], vec![0.0; 6]);
        d.fill(&[1], false, &mut Rng::new(0), &mut x, &mut y);
        // Window 1 reads "abc" and predicts "bca".
        let hot: Vec<usize> = x[..12].chunks(4).map(|r| r.iter().position(|v| *v == 1.0).unwrap()).collect();
        assert_eq!(hot, [0, 1, 2]);
        assert_eq!(y[..3].iter().map(|v| v.to_bits()).collect::<Vec<_>>(), [1, 2, 0]);
        assert_eq!(y[3].to_bits(), PADDING);
    }

    #[test]
    fn shuffling_depends_on_seed_and_epoch_only() {
        assert_eq!(epoch_order(10, 3, 1, true), epoch_order(10, 3, 1, true));
        assert_ne!(epoch_order(10, 3, 1, true), epoch_order(10, 3, 2, true));
        assert_eq!(epoch_order(5, 3, 1, false), [0, 1, 2, 3, 4]);
        let mut sorted = epoch_order(100, 9, 4, true);
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    }
}
