//! Decimal numbers as bytes, for the variables and headers servers write per request
//! (`Content-Length`, `SERVER_PORT`, `REMOTE_PORT`) without going through `fmt`.

use bytes::Bytes;

/// Numbers below this come from a static table, without allocating.
const SMALL: usize = 10_000;

/// The decimal digits of every number below [`SMALL`], four bytes per number, left aligned.
static DIGITS: [[u8; 4]; SMALL] = {
    let mut table = [[0u8; 4]; SMALL];
    let mut n = 0;
    while n < SMALL {
        let len = digit_count(n);
        let mut rest = n;
        let mut i = len;
        while i > 0 {
            i -= 1;
            table[n][i] = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        n += 1;
    }
    table
};

const fn digit_count(n: usize) -> usize {
    match n {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        _ => 4,
    }
}

/// `n` in decimal: static bytes below 10,000, else one small allocation.
pub(crate) fn decimal(n: u64) -> Bytes {
    if let Ok(small) = usize::try_from(n)
        && small < SMALL
    {
        return Bytes::from_static(&DIGITS[small][..digit_count(small)]);
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
        }
    }
}
