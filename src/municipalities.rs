//! The official municipality directory (Destatis Gemeindeverzeichnis, GV4Q extract): every
//! Land, Regierungsbezirk, Kreis, Gemeindeverband and Gemeinde with its ARS prefix.
//!
//! The project carries a derived copy (data/gemeindeverzeichnis/gemeinden.csv, © Statistisches
//! Bundesamt (Destatis), dl-de/by-2-0) embedded in the binary; a newer official file can be
//! named in the configuration. Columns are found by their header names, so the full official
//! CSV and the derived one both load.

use std::collections::HashMap;
use std::path::Path;

use crate::model::{Ags, Ars, Level, RegionPrefix};

/// The derived copy carried in the project, embedded so that the binary needs no data files.
const EMBEDDED_CSV: &str = include_str!("../data/gemeindeverzeichnis/gemeinden.csv");
/// Attribution required by the data licence; shown by `--version` and in the README.
pub const ATTRIBUTION: &str = "Gemeindeverzeichnis: © Statistisches Bundesamt (Destatis), \
Datenlizenz Deutschland – Namensnennung – Version 2.0 (dl-de/by-2-0), Gebietsstand 31.12.2020";

#[derive(Debug, thiserror::Error)]
pub enum MunicipalitiesError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}: CSV error: {source}")]
    Csv { origin: String, source: csv::Error },
    #[error("{origin}: column {column:?} is missing from the header")]
    MissingColumn {
        origin: String,
        column: &'static str,
    },
    #[error("{origin}: line {line}: column {column}: {detail}")]
    BadRow {
        origin: String,
        line: u64,
        column: &'static str,
        detail: String,
    },
    #[error("{origin}: no Gemeinde records (is this the Gemeindeverzeichnis?)")]
    Empty { origin: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitKind {
    Land,
    Regierungsbezirk,
    /// `kreisfrei`: a kreisfreie Stadt or Stadtkreis, i.e. a city that is its own Kreis.
    Kreis {
        kreisfrei: bool,
    },
    Gemeindeverband,
    Gemeinde {
        kreisfrei: bool,
    },
}

impl UnitKind {
    /// The directory's own term for the kind; the console shows it in every language.
    pub fn name(self) -> &'static str {
        match self {
            UnitKind::Land => "Land",
            UnitKind::Regierungsbezirk => "Regierungsbezirk",
            UnitKind::Kreis { kreisfrei: true } => "kreisfreie Stadt",
            UnitKind::Kreis { kreisfrei: false } => "Kreis",
            UnitKind::Gemeindeverband => "Gemeindeverband",
            UnitKind::Gemeinde { .. } => "Gemeinde",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Unit {
    pub prefix: RegionPrefix,
    pub name: String,
    pub kind: UnitKind,
    /// Inhabitants (Gemeinde rows only; 0 above).
    pub population: u64,
}

#[derive(Debug)]
pub struct Municipalities {
    units: HashMap<RegionPrefix, Unit>,
    ags_to_ars: HashMap<Ags, Ars>,
    n_gemeinden: usize,
}

impl Municipalities {
    /// The copy carried in the binary.
    pub fn embedded() -> Result<Municipalities, MunicipalitiesError> {
        Municipalities::parse(EMBEDDED_CSV.as_bytes(), "embedded Gemeindeverzeichnis")
    }

    pub fn load(path: &Path) -> Result<Municipalities, MunicipalitiesError> {
        let bytes = std::fs::read(path).map_err(|source| MunicipalitiesError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Municipalities::parse(&bytes, &path.display().to_string())
    }

    pub fn parse(bytes: &[u8], origin: &str) -> Result<Municipalities, MunicipalitiesError> {
        let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
        let csv_error = |source| MunicipalitiesError::Csv {
            origin: origin.to_owned(),
            source,
        };
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
        let header = reader.headers().map_err(csv_error)?.clone();
        let c = Columns::find(&header, origin)?;

        let mut units = HashMap::with_capacity(16_384);
        let mut ags_to_ars = HashMap::with_capacity(11_264);
        let mut n_gemeinden = 0;
        for record in reader.records() {
            let record = record.map_err(csv_error)?;
            let Some(unit) = read_row(&record, &c, origin)? else {
                continue;
            };
            if let Some(ars) = unit.prefix.as_ars() {
                // The AGS lacks the Gemeindeverband digits, so it must name one Gemeinde
                // only: two ARS with the same AGS would route AGS submissions silently to
                // whichever came last. A repeated row is the same Gemeinde, counted once.
                match ags_to_ars.insert(ars.to_ags(), ars) {
                    None => n_gemeinden += 1,
                    Some(earlier) if earlier == ars => {}
                    Some(earlier) => {
                        return Err(bad_row(
                            &record,
                            origin,
                            "land/rb/kreis/vb/gemeinde",
                            format!(
                                "AGS {} names both {earlier} and {ars}; an AGS must name one Gemeinde",
                                ars.to_ags()
                            ),
                        ));
                    }
                }
            }
            units.insert(unit.prefix, unit);
        }
        if n_gemeinden == 0 {
            return Err(MunicipalitiesError::Empty {
                origin: origin.to_owned(),
            });
        }
        Ok(Municipalities {
            units,
            ags_to_ars,
            n_gemeinden,
        })
    }

    pub fn unit(&self, prefix: RegionPrefix) -> Option<&Unit> {
        self.units.get(&prefix)
    }

    pub fn contains(&self, prefix: RegionPrefix) -> bool {
        self.units.contains_key(&prefix)
    }

    /// The Gemeinde this ARS names, if the directory has it.
    pub fn gemeinde(&self, ars: Ars) -> Option<&Unit> {
        self.units.get(&ars.prefix(Level::Gemeinde))
    }

    /// AGS → ARS through the directory (the Gemeindeverband digits are not in the AGS).
    pub fn ars_for_ags(&self, ags: Ags) -> Option<Ars> {
        self.ags_to_ars.get(&ags).copied()
    }

    pub fn n_gemeinden(&self) -> usize {
        self.n_gemeinden
    }

    pub fn units(&self) -> impl Iterator<Item = &Unit> {
        self.units.values()
    }
}
/// One row as a unit of the directory; `None` for a record type that is none.
fn read_row(
    record: &csv::StringRecord,
    c: &Columns,
    origin: &str,
) -> Result<Option<Unit>, MunicipalitiesError> {
    let field = |i: usize| record.get(i).unwrap_or("").trim();
    let bad = |column: &'static str, detail: String| bad_row(record, origin, column, detail);
    let satzart = field(c.satzart);
    let Some((level, kind, key)) = unit_key(&field, c)
        .map_err(|other| bad("satzart", format!("unknown record type {other:?}")))?
    else {
        return Ok(None);
    };
    let prefix: RegionPrefix = key
        .parse()
        .map_err(|e| bad("land/rb/kreis/vb/gemeinde", format!("key {e}")))?;
    if prefix.level() != level {
        return Err(bad(
            "land/rb/kreis/vb/gemeinde",
            format!("key {key:?} does not fit record type {satzart}"),
        ));
    }
    let population = if level == Level::Gemeinde {
        parse_population(field(c.population))
            .map_err(|raw| bad("bevoelkerung", format!("not a number: {raw:?}")))?
    } else {
        0
    };
    Ok(Some(Unit {
        prefix,
        name: field(c.name).to_owned(),
        kind,
        population,
    }))
}

fn bad_row(
    record: &csv::StringRecord,
    origin: &str,
    column: &'static str,
    detail: String,
) -> MunicipalitiesError {
    MunicipalitiesError::BadRow {
        origin: origin.to_owned(),
        line: record.position().map_or(0, |p| p.line()),
        column,
        detail,
    }
}

/// The positions of the columns the directory reads, found by their header names.
struct Columns {
    satzart: usize,
    text: usize,
    land: usize,
    rb: usize,
    kreis: usize,
    vb: usize,
    gemeinde: usize,
    name: usize,
    population: usize,
}

impl Columns {
    fn find(header: &csv::StringRecord, origin: &str) -> Result<Columns, MunicipalitiesError> {
        let column = |name: &'static str| {
            header.iter().position(|h| h.trim() == name).ok_or_else(|| {
                MunicipalitiesError::MissingColumn {
                    origin: origin.to_owned(),
                    column: name,
                }
            })
        };
        Ok(Columns {
            satzart: column("satzart")?,
            text: column("textkennzeichen")?,
            land: column("land")?,
            rb: column("rb")?,
            kreis: column("kreis")?,
            vb: column("vb")?,
            gemeinde: column("gemeinde")?,
            name: column("gemeindename")?,
            population: column("bevoelkerung")?,
        })
    }
}

/// A record's level, kind and key (its ARS prefix as text); `None` for a record that is no
/// part of the ARS; `Err` with the record type when that is unknown.
fn unit_key<'a>(
    field: &dyn Fn(usize) -> &'a str,
    c: &Columns,
) -> Result<Option<(Level, UnitKind, String)>, String> {
    let textkennzeichen: u8 = field(c.text).parse().unwrap_or(0);
    let (land, rb, kreis, vb, gemeinde) = (
        field(c.land),
        field(c.rb),
        field(c.kreis),
        field(c.vb),
        field(c.gemeinde),
    );
    Ok(Some(match field(c.satzart) {
        "10" => (Level::Land, UnitKind::Land, land.to_owned()),
        "20" => (
            Level::Regierungsbezirk,
            UnitKind::Regierungsbezirk,
            format!("{land}{rb}"),
        ),
        // Regions exist in Baden-Württemberg only and are not part of the ARS.
        "30" => return Ok(None),
        "40" => (
            Level::Kreis,
            UnitKind::Kreis {
                kreisfrei: matches!(textkennzeichen, 41 | 42),
            },
            format!("{land}{rb}{kreis}"),
        ),
        "50" => (
            Level::Gemeindeverband,
            UnitKind::Gemeindeverband,
            format!("{land}{rb}{kreis}{vb}"),
        ),
        "60" => (
            Level::Gemeinde,
            UnitKind::Gemeinde {
                kreisfrei: textkennzeichen == 61,
            },
            format!("{land}{rb}{kreis}{vb}{gemeinde}"),
        ),
        other => return Err(other.to_owned()),
    }))
}

/// A Gemeinde's population, digits with any spaces between them; none given is 0. `Err`
/// with the text when that is no number.
fn parse_population(text: &str) -> Result<u64, String> {
    let raw: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if raw.is_empty() {
        Ok(0)
    } else {
        raw.parse().map_err(|_| raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directory() -> Municipalities {
        Municipalities::embedded().unwrap()
    }

    #[test]
    fn embedded_directory_has_every_unit() {
        let d = directory();
        assert_eq!(d.n_gemeinden(), 11_004);
        let count = |level| d.units().filter(|u| u.prefix.level() == level).count();
        assert_eq!(count(Level::Land), 16);
        assert_eq!(count(Level::Kreis), 401);
        assert_eq!(count(Level::Gemeindeverband), 4_606);
        let in_land = |code: &str| {
            d.units()
                .filter(|u| {
                    u.prefix.level() == Level::Gemeinde && u.prefix.to_string().starts_with(code)
                })
                .count()
        };
        for (land, n) in [
            ("06", 426),
            ("07", 2_303),
            ("10", 53),
            ("16", 633),
            ("09", 2_230),
            ("03", 967),
        ] {
            assert_eq!(in_land(land), n, "Gemeinden in {land}");
        }
    }

    #[test]
    fn darmstadt_is_a_kreisfreie_stadt() {
        let d = directory();
        let ars: Ars = "064110000000".parse().unwrap();
        let gemeinde = d.gemeinde(ars).unwrap();
        assert_eq!(gemeinde.name, "Darmstadt, Wissenschaftsstadt");
        assert_eq!(gemeinde.population, 159_878);
        assert_eq!(gemeinde.kind, UnitKind::Gemeinde { kreisfrei: true });
        let kreis = d.unit(ars.prefix(Level::Kreis)).unwrap();
        assert_eq!(kreis.kind, UnitKind::Kreis { kreisfrei: true });
        assert_eq!(
            d.unit(ars.prefix(Level::Regierungsbezirk)).unwrap().name,
            "Reg.-Bez. Darmstadt"
        );
        assert_eq!(d.unit(ars.prefix(Level::Land)).unwrap().name, "Hessen");
    }

    #[test]
    fn ags_converts_through_the_directory() {
        let d = directory();
        for (ags, ars) in [
            ("06411000", "064110000000"), // Darmstadt
            ("16051000", "160510000000"), // Erfurt
            ("06431001", "064310001001"), // Abtsteinach, Kreis Bergstraße
        ] {
            let found = d.ars_for_ags(ags.parse().unwrap()).map(|a| a.to_string());
            assert_eq!(found.as_deref(), Some(ars), "{ags}");
        }
        assert_eq!(d.ars_for_ags("06411999".parse().unwrap()), None);
    }

    #[test]
    fn the_official_file_layout_loads_too() {
        // The first records of the official GV4Q CSV as Destatis publishes it: byte-order
        // mark, all twenty columns, population with spaces, decimal commas in quotes.
        let official = "\u{feff}satzart,textkennzeichen,land,rb,kreis,vb,gemeinde,gemeindename,flaeche,bevoelkerung,maennlich,weiblich,jekm2,postleitzahl,laengengrad,breitengrad,schluessel,bezeichnung,verstaedterungschluessel,verstaedterungbezeichnung
10,,01,,,,,Schleswig-Holstein,,,,,,,,,,,,
40,41,01,0,01,,,\"Flensburg, Stadt\",,,,,,,,,,,,
50,50,01,0,01,0000,,\"Flensburg, Stadt\",,,,,,,,,,,,
60,61,01,0,01,0000,000,\"Flensburg, Stadt\", 53.02, 90 164, 44 904, 45 260, 1 701,24937,\"9,43751\",\"54,78252\",F02,Ostsee,01,dicht besiedelt
";
        let d = Municipalities::parse(official.as_bytes(), "official").unwrap();
        assert_eq!(d.n_gemeinden(), 1);
        let flensburg = d.gemeinde("010010000000".parse().unwrap()).unwrap();
        assert_eq!(flensburg.name, "Flensburg, Stadt");
        assert_eq!(flensburg.population, 90_164);
        assert_eq!(flensburg.kind, UnitKind::Gemeinde { kreisfrei: true });
        assert_eq!(
            d.ars_for_ags("01001000".parse().unwrap())
                .map(|a| a.to_string())
                .as_deref(),
            Some("010010000000")
        );
    }

    #[test]
    fn gemeinden_are_counted_once_and_an_ags_names_one_gemeinde() {
        // Regression: a repeated Gemeinde row was counted twice, and two Gemeinden with the
        // same AGS (differing only in the Gemeindeverband digits) were accepted, the later
        // one silently taking the AGS.
        let header =
            "satzart,textkennzeichen,land,rb,kreis,vb,gemeinde,gemeindename,bevoelkerung\n";
        let row = "60,64,06,4,31,0001,001,Abtsteinach,2400\n";
        let repeated = format!("{header}{row}{row}");
        let d = Municipalities::parse(repeated.as_bytes(), "x.csv").unwrap();
        assert_eq!(d.n_gemeinden(), 1);
        assert_eq!(
            d.ars_for_ags("06431001".parse().unwrap())
                .map(|a| a.to_string())
                .as_deref(),
            Some("064310001001")
        );

        let conflicting = format!("{header}{row}60,64,06,4,31,0002,001,Anderswo,10\n");
        let err = Municipalities::parse(conflicting.as_bytes(), "x.csv")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "x.csv: line 3: column land/rb/kreis/vb/gemeinde: AGS 06431001 names both \
             064310001001 and 064310002001; an AGS must name one Gemeinde"
        );
    }

    #[test]
    fn broken_files_are_refused_with_line_and_column() {
        let missing = Municipalities::parse(b"satzart,land\n10,01\n", "x.csv").unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("column \"textkennzeichen\" is missing"),
            "{missing}"
        );
        let header =
            "satzart,textkennzeichen,land,rb,kreis,vb,gemeinde,gemeindename,bevoelkerung\n";
        let bad_key = format!("{header}60,64,06,4,11,0000,0x0,Foo,12\n");
        let err = Municipalities::parse(bad_key.as_bytes(), "x.csv")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("x.csv: line 2: column land/rb/kreis/vb/gemeinde"),
            "{err}"
        );
        let bad_population = format!("{header}60,64,06,4,11,0000,001,Foo,zwölf\n");
        let err = Municipalities::parse(bad_population.as_bytes(), "x.csv")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bevoelkerung: not a number"), "{err}");
        let empty = Municipalities::parse(header.as_bytes(), "x.csv")
            .unwrap_err()
            .to_string();
        assert!(empty.contains("no Gemeinde records"), "{empty}");
    }
}
