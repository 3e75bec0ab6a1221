//! The language's predefined names. Resolution (stage 2) checks uses against them and
//! expansion (stage 3) gives them meaning; keeping the lists here lets both read them
//! without either stage depending on the other.

/// Bare names that mean themselves when nothing else is bound to them.
pub const SYMBOLS: &[&str] = &["same", "valid", "he", "kaiming", "xavier", "glorot", "lecun", "zeros"];

/// Initialiser constructors that may be called in argument position: `normal(0.01)`.
pub const CTORS: &[&str] = &["normal", "uniform"];

/// The built-in functions on shapes and numbers.
pub const BUILTINS: &[&str] = &["channels", "height", "width", "steps", "min", "max"];
