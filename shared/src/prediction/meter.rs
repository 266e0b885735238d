//! What a prediction has delivered and what it may still deliver, tracked
//! in memory as the answer goes out (README, Decisions, "An answer stops
//! where the payer's means end").
//!
//! The price of what was delivered is `perRequest` + the input + the
//! output so far, each side counted as the larger of Flowise's report
//! and the gateway's estimate (ceil(characters / 4)). The relay compares
//! it with the credits held for the answer before every piece it sends:
//! a piece that would pass the hold waits for a top-up of the hold, and
//! when the payer's means are spent the answer ends at the last character
//! they cover.

use crate::flowise::{ReportedUsage, TokenUsage};
use crate::pricing::PricingRule;

/// Output tokens a hold is topped up by when it runs low (and the output
/// a reservation holds at first).
pub const HOLD_STEP_TOKENS: i64 = 1_000;

/// A top-up is asked for once fewer than this many output characters
/// remain under the hold (a quarter of [`HOLD_STEP_TOKENS`]), so the next
/// pieces rarely wait for it.
const LOW_WATER_CHARS: i64 = HOLD_STEP_TOKENS;

/// More output characters than any answer has: "no limit" for a rule that
/// does not price output.
const UNLIMITED_CHARS: i64 = i64::MAX / 8;

/// The meter of one answer.
#[derive(Debug, Clone)]
pub struct Meter {
    rule: PricingRule,
    input_estimate: i64,
    reported: ReportedUsage,
    chars: i64,
    held: i64,
    started: bool,
    exhausted: bool,
}

impl Meter {
    /// A meter for an answer priced by `rule`, whose input is estimated at
    /// `input_estimate` tokens, with `held` credits reserved for it.
    pub fn new(rule: PricingRule, input_estimate: i64, held: i64) -> Meter {
        Meter {
            rule,
            input_estimate,
            reported: ReportedUsage::default(),
            chars: 0,
            held,
            started: false,
            exhausted: false,
        }
    }

    /// The credits held for the answer.
    pub fn held(&self) -> i64 {
        self.held
    }

    /// The hold after a top-up; `asked` is what the top-up asked for, so
    /// a top-up that fell short marks the payer's means as spent.
    pub fn topped_up(&mut self, held: i64, asked: i64) {
        if held < self.held.saturating_add(asked) {
            self.exhausted = true;
        }
        self.held = self.held.max(held);
    }

    /// Whether the last top-up fell short of what it asked.
    pub fn exhausted(&self) -> bool {
        self.exhausted
    }

    /// Flowise began to answer (its first data event): the input is
    /// consumed from here on, whatever happens next.
    pub fn start(&mut self) {
        self.started = true;
    }

    /// Whether Flowise began to answer.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Adds one of Flowise's usage reports (one per LLM call of a flow).
    pub fn report(&mut self, report: ReportedUsage) {
        self.reported = self.reported.plus(report);
    }

    /// Counts `text` as delivered.
    pub fn deliver(&mut self, text: &str) {
        self.chars = self.chars.saturating_add(text.chars().count() as i64);
    }

    /// The tokens priced: each side the larger of Flowise's count and the
    /// gateway's estimate.
    pub fn tokens(&self) -> TokenUsage {
        TokenUsage {
            input: self.reported.input.unwrap_or(0).max(self.input_estimate),
            output: self
                .reported
                .output
                .unwrap_or(0)
                .max(self.output_estimate()),
        }
    }

    fn output_estimate(&self) -> i64 {
        self.chars.saturating_add(3) / 4
    }

    /// The price of what was delivered: `perRequest`, the input and the
    /// output so far.
    pub fn cost(&self) -> i64 {
        let tokens = self.tokens();
        self.rule.cost(tokens.input, tokens.output).credits
    }

    /// The most output tokens `budget` credits pay for beside the input,
    /// `None` when they do not even pay for the request and its input.
    fn payable_output_tokens(&self, budget: i64) -> Option<i64> {
        let input = self.tokens().input;
        let per_output = i128::from(self.rule.per_output_token_micros);
        let micros = (i128::from(budget) - i128::from(self.rule.per_request)) * 1_000_000
            - i128::from(input) * i128::from(self.rule.per_input_token_micros);
        if micros < 0 {
            return None;
        }
        if per_output == 0 {
            return Some(UNLIMITED_CHARS / 4);
        }
        Some((micros / per_output).min(i128::from(UNLIMITED_CHARS / 4)) as i64)
    }

    /// How many more characters of output the hold pays for (0 once a
    /// report already passed it).
    pub fn room(&self) -> i64 {
        match self.payable_output_tokens(self.held) {
            Some(tokens) if tokens >= self.reported.output.unwrap_or(0) => {
                (tokens.saturating_mul(4) - self.chars).max(0)
            }
            _ => 0,
        }
    }

    /// Whether the hold runs low enough to ask for a top-up now, before
    /// the answer reaches it (never again once the payer's means are
    /// spent, until the answer reaches the hold).
    pub fn wants_top_up(&self) -> bool {
        !self.exhausted && self.room() < LOW_WATER_CHARS
    }

    /// What a top-up asks for: the hold that pays for what was delivered,
    /// `extra` more output characters and [`HOLD_STEP_TOKENS`] beyond
    /// them, minus what is held already.
    pub fn top_up_wanted(&self, extra: i64) -> i64 {
        let tokens = self.tokens();
        let output = (self.chars.saturating_add(extra).saturating_add(3) / 4)
            .max(tokens.output)
            .saturating_add(HOLD_STEP_TOKENS);
        let wanted = self.rule.cost(tokens.input, output).credits;
        (wanted - self.held).max(0)
    }

