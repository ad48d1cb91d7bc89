//! Domain keys that cannot hold an invalid value: parse once at the edge, then trust them.
//!
//! `Ars`, `Ags`, `RegionPrefix`, `ServiceKey` and `Land` are small `Copy` values (digits are
//! kept as integers) so that route resolution hashes a few machine words, never strings.

use std::fmt;
use std::str::FromStr;

/// Why a key could not be parsed. The messages name what was expected, never echo more than
/// the key itself (keys are not personal data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("is empty")]
    Empty,
    #[error("{found} has {len} characters, expected {expected}")]
    WrongLength {
        found: String,
        len: usize,
        expected: &'static str,
    },
    #[error("{found} must consist of digits only")]
    NotDigits { found: String },
    #[error("{found} must start with 99 (LeiKa Leistungsschlüssel, ^99\\d{{12}}$)")]
    NotLeika { found: String },
    #[error(
        "{found} is not a Land code (01 … 16, or SH, HH, NI, HB, NW, HE, RP, BW, BY, SL, BE, BB, MV, SN, ST, TH)"
    )]
    UnknownLand { found: String },
}

/// How a wrong key value appears in an error message. Only what cannot be personal data is
/// quoted: digits (up to 40) and codes of up to three letters or digits (a Land code). A
/// platform that puts a name or an address into a key field must not find it copied into
/// logs, dead-letter headers and status events; such a value is described, not shown.
fn shown(s: &str) -> String {
    const MAX_DIGITS: usize = 40;
    let digits = s.bytes().all(|b| b.is_ascii_digit());
    let code = s.len() <= 3 && s.bytes().all(|b| b.is_ascii_alphanumeric());
    if (digits && s.len() <= MAX_DIGITS) || code {
        format!("{s:?}")
    } else {
        "the value".to_owned()
    }
}

fn parse_digits(s: &str, allowed: &[usize], expected: &'static str) -> Result<u64, KeyError> {
    if s.is_empty() {
        return Err(KeyError::Empty);
    }
    // Length in characters, not bytes: "９９…" (full-width digits) has the right number of
    // characters and is refused for what it is, not as "14 characters, expected 14 digits".
    let len = s.chars().count();
    if !allowed.contains(&len) {
        return Err(KeyError::WrongLength {
            found: shown(s),
            len,
            expected,
        });
    }
    // Every byte is an ASCII digit below, so `len` bytes of at most 14 digits fit a u64.
    let mut value = 0u64;
    for b in s.bytes() {
        if !b.is_ascii_digit() {
            return Err(KeyError::NotDigits { found: shown(s) });
        }
        value = value * 10 + u64::from(b - b'0');
    }
    Ok(value)
}

/// One of the 16 Länder, by its two-digit code (01 Schleswig-Holstein … 16 Thüringen).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Land(u8);

const LANDER: [(&str, &str); 16] = [
    ("SH", "Schleswig-Holstein"),
    ("HH", "Hamburg"),
    ("NI", "Niedersachsen"),
    ("HB", "Bremen"),
    ("NW", "Nordrhein-Westfalen"),
    ("HE", "Hessen"),
    ("RP", "Rheinland-Pfalz"),
    ("BW", "Baden-Württemberg"),
    ("BY", "Bayern"),
    ("SL", "Saarland"),
    ("BE", "Berlin"),
    ("BB", "Brandenburg"),
    ("MV", "Mecklenburg-Vorpommern"),
    ("SN", "Sachsen"),
    ("ST", "Sachsen-Anhalt"),
    ("TH", "Thüringen"),
];

impl Land {
    pub fn all() -> impl Iterator<Item = Land> {
        (1..=16).map(Land)
    }
    pub fn from_code(code: u8) -> Option<Land> {
        (1..=16).contains(&code).then_some(Land(code))
    }
    /// Two-digit code, e.g. 6 for Hessen.
    pub fn code(self) -> u8 {
        self.0
    }
    /// Two-letter abbreviation, e.g. "HE".
    pub fn abbreviation(self) -> &'static str {
        LANDER[usize::from(self.0 - 1)].0
    }
    pub fn name(self) -> &'static str {
        LANDER[usize::from(self.0 - 1)].1
    }
    /// Accepts only the two-digit code: the form used on the wire.
    pub fn parse_code(s: &str) -> Result<Land, KeyError> {
        if s.is_empty() {
            return Err(KeyError::Empty);
        }
        let value = parse_digits(s, &[2], "2 digits")
            .map_err(|_| KeyError::UnknownLand { found: shown(s) })?;
        u8::try_from(value)
            .ok()
            .and_then(Land::from_code)
            .ok_or_else(|| KeyError::UnknownLand { found: shown(s) })
    }
}

