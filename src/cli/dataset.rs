//! Finding and loading the data a command trains or evaluates on: a directory of IDX
//! files for image networks (the embedded digits when none is given), a text file for
//! character models.

use nnc_compiler::front::train::{Augment, TrainConfig};
use nnc_compiler::ir::graph::{Graph, InputEncoding, NodeKind};
use nnc_compiler::ir::shape::Shape;
use nnc_runtime::data::text::{self, Vocabulary};
use nnc_runtime::data::{digits, labelled};
use nnc_runtime::train::data::{Dataset, Preparation};
use std::path::{Path, PathBuf};

/// Training and evaluation sets, and the vocabulary of a character model.
pub struct Loaded {
    pub train: Option<Dataset>,
    pub test: Option<Dataset>,
    pub vocabulary: Option<Vocabulary>,
    /// Lines to show the user (which data, substitutions made).
    pub notes: Vec<String>,
}

/// How the network reads its single input, with the train section's normalisation and
/// augmentation (`augment` overridden when given).
pub fn preparation(
    graph: &Graph,
    config: Option<&TrainConfig>,
    augment: Option<Vec<Augment>>,
) -> Result<Preparation, String> {
    let [input] = graph.inputs[..] else {
        return Err(format!(
            "`{}` has {} inputs; training reads networks with one",
            graph.name,
            graph.inputs.len()
        ));
    };
    let node = graph.node(input);
    let NodeKind::Input(encoding) = node.kind else { unreachable!("inputs are input nodes") };
    let (mean, std) = config.map(|t| (t.mean.clone(), t.std.clone())).unwrap_or_default();
    let augment = augment.unwrap_or_else(|| config.map(|t| t.augment.clone()).unwrap_or_default());
    Ok(Preparation { shape: node.shape, encoding, mean, std, augment })
}

/// Whether the network reads characters (one-hot or token ids).
pub fn is_text(prep: &Preparation) -> bool {
    matches!(prep.encoding, InputEncoding::OneHot | InputEncoding::Tokens)
}

/// What to load.
pub struct Request<'a> {
    pub model_file: &'a Path,
    pub config: Option<&'a TrainConfig>,
    /// The data given on the command line, if any.
    pub data: Option<&'a Path>,
    pub valid: Option<&'a Path>,
    pub prep: &'a Preparation,
    pub classes: usize,
    /// A character model's vocabulary (from a checkpoint); otherwise built from the
    /// training text.
    pub vocabulary: Option<Vocabulary>,
    /// Whether the training split is needed (evaluation reads only the test split).
    pub need_train: bool,
}

/// Loads the request's data (or the train section's `data`, relative to the model file;
/// or the embedded digits for an image network).
pub fn load(r: Request<'_>) -> Result<Loaded, String> {
    let Request { model_file, config, data, valid, prep, classes, vocabulary, need_train } = r;
    let from_config =
        config.and_then(|c| c.data.as_ref()).map(|d| model_file.parent().unwrap_or(Path::new(".")).join(d));
    let data: Option<PathBuf> = data.map(Path::to_path_buf).or(from_config);
    if is_text(prep) {
        return load_text(data.as_deref(), valid, prep, vocabulary, need_train);
    }
    let mut notes = Vec::new();
    let (train, test) = match &data {
        Some(dir) => {
            let train = if need_train {
                let (x, y) = labelled::find_split(dir, "train").map_err(|e| e.to_string())?;
                Some((x.display().to_string(), labelled::load(&x, &y, classes).map_err(|e| e.to_string())?))
            } else {
                None
            };
            let test = match labelled::find_split(valid.unwrap_or(dir), "test") {
                Ok((x, y)) => Some((
                    x.display().to_string(),
                    labelled::load(&x, &y, classes).map_err(|e| e.to_string())?,
                )),
                Err(e) if !need_train => return Err(e.to_string()),
                Err(_) => None,
            };
            (train, test)
        }
        None => {
            notes.push(format!(
                "data: {} (2,000 for training, 500 for testing); give --data DIR for others",
                digits::NAME
            ));
            let train = if need_train {
                Some((digits::NAME.to_string(), digits::split("train").map_err(|e| e.to_string())?))
            } else {
                None
            };
            (train, Some((digits::NAME.to_string(), digits::split("test").map_err(|e| e.to_string())?)))
        }
    };
    if let (Shape::Image { c, h, w }, Some((_, set))) = (prep.shape, train.as_ref().or(test.as_ref()))
        && set.example_dims != [c as usize, h as usize, w as usize]
        && (set.example_dims != [h as usize, w as usize] || c != 1)
    {
        notes.push(format!(
            "examples of {:?} are centred on a black {h}×{w} field{}",
            set.example_dims,
            if c > 1 { format!(" and repeated over {c} channels") } else { String::new() }
        ));
    }
    let build = |(name, set): (String, labelled::Labelled)| {
        Dataset::images(&name, set, prep.clone(), classes).map_err(|e| e.to_string())
    };
    let train = train.map(build).transpose()?;
    let test = test.map(build).transpose()?;
    Ok(Loaded { train, test, vocabulary: None, notes })
}

fn load_text(
    data: Option<&Path>,
    valid: Option<&Path>,
    prep: &Preparation,
    vocabulary: Option<Vocabulary>,
    need_train: bool,
) -> Result<Loaded, String> {
    let Some(data) = data else {
        return Err("a character model trains on a text file: give it with --data FILE".into());
    };
    let mut notes = Vec::new();
    let train_text = text::read_text(data).map_err(|e| e.to_string())?;
    let vocab = vocabulary.unwrap_or_else(|| Vocabulary::from_text(&train_text));
    // The validation text: as given, or the training file's `valid` sibling.
    let sibling = data
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| n.contains("train"))
        .map(|n| data.with_file_name(n.replace("train", "valid")));
    let valid: Option<PathBuf> = valid.map(Path::to_path_buf).or(sibling.filter(|p| p.is_file()));
    let train = if need_train {
        let ids = text::encode(&train_text, &vocab).map_err(|e| e.to_string())?;
        notes.push(format!(
            "data: `{}`, {} characters, a vocabulary of {}",
            data.display(),
            ids.len(),
            vocab.len()
        ));
        Some(
            Dataset::text(&data.display().to_string(), ids, &vocab, prep.clone())
                .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    let test = match valid {
        Some(path) => {
            let text = text::read_text(&path).map_err(|e| e.to_string())?;
            let fallback = vocab.index(' ').unwrap_or(0);
            let (ids, replaced) = text::encode_lossy(&text, &vocab, fallback).map_err(|e| e.to_string())?;
            let mut note = format!("validation: `{}`, {} characters", path.display(), ids.len());
            if replaced > 0 {
                note += &format!(
                    " ({replaced} not in the training vocabulary, read as {:?})",
                    vocab.char(fallback)
                );
            }
            notes.push(note);
            Some(
                Dataset::text(&path.display().to_string(), ids, &vocab, prep.clone())
                    .map_err(|e| e.to_string())?,
            )
        }
        None => None,
    };
    Ok(Loaded { train, test, vocabulary: Some(vocab), notes })
}
