//! The console's words, German first and English second. Every page takes its texts from
//! one [`Texts`], so a text missing in one language does not compile.

use axum::http::HeaderMap;

use super::session::cookie;

/// The language cookie's name.
pub const COOKIE_NAME: &str = "ozg_lang";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    De,
    En,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::De => "de",
            Lang::En => "en",
        }
    }

    pub fn parse(code: &str) -> Option<Lang> {
        match code {
            "de" => Some(Lang::De),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The request's language: its cookie, else German.
    pub fn of(headers: &HeaderMap) -> Lang {
        cookie(headers, COOKIE_NAME)
            .and_then(Lang::parse)
            .unwrap_or(Lang::De)
    }

    /// The other language, which the switch offers.
    pub fn other(self) -> Lang {
        match self {
            Lang::De => Lang::En,
            Lang::En => Lang::De,
        }
    }

    /// The language's name in itself, for the switch.
    pub fn name(self) -> &'static str {
        match self {
            Lang::De => "Deutsch",
            Lang::En => "English",
        }
    }

    pub fn texts(self) -> &'static Texts {
        match self {
            Lang::De => &DE,
            Lang::En => &EN,
        }
    }
}

pub struct Texts {
    pub console: &'static str,
    pub skip_to_content: &'static str,
    pub main_navigation: &'static str,
    pub language: &'static str,
    pub login_title: &'static str,
    pub login_intro: &'static str,
    pub token: &'static str,
    pub log_in: &'static str,
    pub log_out: &'static str,
    pub login_failed: &'static str,
    pub login_expired: &'static str,
    pub signed_in_as: &'static str,
    pub roles: &'static str,
    pub scope: &'static str,
    pub overview: &'static str,
    pub refreshed: &'static str,
    pub refresh_paused: &'static str,
    pub platforms: &'static str,
    pub platform: &'static str,
    pub land: &'static str,
    pub state: &'static str,
    pub consumed: &'static str,
    pub forwarded: &'static str,
    pub rejected: &'static str,
    pub in_flight: &'static str,
    pub rates_hint: &'static str,
    pub rate_1: &'static str,
    pub rate_5: &'static str,
    pub rate_15: &'static str,
    pub backlog: &'static str,
    pub not_counted_yet: &'static str,
    pub destinations: &'static str,
    pub destination: &'static str,
    pub delivered: &'static str,
    pub failed: &'static str,
    pub retrying: &'static str,
    pub last_error: &'static str,
    pub none: &'static str,
    pub brokers: &'static str,
    pub broker: &'static str,
    pub role: &'static str,
    pub node: &'static str,
    pub connected: &'static str,
    pub disconnected: &'static str,
    pub pending_by_reason: &'static str,
    pub reason: &'static str,
    pub count: &'static str,
    pub no_pending: &'static str,
    pub overdue: &'static str,
    pub overdue_none: &'static str,
    pub submission: &'static str,
    pub delivered_at: &'static str,
    pub store_problem: &'static str,
    pub state_consuming: &'static str,
    pub state_connecting: &'static str,
    pub state_paused: &'static str,
    pub error_title: &'static str,
    pub forbidden: &'static str,
    pub back: &'static str,
    pub gateway_version: &'static str,
    pub uptime: &'static str,
    pub directory_version: &'static str,
    pub all_laender: &'static str,
}

