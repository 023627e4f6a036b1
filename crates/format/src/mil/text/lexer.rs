//! Tokeniser for `model.mil` text: identifiers, numbers, strings and punctuation, each with its 1-based position.
//! Tokens are produced on demand, so memory does not grow with the size of the file.

use crate::error::MilSyntaxError;

/// Longest token text quoted in an error message.
const MAX_QUOTED_TOKEN_CHARS: usize = 40;

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TokenKind<'a> {
    /// `[A-Za-z_][A-Za-z0-9_@]*`; keywords are identifiers too and are told apart by the parser.
    Ident(&'a str),
    /// An integer, decimal float, hex float, or signed `-inf` / `-nan`, as written (sign included).
    Number(&'a str),
    /// A string literal with its escapes decoded.
    Str(String),
    /// One of `( ) [ ] { } < > , = ; ?`.
    Punct(char),
    /// `->`.
    Arrow,
    /// End of input.
    Eof,
}

/// A token with the position of its first character.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token<'a> {
    /// The token.
    pub kind: TokenKind<'a>,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The token as written (empty at end of input).
    pub text: &'a str,
}

impl Token<'_> {
    /// A syntax error located at this token.
    pub fn error(&self, message: impl Into<String>) -> MilSyntaxError {
        MilSyntaxError {
            line: self.line,
            column: self.column,
            token: shorten(self.text),
            message: message.into(),
        }
    }
}

/// The token text quoted in errors: at most [`MAX_QUOTED_TOKEN_CHARS`] characters.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_TOKEN_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

/// True for characters that may start an identifier.
fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

/// True for characters that may continue an identifier.
fn is_ident_continue(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '@'
}

/// Splits `model.mil` text into tokens.
pub(crate) struct Lexer<'a> {
    text: &'a str,
    /// Byte offset of the next unread character.
    pos: usize,
    line: usize,
    column: usize,
}

impl<'a> Lexer<'a> {
    /// A lexer at the start of `text`.
    pub fn new(text: &'a str) -> Lexer<'a> {
        Lexer {
            text,
            pos: 0,
            line: 1,
            column: 1,
        }
    }

    fn rest(&self) -> &'a str {
        self.text.get(self.pos..).unwrap_or("")
    }

