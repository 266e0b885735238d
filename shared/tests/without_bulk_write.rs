//! A server without MongoDB 8.0's `bulkWrite` still gets every turn's
//! history: the process falls back to one command a write, for good, both
//! when the driver refuses the command (a server before 8.0) and when the
//! server turns it away. A file of its own: the fallback is remembered for
//! the whole process, and no other test should run after it.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

use bson::doc;
use shared::chat::sessions;
use shared::config::{MongoConfig, Secret};
use shared::db::batch::{self, Batching, Write};
use shared::db::mongo::{self, MongoStores};
use shared::testing::{mongodb_base_uri, TestMongo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};

/// What a proxy does to the bytes going one way.
type Rewrite = fn(&mut [u8]);

/// Replaces the first `from` in `chunk` with `to` (the same length).
fn replace(chunk: &mut [u8], from: &[u8], to: &[u8]) {
    if let Some(at) = chunk.windows(from.len()).position(|w| w == from) {
        chunk[at..at + to.len()].copy_from_slice(to);
    }
}

/// Makes the server look like MongoDB 7.0: an answer's `maxWireVersion`
/// (an int32 element: type, name, value) reads 21.
fn as_mongodb_7(chunk: &mut [u8]) {
    let field = b"\x10maxWireVersion\x00";
    if let Some(at) = chunk.windows(field.len()).position(|w| w == field) {
        let value = at + field.len();
        chunk[value..value + 4].copy_from_slice(&21i32.to_le_bytes());
    }
}

/// Renames the command the client sends, so the server does not know it.
fn without_bulk_write(chunk: &mut [u8]) {
    replace(chunk, b"bulkWrite\x00", b"bulkWritX\x00");
}

fn unchanged(_: &mut [u8]) {}

/// Pumps `from` into `to`, rewriting each chunk.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    rewrite: Rewrite,
) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        rewrite(&mut buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

/// A proxy in front of `target` that rewrites what goes `up` to the server
/// and `down` to the client; returns a URI through it.
async fn proxy(
    target: impl ToSocketAddrs + Clone + Send + 'static,
    up: Rewrite,
    down: Rewrite,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(target.clone())
                .await
                .expect("the test server");
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pump(client_read, server_write, up));
            tokio::spawn(pump(server_read, client_write, down));
        }
    });
    // Straight to the proxy: not to the members the server names.
    format!("mongodb://{address}/?directConnection=true")
}

/// A client of `mongo`'s databases through a proxy doing `up` and `down`.
async fn through(mongo: &TestMongo, up: Rewrite, down: Rewrite) -> MongoStores {
    let base = reqwest::Url::parse(&mongodb_base_uri()).expect("a URI");
    let target = format!(
        "{}:{}",
        base.host_str().expect("host"),
        base.port().expect("port")
    );
    let config = MongoConfig {
        uri: Secret::new(proxy(target, up, down).await),
        ..mongo.config.clone()
    };
    mongo::connect(&config).await.expect("a client")
}

/// One insert into `a`.
fn one_insert() -> Vec<Write> {
    vec![Write::Insert {
        collection: "a",
        documents: vec![doc! {"k": 1}],
    }]
}

#[tokio::test]
async fn without_bulk_write_a_turn_is_one_command_a_write_from_then_on() {
    let mongo = TestMongo::new().await;
    let real = &mongo.stores.chat;
    let count = || async {
        let a = real.collection::<bson::Document>("a");
        a.count_documents(doc! {}).await.expect("a count")
    };

    // A server that says 8.0 but turns bulkWrite away: nothing written.
    let refusing = through(&mongo, without_bulk_write, unchanged).await;
    let refused = batch::write_as(&refusing.chat, &one_insert(), Batching::OneCommand).await;
    let err = refused.expect_err("the server does not know the command");
    assert!(batch::lacks_bulk_write(&err), "{err}");
    assert_eq!(count().await, 0, "nothing was written");

    // Before 8.0, the driver refuses it itself, sending nothing.
    let old = through(&mongo, unchanged, as_mongodb_7).await;
    let refused = batch::write_as(&old.chat, &one_insert(), Batching::OneCommand).await;
    let err = refused.expect_err("no bulkWrite below 8.0");
    assert!(batch::lacks_bulk_write(&err), "{err}");
    assert_eq!(count().await, 0, "nothing was written");

    // A turn through the refusing server is stored all the same, and the
    // process remembers: the next one goes one command a write at once.
    assert_eq!(batch::batching(), Batching::OneCommand);
    for (n, question) in ["Hi", "Again"].into_iter().enumerate() {
        let session = sessions::new_session("u1", "flow", question);
        let turn = vec![sessions::NewMessage {
            message_id: uuid::Uuid::new_v4().to_string(),
            role: "user",
            content: question.to_owned(),
            status: "complete",
            file_ids: Vec::new(),
            metadata: doc! {},
        }];
        sessions::record(&refusing.chat, &session, true, turn, &[])
            .await
            .unwrap_or_else(|e| panic!("turn {n} recorded one command a write: {e}"));
        assert_eq!(batch::batching(), Batching::PerWrite);
        let stored = sessions::owned(real, &session.session_id, "u1").await;
        assert_eq!(stored.expect("the session").message_count, 1);
    }
}
