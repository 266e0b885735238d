//! A TCP proxy that counts round trips: put in front of PostgreSQL or
//! MongoDB, it forwards bytes both ways and counts, per connection, each
//! time the client speaks after the server did (or first). Statements sent
//! together (a pipelined Parse/Bind/Execute/Sync) count once; statements
//! on two connections at the same time count twice. It also adds up how
//! long the client waited: from the round trip's first byte until the
//! server's first byte back (the server's work and the loopback, not the
//! proxy's own hop in front). It sees the wire, so it counts any build of
//! the functions alike (the benchmark's baseline too).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy; it stops with the process.
pub struct CountingProxy {
    /// Where clients connect.
    pub address: SocketAddr,
    tally: Arc<Tally>,
}

/// What every connection adds to.
#[derive(Default)]
struct Tally {
    round_trips: AtomicU64,
    /// Nanoseconds spent waiting for the server's first byte back.
    waited: AtomicU64,
}

impl CountingProxy {
    /// Listens on an ephemeral port and forwards every connection to
    /// `target`.
    pub async fn start(target: SocketAddr) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let tally = Arc::new(Tally::default());
        let counter = tally.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        relay(client, server, counter).await;
                    }
                });
            }
        });
        CountingProxy { address, tally }
    }

    /// Round trips so far, over every connection.
    pub fn round_trips(&self) -> u64 {
        self.tally.round_trips.load(Ordering::SeqCst)
    }

    /// Time spent waiting for the server so far, over every connection
    /// (two connections waiting at once count twice).
    pub fn waited(&self) -> Duration {
        Duration::from_nanos(self.tally.waited.load(Ordering::SeqCst))
    }
}

/// Pumps both ways; a client write after a server write is a round trip,
/// which lasts until the server's next write.
async fn relay(client: TcpStream, server: TcpStream, tally: Arc<Tally>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // When the round trip under way began: set while the client has the
    // floor (it spoke last), none once the server answered.
    let began = Arc::new(Mutex::new(None::<Instant>));
    let (began_up, counter) = (began.clone(), tally.clone());
    let upstream = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            {
                let mut began = began_up.lock().expect("unpoisoned");
                if began.is_none() {
                    counter.round_trips.fetch_add(1, Ordering::SeqCst);
                    *began = Some(Instant::now());
                }
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let downstream = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(at) = began.lock().expect("unpoisoned").take() {
                let nanos = u64::try_from(at.elapsed().as_nanos()).unwrap_or(u64::MAX);
                tally.waited.fetch_add(nanos, Ordering::SeqCst);
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}
