//! Exact hex-float (`0x1.8p+1`, C `%a` style) reading and writing, and checks that a value fits a MIL float type.

use crate::mil::ir::DataType;

/// Bits of an f64 significand, hidden bit included.
const F64_SIGNIFICAND_BITS: i64 = 53;
/// Exponent of the least significant bit of the smallest f64 subnormal.
const F64_MIN_LSB_EXPONENT: i64 = -1074;
/// Exponent of the most significant bit of the largest finite f64.
const F64_MAX_EXPONENT: i64 = 1023;
/// Hex digits kept before the rest only count as "sticky" non-zero bits (15 digits = 60 bits < 64).
const KEPT_HEX_DIGITS: usize = 15;
/// Exponents beyond this magnitude are saturated (they over/underflow every type anyway).
const EXPONENT_SATURATION: i64 = 1 << 40;

/// A hex float decoded to the nearest f64.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct HexFloat {
    /// The nearest f64 (round half to even); infinite when the literal is too large for f64.
    pub value: f64,
    /// True when `value` equals the literal exactly.
    pub exact: bool,
}

/// Decodes `[-]0x<hex>[.<hex>]p[+|-]<dec>` (case-insensitive `x`/`p`). Returns `None` when malformed.
pub(crate) fn parse_hex_float(text: &str) -> Option<HexFloat> {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let body = body
        .strip_prefix("0x")
        .or_else(|| body.strip_prefix("0X"))?;
    let (mantissa, exponent) = body.split_once(['p', 'P'])?;
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    let exponent_digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
    if exponent_digits.is_empty() || !exponent_digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut binary_exponent: i64 = 0;
    for b in exponent_digits.bytes() {
        binary_exponent = (binary_exponent * 10 + i64::from(b - b'0')).min(EXPONENT_SATURATION);
    }
    if exponent.starts_with('-') {
        binary_exponent = -binary_exponent;
    }

    // value = digits (as one hex integer) * 2^(binary_exponent - 4 * frac_len)
    let mut significand: u64 = 0;
    let mut kept = 0usize;
    let mut sticky = false;
    let mut scale: i64 = binary_exponent;
    for (index, c) in int_part.chars().chain(frac_part.chars()).enumerate() {
        let digit = u64::from(c.to_digit(16)?);
        let in_fraction = index >= int_part.len();
        if significand == 0 && digit == 0 {
            if in_fraction {
                scale = (scale - 4).max(-EXPONENT_SATURATION);
            }
            continue;
        }
        if kept < KEPT_HEX_DIGITS {
            significand = (significand << 4) | digit;
            kept += 1;
            if in_fraction {
                scale = (scale - 4).max(-EXPONENT_SATURATION);
            }
        } else {
            sticky |= digit != 0;
            if !in_fraction {
                scale = (scale + 4).min(EXPONENT_SATURATION);
            }
        }
    }
    let (magnitude, exact) = compose_f64(significand, scale, sticky);
    Some(HexFloat {
        value: if negative { -magnitude } else { magnitude },
        exact,
    })
}

