//! What an import did (or, in a dry run, would do), kind by kind.

use serde::Serialize;

/// One kind of record: how many were imported, how many were already
/// here (from an earlier run), and which were skipped, each with why.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Written by this run (a dry run: would be).
    pub imported: u64,
    /// Already here: nothing written.
    pub unchanged: u64,
    /// Left out, with the reason.
    pub skipped: Vec<Skip>,
}

/// A record left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skip {
    /// Where it is on the platform (`collection/id` or `table/id`).
    pub source: String,
    /// Why, as a sentence.
    pub reason: String,
}

impl Tally {
    /// Records `source` as skipped because of `reason`.
    pub fn skip(&mut self, source: impl Into<String>, reason: impl Into<String>) {
        self.skipped.push(Skip {
            source: source.into(),
            reason: reason.into(),
        });
    }
}

/// The whole report (`--json` prints it as one object).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// `auth_db.users`.
    pub users: Tally,
    /// `credit_allocations`.
    pub allocations: Tally,
    /// `usage_records` (and the open `streaming_sessions`, all skipped).
    pub usage: Tally,
    /// `Chatflow`.
    pub chatflows: Tally,
    /// `UserChatflow` (and `user_chatflows`, which grants nothing).
    pub access: Tally,
    /// `chat_sessions` (and the sessions only messages name).
    pub sessions: Tally,
    /// `chat_messages`.
    pub messages: Tally,
    /// `file_uploads` with their GridFS bytes.
    pub files: Tally,
}

impl Report {
    /// Every kind with its name, in the report's order.
    pub fn kinds(&self) -> [(&'static str, &Tally); 8] {
        [
            ("users", &self.users),
            ("allocations", &self.allocations),
            ("usage", &self.usage),
            ("chatflows", &self.chatflows),
            ("access", &self.access),
            ("sessions", &self.sessions),
            ("messages", &self.messages),
            ("files", &self.files),
        ]
    }

    /// The readable summary: a line per kind, then every skipped record
    /// with its reason.
    pub fn summary(&self, dry_run: bool) -> String {
        let verb = if dry_run { "would import" } else { "imported" };
        let mut out = String::new();
        if dry_run {
            out.push_str("Dry run: nothing was written.\n");
        }
        for (name, tally) in self.kinds() {
            out.push_str(&format!(
                "{name:<12} {verb} {:>8}, already here {:>8}, skipped {:>6}\n",
                tally.imported,
                tally.unchanged,
                tally.skipped.len()
            ));
        }
        for (name, tally) in self.kinds() {
            if tally.skipped.is_empty() {
                continue;
            }
            out.push_str(&format!("\nSkipped {name}:\n"));
            for skip in &tally.skipped {
                out.push_str(&format!("  {}: {}\n", skip.source, skip.reason));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_report_has_every_kind_with_its_three_parts() {
        let mut report = Report::default();
        report.users.imported = 2;
        report.files.skip("file_uploads/1", "too large");
        let json = serde_json::to_value(&report).unwrap();
        for (name, _) in report.kinds() {
            let tally = &json[name];
            assert!(tally["imported"].is_u64(), "{name}");
            assert!(tally["unchanged"].is_u64(), "{name}");
            assert!(tally["skipped"].is_array(), "{name}");
        }
        assert_eq!(json["files"]["skipped"][0]["reason"], "too large");
        let text = report.summary(true);
        assert!(text.starts_with("Dry run: nothing was written."), "{text}");
        assert!(text.contains("file_uploads/1: too large"), "{text}");
    }
}
