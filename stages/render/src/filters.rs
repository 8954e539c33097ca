//! What templates can call besides minijinja's built-ins: dates in the recipient's time zone,
//! numbers and plurals by the recipient's locale (CLDR data through ICU4X), and the link hooks.
//!
//! The filters read `locale` and `timezone` from the render context, so one compiled template
//! serves every recipient.

use std::str::FromStr;
use std::sync::Arc;

use icu_decimal::DecimalFormatter;
use icu_decimal::input::Decimal;
use icu_locale_core::Locale;
use icu_plurals::{PluralCategory, PluralRules};
use minijinja::value::{Kwargs, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State, Value};

use crate::hook::{LinkContext, LinkHook};

/// Registers every filter and function on `env`.
pub fn register(env: &mut Environment<'static>, hook: Arc<dyn LinkHook>) {
    env.add_filter("datetime", datetime);
    env.add_filter("number", number);
    env.add_filter("plural", plural);
    let track_hook = hook.clone();
    env.add_filter("track", move |state: &State, url: String| -> Value { as_url(state, track_hook.click_url(&link_context(state), &url)) });
    let unsubscribe_hook = hook.clone();
    env.add_function("unsubscribe_url", move |state: &State| -> Value {
        as_url(state, unsubscribe_hook.unsubscribe_url(&link_context(state)).unwrap_or_default())
    });
    env.add_function("tracking_pixel", move |state: &State| -> Value {
        match hook.open_pixel_url(&link_context(state)) {
            Some(url) => {
                Value::from_safe_string(format!(r#"<img src="{}" width="1" height="1" alt="" style="display:none">"#, html_attribute(&url)))
            }
            None => Value::from(""),
        }
    });
}

fn lookup_str(state: &State, name: &str) -> Option<String> {
    state.lookup(name).and_then(|v| v.as_str().map(str::to_owned))
}

fn link_context(state: &State) -> LinkContext {
    LinkContext {
        tenant: lookup_str(state, "tenant").unwrap_or_default(),
        delivery_id: lookup_str(state, "delivery_id").unwrap_or_default(),
        notification_id: lookup_str(state, "notification_id").unwrap_or_default(),
        channel: lookup_str(state, "channel").unwrap_or_default(),
        user_id: lookup_str(state, "user_id"),
    }
}

/// A URL to print: in HTML, escaped for an attribute (and marked safe, so `/` stays `/`).
fn as_url(state: &State, url: String) -> Value {
    if matches!(state.auto_escape(), AutoEscape::Html) { Value::from_safe_string(html_attribute(&url)) } else { Value::from(url) }
}

pub(crate) fn html_attribute(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;").replace('\'', "&#x27;").replace('<', "&lt;").replace('>', "&gt;")
}

fn invalid(detail: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, detail)
}

/// The recipient's locale for ICU, `en` when unset or unknown.
fn locale(state: &State) -> Locale {
    lookup_str(state, "locale").and_then(|tag| Locale::from_str(&tag.replace('_', "-")).ok()).unwrap_or(icu_locale_core::locale!("en"))
}

/// `{{ data.at | datetime }}` or `{{ data.at | datetime("%A %-d %B, %H:%M") }}`: an RFC 3339
/// instant or Unix seconds, shown in the recipient's time zone (UTC when unknown) with a
/// strftime format (default `%Y-%m-%d %H:%M %Z`).
fn datetime(state: &State, value: Value, format: Option<String>) -> Result<String, Error> {
    let instant = match value.kind() {
        ValueKind::Number => {
            let seconds = i64::try_from(value.clone()).map_err(|_| invalid(format!("datetime: {value} is not whole Unix seconds")))?;
            jiff::Timestamp::from_second(seconds).map_err(|e| invalid(format!("datetime: {e}")))?
        }
        ValueKind::String => {
            let text = value.as_str().unwrap_or_default();
            text.parse::<jiff::Timestamp>().map_err(|e| invalid(format!("datetime: {text:?} is not an RFC 3339 instant: {e}")))?
        }
        _ => return Err(invalid(format!("datetime: expects an RFC 3339 string or Unix seconds, got {}", value.kind()))),
    };
    let zone = lookup_str(state, "timezone").and_then(|name| jiff::tz::TimeZone::get(&name).ok()).unwrap_or(jiff::tz::TimeZone::UTC);
    let format = format.as_deref().unwrap_or("%Y-%m-%d %H:%M %Z");
    let zoned = instant.to_zoned(zone);
    let mut out = String::new();
    jiff::fmt::strtime::format(format, &zoned)
        .map(|s| out.push_str(&s))
        .map_err(|e| invalid(format!("datetime: bad format {format:?}: {e}")))?;
    Ok(out)
}

/// A number as a decimal the locale writes: `1234567.5 | number(2)` is `1,234,567.50` in `en`,
/// `1.234.567,50` in `de`.
fn to_decimal(value: &Value, decimals: Option<u8>) -> Result<Decimal, Error> {
    let text = match (value.kind(), decimals) {
        (ValueKind::Number, Some(places)) => {
            let x = f64::try_from(value.clone()).map_err(|_| invalid(format!("number: {value} is not a number")))?;
            format!("{x:.*}", usize::from(places))
        }
        (ValueKind::Number, None) => value.to_string(),
        (ValueKind::String, _) => {
            let x: f64 =
                value.as_str().unwrap_or_default().trim().parse().map_err(|_| invalid(format!("number: {value:?} is not a number")))?;
            match decimals {
                Some(places) => format!("{x:.*}", usize::from(places)),
                None => x.to_string(),
            }
        }
        _ => return Err(invalid(format!("number: expects a number, got {}", value.kind()))),
    };
    Decimal::from_str(&text).map_err(|e| invalid(format!("number: cannot format {text}: {e:?}")))
}

fn format_decimal(state: &State, decimal: &Decimal) -> Result<String, Error> {
    let formatter = DecimalFormatter::try_new(locale(state).into(), Default::default())
        .map_err(|e| invalid(format!("number: no number format for the locale: {e}")))?;
    Ok(formatter.format(decimal).to_string())
}

fn number(state: &State, value: Value, decimals: Option<u8>) -> Result<String, Error> {
    let decimal = to_decimal(&value, decimals)?;
    format_decimal(state, &decimal)
}

/// `{{ n | plural(one="# item", other="# items") }}`: the form of the recipient's language for
/// `n` (CLDR categories `zero`, `one`, `two`, `few`, `many`, `other`; `other` is required). `#`
/// is replaced by `n` written the locale's way.
fn plural(state: &State, n: Value, forms: Kwargs) -> Result<String, Error> {
    let decimal = to_decimal(&n, None)?;
    let mut by_category = Vec::new();
    for name in ["zero", "one", "two", "few", "many", "other"] {
        by_category.push((name, forms.get::<Option<String>>(name)?));
    }
    forms.assert_all_used()?;
    let rules = PluralRules::try_new(locale(state).into(), Default::default())
        .map_err(|e| invalid(format!("plural: no plural rules for the locale: {e}")))?;
    let category = match rules.category_for(&decimal) {
        PluralCategory::Zero => "zero",
        PluralCategory::One => "one",
        PluralCategory::Two => "two",
        PluralCategory::Few => "few",
        PluralCategory::Many => "many",
        PluralCategory::Other => "other",
    };
    let pick = |name: &str| by_category.iter().find(|(n, _)| *n == name).and_then(|(_, form)| form.clone());
    let form = pick(category).or_else(|| pick("other")).ok_or_else(|| invalid("plural: the `other` form is required".to_owned()))?;
    if form.contains('#') { Ok(form.replace('#', &format_decimal(state, &decimal)?)) } else { Ok(form) }
}
