//! The latency floor of the load benchmark (`scripts/bench.sh`, workload W3): a TCP relay that
//! does nothing but copy bytes, to show what one extra hop costs on the machine by itself.
//!
//! Any proxy, keyward or twemproxy, puts a second loopback round trip between a client and
//! Redis: two more socket writes, two more reads and two more wake-ups per request. This relay
//! pays exactly that and nothing else: two threads per connection, each blocked in `read` on
//! one socket and writing what it got to the other, with `TCP_NODELAY` on both (no event loop,
//! no parsing, no buffering beyond one read). A proxy's W3 latency can approach this relay's,
//! not go below it; the benchmark reports the relay's ratio to direct Redis next to keyward's.
//!
//! Not part of keyward. Usage: `floor_relay LISTEN_ADDR UPSTREAM_ADDR`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;

/// Copies `from` to `to` until either side closes or fails, then closes `to`'s sending side.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Relays one client connection until both directions are done.
fn relay(client: TcpStream, upstream: &str) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream)?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_in, server_out) = (client.try_clone()?, server.try_clone()?);
    let requests = thread::spawn(move || pump(client_in, server_out));
    pump(server, client);
    let _ = requests.join();
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, upstream] = args.as_slice() else {
        eprintln!("usage: floor_relay LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let listener = TcpListener::bind(listen).unwrap_or_else(|e| {
        eprintln!("floor_relay: cannot listen on {listen}: {e}");
        std::process::exit(1);
    });
    for client in listener.incoming().flatten() {
        let upstream = upstream.clone();
        thread::spawn(move || {
            if let Err(e) = relay(client, &upstream) {
                eprintln!("floor_relay: {e}");
            }
        });
    }
}
