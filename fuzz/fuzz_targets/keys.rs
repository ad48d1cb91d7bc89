//! Fuzzes the key parsers (`Ars`, `Ags`, `RegionPrefix`, `ServiceKey`, `ServiceSelector`,
//! `Land`) with arbitrary UTF-8. Nothing may panic, and whatever parses must print back as
//! the input (keys have exactly one spelling) and keep the hierarchy's invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ozg_gateway::model::{Ags, Ars, Land, Level, RegionPrefix, ServiceKey, ServiceSelector};

fuzz_target!(|s: &str| {
    if let Ok(ars) = s.parse::<Ars>() {
        assert_eq!(ars.to_string(), s);
        assert!(ars.land().is_some());
        let ags = ars.to_ags().to_string();
        assert_eq!(ags, format!("{}{}", &s[..5], &s[9..]));
        assert_eq!(ags.parse::<Ags>().map(|a| a.to_string()).ok(), Some(ags));
        for level in Level::WALK {
            let prefix = ars.prefix(level);
            assert_eq!(prefix.to_string(), s[..level.digits()]);
            assert_eq!(prefix.land(), ars.land());
        }
    }
    if let Ok(ags) = s.parse::<Ags>() {
        assert_eq!(ags.to_string(), s);
    }
    if let Ok(prefix) = s.parse::<RegionPrefix>() {
        assert_eq!(prefix.to_string(), s);
        assert_eq!(prefix.level().digits(), s.len());
        assert!(prefix.land().is_some());
        assert_eq!(prefix.as_ars().is_some(), s.len() == 12);
        let mut current = prefix;
        while let Some(up) = current.parent() {
            assert!(up.level().digits() < current.level().digits());
            assert!(s.starts_with(&up.to_string()));
            assert_eq!(up.land(), prefix.land());
            current = up;
        }
        assert_eq!(current.level(), Level::Land);
    }
    if let Ok(key) = s.parse::<ServiceKey>() {
        assert_eq!(key.to_string(), s);
        assert!(s.len() == 14 && s.starts_with("99") && s.bytes().all(|b| b.is_ascii_digit()));
    }
    if let Ok(selector) = s.parse::<ServiceSelector>() {
        assert_eq!(selector.to_string(), s);
    }
    if let Ok(land) = Land::parse_code(s) {
        assert_eq!(land.to_string(), s);
        assert_eq!(s.parse::<Land>(), Ok(land));
    }
    if let Ok(land) = s.parse::<Land>() {
        let _ = (land.name(), land.abbreviation(), format!("{land:?}"));
        assert!(land.to_string() == s || land.abbreviation().eq_ignore_ascii_case(s));
    }
    // Error messages are built from the input; building them must not panic.
    let _ = s.parse::<Ars>().map_err(|e| e.to_string());
    let _ = s.parse::<RegionPrefix>().map_err(|e| e.to_string());
});
