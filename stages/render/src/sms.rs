//! SMS encoding and segmentation (3GPP TS 23.038 and 23.040).
//!
//! A body that fits the GSM 03.38 default alphabet (plus its extension table) goes as GSM-7:
//! 160 septets in one message, 153 per segment once it needs several (the user data header
//! takes the rest). Extension characters (`{ } [ ] ~ \ | ^ €` and form feed) cost two septets, an
//! escape and the character, and the pair is never split across segments. Anything else makes the
//! whole body UCS-2 (UTF-16): 70 code units in one message, 67 per segment; a character outside
//! the BMP (most emoji) is a surrogate pair that is never split either.

use herald_schemas::{SmsEncoding, SmsInfo};

/// The GSM 03.38 default alphabet, without the escape (0x1B) that introduces the extension table.
const BASIC: &str =
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

/// The extension table: two septets each.
const EXTENSION: &str = "\u{c}^{}\\[~]|€";

const GSM7_SINGLE: u32 = 160;
const GSM7_SEGMENT: u32 = 153;
const UCS2_SINGLE: u32 = 70;
const UCS2_SEGMENT: u32 = 67;

/// Septets a character needs in GSM-7, or `None` when it has no GSM-7 form.
fn septets(c: char) -> Option<u32> {
    if BASIC.contains(c) {
        Some(1)
    } else if EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// The body's encoding, size and segment count.
pub fn measure(body: &str) -> SmsInfo {
    let gsm: Option<Vec<u32>> = body.chars().map(septets).collect();
    let (encoding, costs, single, segment) = match gsm {
        Some(costs) => (SmsEncoding::Gsm7, costs, GSM7_SINGLE, GSM7_SEGMENT),
        None => (SmsEncoding::Ucs2, body.chars().map(|c| c.len_utf16() as u32).collect(), UCS2_SINGLE, UCS2_SEGMENT),
    };
    let units: u32 = costs.iter().sum();
    let segments = if units <= single { 1 } else { pack(&costs, segment) };
    SmsInfo { encoding, units, segments }
}

/// Segments needed when characters (each `cost` units, never split) fill segments of `size`.
fn pack(costs: &[u32], size: u32) -> u32 {
    let mut segments = 1;
    let mut used = 0;
    for &cost in costs {
        if used + cost > size {
            segments += 1;
            used = 0;
        }
        used += cost;
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;
    use SmsEncoding::{Gsm7, Ucs2};

    #[test]
    fn encodings_and_segments_follow_the_gsm_rules() {
        let a = |n: usize| "a".repeat(n);
        let cases: Vec<(String, SmsEncoding, u32, u32)> = vec![
            // (body, encoding, units, segments)
            (String::new(), Gsm7, 0, 1),
            ("Hello, world!".into(), Gsm7, 13, 1),
            (a(160), Gsm7, 160, 1),
            (a(161), Gsm7, 161, 2),
            (a(306), Gsm7, 306, 2),
            (a(307), Gsm7, 307, 3),
            // Accented letters of the basic table stay GSM-7.
            ("Café à Zürich, Ñoño, Ørsted, £5, ¥3, §2".into(), Gsm7, 39, 1),
            // Greek capitals of the basic table.
            ("ΔΦΓΛΩΠΨΣΘΞ".into(), Gsm7, 10, 1),
            // Extension table: two septets each.
            ("€".into(), Gsm7, 2, 1),
            ("{}[]~\\|^€".into(), Gsm7, 18, 1),
            (format!("{}€", a(158)), Gsm7, 160, 1),
            (format!("{}€", a(159)), Gsm7, 161, 2),
            // An escape pair is not split at the 153-septet boundary: 152 + 2 moves to segment 2.
            (format!("{}€{}", a(152), a(152)), Gsm7, 306, 3),
            (format!("{}€{}", a(151), a(153)), Gsm7, 306, 2),
            // Characters outside GSM-7 make the whole body UCS-2.
            ("ç".into(), Ucs2, 1, 1), // lowercase c-cedilla is not in the table (only Ç is)
            ("안녕하세요".into(), Ucs2, 5, 1),
            ("가".repeat(70), Ucs2, 70, 1),
            ("가".repeat(71), Ucs2, 71, 2),
            ("가".repeat(134), Ucs2, 134, 2),
            ("가".repeat(135), Ucs2, 135, 3),
            // Emoji outside the BMP are surrogate pairs: two units, never split.
            ("👍".into(), Ucs2, 2, 1),
            ("👍".repeat(35), Ucs2, 70, 1),
            ("👍".repeat(36), Ucs2, 72, 2),
            (format!("{}👍", "a".repeat(66)), Ucs2, 68, 1),
            (format!("{}👍{}", "a".repeat(66), "a".repeat(3)), Ucs2, 71, 2),
            // The pair at units 67–68 would straddle the segment boundary: it moves to segment 2.
            (format!("{}👍{}", "a".repeat(66), "a".repeat(66)), Ucs2, 134, 3),
            // A single emoji in a long GSM text switches the whole body.
            (format!("{}😀", a(100)), Ucs2, 102, 2),
            // Form feed is in the extension table; tab is not in GSM-7 at all.
            ("\u{c}".into(), Gsm7, 2, 1),
            ("\t".into(), Ucs2, 1, 1),
        ];
        for (body, encoding, units, segments) in cases {
            let info = measure(&body);
            assert_eq!(
                (info.encoding, info.units, info.segments),
                (encoding, units, segments),
                "body {:?}",
                body.chars().take(20).collect::<String>()
            );
        }
    }
}
