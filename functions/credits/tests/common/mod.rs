//! The credits function in-process for tests, against a fresh PostgreSQL
//! database. Each test file adds the helpers it needs in its own `impl App`.

use shared::testing::{self, TestClient, TestPostgres};

pub struct App {
    pub client: TestClient,
    pub db: TestPostgres,
}

impl std::ops::Deref for App {
    type Target = TestClient;
    fn deref(&self) -> &TestClient {
        &self.client
    }
}

impl App {
    pub async fn new() -> App {
        let db = TestPostgres::new().await;
        let state = credits::AppState {
            jwt: testing::jwt_keys(),
            pg: db.pool.clone(),
        };
        App {
            client: TestClient::new(credits::router(state)),
            db,
        }
    }
}
