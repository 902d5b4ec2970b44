//! Chat templates: a model's Jinja source rendered as HF transformers renders it (trim_blocks,
//! lstrip_blocks, loop controls, Python string methods, raise_exception, strftime_now), plus the
//! ChatML and Llama-3 fallbacks for models without one.

use super::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use minijinja::{context, Environment, ErrorKind};
use std::time::{SystemTime, UNIX_EPOCH};

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Meta's Llama-3 template, except that `<|begin_of_text|>` is written out rather than taken from
/// bos_token: the prompt always starts with it, with or without a system message.
const LLAMA3: &str = "{% for message in messages %}{% if loop.first %}{{ '<|begin_of_text|>' }}{% endif %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

const NAME: &str = "chat";

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
}

impl ChatTemplate {
    /// Compile a Jinja template; a syntax error is a SpecError naming the line.
    pub fn new(source: impl Into<String>) -> Result<ChatTemplate> {
        let source = source.into();
        let mut env = Environment::new();
        // What transformers' renderer sets: block tags do not leave their newline/indent behind.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(NAME, source.clone()).map_err(|e| Error::Spec(format!("chat template: {e:#}")))?;
        Ok(ChatTemplate { env, source })
    }

    pub fn chatml() -> ChatTemplate {
        ChatTemplate::new(CHATML).expect("the ChatML template compiles")
    }

    pub fn llama3() -> ChatTemplate {
        ChatTemplate::new(LLAMA3).expect("the Llama-3 template compiles")
    }

    /// The tokenizer's own template; without one, Llama-3's when its vocabulary has Llama-3's
    /// header tokens, else ChatML.
    pub fn for_tokenizer(tokenizer: &Tokenizer) -> Result<ChatTemplate> {
        match tokenizer.chat_template() {
            Some(source) => ChatTemplate::new(source),
            None if tokenizer.token_to_id("<|start_header_id|>").is_some() => Ok(ChatTemplate::llama3()),
            None => Ok(ChatTemplate::chatml()),
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The prompt for `messages` as (role, content) pairs; errors the template raises (e.g. roles
    /// that do not alternate) come back as InputErrors with its message.
    pub fn render(&self, messages: &[(String, String)], add_generation_prompt: bool, bos_token: &str, eos_token: &str) -> Result<String> {
        let messages: Vec<_> = messages.iter().map(|(role, content)| context! { role => role, content => content }).collect();
        let template = self.env.get_template(NAME).map_err(|e| Error::Spec(format!("chat template: {e}")))?;
        template
            .render(context! { messages, add_generation_prompt, bos_token, eos_token })
            .map_err(|e| Error::Value(format!("chat template: {}", e.detail().map(str::to_string).unwrap_or_else(|| e.to_string()))))
    }
}

fn raise_exception(message: String) -> std::result::Result<String, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// Python's `datetime.now().strftime(format)` for the directives templates use, in UTC.
fn strftime_now(format: String) -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    strftime(&format, secs)
}

const MONTHS: [&str; 12] = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
const WEEKDAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

/// (year, month 1–12, day 1–31) of a day count since 1970-01-01 (Hinnant's civil_from_days).
fn civil_from_days(days: i64) -> (i64, usize, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month as usize, day)
}

fn strftime(format: &str, unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let (secs_of_day, (year, month, day)) = (unix_secs % 86_400, civil_from_days(days));
    let (hour, minute, second) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
    let weekday = WEEKDAYS[(days + 3).rem_euclid(7) as usize]; // 1970-01-01 was a Thursday
    let day_of_year = days - days_of_year_start(year) + 1;
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out += &year.to_string(),
            Some('y') => out += &format!("{:02}", year.rem_euclid(100)),
            Some('m') => out += &format!("{month:02}"),
            Some('d') => out += &format!("{day:02}"),
            Some('e') => out += &format!("{day:2}"),
            Some('j') => out += &format!("{day_of_year:03}"),
            Some('B') => out += MONTHS[month - 1],
            Some('b') => out += &MONTHS[month - 1][..3],
            Some('A') => out += weekday,
            Some('a') => out += &weekday[..3],
            Some('H') => out += &format!("{hour:02}"),
            Some('I') => out += &format!("{:02}", (hour + 11) % 12 + 1),
            Some('p') => out += if hour < 12 { "AM" } else { "PM" },
            Some('M') => out += &format!("{minute:02}"),
            Some('S') => out += &format!("{second:02}"),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Days from 1970-01-01 to January 1st of `year`.
fn days_of_year_start(year: i64) -> i64 {
    let y = year - 1;
    365 * (year - 1970) + (y / 4 - y / 100 + y / 400) - (1969 / 4 - 1969 / 100 + 1969 / 400)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turns(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(r, c)| (r.to_string(), c.to_string())).collect()
    }

    #[test]
    fn chatml_and_llama3_fallbacks() {
        let msgs = turns(&[("user", "Hi")]);
        assert_eq!(ChatTemplate::chatml().render(&msgs, true, "", "").unwrap(), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
        assert_eq!(
            ChatTemplate::llama3().render(&msgs, true, "", "").unwrap(),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn raise_exception_and_python_methods() {
        let t = ChatTemplate::new("{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}{% endif %}{{ messages[0]['content'].strip().upper() }}").unwrap();
        assert_eq!(t.render(&turns(&[("user", "  hi ")]), false, "", "").unwrap(), "HI");
        assert!(matches!(t.render(&turns(&[("system", "x")]), false, "", ""), Err(Error::Value(m)) if m.contains("first must be user")));
        assert!(matches!(ChatTemplate::new("{% for %}"), Err(Error::Spec(_))));
    }

    #[test]
    fn strftime_matches_python() {
        // 2024-07-23 14:05:09 UTC (a Tuesday), day 205 of a leap year.
        assert_eq!(strftime("%d %b %Y|%A %j %H:%M:%S %I%p %y %B", 1_721_743_509), "23 Jul 2024|Tuesday 205 14:05:09 02PM 24 July");
        assert_eq!(strftime("%Y-%m-%d %a", 0), "1970-01-01 Thu");
    }
}