impl FromStr for Land {
    type Err = KeyError;
    /// Accepts the code ("06") or the abbreviation ("HE"): the forms an operator writes.
    fn from_str(s: &str) -> Result<Land, KeyError> {
        if let Some(i) = LANDER
            .iter()
            .position(|(abbr, _)| abbr.eq_ignore_ascii_case(s))
        {
            return Ok(Land(i as u8 + 1));
        }
        Land::parse_code(s)
    }
}

/// `Display` as the key's digits, zero-padded to `$digits`; `Debug` as `Type(digits)`.
macro_rules! digits_fmt {
    ($type:ident, $digits:literal) => {
        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:0width$}", self.0, width = $digits)
            }
        }
        impl fmt::Debug for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($type), "({})"), self)
            }
        }
    };
}

impl fmt::Display for Land {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}", self.0)
    }
}
impl fmt::Debug for Land {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02} {}", self.0, self.abbreviation())
    }
}

/// Levels of the administrative hierarchy, named by the length of their ARS prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Level {
    Land,
    Regierungsbezirk,
    Kreis,
    Gemeindeverband,
    Gemeinde,
}

impl Level {
    /// From most specific to least: the order of the jurisdiction walk.
    pub const WALK: [Level; 5] = [
        Level::Gemeinde,
        Level::Gemeindeverband,
        Level::Kreis,
        Level::Regierungsbezirk,
        Level::Land,
    ];

    pub fn digits(self) -> usize {
        match self {
            Level::Land => 2,
            Level::Regierungsbezirk => 3,
            Level::Kreis => 5,
            Level::Gemeindeverband => 9,
            Level::Gemeinde => 12,
        }
    }
    fn from_digits(n: usize) -> Option<Level> {
        match n {
            2 => Some(Level::Land),
            3 => Some(Level::Regierungsbezirk),
            5 => Some(Level::Kreis),
            9 => Some(Level::Gemeindeverband),
            12 => Some(Level::Gemeinde),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Level::Land => "Land",
            Level::Regierungsbezirk => "Regierungsbezirk",
            Level::Kreis => "Kreis",
            Level::Gemeindeverband => "Gemeindeverband",
            Level::Gemeinde => "Gemeinde",
        }
    }
}

/// Amtlicher Regionalschlüssel: 12 digits = Land 2, Regierungsbezirk 1, Kreis 2,
/// Gemeindeverband 4, Gemeinde 3. Darmstadt is `064110000000`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ars(u64);

impl Ars {
    pub fn land(self) -> Option<Land> {
        u8::try_from(self.0 / 10u64.pow(10))
            .ok()
            .and_then(Land::from_code)
    }
    /// The prefix naming the unit of `level` this ARS lies in.
    pub fn prefix(self, level: Level) -> RegionPrefix {
        let drop = 12 - level.digits() as u32;
        RegionPrefix {
            level,
            code: self.0 / 10u64.pow(drop),
        }
    }
    /// AGS = ARS[0..5] + ARS[9..12]; not ARS[0..8].
    pub fn to_ags(self) -> Ags {
        let kreis = self.0 / 10u64.pow(7);
        let gemeinde = self.0 % 1000;
        Ags(kreis * 1000 + gemeinde)
    }
}

impl FromStr for Ars {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Ars, KeyError> {
        let value = parse_digits(s, &[12], "12 digits (ARS)")?;
        let ars = Ars(value);
        if ars.land().is_none() {
            return Err(KeyError::UnknownLand {
                found: shown(&s[..2]),
            });
        }
        Ok(ars)
    }
}

digits_fmt!(Ars, 12);

/// Amtlicher Gemeindeschlüssel: 8 digits = Land 2, Regierungsbezirk 1, Kreis 2, Gemeinde 3.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ags(u64);

impl FromStr for Ags {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Ags, KeyError> {
        let value = parse_digits(s, &[8], "8 digits (AGS)")?;
        if u8::try_from(value / 10u64.pow(6))
            .ok()
            .and_then(Land::from_code)
            .is_none()
        {
            return Err(KeyError::UnknownLand {
                found: shown(&s[..2]),
            });
        }
        Ok(Ags(value))
    }
}

digits_fmt!(Ags, 8);

