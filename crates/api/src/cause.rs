//! Hangup causes (api.md §5). The tables live in `data/*.csv` so that operators and reviewers can
//! check them against the original reference without reading Rust.

use std::fmt;
use std::sync::OnceLock;

const CAUSES_CSV: &str = include_str!("../data/causes.csv");
const SIP_TO_CAUSE_CSV: &str = include_str!("../data/sip-to-cause.csv");

struct Row {
    q850: u16,
    name: &'static str,
    sip_on_reject: u16,
    class: &'static str,
}

struct Tables {
    causes: Vec<Row>,
    sip_to_cause: Vec<(u16, HangupCause)>,
    sip_default: HangupCause,
}

/// A row of `causes.csv`, identified by its code column (unique there). Copy-cheap so that calls
/// can carry it around; the other columns are looked up in the table.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HangupCause(u16);

impl HangupCause {
    // The causes the switch raises itself (api.md §5). A unit test checks each against the CSV.
    pub const UNSPECIFIED: HangupCause = HangupCause(0);
    pub const NORMAL_CLEARING: HangupCause = HangupCause(16);
    pub const USER_BUSY: HangupCause = HangupCause(17);
    pub const NO_ANSWER: HangupCause = HangupCause(19);
    pub const CALL_REJECTED: HangupCause = HangupCause(21);
    pub const NORMAL_UNSPECIFIED: HangupCause = HangupCause(31);
    pub const NORMAL_TEMPORARY_FAILURE: HangupCause = HangupCause(41);
    pub const RECOVERY_ON_TIMER_EXPIRE: HangupCause = HangupCause(102);
    pub const ORIGINATOR_CANCEL: HangupCause = HangupCause(487);
    pub const SYSTEM_SHUTDOWN: HangupCause = HangupCause(501);
    pub const MANAGER_REQUEST: HangupCause = HangupCause(503);
    pub const BLIND_TRANSFER: HangupCause = HangupCause(600);
    pub const ALLOTTED_TIMEOUT: HangupCause = HangupCause(602);
    pub const MEDIA_TIMEOUT: HangupCause = HangupCause(604);
    pub const GATEWAY_DOWN: HangupCause = HangupCause(609);

    /// By enumeration name (`"USER_BUSY"`); case-insensitive because apps type these by hand.
    pub fn from_name(name: &str) -> Option<HangupCause> {
        tables()
            .causes
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(name.trim()))
            .map(|r| HangupCause(r.q850))
    }

    pub fn name(&self) -> &'static str {
        self.row().name
    }

    /// The code column of `causes.csv`: the Q.850 cause for codes ≤ 127, FreeSWITCH's own numbering
    /// above.
    pub fn q850(&self) -> u16 {
        self.0
    }

    pub fn sip_on_reject(&self) -> u16 {
        self.row().sip_on_reject
    }

    /// The simplified `cause_class` for dialer logic (`NORMAL`, `BUSY`, ...).
    pub fn class(&self) -> &'static str {
        self.row().class
    }

    fn row(&self) -> &'static Row {
        // Values are only made from table rows (or the consts, checked by a test).
        tables()
            .causes
            .iter()
            .find(|r| r.q850 == self.0)
            .expect("HangupCause always names a row of causes.csv")
    }
}

impl fmt::Display for HangupCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Debug for HangupCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(load_tables)
}

// The CSVs are compiled in, so a malformed row is a build defect: panicking on first use (and in
// the unit tests) is the right way to surface it.
fn load_tables() -> Tables {
    let mut causes = Vec::new();
    for line in data_lines(CAUSES_CSV) {
        let cols: Vec<&'static str> = line.split(',').map(str::trim).collect();
        assert_eq!(cols.len(), 4, "causes.csv: bad row {line:?}");
        causes.push(Row {
            q850: cols[0].parse().expect("causes.csv: q850_code"),
            name: cols[1],
            sip_on_reject: cols[2].parse().expect("causes.csv: sip_on_reject"),
            class: cols[3],
        });
    }
    let by_name = |name: &str| -> HangupCause {
        causes
            .iter()
            .find(|r| r.name == name)
            .map(|r| HangupCause(r.q850))
            .unwrap_or_else(|| panic!("sip-to-cause.csv names unknown cause {name}"))
    };
    let mut sip_to_cause = Vec::new();
    let mut sip_default = None;
    for line in data_lines(SIP_TO_CAUSE_CSV) {
        // The note column is free text and may contain commas.
        let cols: Vec<&str> = line.splitn(4, ',').map(str::trim).collect();
        assert!(cols.len() >= 3, "sip-to-cause.csv: bad row {line:?}");
        let cause = by_name(cols[1]);
        assert_eq!(
            cause.0.to_string(),
            cols[2],
            "sip-to-cause.csv: code of {} disagrees with causes.csv",
            cols[1]
        );
        if cols[0] == "other" {
            sip_default = Some(cause);
        } else {
            let sip: u16 = cols[0].parse().expect("sip-to-cause.csv: sip_code");
            sip_to_cause.push((sip, cause));
        }
    }
    Tables {
        causes,
        sip_to_cause,
        sip_default: sip_default.expect("sip-to-cause.csv: missing the 'other' row"),
    }
}