pub static DE: Texts = Texts {
    console: "OZG-Gateway Konsole",
    skip_to_content: "Zum Inhalt springen",
    main_navigation: "Hauptnavigation",
    language: "Sprache",
    login_title: "Anmelden",
    login_intro: "Melden Sie sich mit Ihrem Admin-Token an. Die Sitzung endet nach 30 Minuten ohne Nutzung.",
    token: "Admin-Token",
    log_in: "Anmelden",
    log_out: "Abmelden",
    login_failed: "Anmeldung fehlgeschlagen: Token unbekannt.",
    login_expired: "Das Anmeldeformular ist abgelaufen. Bitte erneut versuchen.",
    signed_in_as: "Angemeldet als",
    roles: "Rollen",
    scope: "Bereich",
    overview: "Übersicht",
    refreshed: "Aktualisiert",
    refresh_paused: "Aktualisierung unterbrochen; neuer Versuch läuft",
    platforms: "Plattformen",
    platform: "Plattform",
    land: "Land",
    state: "Zustand",
    consumed: "Empfangen",
    forwarded: "Weitergeleitet",
    rejected: "Abgewiesen",
    in_flight: "In Arbeit",
    rates_hint: "Raten: Nachrichten pro Sekunde, gleitend gemittelt über 1, 5 und 15 Minuten.",
    rate_1: "1 min",
    rate_5: "5 min",
    rate_15: "15 min",
    backlog: "Warteschlange",
    not_counted_yet: "noch nicht gezählt",
    destinations: "Ziele",
    destination: "Ziel",
    delivered: "Zugestellt",
    failed: "Fehlgeschlagen",
    retrying: "Wiederholung",
    last_error: "Letzter Fehler",
    none: "keiner",
    brokers: "Broker-Verbindungen",
    broker: "Broker",
    role: "Aufgabe",
    node: "Knoten",
    connected: "verbunden",
    disconnected: "getrennt",
    pending_by_reason: "Offene Unzustellbare nach Grund",
    reason: "Grund",
    count: "Anzahl",
    no_pending: "Keine offenen Unzustellbaren.",
    overdue: "Überfällig (ohne Antwort der Fachstelle)",
    overdue_none: "Nichts überfällig.",
    submission: "Antrag",
    delivered_at: "Zugestellt am",
    store_problem: "Speicherproblem",
    state_consuming: "empfängt",
    state_connecting: "verbindet",
    state_paused: "angehalten",
    error_title: "Fehler",
    forbidden: "Nicht erlaubt.",
    back: "Zurück",
    gateway_version: "Version",
    uptime: "Laufzeit",
    directory_version: "Verzeichnisstand",
    all_laender: "alle Länder",
};

pub static EN: Texts = Texts {
    console: "OZG Gateway console",
    skip_to_content: "Skip to content",
    main_navigation: "Main navigation",
    language: "Language",
    login_title: "Log in",
    login_intro: "Log in with your admin token. The session ends after 30 minutes unused.",
    token: "Admin token",
    log_in: "Log in",
    log_out: "Log out",
    login_failed: "Login failed: unknown token.",
    login_expired: "The login form expired. Please try again.",
    signed_in_as: "Signed in as",
    roles: "Roles",
    scope: "Scope",
    overview: "Overview",
    refreshed: "Refreshed",
    refresh_paused: "Refresh interrupted; retrying",
    platforms: "Platforms",
    platform: "Platform",
    land: "Land",
    state: "State",
    consumed: "Consumed",
    forwarded: "Forwarded",
    rejected: "Rejected",
    in_flight: "In flight",
    rates_hint: "Rates: messages per second, moving averages over 1, 5 and 15 minutes.",
    rate_1: "1 min",
    rate_5: "5 min",
    rate_15: "15 min",
    backlog: "Backlog",
    not_counted_yet: "not counted yet",
    destinations: "Destinations",
    destination: "Destination",
    delivered: "Delivered",
    failed: "Failed",
    retrying: "Retrying",
    last_error: "Last error",
    none: "none",
    brokers: "Broker links",
    broker: "Broker",
    role: "Role",
    node: "Node",
    connected: "connected",
    disconnected: "disconnected",
    pending_by_reason: "Pending dead letters by reason",
    reason: "Reason",
    count: "Count",
    no_pending: "No dead letters pending.",
    overdue: "Overdue (no answer from the back office)",
    overdue_none: "Nothing overdue.",
    submission: "Submission",
    delivered_at: "Delivered at",
    store_problem: "Store problem",
    state_consuming: "consuming",
    state_connecting: "connecting",
    state_paused: "paused",
    error_title: "Error",
    forbidden: "Not allowed.",
    back: "Back",
    gateway_version: "Version",
    uptime: "Uptime",
    directory_version: "Directory version",
    all_laender: "every Land",
};
