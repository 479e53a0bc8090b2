//! Decimal numbers as bytes, for the variables and headers servers write per request
//! (`Content-Length`, `SERVER_PORT`, `REMOTE_PORT`) without going through `fmt`.

use bytes::Bytes;

/// Numbers below this come from a static table, without allocating.
const SMALL: usize = 10_000;

/// The decimal digits of every number below [`SMALL`], four bytes per number, left aligned.
static DIGITS: [u8; 4 * SMALL] = {
    let mut table = [0u8; 4 * SMALL];
    let mut n = 0;
    while n < SMALL {
        let len = digit_count(n);
        let mut rest = n;
        let mut i = len;
        while i > 0 {
            i -= 1;
            table[4 * n + i] = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        n += 1;
    }
    table
};

/// [`DIGITS`] as text, for the callers that need a `&'static str` (a header value).
static DIGITS_TEXT: &str = match std::str::from_utf8(&DIGITS) {
    Ok(text) => text,
    Err(_) => panic!("the digits are ASCII"),
};

const fn digit_count(n: usize) -> usize {
    match n {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        _ => 4,
    }
}

/// `n` in decimal as static text, when it is below 10,000.
pub(crate) fn small_decimal_str(n: u64) -> Option<&'static str> {
    let small = usize::try_from(n).ok().filter(|&n| n < SMALL)?;
    let start = small * 4;
    DIGITS_TEXT.get(start..start + digit_count(small))
}

/// `n` in decimal: static bytes below 10,000, else one small allocation.
pub(crate) fn decimal(n: u64) -> Bytes {
    if let Ok(small) = usize::try_from(n)
        && small < SMALL
    {
        return Bytes::from_static(&DIGITS[4 * small..4 * small + digit_count(small)]);
    }
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut rest = n;
    while rest > 0 || i == buf.len() {
        i -= 1;
        buf[i] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    Bytes::copy_from_slice(&buf[i..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_number_is_its_decimal_text() {
        for n in (0..SMALL as u64 + 100).chain([65_535, 123_456, u64::MAX]) {
            assert_eq!(decimal(n), n.to_string().as_bytes(), "{n}");
            let small = small_decimal_str(n);
            if n < SMALL as u64 {
                assert_eq!(small, Some(n.to_string().as_str()), "{n}");
            } else {
                assert_eq!(small, None, "{n}");
            }
        }
    }
}