/// Rounds `significand * 2^scale` (plus a non-zero tail below it when `sticky`) to the nearest f64.
fn compose_f64(significand: u64, scale: i64, sticky: bool) -> (f64, bool) {
    if significand == 0 {
        return (0.0, !sticky);
    }
    let bit_length = i64::from(64 - significand.leading_zeros());
    let top_exponent = scale + bit_length - 1;
    if top_exponent > F64_MAX_EXPONENT {
        return (f64::INFINITY, false);
    }
    let lsb_exponent = (top_exponent - (F64_SIGNIFICAND_BITS - 1)).max(F64_MIN_LSB_EXPONENT);
    let shift = lsb_exponent - scale;
    let (mut rounded, mut exact) = if shift <= 0 {
        // At most 53 significant bits: shifting left stays within 53 bits.
        (significand << (-shift), !sticky)
    } else if shift >= 64 {
        (0, false)
    } else {
        let remainder = significand & ((1u64 << shift) - 1);
        let half = 1u64 << (shift - 1);
        let truncated = significand >> shift;
        let round_up = remainder > half || (remainder == half && (sticky || truncated & 1 == 1));
        (truncated + u64::from(round_up), remainder == 0 && !sticky)
    };
    let mut lsb_exponent = lsb_exponent;
    if rounded >> F64_SIGNIFICAND_BITS != 0 {
        rounded >>= 1;
        lsb_exponent += 1;
    }
    if rounded == 0 {
        return (0.0, false);
    }
    let top = lsb_exponent + i64::from(64 - rounded.leading_zeros()) - 1;
    if top > F64_MAX_EXPONENT {
        exact = false;
        return (f64::INFINITY, exact);
    }
    let bits = if rounded >> (F64_SIGNIFICAND_BITS - 1) != 0 {
        // Normal: biased exponent of the top bit, fraction without the hidden bit.
        let biased = (lsb_exponent + F64_SIGNIFICAND_BITS - 1 + 1023) as u64;
        (biased << 52) | (rounded & ((1u64 << 52) - 1))
    } else {
        // Subnormal: lsb_exponent is -1074 here.
        rounded
    };
    (f64::from_bits(bits), exact)
}

/// Writes `value` as a C `%a`-style hex float: `0x1.8p+1`, `-0x1p-24`, `0x0p+0`, `inf`, `-inf`, `nan`.
/// f64 subnormals are written normalised (`0x1p-1074`), which [`parse_hex_float`] reads back exactly.
pub(crate) fn format_hex_float(value: f64, out: &mut String) {
    if value.is_nan() {
        out.push_str("nan");
        return;
    }
    if value.is_sign_negative() {
        out.push('-');
    }
    let magnitude = value.abs();
    if magnitude.is_infinite() {
        out.push_str("inf");
        return;
    }
    if magnitude == 0.0 {
        out.push_str("0x0p+0");
        return;
    }
    let bits = magnitude.to_bits();
    let biased = (bits >> 52) as i64;
    let fraction = bits & ((1u64 << 52) - 1);
    let (fraction, exponent) = if biased == 0 {
        // Subnormal: shift the leading one up into the hidden-bit position.
        let shift = fraction.leading_zeros() as i64 - 11;
        let normalised = (fraction << shift) & ((1u64 << 52) - 1);
        (normalised, -1022 - shift)
    } else {
        (fraction, biased - 1023)
    };
    out.push_str("0x1");
    if fraction != 0 {
        let digits = format!("{fraction:013x}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('p');
    if exponent >= 0 {
        out.push('+');
    }
    out.push_str(&exponent.to_string());
}

/// Layout of a binary float format, for exact-representability checks.
struct FloatFormat {
    /// Explicit significand bits (without the hidden bit).
    fraction_bits: u32,
    /// Exponent of the smallest normal number.
    min_normal_exponent: i64,
    /// Largest finite value.
    max_finite: f64,
    /// Whether infinities exist.
    has_infinity: bool,
}

/// The layout of a float dtype; `None` for non-float types.
fn float_format(dtype: DataType) -> Option<FloatFormat> {
    let (fraction_bits, min_normal_exponent, max_finite, has_infinity) = match dtype {
        DataType::Float64 => (52, -1022, f64::MAX, true),
        DataType::Float32 => (23, -126, f64::from(f32::MAX), true),
        DataType::Float16 => (10, -14, 65504.0, true),
        DataType::BFloat16 => (7, -126, f64::from(half::bf16::MAX.to_f32()), true),
        DataType::Float8E4M3FN => (3, -6, 448.0, false),
        DataType::Float8E5M2 => (2, -14, 57344.0, true),
        _ => return None,
    };
    Some(FloatFormat {
        fraction_bits,
        min_normal_exponent,
        max_finite,
        has_infinity,
    })
}

/// True when `value` is exactly representable in the float type `dtype` (NaN always is; infinities where the
/// format has them).
pub(crate) fn fits_exactly(value: f64, dtype: DataType) -> bool {
    let Some(format) = float_format(dtype) else {
        return false;
    };
    if value.is_nan() || value == 0.0 {
        return true;
    }
    if value.is_infinite() {
        return format.has_infinity;
    }
    if value.abs() > format.max_finite {
        return false;
    }
    let bits = value.abs().to_bits();
    let biased = (bits >> 52) as i64;
    let fraction = bits & ((1u64 << 52) - 1);
    // value = integer_significand * 2^lsb_exponent
    let (integer_significand, mut lsb_exponent) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1u64 << 52), biased - 1075)
    };
    let trailing = integer_significand.trailing_zeros();
    let significand = integer_significand >> trailing;
    lsb_exponent += i64::from(trailing);
    let significant_bits = 64 - significand.leading_zeros();
    let min_lsb_exponent = format.min_normal_exponent - i64::from(format.fraction_bits);
    significant_bits <= format.fraction_bits + 1 && lsb_exponent >= min_lsb_exponent
}

