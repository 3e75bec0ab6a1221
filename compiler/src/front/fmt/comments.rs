//! Comments, which the parser skips, recovered from the text for the formatter.

#[derive(Debug, Clone)]
pub struct Comment {
    pub start: usize,
    pub text: String,
    /// Nothing but whitespace precedes it on its line.
    pub own_line: bool,
}

/// Every `#` comment outside strings, in order.
pub fn extract(src: &str) -> Vec<Comment> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line_start = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => line_start = i + 1,
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += 1;
                }
                if i < bytes.len() && bytes[i] == b'\n' {
                    line_start = i + 1;
                }
            }
            b'#' => {
                let start = i;
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                let own_line = src[line_start..start].trim().is_empty();
                out.push(Comment { start, text: src[start..i].trim_end().to_string(), own_line });
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}