/// A region as a route names it: an ARS prefix of 2, 3, 5, 9 or 12 digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionPrefix {
    level: Level,
    code: u64,
}

impl RegionPrefix {
    pub fn level(self) -> Level {
        self.level
    }
    pub fn land(self) -> Option<Land> {
        let drop = self.level.digits() as u32 - 2;
        u8::try_from(self.code / 10u64.pow(drop))
            .ok()
            .and_then(Land::from_code)
    }
    /// The unit one level up, e.g. the Kreis of a Gemeindeverband; `None` for a Land.
    pub fn parent(self) -> Option<RegionPrefix> {
        let i = Level::WALK.iter().position(|l| *l == self.level)?;
        let up = *Level::WALK.get(i + 1)?;
        let drop = (self.level.digits() - up.digits()) as u32;
        Some(RegionPrefix {
            level: up,
            code: self.code / 10u64.pow(drop),
        })
    }
    /// The full ARS when this prefix names a Gemeinde.
    pub fn as_ars(self) -> Option<Ars> {
        (self.level == Level::Gemeinde).then_some(Ars(self.code))
    }
}

impl FromStr for RegionPrefix {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<RegionPrefix, KeyError> {
        let code = parse_digits(s, &[2, 3, 5, 9, 12], "2, 3, 5, 9 or 12 digits (ARS prefix)")?;
        let level = Level::from_digits(s.len()).ok_or(KeyError::Empty)?;
        let prefix = RegionPrefix { level, code };
        if prefix.land().is_none() {
            return Err(KeyError::UnknownLand {
                found: shown(&s[..2]),
            });
        }
        Ok(prefix)
    }
}

impl fmt::Display for RegionPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:0width$}", self.code, width = self.level.digits())
    }
}
impl fmt::Debug for RegionPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({self})", self.level.name())
    }
}

/// Leistungsschlüssel from the LeiKa catalogue: `^99\d{12}$`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey(u64);

impl FromStr for ServiceKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<ServiceKey, KeyError> {
        let value = parse_digits(s, &[14], "14 digits (LeiKa key)")?;
        if !s.starts_with("99") {
            return Err(KeyError::NotLeika { found: shown(s) });
        }
        Ok(ServiceKey(value))
    }
}

digits_fmt!(ServiceKey, 14);

/// Which services a route applies to: one LeiKa key, or every service (`*`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum ServiceSelector {
    Exact(ServiceKey),
    Any,
}

impl FromStr for ServiceSelector {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<ServiceSelector, KeyError> {
        if s == "*" {
            Ok(ServiceSelector::Any)
        } else {
            s.parse().map(ServiceSelector::Exact)
        }
    }
}

