//! A prediction's history in MongoDB: one batch stores the session, its
//! messages and the files they used (one `bulkWrite` where the server
//! takes it, one command a write where it does not), a session moves on
//! atomically, and a session deleted meanwhile takes its messages back.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

use bson::doc;
use mongodb::Database;
use shared::chat::files;
use shared::chat::sessions::{self, transcript_after, NewMessage, SessionDoc};
use shared::db::batch::{self, Batching, Write};
use shared::error::ApiError;
use shared::testing::TestMongo;

fn turn(question: &str, answer: &str) -> Vec<NewMessage> {
    let message = |role, content: &str| NewMessage {
        message_id: uuid::Uuid::new_v4().to_string(),
        role,
        content: content.to_owned(),
        status: "complete",
        file_ids: Vec::new(),
        metadata: doc! {},
    };
    vec![message("user", question), message("assistant", answer)]
}

async fn contents(db: &Database, session_id: &str) -> Vec<String> {
    let (messages, _) = sessions::messages_page(db, session_id, 1, 100)
        .await
        .expect("messages");
    messages.into_iter().map(|m| m.content).collect()
}

async fn stored(db: &Database, session_id: &str, user: &str) -> SessionDoc {
    sessions::owned(db, session_id, user)
        .await
        .expect("the session")
}

async fn a_file(db: &Database, owner: &str) -> String {
    files::store(db, owner, "a.txt", "text/plain", b"hello".to_vec(), 1024)
        .await
        .expect("a stored file")
        .file_id
}

/// A new session of u1 whose first turn is `question` and `answer`, sent
/// with the stored `files`; returns its id.
async fn first_turn(db: &Database, question: &str, answer: &str, files: &[String]) -> String {
    let session = sessions::new_session("u1", "flow", question);
    sessions::record(db, &session, true, turn(question, answer), files)
        .await
        .expect("recorded");
    session.session_id
}

#[tokio::test]
async fn a_turn_stores_the_session_its_messages_and_attaches_its_files() {
    let mongo = TestMongo::new().await;
    let db = &mongo.stores.chat;
    let file = a_file(db, "u1").await;
    let theirs = a_file(db, "u2").await;
    let id = first_turn(db, "Hi there", "Hello!", &[file.clone(), theirs.clone()]).await;

    let found = stored(db, &id, "u1").await;
    assert_eq!(found.message_count, 2);
    let digest = transcript_after("", [("user", "Hi there"), ("assistant", "Hello!")]);
    assert_eq!(found.transcript.as_deref(), Some(digest.as_str()));
    assert_eq!(contents(db, &id).await, ["Hi there", "Hello!"]);
    let attached = files::owned(db, &file, "u1").await.expect("the file");
    assert_eq!(attached.session_id.as_deref(), Some(id.as_str()));
    // Another user's file is never attached to u1's session.
    let untouched = files::owned(db, &theirs, "u2").await.expect("their file");
    assert_eq!(untouched.session_id, None);

    // A file already attached keeps its first session.
    first_turn(db, "Again", "Yes", std::slice::from_ref(&file)).await;
    let kept = files::owned(db, &file, "u1").await.expect("the file");
    assert_eq!(kept.session_id.as_deref(), Some(id.as_str()));
}

/// A new session of u1 with one turn, as read back.
async fn one_turn(db: &Database) -> SessionDoc {
    let id = first_turn(db, "One", "1", &[]).await;
    stored(db, &id, "u1").await
}

/// The next turn in `session` as it was read.
async fn next_turn(db: &Database, session: &SessionDoc, question: &str) -> Result<(), ApiError> {
    sessions::record(db, session, false, turn(question, "ok"), &[]).await
}

#[tokio::test]
async fn a_session_moves_on_and_a_race_drops_its_transcript() {
    let mongo = TestMongo::new().await;
    let db = &mongo.stores.chat;
    let read = one_turn(db).await;
    let id = read.session_id.clone();

    // The next turn, from the session as read: the transcript moves on.
    next_turn(db, &read, "Two").await.expect("recorded");
    let after = stored(db, &id, "u1").await;
    assert_eq!(after.message_count, 4);
    let expected = transcript_after(
        read.transcript.as_deref().expect("a transcript"),
        [("user", "Two"), ("assistant", "ok")],
    );
    assert_eq!(after.transcript.as_deref(), Some(expected.as_str()));
    assert!(after.updated_at >= read.updated_at);

    // A turn from a stale read (another turn moved the session meanwhile):
    // the count still moves, the transcript is dropped.
    next_turn(db, &read, "Three").await.expect("recorded");
    let raced = stored(db, &id, "u1").await;
    assert_eq!(raced.message_count, 6);
    assert_eq!(raced.transcript, None);
    assert_eq!(contents(db, &id).await.len(), 6);

    // Unknown stays unknown.
    next_turn(db, &raced, "Four").await.expect("recorded");
    let unknown = stored(db, &id, "u1").await;
    assert_eq!((unknown.message_count, unknown.transcript), (8, None));
}

#[tokio::test]
async fn a_session_deleted_meanwhile_takes_its_messages_back_out() {
    let mongo = TestMongo::new().await;
    let db = &mongo.stores.chat;
    let read = one_turn(db).await;
    let id = read.session_id.clone();
    let file = a_file(db, "u1").await;
    sessions::delete(db, &id).await.expect("deleted");

    let turn = turn("Two", "2");
    let err = sessions::record(db, &read, false, turn, std::slice::from_ref(&file))
        .await
        .expect_err("the session is gone");
    assert_eq!(err.status().as_u16(), 404);
    assert!(contents(db, &id).await.is_empty());
    let file = files::owned(db, &file, "u1").await.expect("the file");
    assert_eq!(file.session_id, None, "the attachment was taken back");
}

/// Two inserts into one collection, one into another, an update that
/// matches (the document `{k: 0}` that was in `a` before) and one that does
/// not, and an empty insert. None depends on another: a batch's writes
/// may run in any order.
fn writes() -> Vec<Write> {
    vec![
        Write::Insert {
            collection: "a",
            documents: vec![doc! {"k": 1}, doc! {"k": 2}],
        },
        Write::Insert {
            collection: "b",
            documents: vec![doc! {"k": 3}],
        },
        Write::Update {
            collection: "a",
            filter: doc! {"k": 0},
            update: doc! {"$set": {"seen": true}}.into(),
        },
        Write::Update {
            collection: "b",
            filter: doc! {"k": 99},
            update: doc! {"$set": {"seen": true}}.into(),
        },
        Write::Insert {
            collection: "b",
            documents: vec![],
        },
    ]
}

#[tokio::test]
async fn both_batchings_write_the_same_and_count_each_write() {
    for batching in [Batching::OneCommand, Batching::PerWrite] {
        let mongo = TestMongo::new().await;
        let db = &mongo.stores.chat;
        let a = db.collection::<bson::Document>("a");
        a.insert_one(doc! {"k": 0})
            .await
            .expect("the document to update");
        // Each write runs once: 2 inserted, 1 inserted, 1 matched, 0, 0.
        let counts = batch::write_as(db, &writes(), batching)
            .await
            .expect("written");
        assert_eq!(counts, [2, 1, 1, 0, 0], "{batching:?}");
        assert_eq!(a.count_documents(doc! {}).await.unwrap(), 3);
        assert_eq!(a.count_documents(doc! {"seen": true}).await.unwrap(), 1);
        let b = db.collection::<bson::Document>("b");
        assert_eq!(b.count_documents(doc! {}).await.unwrap(), 1);
        assert_eq!(b.count_documents(doc! {"seen": true}).await.unwrap(), 0);
    }
}
