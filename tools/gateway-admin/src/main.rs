//! Operator commands that are not requests.
//!
//! - `gateway-admin migrate`: creates the database of `DATABASE_URL` when
//!   missing, applies `migrations/`, and makes the MongoDB indexes of
//!   `MONGODB_URI` (all idempotent). The deploy step: the functions do not
//!   migrate at cold start in AWS (`MIGRATE_ON_START=false`).
//! - `gateway-admin openapi [--check]`: writes the API description (every
//!   function's, from the same declarations as the routers) to
//!   `openapi.yaml`, or with `--check` fails when that file differs.
//! - `gateway-admin serve [--port N]`: every function's router on one port,
//!   under the API Gateway paths, for load tests and for hosts where
//!   Lambda does not fit.
//! - `gateway-admin import-platform --auth-mongodb URI --proxy-mongodb URI
//!   --accounting-postgres URL [--dry-run] [--json]`: moves the replaced
//!   platform's users, credits, usage, chatflows, history and files in
//!   (README, "Moving in from the platform"; [`gateway_admin::import`]).

use gateway_admin::{migrate, openapi_yaml, serve};

#[tokio::main]
async fn main() -> Result<(), shared::BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "import-platform") {
        // Its standard output is its report.
        shared::telemetry::init_stderr();
    } else {
        shared::telemetry::init();
    }
    let flag = |name: &str| args.iter().any(|a| a == name);
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    match args.first().map(String::as_str) {
        Some("migrate") => migrate().await,
        Some("openapi") => write_openapi(flag("--check"), value("--out")),
        Some("serve") => {
            let port = value("--port").map(|p| p.parse()).transpose()?;
            serve(port.unwrap_or(8080)).await
        }
        Some("stand-in") => {
            let port = value("--port").map(|p| p.parse()).transpose()?;
            gateway_admin::stand_in(port.unwrap_or(3999)).await
        }
        Some("seed-demo") => gateway_admin::seed_demo().await,
        Some("import-platform") => {
            let required =
                |name: &str| value(name).ok_or_else(|| format!("import-platform needs {name}"));
            gateway_admin::import_platform(
                &required("--auth-mongodb")?,
                &required("--proxy-mongodb")?,
                &required("--accounting-postgres")?,
                flag("--dry-run"),
                flag("--json"),
            )
            .await
        }
        _ => {
            eprintln!(
                "usage: gateway-admin migrate | openapi [--check] [--out FILE] | serve [--port N] \
                 | stand-in [--port N] | seed-demo \
                 | import-platform --auth-mongodb URI --proxy-mongodb URI \
                 --accounting-postgres URL [--dry-run] [--json]"
            );
            std::process::exit(2);
        }
    }
}

fn write_openapi(check: bool, out: Option<String>) -> Result<(), shared::BoxError> {
    let path =
        out.unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi.yaml").into());
    let yaml = openapi_yaml()?;
    if check {
        let committed = std::fs::read_to_string(&path)?;
        if committed != yaml {
            eprintln!(
                "{path} differs from the routes' declarations: run `make openapi` and commit it"
            );
            std::process::exit(1);
        }
        return Ok(());
    }
    std::fs::write(&path, yaml)?;
    Ok(())
}
