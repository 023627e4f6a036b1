//! Recursive-descent parser from `model.mil` text to the [`Program`] IR (grammar in
//! `docs/mil-text-grammar.md`). Nesting of types and literals is capped at [`MAX_NESTING_DEPTH`], so hostile input
//! cannot overflow the stack.

use std::collections::{BTreeMap, VecDeque};

use super::float::{fits_exactly, parse_hex_float, round_to};
use super::lexer::{Lexer, Token, TokenKind};
use crate::error::MilSyntaxError;
use crate::mil::ir::{
    opset_from_text, Argument, Binding, BlobRef, Block, DataType, Dim, Function, NamedType,
    Operation, Program, TensorData, Value, ValueData, ValueType,
};

/// Deepest nesting of types and literal values accepted (tensor ranks included).
const MAX_NESTING_DEPTH: usize = 64;

type Result<T> = std::result::Result<T, MilSyntaxError>;

/// Identifiers that begin a compound type (followed by `<`).
const TYPE_CONSTRUCTORS: [&str; 6] = ["tensor", "list", "dict", "tuple", "state", "tensor_buffer"];

/// True for identifiers that begin a type.
fn is_type_keyword(word: &str) -> bool {
    DataType::from_mil_name(word).is_some() || TYPE_CONSTRUCTORS.contains(&word)
}

/// True when `word` followed by `next` starts a typed literal (`int32(`, `tensor<`, ...) rather than a name.
fn starts_typed_literal(word: &str, next: &TokenKind<'_>) -> bool {
    match next {
        TokenKind::Punct('(') => DataType::from_mil_name(word).is_some(),
        TokenKind::Punct('<') => TYPE_CONSTRUCTORS.contains(&word),
        _ => false,
    }
}

/// Describes a token for "expected X, found Y" messages.
fn describe(kind: &TokenKind<'_>) -> String {
    match kind {
        TokenKind::Ident(w) => format!("identifier `{w}`"),
        TokenKind::Number(n) => format!("number `{n}`"),
        TokenKind::Str(_) => "a string".to_string(),
        TokenKind::Punct(c) => format!("`{c}`"),
        TokenKind::Arrow => "`->`".to_string(),
        TokenKind::Eof => "end of input".to_string(),
    }
}

/// The parser state: a lexer with up to two tokens of look-ahead.
pub(crate) struct Parser<'a> {
    lexer: Lexer<'a>,
    lookahead: VecDeque<Token<'a>>,
}

impl<'a> Parser<'a> {
    /// A parser at the start of `text`.
    pub fn new(text: &'a str) -> Parser<'a> {
        Parser {
            lexer: Lexer::new(text),
            lookahead: VecDeque::with_capacity(2),
        }
    }

    fn fill(&mut self, count: usize) -> Result<()> {
        while self.lookahead.len() < count {
            let token = self.lexer.next_token()?;
            self.lookahead.push_back(token);
        }
        Ok(())
    }

    /// The next token, without consuming it.
    fn peek(&mut self) -> Result<&Token<'a>> {
        self.fill(1)?;
        self.lookahead
            .front()
            .ok_or_else(|| internal_error("look-ahead buffer empty"))
    }

