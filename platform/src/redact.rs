//! PII redaction: emails, phone numbers and card numbers replaced by placeholders, for logs and
//! stored transcripts. A small hand-written scanner; no regex engine needed.

/// Placeholder for a redacted email address.
pub const EMAIL: &str = "[email]";
/// Placeholder for a redacted phone number.
pub const PHONE: &str = "[phone]";
/// Placeholder for a redacted card number.
pub const CARD: &str = "[card]";

fn is_email_local(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._%+-".contains(c)
}
fn is_email_domain(c: char) -> bool {
    c.is_ascii_alphanumeric() || ".-".contains(c)
}

/// Luhn checksum over a digit string.
fn luhn_ok(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(*d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Returns `text` with emails, phone numbers (7–15 digits, optional `+`, separators ` -.()`),
/// and Luhn-valid 13–19 digit card numbers replaced by [`EMAIL`], [`PHONE`], [`CARD`].
pub fn redact_pii(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if let Some(end) = email_at(&chars, i) {
            out.push_str(EMAIL);
            i = end;
            continue;
        }
        if let Some((end, digits)) = number_at(&chars, i) {
            if (13..=19).contains(&digits.len()) && luhn_ok(&digits) {
                out.push_str(CARD);
                i = end;
                continue;
            }
            if (7..=15).contains(&digits.len()) {
                out.push_str(PHONE);
                i = end;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// If an email starts at `start` (and not mid-word), returns the index just past it.
fn email_at(chars: &[char], start: usize) -> Option<usize> {
    if start > 0 && is_email_local(chars[start - 1]) {
        return None;
    }
    let mut i = start;
    while i < chars.len() && is_email_local(chars[i]) {
        i += 1;
    }
    if i == start || i >= chars.len() || chars[i] != '@' {
        return None;
    }
    let domain_start = i + 1;
    let mut j = domain_start;
    while j < chars.len() && is_email_domain(chars[j]) {
        j += 1;
    }
    while j > domain_start && chars[j - 1] == '.' {
        j -= 1;
    }
    let domain: String = chars[domain_start..j].iter().collect();
    let dot = domain.rfind('.')?;
    (dot > 0 && domain.len() - dot > 2).then_some(j)
}

/// If a phone/card-like number starts at `start` (not mid-word), returns its end and digits.
fn number_at(chars: &[char], start: usize) -> Option<(usize, Vec<u8>)> {
    if start > 0 && chars[start - 1].is_ascii_alphanumeric() {
        return None;
    }
    let first = chars[start];
    if !(first.is_ascii_digit() || first == '+' || first == '(') {
        return None;
    }
    let mut digits = Vec::new();
    let mut i = start;
    let mut end = start;
    while i < chars.len() {
        let c = chars[i];
        if let Some(d) = c.to_digit(10) {
            digits.push(d as u8);
            i += 1;
            end = i;
        } else if (c == '+' && i == start) || " -.()".contains(c) {
            i += 1;
        } else {
            break;
        }
        if digits.len() > 19 {
            return None;
        }
    }
    if end < chars.len() && chars[end].is_ascii_alphanumeric() {
        return None;
    }
    Some((end, digits))
}

/// Redacts every string inside a JSON value, in place.
pub fn redact_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => *s = redact_pii(s),
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json),
        serde_json::Value::Object(map) => map.values_mut().for_each(redact_json),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_email_phone_and_card() {
        let text =
            "mail jane.doe+x@example.co.uk or call +1 (555) 123-4567, card 4111 1111 1111 1111.";
        assert_eq!(
            redact_pii(text),
            "mail [email] or call [phone], card [card]."
        );
    }

    #[test]
    fn leaves_ordinary_text_and_short_numbers() {
        let text = "meet at 10:30 in room 42, order #1234; user@localhost";
        assert_eq!(redact_pii(text), text);
    }

    #[test]
    fn long_non_luhn_digits_are_not_cards() {
        assert_eq!(redact_pii("id 1234567890123456"), "id 1234567890123456");
    }

    #[test]
    fn redacts_nested_json_strings() {
        let mut v = serde_json::json!({"a": ["x@y.com"], "b": {"c": "555-123-4567"}, "n": 5});
        redact_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"a": ["[email]"], "b": {"c": "[phone]"}, "n": 5})
        );
    }
}
