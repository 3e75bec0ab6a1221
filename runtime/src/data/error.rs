//! The error type of data loading. Every variant that comes from a file names it, so that
//! a training run that stops on bad data says which of its files to look at.

use super::idx::IdxError;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The IDX reader's own report (unreadable file, wrong magic number, truncation,
    /// corrupt gzip); it already names the file.
    #[error(transparent)]
    Idx(#[from] IdxError),
    #[error("cannot read `{path}`: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("no {split} {kind} in `{dir}`: looked for {}", .looked_for.join(", "))]
    SplitMissing { dir: String, split: String, kind: &'static str, looked_for: Vec<String> },
    #[error(
        "`{path}` should hold examples of at least 2 dimensions (a count, then the shape of \
         one example), but its dimensions are {dims:?}"
    )]
    ImagesRank { path: String, dims: Vec<usize> },
    #[error("`{path}` should hold one label per example (1 dimension), but its dimensions are {dims:?}")]
    LabelsNotVector { path: String, dims: Vec<usize> },
    #[error("`{images}` has {image_count} images but `{labels}` has {label_count} labels")]
    CountMismatch { images: String, image_count: usize, labels: String, label_count: usize },
    #[error("`{path}` holds no examples")]
    Empty { path: String },
    #[error("label {label} of example {example} in `{path}` is not a whole number")]
    LabelNotInteger { path: String, example: usize, label: f32 },
    #[error("label {label} of example {example} in `{path}` is outside 0..{classes}")]
    LabelOutOfRange { path: String, example: usize, label: f32, classes: usize },
    #[error("`{path}` is larger than {limit} bytes, the most nnc reads as text")]
    TextTooLarge { path: String, limit: u64 },
    #[error("`{path}` is not UTF-8 text: invalid bytes at byte offset {offset} (line {line})")]
    NotUtf8 { path: String, offset: usize, line: usize },
    #[error("character {ch:?} at line {line}, column {column} is not in the vocabulary")]
    UnknownChar { ch: char, line: usize, column: usize },
    #[error("fallback token {fallback} is outside the vocabulary of {len} characters")]
    FallbackOutOfRange { fallback: usize, len: usize },
    #[error(
        "the stored vocabulary is not a sorted list of distinct characters: {previous:?} is \
         followed by {next:?}"
    )]
    VocabularyOrder { previous: char, next: char },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idx_errors_pass_through_unchanged() {
        let inner = IdxError::Format { path: "a/x.gz".into(), reason: "truncated header".into() };
        let text = inner.to_string();
        assert_eq!(DataError::from(inner).to_string(), text);
    }

    #[test]
    fn missing_split_lists_every_name_tried() {
        let e = DataError::SplitMissing {
            dir: "d".into(),
            split: "test".into(),
            kind: "labels",
            looked_for: vec!["test-labels-idx1-ubyte".into(), "t10k-labels-idx1-ubyte".into()],
        };
        assert_eq!(
            e.to_string(),
            "no test labels in `d`: looked for test-labels-idx1-ubyte, t10k-labels-idx1-ubyte"
        );
    }
}