    fn peek_char(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek_char_at(&self, n: usize) -> Option<char> {
        self.rest().chars().nth(n)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek_char()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn bump_while(&mut self, pred: impl Fn(char) -> bool) {
        while self.peek_char().is_some_and(&pred) {
            self.bump();
        }
    }

    /// An error at the current position, quoting `len` bytes of input from `start`.
    fn error_at(&self, line: usize, column: usize, start: usize, message: &str) -> MilSyntaxError {
        let end = self
            .text
            .get(start..)
            .and_then(|t| t.char_indices().nth(1))
            .map_or(self.text.len(), |(i, _)| start + i)
            .max(self.pos);
        MilSyntaxError {
            line,
            column,
            token: shorten(self.text.get(start..end).unwrap_or("")),
            message: message.to_string(),
        }
    }

    /// The next token.
    pub fn next_token(&mut self) -> Result<Token<'a>, MilSyntaxError> {
        self.bump_while(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
        let (line, column, start) = (self.line, self.column, self.pos);
        let Some(c) = self.peek_char() else {
            return Ok(Token {
                kind: TokenKind::Eof,
                line,
                column,
                text: "",
            });
        };
        let kind = if is_ident_start(c) {
            self.bump_while(is_ident_continue);
            TokenKind::Ident(self.text.get(start..self.pos).unwrap_or(""))
        } else if c.is_ascii_digit()
            || (c == '-' && self.peek_char_at(1).is_some_and(|d| d.is_ascii_digit()))
        {
            self.lex_number(line, column, start)?
        } else if c == '-' && self.peek_char_at(1) == Some('>') {
            self.bump();
            self.bump();
            TokenKind::Arrow
        } else if c == '-' && self.peek_char_at(1).is_some_and(is_ident_start) {
            self.bump();
            self.bump_while(is_ident_continue);
            let word = self.text.get(start..self.pos).unwrap_or("");
            if word != "-inf" && word != "-nan" {
                return Err(self.error_at(
                    line,
                    column,
                    start,
                    "a `-` sign must be followed by a number, `inf` or `nan`",
                ));
            }
            TokenKind::Number(word)
        } else if c == '"' {
            self.lex_string(line, column, start)?
        } else if "()[]{}<>,=;?".contains(c) {
            self.bump();
            TokenKind::Punct(c)
        } else {
            self.bump();
            let message = match c {
                '%' => "unexpected `%`: `%name` values belong to coremltools' Python `print(prog)` output, \
                        which is not the model.mil format",
                '/' if self.peek_char() == Some('/') => {
                    self.bump();
                    "`//` comments are not part of the model.mil grammar"
                }
                _ => "unexpected character",
            };
            return Err(self.error_at(line, column, start, message));
        };
        Ok(Token {
            kind,
            line,
            column,
            text: self.text.get(start..self.pos).unwrap_or(""),
        })
    }

    /// Lexes an integer, decimal float or hex float (sign already at the current position if present).
    fn lex_number(
        &mut self,
        line: usize,
        column: usize,
        start: usize,
    ) -> Result<TokenKind<'a>, MilSyntaxError> {
        if self.peek_char() == Some('-') {
            self.bump();
        }
        let is_hex =
            self.peek_char() == Some('0') && matches!(self.peek_char_at(1), Some('x' | 'X'));
        if is_hex {
            self.bump();
            self.bump();
            self.bump_while(|c| c.is_ascii_hexdigit());
            if self.peek_char() == Some('.') {
                self.bump();
                self.bump_while(|c| c.is_ascii_hexdigit());
            }
            if !matches!(self.peek_char(), Some('p' | 'P')) {
                return Err(self.error_at(
                    line,
                    column,
                    start,
                    "a hex float needs a binary exponent (`p+N` or `p-N`)",
                ));
            }
            self.bump();
            if matches!(self.peek_char(), Some('+' | '-')) {
                self.bump();
            }
            if !self.peek_char().is_some_and(|c| c.is_ascii_digit()) {
                return Err(self.error_at(line, column, start, "hex float exponent has no digits"));
            }
            self.bump_while(|c| c.is_ascii_digit());
        } else {
            self.bump_while(|c| c.is_ascii_digit());
            if self.peek_char() == Some('.') {
                self.bump();
                self.bump_while(|c| c.is_ascii_digit());
            }
            if matches!(self.peek_char(), Some('e' | 'E')) {
                self.bump();
                if matches!(self.peek_char(), Some('+' | '-')) {
                    self.bump();
                }
                if !self.peek_char().is_some_and(|c| c.is_ascii_digit()) {
                    return Err(self.error_at(line, column, start, "float exponent has no digits"));
                }
                self.bump_while(|c| c.is_ascii_digit());
            }
        }
        if self.peek_char().is_some_and(is_ident_continue) {
            self.bump_while(is_ident_continue);
            return Err(self.error_at(line, column, start, "malformed number"));
        }
        Ok(TokenKind::Number(
            self.text.get(start..self.pos).unwrap_or(""),
        ))
    }

    /// Lexes a `"..."` string, decoding `\"`, `\\`, `\n`, `\t` and `\r`.
    fn lex_string(
        &mut self,
        line: usize,
        column: usize,
        start: usize,
    ) -> Result<TokenKind<'a>, MilSyntaxError> {
        self.bump();
        let mut value = String::new();
        loop {
            let (esc_line, esc_column, esc_start) = (self.line, self.column, self.pos);
            match self.bump() {
                None => {
                    return Err(self.error_at(line, column, start, "unterminated string"));
                }
                Some('"') => return Ok(TokenKind::Str(value)),
                Some('\\') => {
                    let decoded = match self.bump() {
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        _ => {
                            return Err(self.error_at(
                                esc_line,
                                esc_column,
                                esc_start,
                                "unknown string escape (expected one of \\\" \\\\ \\n \\t \\r)",
                            ))
                        }
                    };
                    value.push(decoded);
                }
                Some(c) => value.push(c),
            }
        }
    }
}
