//! Relaying bytes between two plain TCP sockets with one syscall less per message than a
//! generic copy loop.
//!
//! A generic loop reads until the socket says "would block", so every message costs a
//! second, empty `recv`. PostgreSQL traffic is small request/response messages, so here a
//! short read (fewer bytes than the buffer holds) is taken as "drained": the readiness is
//! cleared through `try_io` without that extra call. This is race-free because tokio only
//! clears readiness that was observed before the read; data that arrives meanwhile sets it
//! again.

use crate::meters::Tally;
use std::io;
use std::os::fd::AsRawFd;
use tokio::io::Interest;
use tokio::net::TcpStream;

const BUF: usize = 16 * 1024;

/// Copies `src` to `dst` until `src` reaches end of file, then half-closes `dst`; `copied`
/// is told every chunk written.
async fn pump(src: &TcpStream, dst: &TcpStream, copied: impl Fn(usize)) -> io::Result<()> {
    let mut buf = vec![0u8; BUF];
    loop {
        src.readable().await?;
        let mut drained = 0usize;
        let res = src.try_io(Interest::READABLE, || {
            let n = nix::sys::socket::recv(src.as_raw_fd(), &mut buf, nix::sys::socket::MsgFlags::empty())
                .map_err(io::Error::from)?;
            if n > 0 && n < BUF {
                drained = n;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        let n = match res {
            Ok(0) => {
                let _ = nix::sys::socket::shutdown(dst.as_raw_fd(), nix::sys::socket::Shutdown::Write);
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if drained == 0 {
                    continue;
                }
                drained
            }
            Err(e) => return Err(e),
        };
        let mut off = 0;
        while off < n {
            match dst.try_write(&buf[off..n]) {
                Ok(k) => off += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
                Err(e) => return Err(e),
            }
        }
        copied(n);
    }
}

/// Relays both ways between a client and a server until both directions have ended, or
/// either fails; what passes is added to `tally`.
pub(crate) async fn relay(client: TcpStream, server: TcpStream, tally: &Tally) -> io::Result<()> {
    let up = pump(&client, &server, |n| tally.add_in(n));
    let down = pump(&server, &client, |n| tally.add_out(n));
    tokio::pin!(up, down);
    tokio::select! {
        r = &mut up => { r?; down.await }
        r = &mut down => { r?; up.await }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn relays_small_and_large_messages_and_half_close() {
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (baddr, faddr) = (backend.local_addr().unwrap(), front.local_addr().unwrap());
        // Echo server.
        tokio::spawn(async move {
            let (mut s, _) = backend.accept().await.unwrap();
            let mut data = Vec::new();
            s.read_to_end(&mut data).await.unwrap();
            s.write_all(&data).await.unwrap();
        });
        tokio::spawn(async move {
            let (c, _) = front.accept().await.unwrap();
            let b = TcpStream::connect(baddr).await.unwrap();
            relay(c, b, &Tally::none()).await.unwrap();
        });
        let mut client = TcpStream::connect(faddr).await.unwrap();
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(b"x").await.unwrap();
        client.write_all(&payload).await.unwrap();
        client.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back.len(), payload.len() + 1);
        assert_eq!(&back[1..], &payload[..]);
    }
}
