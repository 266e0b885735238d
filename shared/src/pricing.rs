//! Pricing (README §6): cost of a prediction = `perRequest +
//! ceil(perInputToken × input tokens + perOutputToken × output tokens)`,
//! with a rule per chatflow and a `default` rule for the rest. The credits
//! function's `/api/credits/calculate` and the predict path both call
//! [`PricingRule::cost`].
//!
//! Per-token prices are fractions of a credit; they are stored and computed
//! as integers in millionths of a credit (micro-credits), so the arithmetic
//! is exact and a price has at most six decimals.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use crate::error::ApiError;

const MICROS: i64 = 1_000_000;
/// The highest per-request or per-token price accepted.
pub const MAX_PRICE: i64 = 1_000_000;

/// A pricing rule.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PricingRule {
    /// The chatflow it prices, or `default`.
    pub chatflow_id: String,
    /// Credits per request.
    pub per_request: i64,
    /// Micro-credits per input token.
    pub per_input_token_micros: i64,
    /// Micro-credits per output token.
    pub per_output_token_micros: i64,
    /// Input tokens an image counts as.
    pub image_input_tokens: i64,
    /// Input tokens each started MiB of a document the gateway cannot read
    /// (PDF, Office) counts as.
    pub document_input_tokens_per_mb: i64,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Input tokens an image counts as unless a rule says otherwise.
pub const DEFAULT_IMAGE_INPUT_TOKENS: i64 = 1_000;
/// Input tokens each started MiB of a document counts as unless a rule
/// says otherwise.
pub const DEFAULT_DOCUMENT_INPUT_TOKENS_PER_MB: i64 = 20_000;
/// The most input tokens a rule may count an image or a MiB as.
pub const MAX_UPLOAD_TOKENS: i64 = 1_000_000;

/// How a cost was computed.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Breakdown {
    /// The rule applied (a chatflow id or `default`).
    pub rule: String,
    /// Credits per request.
    pub per_request: i64,
    /// Input tokens counted.
    pub input_tokens: i64,
    /// Output tokens counted.
    pub output_tokens: i64,
    /// Credits per input token.
    pub per_input_token: f64,
    /// Credits per output token.
    pub per_output_token: f64,
    /// `ceil(tokens × prices)`.
    pub token_credits: i64,
}

/// A computed cost.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Cost {
    /// Credits to charge.
    pub credits: i64,
    /// How.
    pub breakdown: Breakdown,
}

fn micros_to_credits(micros: i64) -> f64 {
    micros as f64 / MICROS as f64
}

impl PricingRule {
    /// The cost of a prediction with these token counts (negative counts
    /// count as zero).
    pub fn cost(&self, input_tokens: i64, output_tokens: i64) -> Cost {
        let input = input_tokens.max(0);
        let output = output_tokens.max(0);
        let micros = i128::from(input) * i128::from(self.per_input_token_micros)
            + i128::from(output) * i128::from(self.per_output_token_micros);
        let token_credits = (micros + i128::from(MICROS) - 1) / i128::from(MICROS);
        let max = i128::from(crate::ledger::MAX_CREDITS);
        let token_credits = token_credits.min(max) as i64;
        Cost {
            // Capped at the largest amount the ledger takes.
            credits: (i128::from(self.per_request) + i128::from(token_credits)).min(max) as i64,
            breakdown: Breakdown {
                rule: self.chatflow_id.clone(),
                per_request: self.per_request,
                input_tokens: input,
                output_tokens: output,
                per_input_token: micros_to_credits(self.per_input_token_micros),
                per_output_token: micros_to_credits(self.per_output_token_micros),
                token_credits,
            },
        }
    }

    /// The input tokens `images` images and documents of `document_bytes`
    /// bytes (each) count as: a flat number an image, a number per
    /// started MiB of each document.
    pub fn upload_tokens(&self, images: usize, document_bytes: &[usize]) -> i64 {
        const MIB: usize = 1024 * 1024;
        let started: i64 = document_bytes.iter().map(|b| b.div_ceil(MIB) as i64).sum();
        (images as i64)
            .saturating_mul(self.image_input_tokens)
            .saturating_add(started.saturating_mul(self.document_input_tokens_per_mb))
    }

