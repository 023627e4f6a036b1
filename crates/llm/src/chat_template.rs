//! Hugging Face chat templates (Jinja) rendered with minijinja, configured to match transformers'
//! `apply_chat_template`: `trim_blocks`, `lstrip_blocks`, Python string/dict/list methods (pycompat),
//! `raise_exception`, `strftime_now`, and a `tojson` that writes what Python's `json.dumps(ensure_ascii=False)` writes.

use std::collections::BTreeMap;

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::{LlmError, Result};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant` (or any role the template knows).
    pub role: String,
    /// The text of the message.
    pub content: String,
}

impl Message {
    /// A message with the given role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Message {
        Message::new("system", content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Message {
        Message::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Message {
        Message::new("assistant", content)
    }
}

/// Options of one rendering (transformers' `apply_chat_template` keyword arguments).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatTemplateOptions {
    /// End with the header that starts the assistant's reply.
    pub add_generation_prompt: bool,
    /// `enable_thinking` (Qwen3 templates); undefined in the template when `None`.
    pub enable_thinking: Option<bool>,
    /// Other template variables (names and JSON values), e.g. from `chat_template_kwargs`.
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Name under which the template is stored in its environment.
const TEMPLATE_NAME: &str = "chat_template";

/// A compiled chat template with the tokenizer's special tokens (`bos_token`, `eos_token`, ...) as variables.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    special_tokens: BTreeMap<String, String>,
}

impl ChatTemplate {
    /// Compiles `source`; `special_tokens` maps variable names such as `bos_token` to their text.
    pub fn new(source: &str, special_tokens: BTreeMap<String, String>) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| LlmError::ChatTemplate(e.to_string()))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", python_tojson);
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| LlmError::ChatTemplate(describe(&e)))?;
        Ok(ChatTemplate {
            env,
            special_tokens,
        })
    }

    /// Renders the conversation.
    pub fn render(&self, messages: &[Message], options: &ChatTemplateOptions) -> Result<String> {
        let mut context: BTreeMap<String, Value> = BTreeMap::new();
        for (name, text) in &self.special_tokens {
            context.insert(name.clone(), Value::from(text.as_str()));
        }
        for (name, value) in &options.extra {
            context.insert(name.clone(), Value::from(minijinja::value::Serde(value)));
        }
        context.insert(
            "messages".to_string(),
            Value::from(minijinja::value::Serde(messages)),
        );
        context.insert(
            "add_generation_prompt".to_string(),
            Value::from(options.add_generation_prompt),
        );
        // transformers always passes these (as None when not given).
        for name in ["tools", "documents"] {
            context.entry(name.to_string()).or_insert(Value::from(()));
        }
        if let Some(thinking) = options.enable_thinking {
            context.insert("enable_thinking".to_string(), Value::from(thinking));
        }
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| LlmError::ChatTemplate(describe(&e)))?;
        template
            .render(Value::from(context))
            .map_err(|e| LlmError::ChatTemplate(describe(&e)))
    }
}

/// The error with its template position and cause chain, on one line.
fn describe(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `raise_exception(message)`: aborts rendering with the template's message.
fn raise_exception(message: String) -> std::result::Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(format)`: the current UTC date and time formatted like Python's `strftime` (directives `%Y %y
/// %m %d %e %B %b %A %a %H %I %M %S %p %j %%`).
fn strftime_now(format: String) -> std::result::Result<String, Error> {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_utc(seconds, &format)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Formats a UNIX time (UTC) with Python `strftime` directives.
fn format_utc(unix_seconds: u64, format: &str) -> std::result::Result<String, Error> {
    let days = (unix_seconds / 86_400) as i64;
    let secs_of_day = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    let hour = secs_of_day / 3600;
    let minute = secs_of_day % 3600 / 60;
    let second = secs_of_day % 60;
    // 1970-01-01 was a Thursday (index 3 with Monday = 0).
    let weekday = (days + 3).rem_euclid(7) as usize;
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;
    let month_name = MONTHS.get(month as usize - 1).copied().unwrap_or("");
    let weekday_name = WEEKDAYS.get(weekday).copied().unwrap_or("");
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let directive = chars.next().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                "strftime_now: format ends with `%`",
            )
        })?;
        let piece = match directive {
            'Y' => year.to_string(),
            'y' => format!("{:02}", year.rem_euclid(100)),
            'm' => format!("{month:02}"),
            'd' => format!("{day:02}"),
            'e' => format!("{day:>2}"),
            'B' => month_name.to_string(),
            'b' | 'h' => month_name.chars().take(3).collect(),
            'A' => weekday_name.to_string(),
            'a' => weekday_name.chars().take(3).collect(),
            'H' => format!("{hour:02}"),
            'I' => format!("{:02}", (hour + 11) % 12 + 1),
            'p' => (if hour < 12 { "AM" } else { "PM" }).to_string(),
            'M' => format!("{minute:02}"),
            'S' => format!("{second:02}"),
            'j' => format!("{day_of_year:03}"),
            '%' => "%".to_string(),
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("strftime_now: unsupported directive `%{other}`"),
                ))
            }
        };
        out.push_str(&piece);
    }
    Ok(out)
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's civil-from-days).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Day count since 1970-01-01 of a proleptic Gregorian date (inverse of [`civil_from_days`]).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=indent)` (separators `", "` and
/// `": "`, or `","` and newlines when indented; keys in insertion order; no HTML escaping).
fn python_tojson(value: &Value, kwargs: Kwargs) -> std::result::Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    // transformers' filter also accepts these; only their defaults are supported.
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    if ensure_ascii == Some(true) || sort_keys == Some(true) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "tojson: ensure_ascii=true and sort_keys=true are not supported",
        ));
    }
    let mut out = String::new();
    write_json(value, indent, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

fn write_json(
    value: &Value,
    indent: Option<usize>,
    level: usize,
    out: &mut String,
) -> std::result::Result<(), Error> {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if let Ok(i) = i64::try_from(value.clone()) {
                out.push_str(&i.to_string());
            } else {
                let f = f64::try_from(value.clone())?;
                out.push_str(&python_float(f));
            }
        }
        ValueKind::String => {
            let text = value.as_str().unwrap_or_default();
            let quoted = serde_json::to_string(text)
                .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
            out.push_str(&quoted);
        }
        ValueKind::Map => {
            let keys: Vec<Value> = value.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                separator(i, indent, level + 1, out);
                let key_text = match key.as_str() {
                    Some(s) => s.to_string(),
                    None => key.to_string(),
                };
                write_json(&Value::from(key_text), None, 0, out)?;
                out.push_str(": ");
                write_json(&value.get_item(key)?, indent, level + 1, out)?;
            }
            closing(indent, level, out);
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                separator(i, indent, level + 1, out);
                write_json(item, indent, level + 1, out)?;
            }
            closing(indent, level, out);
            out.push(']');
        }
        other => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: cannot serialise a value of kind {other:?}"),
            ))
        }
    }
    Ok(())
}

