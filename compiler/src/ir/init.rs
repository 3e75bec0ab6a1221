//! Weight initialisers the language names (`init: he`), and how defaults are chosen.

use serde::Serialize;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Init {
    /// Kaiming normal: N(0, 2 / fan_in). Suits ReLU.
    He,
    /// Glorot uniform: U(±√(6 / (fan_in + fan_out))). Suits tanh and sigmoid.
    Xavier,
    /// LeCun normal: N(0, 1 / fan_in). Suits SELU-like and linear layers.
    Lecun,
    Zeros,
    Ones,
    Normal {
        std: f64,
    },
    Uniform {
        a: f64,
    },
}

/// The initialiser names a user can write, for error messages and docs.
pub const NAMES: &[&str] = &["he", "xavier", "lecun", "zeros", "normal(std)", "uniform(a)"];

impl Init {
    /// A bare initialiser name (`he`); `normal` and `uniform` need an argument.
    pub fn from_name(name: &str) -> Option<Init> {
        Some(match name {
            "he" | "kaiming" => Init::He,
            "xavier" | "glorot" => Init::Xavier,
            "lecun" => Init::Lecun,
            "zeros" => Init::Zeros,
            _ => return None,
        })
    }
}

impl fmt::Display for Init {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Init::He => write!(f, "he"),
            Init::Xavier => write!(f, "xavier"),
            Init::Lecun => write!(f, "lecun"),
            Init::Zeros => write!(f, "zeros"),
            Init::Ones => write!(f, "ones"),
            Init::Normal { std } => write!(f, "normal({})", crate::front::value::format_float(*std)),
            Init::Uniform { a } => write!(f, "uniform({})", crate::front::value::format_float(*a)),
        }
    }
}