    /// The part of a whole answer `text` (of which Flowise reported
    /// `reported`) that the hold pays for: its length in bytes, and the
    /// meter of that part, on which Flowise's output count is taken at
    /// the part's share of the text (Flowise counted the whole).
    pub fn fit_whole(&self, text: &str, reported: ReportedUsage) -> (usize, Meter) {
        let total = text.chars().count() as i64;
        let part = |chars: i64| {
            let mut meter = self.clone();
            let share = |n: i64| {
                let scaled = i128::from(n) * i128::from(chars) + i128::from(total) - 1;
                (scaled / i128::from(total.max(1))) as i64
            };
            meter.report(ReportedUsage {
                input: reported.input,
                output: reported.output.map(share),
            });
            meter.chars = meter.chars.saturating_add(chars);
            meter
        };
        let (mut low, mut high) = (0, total);
        while low < high {
            let mid = low + (high - low + 1) / 2;
            if part(mid).cost() <= self.held {
                low = mid;
            } else {
                high = mid - 1;
            }
        }
        let bytes = text
            .char_indices()
            .nth(low as usize)
            .map_or(text.len(), |(at, _)| at);
        (bytes, part(low))
    }

    /// The longest beginning of `piece` the hold pays for (all of it, or
    /// the characters that fit).
    pub fn fitting<'p>(&self, piece: &'p str) -> &'p str {
        let room = self.room();
        match piece.char_indices().nth(room.max(0) as usize) {
            Some((at, _)) => &piece[..at],
            None => piece,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(per_request: i64, input_micros: i64, output_micros: i64) -> PricingRule {
        PricingRule {
            chatflow_id: "f".into(),
            per_request,
            per_input_token_micros: input_micros,
            per_output_token_micros: output_micros,
            image_input_tokens: 0,
            document_input_tokens_per_mb: 0,
            updated_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn the_room_is_what_the_hold_pays_for_beyond_the_request_and_the_input() {
        // 2 a request, 1 an output token, 10 held: 8 output tokens, 32 characters.
        let mut meter = Meter::new(rule(2, 0, 1_000_000), 0, 10);
        assert_eq!(meter.room(), 32);
        meter.deliver("0123456789");
        assert_eq!(meter.room(), 22);
        assert_eq!(
            meter.fitting("a long piece of text that passes the hold"),
            "a long piece of text t"
        );
        meter.deliver(meter.fitting("a long piece of text that passes the hold"));
        assert_eq!(meter.room(), 0);
        assert_eq!(meter.cost(), 10);
        assert_eq!(meter.fitting("more"), "");
    }

    #[test]
    fn each_side_is_priced_at_the_larger_of_the_report_and_the_estimate() {
        let mut meter = Meter::new(rule(1, 1_000_000, 1_000_000), 5, 100);
        meter.deliver("12345678"); // 2 tokens
        meter.report(ReportedUsage {
            input: Some(3),
            output: Some(9),
        });
        assert_eq!(
            meter.tokens(),
            TokenUsage {
                input: 5,
                output: 9
            }
        );
        assert_eq!(meter.cost(), 15);
        // A report past the hold leaves no room at all.
        meter.report(ReportedUsage {
            input: None,
            output: Some(200),
        });
        assert_eq!(meter.room(), 0);
    }

    #[test]
    fn a_hold_that_does_not_cover_the_input_has_no_room() {
        let meter = Meter::new(rule(2, 1_000_000, 1_000_000), 50, 10);
        assert_eq!(meter.room(), 0);
        assert_eq!(meter.fitting("x"), "");
    }

    #[test]
    fn a_top_up_that_falls_short_marks_the_means_spent() {
        let mut meter = Meter::new(rule(0, 0, 1_000_000), 0, 4);
        assert!(meter.wants_top_up());
        let asked = meter.top_up_wanted(0);
        assert_eq!(asked, 1_000 - 4);
        meter.topped_up(4 + asked, asked);
        assert!(!meter.exhausted());
        assert!(!meter.wants_top_up());
        meter.topped_up(1_001, 10);
        assert!(meter.exhausted());
        assert!(!meter.wants_top_up());
    }

    #[test]
    fn a_whole_answer_is_cut_where_the_hold_ends_with_the_report_shared_out() {
        // 1 an output token, 5 held: 20 characters by the estimate.
        let meter = Meter::new(rule(0, 0, 1_000_000), 0, 5);
        let text = "0123456789012345678901234567890123456789"; // 40 characters
        let (at, part) = meter.fit_whole(text, ReportedUsage::default());
        assert_eq!((at, part.cost()), (20, 5));
        // Flowise counted 20 tokens for the 40 characters, 2 characters a
        // token by its count: the 5 held pay for 10.
        let reported = ReportedUsage {
            input: None,
            output: Some(20),
        };
        let (at, part) = meter.fit_whole(text, reported);
        assert_eq!((at, part.cost()), (10, 5));
        assert!(meter.fit_whole("é".repeat(40).as_str(), reported).0 % 2 == 0);
    }

    #[test]
    fn output_that_is_free_never_runs_out() {
        let meter = Meter::new(rule(1, 0, 0), 10, 1);
        assert!(meter.room() > 1_000_000_000);
        assert!(!meter.wants_top_up());
    }
}
