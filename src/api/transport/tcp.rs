//! Plain TCP: public endpoints for anonymous peers.

use std::future::Ready;
use std::io;

use tokio::net::{TcpListener, TcpStream};

use super::Acceptor;
use crate::identity::Principal;
use crate::telemetry::Transport;

impl Acceptor for TcpListener {
    const TRANSPORT: Transport = Transport::Tcp;
    type Io = TcpStream;
    type Pending = Ready<Option<(TcpStream, Principal)>>;

    async fn accept(&self) -> io::Result<Self::Pending> {
        let (stream, addr) = TcpListener::accept(self).await?;
        Ok(std::future::ready(Some((
            stream,
            Principal::Anonymous(Some(addr)),
        ))))
    }
}
