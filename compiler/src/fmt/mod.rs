//! Formatter (to do).