    /// The token after the next one, without consuming anything.
    fn peek_second(&mut self) -> Result<&Token<'a>> {
        self.fill(2)?;
        self.lookahead
            .get(1)
            .ok_or_else(|| internal_error("look-ahead buffer short"))
    }

    fn peek_is(&mut self, c: char) -> Result<bool> {
        Ok(self.peek()?.kind == TokenKind::Punct(c))
    }

    /// Consumes and returns the next token.
    fn next(&mut self) -> Result<Token<'a>> {
        self.fill(1)?;
        self.lookahead
            .pop_front()
            .ok_or_else(|| internal_error("look-ahead buffer empty"))
    }

    /// Consumes the punctuation `c` or fails with "expected `c` <context>".
    fn expect(&mut self, c: char, context: &str) -> Result<Token<'a>> {
        let token = self.next()?;
        if token.kind == TokenKind::Punct(c) {
            Ok(token)
        } else {
            Err(token.error(format!(
                "expected `{c}` {context}, found {}",
                describe(&token.kind)
            )))
        }
    }

    /// Consumes an identifier or fails with "expected <what>".
    fn expect_ident(&mut self, what: &str) -> Result<(&'a str, Token<'a>)> {
        let token = self.next()?;
        match token.kind {
            TokenKind::Ident(word) => Ok((word, token)),
            _ => Err(token.error(format!("expected {what}, found {}", describe(&token.kind)))),
        }
    }

    /// Consumes the keyword `word` or fails.
    fn expect_keyword(&mut self, word: &str, context: &str) -> Result<Token<'a>> {
        let token = self.next()?;
        if token.kind == TokenKind::Ident(word) {
            Ok(token)
        } else {
            Err(token.error(format!(
                "expected `{word}` {context}, found {}",
                describe(&token.kind)
            )))
        }
    }

    /// After an item of a comma-separated list: consumes `,` (returns true) or the closing `close` (false).
    fn comma_or_close(&mut self, close: char, context: &str) -> Result<bool> {
        let token = self.next()?;
        match token.kind {
            TokenKind::Punct(',') => Ok(true),
            TokenKind::Punct(c) if c == close => Ok(false),
            _ => Err(token.error(format!(
                "expected `,` or `{close}` {context}, found {}",
                describe(&token.kind)
            ))),
        }
    }

    /// `program(VERSION) [attrs] { function* }` followed by end of input.
    pub fn parse_program(&mut self) -> Result<Program> {
        let first = self.next()?;
        match first.kind {
            TokenKind::Ident("program") => {}
            TokenKind::Ident(_) if self.peek_is('[')? => {
                return Err(first.error(
                    "this looks like coremltools' Python `print(prog)` output (`main[CoreML8](%x: ...)`), \
                     which is not the compiled model.mil format; expected `program(<version>)`",
                ))
            }
            _ => {
                return Err(first.error(format!(
                    "expected `program` at the start of model.mil, found {}",
                    describe(&first.kind)
                )))
            }
        }
        self.expect('(', "after `program`")?;
        let version_token = self.next()?;
        let version = match version_token.kind {
            TokenKind::Number(text) if is_version(text) => text.to_string(),
            _ => {
                return Err(version_token.error(format!(
                    "expected a program version such as `1.0` or `1.3`, found {}",
                    describe(&version_token.kind)
                )))
            }
        };
        self.expect(')', "after the program version")?;
        let attributes = if self.peek_is('[')? {
            self.parse_attribute_list("program attribute")?
        } else {
            BTreeMap::new()
        };
        self.expect('{', "to open the program body")?;
        let mut functions = BTreeMap::new();
        loop {
            let token = self.next()?;
            match token.kind {
                TokenKind::Ident("func") => {
                    let (name, name_token) = self.expect_ident("a function name after `func`")?;
                    let function = self.parse_function()?;
                    if functions.insert(name.to_string(), function).is_some() {
                        return Err(name_token.error(format!("function `{name}` is defined twice")));
                    }
                }
                TokenKind::Punct('}') => break,
                _ => {
                    return Err(token.error(format!(
                        "expected `func` or the closing `}}` of the program, found {}",
                        describe(&token.kind)
                    )))
                }
            }
        }
        let end = self.next()?;
        if end.kind != TokenKind::Eof {
            return Err(end.error(format!(
                "expected end of input after the program's closing `}}`, found {}",
                describe(&end.kind)
            )));
        }
        Ok(Program {
            version,
            functions,
            attributes,
        })
    }

    /// `<OPSET>(params) [attrs] { statements } -> (outputs);` after `func NAME`.
    fn parse_function(&mut self) -> Result<Function> {
        self.expect('<', "before the function's opset (e.g. `main<ios18>`)")?;
        let (opset, _) = self.expect_ident("an opset name such as `ios18`")?;
        self.expect('>', "after the function's opset")?;
        self.expect('(', "to open the function's parameter list")?;
        let mut inputs: Vec<NamedType> = Vec::new();
        if self.peek_is(')')? {
            self.next()?;
        } else {
            loop {
                let ty = self.parse_type(0)?;
                let (name, name_token) = self.expect_ident("a parameter name after its type")?;
                if inputs.iter().any(|p| p.name == name) {
                    return Err(name_token.error(format!("parameter `{name}` is declared twice")));
                }
                inputs.push(NamedType {
                    name: name.to_string(),
                    ty,
                });
                if !self.comma_or_close(')', "in the function's parameter list")? {
                    break;
                }
            }
        }
        let attributes = if self.peek_is('[')? {
            self.parse_attribute_list("function attribute")?
        } else {
            BTreeMap::new()
        };
        self.expect('{', "to open the function body")?;
        let mut operations = Vec::new();
        while !self.peek_is('}')? {
            operations.push(self.parse_statement()?);
        }
        self.next()?;
        let arrow = self.next()?;
        if arrow.kind != TokenKind::Arrow {
            return Err(arrow.error(format!(
                "expected `->` and the function's outputs after its body, found {}",
                describe(&arrow.kind)
            )));
        }
        self.expect('(', "to open the function's output list")?;
        let mut outputs = Vec::new();
        if self.peek_is(')')? {
            self.next()?;
        } else {
            loop {
                let (name, _) = self.expect_ident("an output name")?;
                outputs.push(name.to_string());
                if !self.comma_or_close(')', "in the function's output list")? {
                    break;
                }
            }
        }
        self.expect(';', "after the function's output list")?;
        Ok(Function {
            inputs,
            opset: opset_from_text(opset),
            attributes,
            block: Block {
                inputs: Vec::new(),
                operations,
                outputs,
            },
        })
    }

    /// `[type name {, type name} =] op[<opset>](args) [attrs];`
    fn parse_statement(&mut self) -> Result<Operation> {
        let mut outputs = Vec::new();
        let starts_with_type =
            matches!(self.peek()?.kind, TokenKind::Ident(w) if is_type_keyword(w));
        if starts_with_type {
            loop {
                let ty = self.parse_type(0)?;
                let (name, _) = self.expect_ident("an output name after its type")?;
                outputs.push(NamedType {
                    name: name.to_string(),
                    ty,
                });
                let token = self.next()?;
                match token.kind {
                    TokenKind::Punct(',') => {}
                    TokenKind::Punct('=') => break,
                    _ => {
                        return Err(token.error(format!(
                            "expected `,` or `=` after a statement output, found {}",
                            describe(&token.kind)
                        )))
                    }
                }
            }
        }
        let (op_type, _) = self.expect_ident("an operation name")?;
        if self.peek_is('<')? {
            // Per-op opset ([E5] analytics.mil): accepted and ignored; ops resolve against the function opset.
            self.next()?;
            self.expect_ident("an opset name after `<`")?;
            self.expect('>', "after the operation's opset")?;
        }
        self.expect('(', &format!("to open the argument list of `{op_type}`"))?;
        let mut inputs: BTreeMap<String, Argument> = BTreeMap::new();
        if self.peek_is(')')? {
            self.next()?;
        } else {
            loop {
                let (key, key_token) = self.expect_ident("an argument name")?;
                self.expect('=', "after the argument name")?;
                let argument = self.parse_argument()?;
                if inputs.insert(key.to_string(), argument).is_some() {
                    return Err(key_token.error(format!("argument `{key}` is given twice")));
                }
                if !self.comma_or_close(')', &format!("in the argument list of `{op_type}`"))? {
                    break;
                }
            }
        }
        let attributes = if self.peek_is('[')? {
            self.parse_attribute_list("operation attribute")?
        } else {
            BTreeMap::new()
        };
        let end = self.next()?;
        match end.kind {
            TokenKind::Punct(';') => {}
            TokenKind::Punct('{') => {
                return Err(end.error(format!(
                "nested blocks (control flow in `{op_type}`) are not supported in model.mil text"
            )))
            }
            _ => {
                return Err(end.error(format!(
                    "expected `;` at the end of the `{op_type}` statement, found {}",
                    describe(&end.kind)
                )))
            }
        }
        Ok(Operation {
            op_type: op_type.to_string(),
            inputs,
            outputs,
            attributes,
            blocks: Vec::new(),
        })
    }

    /// An argument value: a name, a typed literal, or a `(a, b, ...)` tuple of those.
    fn parse_argument(&mut self) -> Result<Argument> {
        if !self.peek_is('(')? {
            return Ok(vec![self.parse_binding()?]);
        }
        self.next()?;
        let mut bindings = Vec::new();
        if self.peek_is(')')? {
            self.next()?;
            return Ok(bindings);
        }
        loop {
            bindings.push(self.parse_binding()?);
            if !self.comma_or_close(')', "in a tuple argument")? {
                return Ok(bindings);
            }
        }
    }

    /// A single name or typed literal.
    fn parse_binding(&mut self) -> Result<Binding> {
        let word = match self.peek()?.kind {
            TokenKind::Ident(word) => word,
            _ => {
                let token = self.next()?;
                return Err(token.error(format!(
                    "expected a value name or a typed literal, found {}",
                    describe(&token.kind)
                )));
            }
        };
        if starts_typed_literal(word, &self.peek_second()?.kind) {
            Ok(Binding::Value(self.parse_typed_literal(0)?))
        } else {
            self.next()?;
            Ok(Binding::Name(word.to_string()))
        }
    }

    /// `[key = typed_literal {, key = typed_literal}]`
    fn parse_attribute_list(&mut self, what: &str) -> Result<BTreeMap<String, Value>> {
        self.expect('[', &format!("to open the {what} list"))?;
        let mut attributes = BTreeMap::new();
        if self.peek_is(']')? {
            self.next()?;
            return Ok(attributes);
        }
        loop {
            let (key, key_token) = self.expect_ident(&format!("an {what} name"))?;
            self.expect('=', &format!("after the {what} name"))?;
            let value_starts_literal = match self.peek()?.kind {
                TokenKind::Ident(word) => starts_typed_literal(word, &self.peek_second()?.kind),
                _ => false,
            };
            if !value_starts_literal {
                let token = self.next()?;
                return Err(token.error(format!(
                    "the value of {what} `{key}` must be a typed literal such as `int32(1)`, found {}",
                    describe(&token.kind)
                )));
            }
            let value = self.parse_typed_literal(0)?;
            if attributes.insert(key.to_string(), value).is_some() {
                return Err(key_token.error(format!("{what} `{key}` is given twice")));
            }
            if !self.comma_or_close(']', &format!("in the {what} list"))? {
                return Ok(attributes);
            }
        }
    }

    /// A type: `fp16`, `tensor<fp16, [1, ?]>`, `list<T, N|?>`, `dict<K, V>`, `tuple<T, ...>`, `state<T>`.
    fn parse_type(&mut self, depth: usize) -> Result<ValueType> {
        let (word, token) = self.expect_ident("a type")?;
        if depth > MAX_NESTING_DEPTH {
            return Err(token.error(format!(
                "types nested deeper than {MAX_NESTING_DEPTH} levels"
            )));
        }
        if let Some(dtype) = DataType::from_mil_name(word) {
            return Ok(ValueType::scalar(dtype));
        }
        match word {
            "tensor" => {
                self.expect('<', "after `tensor`")?;
                let (dtype_word, dtype_token) =
                    self.expect_ident("an element type such as `fp16`")?;
                let dtype = DataType::from_mil_name(dtype_word).ok_or_else(|| {
                    dtype_token.error(format!("unknown element type `{dtype_word}`"))
                })?;
                self.expect(',', "after the tensor element type")?;
                let shape = if self.peek_is('?')? {
                    // Unknown rank: this crate's spelling `tensor<T, ?>` (not seen in compiler output).
                    self.next()?;
                    None
                } else {
                    Some(self.parse_shape()?)
                };
                self.expect('>', "to close the tensor type")?;
                Ok(ValueType::Tensor { dtype, shape })
            }
            "list" => {
                self.expect('<', "after `list`")?;
                let elem = self.parse_type(depth + 1)?;
                self.expect(',', "after the list element type")?;
                let len_token = self.next()?;
                let len = match len_token.kind {
                    TokenKind::Punct('?') => None,
                    TokenKind::Number(text) => Some(parse_size(text).ok_or_else(|| {
                        len_token.error("a list length must be a non-negative integer or `?`")
                    })?),
                    _ => {
                        return Err(len_token.error(format!(
                            "expected a list length (integer or `?`), found {}",
                            describe(&len_token.kind)
                        )))
                    }
                };
                self.expect('>', "to close the list type")?;
                Ok(ValueType::List {
                    elem: Box::new(elem),
                    len,
                })
            }
            "dict" => {
                self.expect('<', "after `dict`")?;
                let key = self.parse_type(depth + 1)?;
                self.expect(',', "after the dict key type")?;
                let value = self.parse_type(depth + 1)?;
                self.expect('>', "to close the dict type")?;
                Ok(ValueType::Dict {
                    key: Box::new(key),
                    value: Box::new(value),
                })
            }
            "tuple" => {
                self.expect('<', "after `tuple`")?;
                let mut types = Vec::new();
                if self.peek_is('>')? {
                    self.next()?;
                } else {
                    loop {
                        types.push(self.parse_type(depth + 1)?);
                        if !self.comma_or_close('>', "in the tuple type")? {
                            break;
                        }
                    }
                }
                Ok(ValueType::Tuple(types))
            }
            "state" => {
                self.expect('<', "after `state`")?;
                let inner = self.parse_type(depth + 1)?;
                self.expect('>', "to close the state type")?;
                Ok(ValueType::State(Box::new(inner)))
            }
            "tensor_buffer" => Err(token.error(
                "`tensor_buffer` types (Core ML's E5 analytics.mil) are not supported; \
                 only compiled model.mil programs are",
            )),
            _ => Err(token.error(format!("unknown type `{word}`"))),
        }
    }

    /// `[dim, ...]` where each dim is a non-negative integer or `?`.
    fn parse_shape(&mut self) -> Result<Vec<Dim>> {
        self.expect('[', "to open the tensor shape")?;
        let mut dims = Vec::new();
        if self.peek_is(']')? {
            self.next()?;
            return Ok(dims);
        }
        loop {
            let token = self.next()?;
            let dim = match token.kind {
                TokenKind::Punct('?') => Dim::Unknown,
                TokenKind::Number(text) => Dim::Fixed(parse_size(text).ok_or_else(|| {
                    token.error("a dimension must be a non-negative integer or `?`")
                })?),
                _ => {
                    return Err(token.error(format!(
                        "expected a dimension (integer or `?`), found {}",
                        describe(&token.kind)
                    )))
                }
            };
            dims.push(dim);
            if !self.comma_or_close(']', "in the tensor shape")? {
                return Ok(dims);
            }
        }
    }

    /// `type(body)`; an empty body `type()` gives an empty tuple, list or dict.
    fn parse_typed_literal(&mut self, depth: usize) -> Result<Value> {
        let ty = self.parse_type(depth)?;
        let open = self.expect('(', "to open the literal's value")?;
        if self.peek_is(')')? {
            self.next()?;
            let data = match &ty {
                ValueType::Tuple(_) => ValueData::Tuple(Vec::new()),
                ValueType::List {
                    len: None | Some(0),
                    ..
                } => ValueData::List(Vec::new()),
                ValueType::Dict { .. } => ValueData::Dict(Vec::new()),
                _ => return Err(open.error("this literal needs a value between the parentheses")),
            };
            return Ok(Value { ty, data });
        }
        let value = self.parse_body(&ty, depth)?;
        self.expect(')', "to close the literal")?;
        Ok(value)
    }

    /// The untyped body of a literal, interpreted with the type `ty`.
    fn parse_body(&mut self, ty: &ValueType, depth: usize) -> Result<Value> {
        if depth > MAX_NESTING_DEPTH {
            let token = self.next()?;
            return Err(token.error(format!(
                "values nested deeper than {MAX_NESTING_DEPTH} levels"
            )));
        }
        match ty {
            ValueType::Tensor { dtype, shape } => {
                if self.peek()?.kind == TokenKind::Ident("BLOBFILE") {
                    let blob = self.parse_blobfile(depth)?;
                    return Ok(Value {
                        ty: ty.clone(),
                        data: ValueData::Blob(blob),
                    });
                }
                let Some(dims) = shape else {
                    let token = self.next()?;
                    return Err(
                        token.error("a tensor of unknown rank can only hold a BLOBFILE value")
                    );
                };
                let mut data = empty_data(*dtype);
                if dims.is_empty() {
                    self.parse_element(*dtype, &mut data)?;
                    return Ok(Value {
                        ty: ty.clone(),
                        data: ValueData::Tensor(data),
                    });
                }
                let mut observed = vec![None; dims.len()];
                self.parse_nested(*dtype, dims, 0, depth, &mut data, &mut observed)?;
                let resolved = dims
                    .iter()
                    .zip(&observed)
                    .map(|(dim, seen)| match (dim, seen) {
                        (Dim::Unknown, Some(n)) => Dim::Fixed(*n),
                        _ => *dim,
                    })
                    .collect();
                Ok(Value {
                    ty: ValueType::Tensor {
                        dtype: *dtype,
                        shape: Some(resolved),
                    },
                    data: ValueData::Tensor(data),
                })
            }
            ValueType::List { elem, len } => {
                let open = self.expect('[', "to open a list value")?;
                let mut values = Vec::new();
                if self.peek_is(']')? {
                    self.next()?;
                } else {
                    loop {
                        values.push(self.parse_body(elem, depth + 1)?);
                        if !self.comma_or_close(']', "in a list value")? {
                            break;
                        }
                    }
                }
                if let Some(n) = len {
                    if values.len() as u64 != *n {
                        return Err(open.error(format!(
                            "the list type has {n} elements but {} are written",
                            values.len()
                        )));
                    }
                }
                Ok(Value {
                    ty: ty.clone(),
                    data: ValueData::List(values),
                })
            }
            ValueType::Tuple(types) => {
                let open = self.expect('(', "to open a tuple value")?;
                let mut values = Vec::new();
                if self.peek_is(')')? {
                    self.next()?;
                } else {
                    loop {
                        let Some(elem_ty) = types.get(values.len()) else {
                            return Err(open.error(format!(
                                "the tuple type has {} elements but more are written",
                                types.len()
                            )));
                        };
                        values.push(self.parse_body(elem_ty, depth + 1)?);
                        if !self.comma_or_close(')', "in a tuple value")? {
                            break;
                        }
                    }
                }
                if values.len() != types.len() {
                    return Err(open.error(format!(
                        "the tuple type has {} elements but {} are written",
                        types.len(),
                        values.len()
                    )));
                }
                Ok(Value {
                    ty: ty.clone(),
                    data: ValueData::Tuple(values),
                })
            }
            ValueType::Dict { key, value } => {
                self.expect('{', "to open a dict value")?;
                let mut entries = Vec::new();
                if self.peek_is('}')? {
                    self.next()?;
                } else {
                    loop {
                        self.expect('{', "to open a dict entry `{key, value}`")?;
                        let k = self.parse_body(key, depth + 1)?;
                        self.expect(',', "between a dict entry's key and value")?;
                        let v = self.parse_body(value, depth + 1)?;
                        self.expect('}', "to close a dict entry")?;
                        entries.push((k, v));
                        if !self.comma_or_close('}', "in a dict value")? {
                            break;
                        }
                    }
                }
                Ok(Value {
                    ty: ty.clone(),
                    data: ValueData::Dict(entries),
                })
            }
            ValueType::State(_) => {
                let token = self.next()?;
                Err(token.error("a `state` type has no literal value"))
            }
        }
    }

    /// One nesting level `[...]` of a rank ≥ 1 tensor literal, checked against `dims[level]`.
    fn parse_nested(
        &mut self,
        dtype: DataType,
        dims: &[Dim],
        level: usize,
        depth: usize,
        data: &mut TensorData,
        observed: &mut [Option<u64>],
    ) -> Result<()> {
        let rank = dims.len();
        let open = self.next()?;
        if open.kind != TokenKind::Punct('[') {
            return Err(open.error(format!(
                "expected `[` for dimension {level} of a rank-{rank} tensor literal (nested lists, one level \
                 per dimension), found {}",
                describe(&open.kind)
            )));
        }
        if depth + level > MAX_NESTING_DEPTH {
            return Err(open.error(format!(
                "values nested deeper than {MAX_NESTING_DEPTH} levels"
            )));
        }
        let mut count: u64 = 0;
        let close = if self.peek_is(']')? {
            self.next()?
        } else {
            loop {
                if level + 1 == rank {
                    self.parse_element(dtype, data)?;
                } else {
                    self.parse_nested(dtype, dims, level + 1, depth, data, observed)?;
                }
                count += 1;
                let token = self.next()?;
                match token.kind {
                    TokenKind::Punct(',') => {}
                    TokenKind::Punct(']') => break token,
                    _ => {
                        return Err(token.error(format!(
                        "expected `,` or `]` in dimension {level} of a tensor literal, found {}",
                        describe(&token.kind)
                    )))
                    }
                }
            }
        };
        match (dims.get(level), observed.get_mut(level)) {
            (Some(Dim::Fixed(n)), _) if *n != count => Err(close.error(format!(
                "dimension {level} of the tensor type has size {n} but {count} elements are written"
            ))),
            (Some(Dim::Unknown), Some(seen)) => match seen {
                Some(previous) if *previous != count => Err(close.error(format!(
                    "ragged tensor literal: dimension {level} has {previous} elements in one row and {count} \
                     in another"
                ))),
                _ => {
                    *seen = Some(count);
                    Ok(())
                }
            },
            _ => Ok(()),
        }
    }

    /// One scalar element of type `dtype`, appended to `data`.
    fn parse_element(&mut self, dtype: DataType, data: &mut TensorData) -> Result<()> {
        let token = self.next()?;
        let mismatch = |token: &Token<'_>| {
            token.error(format!(
                "expected a value of type {dtype}, found {}",
                describe(&token.kind)
            ))
        };
        match data {
            TensorData::Float(values) => {
                let text = match token.kind {
                    TokenKind::Number(text) | TokenKind::Ident(text @ ("inf" | "nan")) => text,
                    _ => return Err(mismatch(&token)),
                };
                values.push(parse_float(text, dtype, &token)?);
            }
            TensorData::Int(values) => {
                let TokenKind::Number(text) = token.kind else {
                    return Err(mismatch(&token));
                };
                values.push(parse_int(text, dtype, &token)?);
            }
            TensorData::Bool(values) => match token.kind {
                TokenKind::Ident("true") => values.push(true),
                TokenKind::Ident("false") => values.push(false),
                _ => return Err(mismatch(&token)),
            },
            TensorData::Str(values) => match token.kind {
                TokenKind::Str(s) => values.push(s),
                _ => return Err(mismatch(&token)),
            },
        }
        Ok(())
    }

    /// `BLOBFILE(path = string(...), offset = uint64(N))`, in either printer spelling.
    fn parse_blobfile(&mut self, depth: usize) -> Result<BlobRef> {
        let blobfile = self.expect_keyword("BLOBFILE", "")?;
        self.expect('(', "after `BLOBFILE`")?;
        let mut path = None;
        let mut offset = None;
        loop {
            let (key, key_token) = self.expect_ident("`path` or `offset` in BLOBFILE(...)")?;
            self.expect('=', "after the BLOBFILE field name")?;
            let value = self.parse_typed_literal(depth + 1)?;
            match key {
                "path" if path.is_none() => {
                    let text = value.as_str().ok_or_else(|| {
                        key_token.error("BLOBFILE `path` must be a string such as string(\"@model_path/weights/weight.bin\")")
                    })?;
                    path = Some(text.to_string());
                }
                "offset" if offset.is_none() => {
                    offset = Some(blob_offset(&value).ok_or_else(|| {
                        key_token.error("BLOBFILE `offset` must be a non-negative integer scalar such as uint64(64)")
                    })?);
                }
                "path" | "offset" => {
                    return Err(key_token.error(format!("BLOBFILE `{key}` is given twice")))
                }
                _ => {
                    return Err(key_token.error(format!(
                        "unknown BLOBFILE field `{key}` (expected `path` and `offset`)"
                    )))
                }
            }
            if !self.comma_or_close(')', "in BLOBFILE(...)")? {
                break;
            }
        }
        match (path, offset) {
            (Some(path), Some(offset)) => Ok(BlobRef { path, offset }),
            _ => Err(blobfile.error("BLOBFILE needs both `path` and `offset`")),
        }
    }
}