    /// The rule as the API shows it.
    pub fn view(&self) -> RuleView {
        RuleView {
            chatflow_id: self.chatflow_id.clone(),
            per_request: self.per_request,
            per_input_token: micros_to_credits(self.per_input_token_micros),
            per_output_token: micros_to_credits(self.per_output_token_micros),
            image_input_tokens: self.image_input_tokens,
            document_input_tokens_per_mb: self.document_input_tokens_per_mb,
            updated_at: self.updated_at,
        }
    }
}

/// A pricing rule as the API shows it (per-token prices in credits).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleView {
    /// The chatflow it prices, or `default`.
    pub chatflow_id: String,
    /// Credits per request.
    pub per_request: i64,
    /// Credits per input token.
    pub per_input_token: f64,
    /// Credits per output token.
    pub per_output_token: f64,
    /// Input tokens an image counts as.
    pub image_input_tokens: i64,
    /// Input tokens each started MiB of a document (PDF, Office) counts as.
    pub document_input_tokens_per_mb: i64,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Tokens estimated from text when Flowise reports none: ceil(characters /
/// 4), counting Unicode characters.
pub fn estimate_tokens(text: &str) -> i64 {
    let chars = text.chars().count() as i64;
    (chars + 3) / 4
}

/// Checks a per-token price given in credits (at most six decimals) and
/// converts it to micro-credits.
pub fn price_to_micros(field: &str, credits: f64) -> Result<i64, ApiError> {
    if !credits.is_finite() || credits < 0.0 || credits > MAX_PRICE as f64 {
        return Err(ApiError::invalid_field(
            field,
            format!("must be a number from 0 to {MAX_PRICE}"),
        ));
    }
    let scaled = credits * MICROS as f64;
    let micros = scaled.round();
    if (scaled - micros).abs() > 1e-6 * scaled.abs().max(1.0) {
        return Err(ApiError::invalid_field(
            field,
            "must have at most six decimals",
        ));
    }
    Ok(micros as i64)
}

/// A rule as the API takes it: per-token prices in credits.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PriceInput {
    /// Credits per request.
    #[schema(minimum = 0, maximum = 1000000)]
    pub per_request: i64,
    /// Credits per input token (at most six decimals).
    #[schema(minimum = 0, maximum = 1000000)]
    pub per_input_token: f64,
    /// Credits per output token (at most six decimals).
    #[schema(minimum = 0, maximum = 1000000)]
    pub per_output_token: f64,
    /// Input tokens an image counts as (1,000 unless set; absent keeps
    /// the rule's).
    #[schema(minimum = 0, maximum = 1000000)]
    pub image_input_tokens: Option<i64>,
    /// Input tokens each started MiB of a document the gateway cannot read
    /// (PDF, Office) counts as (20,000 unless set; absent keeps the
    /// rule's).
    #[schema(minimum = 0, maximum = 1000000)]
    pub document_input_tokens_per_mb: Option<i64>,
}

impl PriceInput {
    /// Checks the per-token prices (`field` prefixes the names in errors)
    /// and returns them in micro-credits.
    pub fn micros(&self, field: &str) -> Result<(i64, i64), ApiError> {
        Ok((
            price_to_micros(&format!("{field}perInputToken"), self.per_input_token)?,
            price_to_micros(&format!("{field}perOutputToken"), self.per_output_token)?,
        ))
    }