/// Writes what precedes item `i` of a list or map.
fn separator(i: usize, indent: Option<usize>, level: usize, out: &mut String) {
    match indent {
        None => {
            if i > 0 {
                out.push_str(", ");
            }
        }
        Some(width) => {
            if i > 0 {
                out.push(',');
            }
            out.push('\n');
            out.push_str(&" ".repeat(width * level));
        }
    }
}

/// Writes what precedes the closing bracket of a non-empty list or map.
fn closing(indent: Option<usize>, level: usize, out: &mut String) {
    if let Some(width) = indent {
        out.push('\n');
        out.push_str(&" ".repeat(width * level));
    }
}

/// A float as Python's `repr` writes it (`1.0`, `0.5`, `1e-07`, `NaN`, `Infinity`).
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        let text = format!("{f:e}");
        // Rust writes `1e-7` / `1.5e16`; Python writes `1e-07` / `1.5e+16`.
        return match text.split_once('e') {
            Some((mantissa, exp)) => {
                let (sign, digits) = match exp.strip_prefix('-') {
                    Some(d) => ("-", d),
                    None => ("+", exp),
                };
                format!("{mantissa}e{sign}{digits:0>2}")
            }
            None => text,
        };
    }
    format!("{f:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(source: &str, messages: &[Message], options: &ChatTemplateOptions) -> String {
        ChatTemplate::new(source, BTreeMap::new())
            .unwrap()
            .render(messages, options)
            .unwrap()
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let mut extra = BTreeMap::new();
        extra.insert(
            "tools".to_string(),
            serde_json::json!([{"name": "f<x>", "n": 1, "x": 0.5, "l": [], "m": {}, "s": "é\"\n"}]),
        );
        let options = ChatTemplateOptions {
            extra,
            ..ChatTemplateOptions::default()
        };
        // Python: json.dumps([...], ensure_ascii=False); serde_json sorts the keys of this literal.
        assert_eq!(
            render("{{ tools | tojson }}", &[], &options),
            r#"[{"l": [], "m": {}, "n": 1, "name": "f<x>", "s": "é\"\n", "x": 0.5}]"#
        );
        assert_eq!(
            render(
                "{{ tools[0].l | tojson(indent=2) }}|{{ [1, [2]] | tojson(indent=2) }}",
                &[],
                &options
            ),
            "[]|[\n  1,\n  [\n    2\n  ]\n]"
        );
        assert_eq!(
            render(
                "{{ messages[0] | tojson }}",
                &[Message::user("hi")],
                &options
            ),
            r#"{"role": "user", "content": "hi"}"#
        );
    }

    #[test]
    fn python_floats() {
        assert_eq!(python_float(1.0), "1.0");
        assert_eq!(python_float(1e-7), "1e-07");
        assert_eq!(python_float(1.5e16), "1.5e+16");
        assert_eq!(python_float(123.25), "123.25");
    }

    #[test]
    fn raise_exception_fails_with_the_message() {
        let t =
            ChatTemplate::new("{{ raise_exception('no system role') }}", BTreeMap::new()).unwrap();
        let err = t.render(&[], &ChatTemplateOptions::default()).unwrap_err();
        assert!(err.to_string().contains("no system role"), "{err}");
    }

    #[test]
    fn strftime_formats_known_dates() {
        // 2024-07-26 00:00:00 UTC = 1721952000 (a Friday, day 208 of a leap year).
        assert_eq!(
            format_utc(1_721_952_000, "%d %b %Y|%A %j %H:%M:%S %%").unwrap(),
            "26 Jul 2024|Friday 208 00:00:00 %"
        );
        // 2000-02-29 13:05:09 UTC = 951829509.
        assert_eq!(
            format_utc(951_829_509, "%Y-%m-%d %I %p %a %B").unwrap(),
            "2000-02-29 01 PM Tue February"
        );
        assert!(format_utc(0, "%Q").is_err());
    }

    #[test]
    fn trim_and_lstrip_blocks_and_python_methods() {
        let source = "{% for m in messages %}\n  {% if m.role.startswith('us') %}\n[{{ m.content.strip() }}]\n  {% endif %}\n{% endfor %}";
        assert_eq!(
            render(
                source,
                &[
                    Message::user("  a "),
                    Message::assistant("b"),
                    Message::user("c")
                ],
                &ChatTemplateOptions::default()
            ),
            "[a]\n[c]\n"
        );
    }
}