/// An error for a broken parser invariant; reported instead of panicking.
fn internal_error(what: &str) -> MilSyntaxError {
    MilSyntaxError {
        line: 0,
        column: 0,
        token: String::new(),
        message: format!("internal parser error: {what}"),
    }
}

/// True for `1`, `1.0`, `1.3`: digits, optionally a dot and more digits.
pub(super) fn is_version(text: &str) -> bool {
    let (major, minor) = text.split_once('.').unwrap_or((text, "0"));
    !major.is_empty()
        && !minor.is_empty()
        && major.bytes().all(|b| b.is_ascii_digit())
        && minor.bytes().all(|b| b.is_ascii_digit())
}

/// A non-negative decimal integer (dimension or list length).
fn parse_size(text: &str) -> Option<u64> {
    if text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse().ok()
    } else {
        None
    }
}

/// An empty element buffer of the kind that holds `dtype`.
fn empty_data(dtype: DataType) -> TensorData {
    if dtype.is_float() {
        TensorData::Float(Vec::new())
    } else if dtype == DataType::Bool {
        TensorData::Bool(Vec::new())
    } else if dtype == DataType::String {
        TensorData::Str(Vec::new())
    } else {
        TensorData::Int(Vec::new())
    }
}

/// The offset held by a BLOBFILE `offset = ...` value.
fn blob_offset(value: &Value) -> Option<u64> {
    match (&value.ty, &value.data) {
        (
            ValueType::Tensor {
                dtype,
                shape: Some(shape),
            },
            ValueData::Tensor(TensorData::Int(v)),
        ) if shape.is_empty() => {
            let raw = *v.first()?;
            if *dtype == DataType::UInt64 {
                Some(raw as u64)
            } else {
                u64::try_from(raw).ok()
            }
        }
        _ => None,
    }
}

