//! Reading the one JSON secret named by `SECRETS_ARN` from AWS Secrets
//! Manager (README §2). Parsing and overlaying it is [`crate::config::Env`]'s job.

use anyhow::Context;

/// Fetches the secret's string value. Called once per cold start, and only
/// when `SECRETS_ARN` is set; the credentials come from the Lambda role.
pub async fn fetch_secret_string(secret_id: &str) -> anyhow::Result<String> {
    let sdk_config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let client = aws_sdk_secretsmanager::Client::new(&sdk_config);
    let output = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .context("Failed to read the secret from Secrets Manager")?;
    output
        .secret_string()
        .map(str::to_owned)
        .context("the secret has no string value (binary secrets are not supported)")
}