impl fmt::Display for ServiceSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceSelector::Exact(key) => key.fmt(f),
            ServiceSelector::Any => f.write_str("*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ars_parses_and_splits_into_levels() {
        let ars: Ars = "064110000000".parse().unwrap();
        assert_eq!(ars.land(), Some(Land(6)));
        let cases = [
            (Level::Gemeinde, "064110000000"),
            (Level::Gemeindeverband, "064110000"),
            (Level::Kreis, "06411"),
            (Level::Regierungsbezirk, "064"),
            (Level::Land, "06"),
        ];
        for (level, expected) in cases {
            assert_eq!(ars.prefix(level).to_string(), expected, "{level:?}");
        }
    }

    #[test]
    fn ags_is_not_the_first_eight_digits_of_the_ars() {
        // Gemeinde Absteinach (Kreis Bergstraße): ARS 064310001001, AGS 06431001.
        let ars: Ars = "064310001001".parse().unwrap();
        assert_eq!(ars.to_ags().to_string(), "06431001");
        assert_ne!(ars.to_ags().to_string(), "06431000");
    }

    #[test]
    fn malformed_keys_are_refused_with_the_reason() {
        fn check<T: FromStr<Err = KeyError> + fmt::Debug>(input: &str, expected: &str) {
            let err = input.parse::<T>().unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{input:?}: got {err:?}, expected it to contain {expected:?}"
            );
        }
        check::<Ars>("", "is empty");
        check::<Ars>("06411000000", "has 11 characters, expected 12 digits");
        check::<Ars>("0641100000001", "has 13 characters");
        check::<Ars>("06411000000x", "digits only");
        check::<Ars>("174110000000", "not a Land code");
        check::<Ars>("004110000000", "not a Land code");
        check::<Ags>("0641100", "expected 8 digits");
        check::<Ags>("99411000", "not a Land code");
        check::<ServiceKey>("9911500510400", "has 13 characters, expected 14 digits");
        check::<ServiceKey>("98115005104000", "must start with 99");
        check::<ServiceKey>("99115005104O00", "digits only");
        check::<ServiceKey>("９９115005104000", "digits only");
        check::<ServiceKey>("99115005104ä00", "digits only");
        check::<RegionPrefix>("0641", "2, 3, 5, 9 or 12 digits");
        check::<RegionPrefix>("20", "not a Land code");
        check::<Land>("17", "not a Land code");
        check::<Land>("XX", "not a Land code");
    }

    #[test]
    fn non_ascii_characters_are_not_miscounted_as_a_wrong_length() {
        // Regression: the length was checked in bytes, so a key of the right number of
        // characters with one non-ASCII character was refused as "has 14 characters,
        // expected 14 digits".
        for (input, len) in [
            ("９９115005104000", 14),
            ("0641100000０0", 12),
            ("０６", 2),
            ("064110000ä", 10),
        ] {
            let errors = [
                input.parse::<ServiceKey>().unwrap_err(),
                input.parse::<Ars>().unwrap_err(),
                input.parse::<Ags>().unwrap_err(),
                input.parse::<RegionPrefix>().unwrap_err(),
            ];
            for err in errors {
                match err {
                    KeyError::WrongLength { len: found, .. } => {
                        assert_eq!(found, len, "{input:?}");
                        assert!(!err.to_string().contains(&format!("expected {len} ")));
                    }
                    KeyError::NotDigits { .. } | KeyError::UnknownLand { .. } => {}
                    other => panic!("{input:?}: {other:?}"),
                }
            }
        }
        assert!(matches!(
            "９９115005104000".parse::<ServiceKey>(),
            Err(KeyError::NotDigits { .. })
        ));
        assert!(matches!(
            "０６".parse::<RegionPrefix>(),
            Err(KeyError::NotDigits { .. })
        ));
        assert!(matches!(
            "０６".parse::<Land>(),
            Err(KeyError::UnknownLand { .. })
        ));
    }

    #[test]
    fn values_that_could_be_personal_data_are_not_quoted() {
        for input in [
            "Erika Mustermann",
            "Hauptstraße 1",
            "erika@example.org",
            "0641100000x",
        ] {
            for err in [
                input.parse::<Ars>().unwrap_err().to_string(),
                input.parse::<ServiceKey>().unwrap_err().to_string(),
                input.parse::<RegionPrefix>().unwrap_err().to_string(),
                input.parse::<Land>().unwrap_err().to_string(),
            ] {
                assert!(!err.contains(input), "{err}");
                assert!(err.starts_with("the value "), "{err}");
            }
        }
        // Digits and short codes are what a reader needs to see.
        assert!(
            "0641"
                .parse::<Ars>()
                .unwrap_err()
                .to_string()
                .starts_with("\"0641\" has 4")
        );
        assert!(
            "XX".parse::<Land>()
                .unwrap_err()
                .to_string()
                .starts_with("\"XX\" is not")
        );
    }

    #[test]
    fn long_garbage_is_cut_in_messages() {
        let input = "1".repeat(10_000);
        let err = input.parse::<Ars>().unwrap_err().to_string();
        assert!(err.len() < 120, "{err}");
    }

    #[test]
    fn land_accepts_code_and_abbreviation() {
        for (input, code) in [
            ("06", 6),
            ("HE", 6),
            ("he", 6),
            ("16", 16),
            ("TH", 16),
            ("01", 1),
        ] {
            assert_eq!(input.parse::<Land>().unwrap().code(), code, "{input}");
        }
        assert!(Land::parse_code("HE").is_err(), "the wire takes codes only");
        assert_eq!(Land::all().count(), 16);
    }

    #[test]
    fn region_prefix_walks_up() {
        let mut prefix: RegionPrefix = "064110000000".parse().unwrap();
        let mut seen = vec![prefix.to_string()];
        while let Some(up) = prefix.parent() {
            seen.push(up.to_string());
            prefix = up;
        }
        assert_eq!(seen, ["064110000000", "064110000", "06411", "064", "06"]);
    }

    #[test]
    fn service_selector() {
        assert_eq!(
            "*".parse::<ServiceSelector>().unwrap(),
            ServiceSelector::Any
        );
        assert_eq!(
            "99115005104000"
                .parse::<ServiceSelector>()
                .unwrap()
                .to_string(),
            "99115005104000"
        );
    }
}
