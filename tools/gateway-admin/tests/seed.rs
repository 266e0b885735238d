//! `gateway-admin seed-demo` (what `make run` runs on its stores): the
//! first admin, a verified demo user with credits once, and the
//! stand-in's demo chatflow open to everyone; never credits for an account
//! the seed did not make, never twice.

use auth::bootstrap::Bootstrap;
use auth::store::AuthStore;
use gateway_admin::demo::{seed, DemoUser, Seeded, DEMO_CREDITS};
use shared::chat::chatflows;
use shared::config::{AdminBootstrap, Env, FlowiseConfig, Secret};
use shared::flowise::FlowiseClient;
use shared::flowise_double::{FlowiseDouble, DEMO_CHATFLOW_ID};
use shared::testing::{balance, grant, inconsistent_accounts, TestMongo, TestPostgres};
use shared::token::Role;

struct Stores {
    pg: TestPostgres,
    mongo: TestMongo,
    flowise: FlowiseClient,
    _double: FlowiseDouble,
}

async fn stores() -> Stores {
    let (pg, mongo) = tokio::join!(TestPostgres::new(), TestMongo::new());
    let double = FlowiseDouble::stand_in(0).await.unwrap();
    let env = Env::from_pairs([("FLOWISE_API_URL", double.url.as_str())]);
    let flowise = FlowiseClient::new(&FlowiseConfig::from_env(&env).unwrap()).unwrap();
    Stores {
        pg,
        mongo,
        flowise,
        _double: double,
    }
}

fn admin() -> AdminBootstrap {
    AdminBootstrap {
        username: "boss".into(),
        email: "boss@example.com".into(),
        password: Secret::new("boss-password-1"),
    }
}

fn demo() -> DemoUser {
    DemoUser::from_env(&Env::from_pairs(Vec::<(String, String)>::new()))
}

async fn run(s: &Stores) -> Seeded {
    seed(
        &s.mongo.stores,
        &s.pg.pool,
        &s.flowise,
        Some(&admin()),
        &demo(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn empty_stores_get_an_admin_a_demo_user_with_credits_and_a_public_demo_chatflow() {
    let s = stores().await;
    let first = run(&s).await;
    assert_eq!(first.admin, Some(Bootstrap::Created));
    assert_eq!(first.granted, DEMO_CREDITS);
    assert_eq!(first.sync_failed, None);
    let store = AuthStore::new(s.mongo.stores.auth.clone());
    let user = store.user_by_username("demo").await.unwrap().unwrap();
    assert_eq!(first.demo_user.as_deref(), Some(user.id.as_str()));
    assert!(user.is_verified, "the demo user signs in without a code");
    assert_eq!(user.role, Role::Enduser);
    assert_eq!(user.email, "demo@example.com");
    assert_eq!(balance(&s.pg.pool, &user.id).await, DEMO_CREDITS);
    let flow = chatflows::find(&s.mongo.stores.chat, DEMO_CHATFLOW_ID)
        .await
        .unwrap()
        .expect("the stand-in's chatflow is in the catalogue");
    assert!(flow.is_public, "everyone may use the demo chatflow");
    assert!(flow.name.contains("stand-in"), "{}", flow.name);

    // Again (every make run), and twice at once: nothing more.
    let (again, twice) = tokio::join!(run(&s), run(&s));
    for seeded in [again, twice] {
        assert_eq!(seeded.admin, Some(Bootstrap::Existed));
        assert_eq!(seeded.demo_user.as_deref(), Some(user.id.as_str()));
        assert_eq!(seeded.granted, 0);
    }
    assert_eq!(balance(&s.pg.pool, &user.id).await, DEMO_CREDITS);
    assert_eq!(inconsistent_accounts(&s.pg.pool).await, 0);
}

#[tokio::test]
async fn an_admin_who_made_the_demo_chatflow_private_keeps_it_private() {
    let s = stores().await;
    run(&s).await;
    let settings = chatflows::Settings {
        is_public: Some(false),
        ..chatflows::Settings::default()
    };
    chatflows::update_settings(&s.mongo.stores.chat, DEMO_CHATFLOW_ID, settings)
        .await
        .unwrap();
    run(&s).await;
    let flow = chatflows::find(&s.mongo.stores.chat, DEMO_CHATFLOW_ID)
        .await
        .unwrap()
        .unwrap();
    assert!(!flow.is_public);
}

#[tokio::test]
async fn someone_elses_account_under_the_demo_name_gets_no_credits() {
    let s = stores().await;
    let store = AuthStore::new(s.mongo.stores.auth.clone());
    // Someone signed up as "demo" with an address of their own.
    let squatter = auth::routes::account::new_user(
        &shared::identity::Username::parse("u", "demo").unwrap(),
        &shared::identity::Email::parse("e", "mallory@example.com").unwrap(),
        &shared::identity::Password::parse("p", "mallory-password").unwrap(),
        Role::Enduser,
        true,
    )
    .await
    .unwrap();
    store.insert_user(&squatter).await.unwrap();
    let seeded = run(&s).await;
    assert_eq!(seeded.demo_user, None);
    assert_eq!(seeded.granted, 0);
    assert_eq!(balance(&s.pg.pool, &squatter.id).await, 0);
    assert!(store
        .user_by_email("demo@example.com")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn a_demo_user_the_ledger_knows_already_is_not_topped_up() {
    let s = stores().await;
    let first = run(&s).await;
    let id = first.demo_user.unwrap();
    // An admin's grant since, then make run again: the seed adds nothing.
    grant(&s.pg.pool, &id, 5).await;
    let before = balance(&s.pg.pool, &id).await;
    assert_eq!(run(&s).await.granted, 0);
    assert_eq!(balance(&s.pg.pool, &id).await, before);
}