fn data_lines(csv: &'static str) -> impl Iterator<Item = &'static str> {
    csv.lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// The cause for a failure response to our INVITE, by status code alone.
pub fn from_sip_status(code: u16) -> HangupCause {
    let t = tables();
    t.sip_to_cause
        .iter()
        .find(|(sip, _)| *sip == code)
        .map(|(_, c)| *c)
        .unwrap_or(t.sip_default)
}

/// Only codes that are a row of `causes.csv`.
pub fn from_q850(code: u16) -> Option<HangupCause> {
    tables()
        .causes
        .iter()
        .any(|r| r.q850 == code)
        .then_some(HangupCause(code))
}

/// The cause carried by an RFC 3326 `Reason` header value, e.g. `Q.850;cause=17;text="busy"`.
/// Of several comma-separated reasons the first Q.850 one with a usable cause wins; `SIP;cause=N`
/// is a SIP status, not a cause, and is skipped.
pub fn parse_reason_header(value: &str) -> Option<HangupCause> {
    for reason in split_unquoted(value, ',') {
        let mut parts = split_unquoted(reason, ';').into_iter();
        let protocol = parts.next().unwrap_or("").trim();
        if !protocol.eq_ignore_ascii_case("Q.850") {
            continue;
        }
        let code = parts.find_map(|p| {
            let (k, v) = p.split_once('=')?;
            if !k.trim().eq_ignore_ascii_case("cause") {
                return None;
            }
            v.trim().trim_matches('"').trim().parse::<u16>().ok()
        });
        if let Some(cause) = code.and_then(q850_with_fallback) {
            return Some(cause);
        }
    }
    None
}

// Q.850 §2.2.7.1: an unrecognised cause value is treated as the unspecified cause of its class,
// so a carrier's rarer codes still give a sensible class instead of being dropped.
fn q850_with_fallback(code: u16) -> Option<HangupCause> {
    if let Some(c) = from_q850(code) {
        return Some(c);
    }
    let unspecified_of_class = match code {
        0..=31 => 31,
        32..=47 => 47,
        48..=63 => 63,
        64..=79 => 79,
        80..=95 => 95,
        96..=111 => 111,
        112..=127 => 127,
        _ => return None,
    };
    from_q850(unspecified_of_class)
}

// Splits on `sep` outside double-quoted strings: reason texts may contain `,` and `;`.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut in_quotes, mut escaped) = (0, false, false);
    for (i, ch) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if in_quotes && ch == '\\' {
            escaped = true;
        } else if ch == '"' {
            in_quotes = !in_quotes;
        } else if ch == sep && !in_quotes {
            out.push(&s[start..i]);
            start = i + ch.len_utf8();
        }
    }
    out.push(&s[start..]);
    out
}

/// The `Reason` header value the switch puts on its BYE, CANCEL and final error responses.
/// Codes above 127 are not Q.850 causes, so they go out under the `SIP` protocol (api.md §5).
pub fn reason_header_value(cause: HangupCause) -> String {
    let protocol = if cause.q850() <= 127 { "Q.850" } else { "SIP" };
    format!(
        "{protocol};cause={};text=\"{}\"",
        cause.q850(),
        cause.name()
    )
}