/// Inclusive value range of an integer dtype.
fn int_range(dtype: DataType) -> (i128, i128) {
    match dtype {
        DataType::Int4 => (-8, 7),
        DataType::Int8 => (i8::MIN.into(), i8::MAX.into()),
        DataType::Int16 => (i16::MIN.into(), i16::MAX.into()),
        DataType::Int32 => (i32::MIN.into(), i32::MAX.into()),
        DataType::UInt64 => (0, u64::MAX.into()),
        DataType::Int64 => (i64::MIN.into(), i64::MAX.into()),
        unsigned => (0, (1i128 << unsigned.bit_width()) - 1),
    }
}

/// An integer literal of type `dtype`, range-checked. `uint64` values above `i64::MAX` wrap (see [`TensorData`]).
fn parse_int(text: &str, dtype: DataType, token: &Token<'_>) -> Result<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(token.error(format!("expected an integer for {dtype}")));
    }
    let (min, max) = int_range(dtype);
    match text.parse::<i128>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v as i64),
        _ => Err(token.error(format!(
            "{text} is out of range for {dtype} ({min}..={max})"
        ))),
    }
}

/// A float literal of type `dtype`: hex floats must be exact in that type; decimals are rounded to it.
fn parse_float(text: &str, dtype: DataType, token: &Token<'_>) -> Result<f64> {
    let special = match text {
        "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        "nan" | "-nan" => Some(f64::NAN),
        _ => None,
    };
    if let Some(value) = special {
        return if fits_exactly(value, dtype) {
            Ok(value)
        } else {
            Err(token.error(format!("{dtype} has no infinity")))
        };
    }
    if text.contains(['x', 'X']) {
        let parsed = parse_hex_float(text).ok_or_else(|| token.error("malformed hex float"))?;
        if !parsed.exact || !fits_exactly(parsed.value, dtype) {
            return Err(token.error(format!(
                "hex float {text} is not exactly representable as {dtype}"
            )));
        }
        return Ok(parsed.value);
    }
    let parsed = if dtype == DataType::Float32 {
        text.parse::<f32>().map(f64::from)
    } else {
        text.parse::<f64>()
    };
    let value = parsed.map_err(|_| token.error("malformed number"))?;
    if !value.is_finite() {
        return Err(token.error(format!("{text} is out of range for {dtype}")));
    }
    round_to(value, dtype).ok_or_else(|| token.error(format!("{text} is out of range for {dtype}")))
}