    /// Checks the prices and stores them as the rule of `chatflow_id`.
    pub async fn save(
        &self,
        conn: &mut PgConnection,
        chatflow_id: &str,
        actor_id: &str,
        field: &str,
    ) -> Result<PricingRule, ApiError> {
        let (input, output) = self.micros(field)?;
        for (name, value) in [
            ("imageInputTokens", self.image_input_tokens),
            (
                "documentInputTokensPerMb",
                self.document_input_tokens_per_mb,
            ),
        ] {
            if value.is_some_and(|v| !(0..=MAX_UPLOAD_TOKENS).contains(&v)) {
                return Err(ApiError::invalid_field(
                    &format!("{field}{name}"),
                    format!("must be a whole number from 0 to {MAX_UPLOAD_TOKENS}"),
                ));
            }
        }
        let change = RuleChange {
            per_request: self.per_request,
            per_input_token_micros: input,
            per_output_token_micros: output,
            image_input_tokens: self.image_input_tokens,
            document_input_tokens_per_mb: self.document_input_tokens_per_mb,
        };
        upsert_rule(conn, chatflow_id, &change, actor_id).await
    }
}

/// The rule for `chatflow_id`, else the default rule.
pub async fn rule_for(
    conn: &mut PgConnection,
    chatflow_id: Option<&str>,
) -> Result<PricingRule, ApiError> {
    let rule = sqlx::query_as!(
        PricingRule,
        "SELECT chatflow_id, per_request, per_input_token_micros, per_output_token_micros,
                image_input_tokens, document_input_tokens_per_mb, updated_at
           FROM pricing_rules WHERE chatflow_id = COALESCE($1, 'default') OR chatflow_id = 'default'
          ORDER BY (chatflow_id = 'default') LIMIT 1",
        chatflow_id
    )
    .fetch_optional(conn)
    .await?;
    rule.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the default pricing rule is missing")))
}

/// Every rule, the default first.
pub async fn list_rules(conn: &mut PgConnection) -> Result<Vec<PricingRule>, ApiError> {
    Ok(sqlx::query_as!(
        PricingRule,
        "SELECT chatflow_id, per_request, per_input_token_micros, per_output_token_micros,
                image_input_tokens, document_input_tokens_per_mb, updated_at
           FROM pricing_rules ORDER BY (chatflow_id <> 'default'), chatflow_id"
    )
    .fetch_all(conn)
    .await?)
}

/// A rule as it is stored: prices in micro-credits, and the upload counts
/// (`None` keeps what the rule had, or the default for a new rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleChange {
    /// Credits per request.
    pub per_request: i64,
    /// Micro-credits per input token.
    pub per_input_token_micros: i64,
    /// Micro-credits per output token.
    pub per_output_token_micros: i64,
    /// Input tokens an image counts as.
    pub image_input_tokens: Option<i64>,
    /// Input tokens a started MiB of a document counts as.
    pub document_input_tokens_per_mb: Option<i64>,
}