/// The cause of a failed INVITE: a Q.850 `Reason` beats the status code, because carriers map
/// the same PSTN outcome to different SIP codes.
pub fn cause_for_failure(status: u16, reason_header: Option<&str>) -> HangupCause {
    reason_header
        .and_then(parse_reason_header)
        .unwrap_or_else(|| from_sip_status(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLASSES: [&str; 14] = [
        "NORMAL",
        "BUSY",
        "NOANSWER",
        "UNOBTAINABLE",
        "CHANGED",
        "OUTOFORDER",
        "BARRED",
        "REJECTED",
        "NOCHANNELS",
        "CONGESTION",
        "TIMEOUT",
        "ERROR",
        "FAILED",
        "OTHER",
    ];

    fn csv_rows(text: &str) -> Vec<Vec<String>> {
        text.lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.splitn(4, ',').map(|c| c.trim().to_string()).collect())
            .collect()
    }

    #[test]
    fn every_cause_row_is_reachable() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/data/causes.csv"))
            .unwrap();
        let rows = csv_rows(&text);
        assert!(rows.len() >= 60);
        for r in rows {
            let code: u16 = r[0].parse().unwrap();
            let c = HangupCause::from_name(&r[1]).unwrap_or_else(|| panic!("{}", r[1]));
            assert_eq!(c.q850(), code);
            assert_eq!(c.name(), r[1]);
            assert_eq!(c.sip_on_reject().to_string(), r[2], "{}", r[1]);
            assert_eq!(c.class(), r[3]);
            assert!(CLASSES.contains(&c.class()), "{} class {}", r[1], r[3]);
            assert_eq!(from_q850(code), Some(c));
        }
    }

    #[test]
    fn every_sip_to_cause_row_maps() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/data/sip-to-cause.csv"
        ))
        .unwrap();
        let rows = csv_rows(&text);
        let mut listed = Vec::new();
        let mut other = None;
        for r in &rows {
            if r[0] == "other" {
                other = Some(r[1].clone());
                continue;
            }
            let sip: u16 = r[0].parse().unwrap();
            listed.push(sip);
            let c = from_sip_status(sip);
            assert_eq!(c.name(), r[1], "SIP {sip}");
            assert_eq!(c.q850().to_string(), r[2], "SIP {sip}");
            // No Reason header: the table decides.
            assert_eq!(cause_for_failure(sip, None), c);
        }
        let other = other.expect("'other' row");
        assert_eq!(other, "NORMAL_UNSPECIFIED");
        for sip in 100..700u16 {
            if !listed.contains(&sip) {
                assert_eq!(from_sip_status(sip).name(), other, "SIP {sip}");
            }
        }
        assert_eq!(from_sip_status(999), HangupCause::NORMAL_UNSPECIFIED);
    }

    #[test]
    fn named_constants_match_the_table() {
        let consts = [
            (HangupCause::UNSPECIFIED, "UNSPECIFIED"),
            (HangupCause::NORMAL_CLEARING, "NORMAL_CLEARING"),
            (HangupCause::USER_BUSY, "USER_BUSY"),
            (HangupCause::NO_ANSWER, "NO_ANSWER"),
            (HangupCause::CALL_REJECTED, "CALL_REJECTED"),
            (HangupCause::NORMAL_UNSPECIFIED, "NORMAL_UNSPECIFIED"),
            (
                HangupCause::NORMAL_TEMPORARY_FAILURE,
                "NORMAL_TEMPORARY_FAILURE",
            ),
            (
                HangupCause::RECOVERY_ON_TIMER_EXPIRE,
                "RECOVERY_ON_TIMER_EXPIRE",
            ),
            (HangupCause::ORIGINATOR_CANCEL, "ORIGINATOR_CANCEL"),
            (HangupCause::SYSTEM_SHUTDOWN, "SYSTEM_SHUTDOWN"),
            (HangupCause::MANAGER_REQUEST, "MANAGER_REQUEST"),
            (HangupCause::BLIND_TRANSFER, "BLIND_TRANSFER"),
            (HangupCause::ALLOTTED_TIMEOUT, "ALLOTTED_TIMEOUT"),
            (HangupCause::MEDIA_TIMEOUT, "MEDIA_TIMEOUT"),
            (HangupCause::GATEWAY_DOWN, "GATEWAY_DOWN"),
        ];
        for (c, name) in consts {
            assert_eq!(c.name(), name);
            assert_eq!(HangupCause::from_name(name), Some(c));
        }
    }

    #[test]
    fn spec_rules_for_own_hangups() {
        assert_eq!(HangupCause::SYSTEM_SHUTDOWN.sip_on_reject(), 503);
        assert_eq!(HangupCause::USER_BUSY.sip_on_reject(), 486);
        assert_eq!(HangupCause::USER_BUSY.class(), "BUSY");
        assert_eq!(
            HangupCause::from_name("user_busy"),
            Some(HangupCause::USER_BUSY)
        );
        assert_eq!(HangupCause::from_name("NOT_A_CAUSE"), None);
        assert_eq!(from_q850(5), None);
        assert_eq!(format!("{}", HangupCause::NO_ANSWER), "NO_ANSWER");
    }

    #[test]
    fn reason_header_values() {
        assert_eq!(
            reason_header_value(HangupCause::USER_BUSY),
            "Q.850;cause=17;text=\"USER_BUSY\""
        );
        assert_eq!(
            reason_header_value(from_q850(127).unwrap()),
            "Q.850;cause=127;text=\"INTERWORKING\""
        );
        assert_eq!(
            reason_header_value(HangupCause::ORIGINATOR_CANCEL),
            "SIP;cause=487;text=\"ORIGINATOR_CANCEL\""
        );
        assert_eq!(
            reason_header_value(HangupCause::SYSTEM_SHUTDOWN),
            "SIP;cause=501;text=\"SYSTEM_SHUTDOWN\""
        );
        // What we send, we read back.
        for code in [0u16, 16, 17, 19, 102, 127] {
            let c = from_q850(code).unwrap();
            assert_eq!(parse_reason_header(&reason_header_value(c)), Some(c));
        }
    }

    #[test]
    fn reason_beats_status_code() {
        // The seed's two carriers: 480 and 487 for the same unanswered mobile, both with cause 19.
        let r = Some("Q.850;cause=19;text=\"No answer\"");
        assert_eq!(cause_for_failure(480, r), HangupCause::NO_ANSWER);
        assert_eq!(cause_for_failure(487, r), HangupCause::NO_ANSWER);
        assert_eq!(
            cause_for_failure(486, Some("Q.850;cause=21")),
            HangupCause::CALL_REJECTED
        );
        // A Reason without a usable Q.850 cause falls back to the status code.
        assert_eq!(
            cause_for_failure(486, Some("SIP;cause=600")),
            HangupCause::USER_BUSY
        );
        assert_eq!(
            cause_for_failure(486, Some("garbage")),
            HangupCause::USER_BUSY
        );
        assert_eq!(cause_for_failure(486, Some("")), HangupCause::USER_BUSY);
        assert_eq!(cause_for_failure(404, None).name(), "UNALLOCATED_NUMBER");
    }

    #[test]
    fn reason_parse_edge_cases() {
        let busy = Some(HangupCause::USER_BUSY);
        assert_eq!(
            parse_reason_header("Q.850;cause=17;text=\"USER_BUSY\""),
            busy
        );
        assert_eq!(parse_reason_header("q.850;CAUSE=17"), busy);
        assert_eq!(
            parse_reason_header("  Q.850 ; cause = 17 ; text = \"x\" "),
            busy
        );
        assert_eq!(parse_reason_header("Q.850;text=\"a;b,c\";cause=17"), busy);
        assert_eq!(parse_reason_header("Q.850;cause=\"17\""), busy);
        // First Q.850 reason wins; SIP reasons are skipped.
        assert_eq!(
            parse_reason_header("SIP;cause=200;text=\"Call completed elsewhere\", Q.850;cause=17"),
            busy
        );
        assert_eq!(parse_reason_header("Q.850;cause=17, Q.850;cause=16"), busy);
        // Quoted commas do not split reasons.
        assert_eq!(
            parse_reason_header("Q.850;cause=16;text=\"bye, \\\"friend\\\"\", Q.850;cause=17"),
            Some(HangupCause::NORMAL_CLEARING)
        );
        // A Q.850 reason without a usable cause does not hide a later one.
        assert_eq!(
            parse_reason_header("Q.850;text=\"none\", Q.850;cause=17"),
            busy
        );
        assert_eq!(parse_reason_header("Q.850;cause=abc, Q.850;cause=17"), busy);
        assert_eq!(parse_reason_header("SIP;cause=486"), None);
        assert_eq!(parse_reason_header("Q.850"), None);
        assert_eq!(parse_reason_header("Q.850;cause="), None);
        assert_eq!(parse_reason_header("Q.850;cause=-1"), None);
        assert_eq!(parse_reason_header("Q.850;cause=99999"), None);
        assert_eq!(parse_reason_header("Q.8500;cause=17"), None);
        assert_eq!(parse_reason_header(""), None);
        // Unlisted Q.850 codes fall back to the unspecified cause of their class.
        assert_eq!(
            parse_reason_header("Q.850;cause=5").unwrap().name(),
            "NORMAL_UNSPECIFIED"
        );
        assert_eq!(
            parse_reason_header("Q.850;cause=39").unwrap().name(),
            "RESOURCE_UNAVAILABLE"
        );
        assert_eq!(
            parse_reason_header("Q.850;cause=112").unwrap().name(),
            "INTERWORKING"
        );
        assert_eq!(parse_reason_header("Q.850;cause=200"), None);
        // FreeSWITCH peers put their own >127 codes under Q.850; accept those that we know.
        assert_eq!(
            parse_reason_header("Q.850;cause=487;text=\"ORIGINATOR_CANCEL\""),
            Some(HangupCause::ORIGINATOR_CANCEL)
        );
    }
}
