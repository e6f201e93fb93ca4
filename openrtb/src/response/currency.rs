//! The ISO-4217 currency codes a DSP may name in `BidResponse.cur`.

/// Whether `code` is an ISO-4217 currency code (any case), current or recently
/// replaced. Precious metals, bond units and the test/no-currency codes are not:
/// nothing is priced in them.
pub fn is_currency_code(code: &str) -> bool {
    let Ok(bytes) = <[u8; 3]>::try_from(code.as_bytes()) else {
        return false;
    };
    ISO_4217
        .binary_search(&bytes.map(|b| b.to_ascii_uppercase()))
        .is_ok()
}

/// Sorted, for binary search.
const ISO_4217: [[u8; 3]; 170] = [
    *b"AED", *b"AFN", *b"ALL", *b"AMD", *b"ANG", *b"AOA", *b"ARS", *b"AUD", *b"AWG", *b"AZN",
    *b"BAM", *b"BBD", *b"BDT", *b"BGN", *b"BHD", *b"BIF", *b"BMD", *b"BND", *b"BOB", *b"BOV",
    *b"BRL", *b"BSD", *b"BTN", *b"BWP", *b"BYN", *b"BZD", *b"CAD", *b"CDF", *b"CHE", *b"CHF",
    *b"CHW", *b"CLF", *b"CLP", *b"CNY", *b"COP", *b"COU", *b"CRC", *b"CUC", *b"CUP", *b"CVE",
    *b"CZK", *b"DJF", *b"DKK", *b"DOP", *b"DZD", *b"EGP", *b"ERN", *b"ETB", *b"EUR", *b"FJD",
    *b"FKP", *b"GBP", *b"GEL", *b"GHS", *b"GIP", *b"GMD", *b"GNF", *b"GTQ", *b"GYD", *b"HKD",
    *b"HNL", *b"HRK", *b"HTG", *b"HUF", *b"IDR", *b"ILS", *b"INR", *b"IQD", *b"IRR", *b"ISK",
    *b"JMD", *b"JOD", *b"JPY", *b"KES", *b"KGS", *b"KHR", *b"KMF", *b"KPW", *b"KRW", *b"KWD",
    *b"KYD", *b"KZT", *b"LAK", *b"LBP", *b"LKR", *b"LRD", *b"LSL", *b"LYD", *b"MAD", *b"MDL",
    *b"MGA", *b"MKD", *b"MMK", *b"MNT", *b"MOP", *b"MRU", *b"MUR", *b"MVR", *b"MWK", *b"MXN",
    *b"MXV", *b"MYR", *b"MZN", *b"NAD", *b"NGN", *b"NIO", *b"NOK", *b"NPR", *b"NZD", *b"OMR",
    *b"PAB", *b"PEN", *b"PGK", *b"PHP", *b"PKR", *b"PLN", *b"PYG", *b"QAR", *b"RON", *b"RSD",
    *b"RUB", *b"RWF", *b"SAR", *b"SBD", *b"SCR", *b"SDG", *b"SEK", *b"SGD", *b"SHP", *b"SLE",
    *b"SLL", *b"SOS", *b"SRD", *b"SSP", *b"STN", *b"SVC", *b"SYP", *b"SZL", *b"THB", *b"TJS",
    *b"TMT", *b"TND", *b"TOP", *b"TRY", *b"TTD", *b"TWD", *b"TZS", *b"UAH", *b"UGX", *b"USD",
    *b"USN", *b"UYI", *b"UYU", *b"UYW", *b"UZS", *b"VED", *b"VES", *b"VND", *b"VUV", *b"WST",
    *b"XAF", *b"XCD", *b"XCG", *b"XOF", *b"XPF", *b"YER", *b"ZAR", *b"ZMW", *b"ZWG", *b"ZWL",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_currency_table_is_sorted_uppercase_iso_codes() {
        assert!(ISO_4217.windows(2).all(|w| w[0] < w[1]));
        assert!(ISO_4217.iter().flatten().all(u8::is_ascii_uppercase));
        for code in [
            "USD", "eur", "Gbp", "JPY", "PLN", "TRY", "MXN", "CHF", "BRL", "XOF",
        ] {
            assert!(is_currency_code(code), "{code}");
        }
        for code in ["", "US", "USDT", "TYR", "XXX", "XAU", "€", "ÜSD"] {
            assert!(!is_currency_code(code), "{code}");
        }
    }
}