/// Creates or replaces the rule of `chatflow_id` (or `default`).
pub async fn upsert_rule(
    conn: &mut PgConnection,
    chatflow_id: &str,
    change: &RuleChange,
    actor_id: &str,
) -> Result<PricingRule, ApiError> {
    if chatflow_id.is_empty() || chatflow_id.len() > 128 {
        return Err(ApiError::invalid_field(
            "chatflowId",
            "must be 1 to 128 characters",
        ));
    }
    if !(0..=MAX_PRICE).contains(&change.per_request) {
        return Err(ApiError::invalid_field(
            "perRequest",
            format!("must be a whole number from 0 to {MAX_PRICE}"),
        ));
    }
    Ok(sqlx::query_as!(
        PricingRule,
        "INSERT INTO pricing_rules
            (chatflow_id, per_request, per_input_token_micros, per_output_token_micros,
             image_input_tokens, document_input_tokens_per_mb, updated_by)
         VALUES ($1, $2, $3, $4, COALESCE($5::bigint, $8::bigint), COALESCE($6::bigint, $9::bigint), $7)
         ON CONFLICT (chatflow_id) DO UPDATE
            SET per_request = EXCLUDED.per_request,
                per_input_token_micros = EXCLUDED.per_input_token_micros,
                per_output_token_micros = EXCLUDED.per_output_token_micros,
                image_input_tokens = COALESCE($5, pricing_rules.image_input_tokens),
                document_input_tokens_per_mb = COALESCE($6, pricing_rules.document_input_tokens_per_mb),
                updated_by = EXCLUDED.updated_by, updated_at = now()
         RETURNING chatflow_id, per_request, per_input_token_micros, per_output_token_micros,
                   image_input_tokens, document_input_tokens_per_mb, updated_at",
        chatflow_id,
        change.per_request,
        change.per_input_token_micros,
        change.per_output_token_micros,
        change.image_input_tokens,
        change.document_input_tokens_per_mb,
        actor_id,
        DEFAULT_IMAGE_INPUT_TOKENS,
        DEFAULT_DOCUMENT_INPUT_TOKENS_PER_MB,
    )
    .fetch_one(conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(per_request: i64, input: i64, output: i64) -> PricingRule {
        PricingRule {
            chatflow_id: "cf".into(),
            per_request,
            per_input_token_micros: input,
            per_output_token_micros: output,
            image_input_tokens: DEFAULT_IMAGE_INPUT_TOKENS,
            document_input_tokens_per_mb: DEFAULT_DOCUMENT_INPUT_TOKENS_PER_MB,
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn an_image_counts_flat_and_a_document_by_each_started_mib() {
        let rule = rule(0, 1_000_000, 0);
        assert_eq!(rule.upload_tokens(0, &[]), 0);
        assert_eq!(rule.upload_tokens(2, &[]), 2_000);
        // 1 byte and 1 MiB are one MiB started; 1 MiB + 1 byte are two.
        assert_eq!(rule.upload_tokens(0, &[1, 1024 * 1024]), 40_000);
        assert_eq!(rule.upload_tokens(1, &[1024 * 1024 + 1]), 41_000);
    }

    #[test]
    fn cost_is_per_request_plus_the_ceiling_of_token_credits() {
        // 1 + ceil(0.001 × 1500 + 0.002 × 250) = 1 + ceil(1.5 + 0.5) = 3
        assert_eq!(rule(1, 1_000, 2_000).cost(1_500, 250).credits, 3);
        // 1 + ceil(0.001 × 1 + 0) = 2: any fraction rounds up
        assert_eq!(rule(1, 1_000, 2_000).cost(1, 0).credits, 2);
        assert_eq!(rule(5, 0, 0).cost(10_000, 10_000).credits, 5);
        assert_eq!(rule(0, 1_000_000, 0).cost(7, 0).credits, 7);
        let cost = rule(2, 500_000, 1_500_000).cost(3, 2);
        assert_eq!(cost.credits, 2 + 5); // ceil(1.5 + 3.0) = 5
        assert_eq!(cost.breakdown.token_credits, 5);
        assert_eq!(cost.breakdown.per_input_token, 0.5);
    }

    #[test]
    fn huge_token_counts_do_not_overflow() {
        let cost = rule(1, MAX_PRICE * 1_000_000, MAX_PRICE * 1_000_000).cost(i64::MAX, i64::MAX);
        assert!(cost.credits > 0);
        assert_eq!(cost.credits, crate::ledger::MAX_CREDITS);
    }

    #[test]
    fn tokens_are_estimated_from_unicode_characters() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        // Four characters, ten bytes.
        assert_eq!(estimate_tokens("日本語!"), 1);
    }

    #[test]
    fn prices_convert_exactly_to_micros() {
        assert_eq!(price_to_micros("p", 0.001).unwrap(), 1_000);
        assert_eq!(price_to_micros("p", 2.5).unwrap(), 2_500_000);
        assert_eq!(price_to_micros("p", 0.000001).unwrap(), 1);
        assert!(price_to_micros("p", 0.0000001).is_err());
        assert!(price_to_micros("p", -1.0).is_err());
        assert!(price_to_micros("p", f64::NAN).is_err());
        assert!(price_to_micros("p", 2e6).is_err());
    }
}