/// Rounds a finite f64 to the nearest value of the float type `dtype` (half to even). Returns `None` when the
/// result would overflow to infinity or the type has no rounding implemented (8-bit floats must be exact).
pub(crate) fn round_to(value: f64, dtype: DataType) -> Option<f64> {
    let rounded = match dtype {
        DataType::Float64 => value,
        DataType::Float32 => f64::from(value as f32),
        DataType::Float16 => half::f16::from_f64(value).to_f64(),
        DataType::BFloat16 => half::bf16::from_f64(value).to_f64(),
        _ if fits_exactly(value, dtype) => value,
        _ => return None,
    };
    (rounded.is_finite() || !value.is_finite()).then_some(rounded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> HexFloat {
        parse_hex_float(text).unwrap_or(HexFloat {
            value: -12345.0,
            exact: false,
        })
    }

    #[test]
    fn rounds_long_mantissas_half_to_even() {
        // 1 + 2^-53 is exactly half-way between 1 and 1 + 2^-52: ties to even (1).
        assert_eq!(
            hex("0x1.00000000000008p+0"),
            HexFloat {
                value: 1.0,
                exact: false
            }
        );
        // Slightly above half-way rounds up.
        assert_eq!(
            hex("0x1.000000000000080000001p+0").value,
            1.0 + f64::EPSILON
        );
        // 1 + 3 * 2^-53 is half-way between odd and even neighbours: rounds to even (1 + 2^-51).
        assert_eq!(hex("0x1.00000000000018p+0").value, 1.0 + 2.0 * f64::EPSILON);
    }

    #[test]
    fn handles_extreme_exponents() {
        assert_eq!(
            hex("0x1p-1074"),
            HexFloat {
                value: f64::from_bits(1),
                exact: true
            }
        );
        assert_eq!(
            hex("0x1p-1075"),
            HexFloat {
                value: 0.0,
                exact: false
            }
        );
        assert_eq!(hex("0x1p+1024").value, f64::INFINITY);
        assert_eq!(hex("0x1.fffffffffffffp+1023").value, f64::MAX);
        assert_eq!(hex("0x1p+99999999999999999999").value, f64::INFINITY);
        assert_eq!(hex("0x1p-99999999999999999999").value, 0.0);
    }

    #[test]
    fn checks_representability() {
        assert!(fits_exactly(65504.0, DataType::Float16));
        assert!(!fits_exactly(65520.0, DataType::Float16));
        assert!(fits_exactly(2f64.powi(-24), DataType::Float16));
        assert!(!fits_exactly(2f64.powi(-25), DataType::Float16));
        assert!(!fits_exactly(1.0 + 2f64.powi(-11), DataType::Float16));
        assert!(fits_exactly(448.0, DataType::Float8E4M3FN));
        assert!(!fits_exactly(f64::INFINITY, DataType::Float8E4M3FN));
        assert!(fits_exactly(2f64.powi(-9), DataType::Float8E4M3FN));
        assert!(!fits_exactly(2f64.powi(-10), DataType::Float8E4M3FN));
    }
}
