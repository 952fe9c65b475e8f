//! A lying node for integrity tests, without fault-injection code in production.
//!
//! A [`LyingProxy`] is a QUIC endpoint that presents node j's genuine certificate and key (from
//! the cluster directory), forwards every request to the real node j under a reader identity,
//! and passes each `Response::Share` envelope through a `tamper` function before answering.
//! Pointing node j's manifest address at the proxy makes node j lie to that client.

use std::net::SocketAddr;
use std::sync::Arc;

use bunsan_client::tls::{quic_server_config, server_tls_config, Identity};
use bunsan_client::{Client, ClientOptions};
use bunsan_cluster::local::LocalCluster;
use bunsan_protocol::envelope::ShareEnvelope;
use bunsan_protocol::frame::{self, FRAME_MAX_BYTES, PREFIX_BYTES};
use bunsan_protocol::message::{ErrorCode, RemoteError, Request, Response};

/// What a lying node does to every share it forwards.
pub type Tamper = Arc<dyn Fn(&mut ShareEnvelope) + Send + Sync>;

/// A running lying proxy in front of one node; stops when dropped.
pub struct LyingProxy {
    endpoint: quinn::Endpoint,
    index: u8,
}

impl LyingProxy {
    /// Starts a proxy for node `index` of `cluster` that applies `tamper` to every data share.
    pub fn start(cluster: &LocalCluster, index: u8, tamper: Tamper) -> LyingProxy {
        let identity = Identity::load(&cluster.dir().join(format!("nodes/node-{index}")))
            .expect("the node identity");
        let tls = server_tls_config(&identity, Vec::new()).expect("TLS server config");
        let server = quic_server_config(tls).expect("QUIC server config");
        let endpoint = quinn::Endpoint::server(server, "127.0.0.1:0".parse().expect("address"))
            .expect("bind the proxy");
        let upstream = Arc::new(crate::client(cluster, "reader"));
        let node_id = format!("node-{index}");
        let accepting = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                let (upstream, node_id, tamper) =
                    (upstream.clone(), node_id.clone(), tamper.clone());
                tokio::spawn(async move {
                    let Ok(connection) = incoming.await else {
                        return;
                    };
                    while let Ok((send, recv)) = connection.accept_bi().await {
                        let (upstream, node_id, tamper) =
                            (upstream.clone(), node_id.clone(), tamper.clone());
                        tokio::spawn(forward(send, recv, upstream, node_id, tamper));
                    }
                });
            }
        });
        LyingProxy { endpoint, index }
    }

    /// The proxy's address.
    pub fn address(&self) -> SocketAddr {
        self.endpoint.local_addr().expect("bound")
    }
}

impl Drop for LyingProxy {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"proxy stopped");
    }
}

/// A reader of `cluster` that reaches the nodes of `proxies` through them.
pub fn reader_via(cluster: &LocalCluster, proxies: &[&LyingProxy]) -> Client {
    let mut manifest = cluster.manifest().clone();
    for proxy in proxies {
        manifest.nodes[usize::from(proxy.index) - 1].addresses = vec![proxy.address()];
    }
    let identity =
        Identity::load(&cluster.dir().join("clients/reader")).expect("the reader identity");
    let options = ClientOptions {
        timeout: std::time::Duration::from_secs(5),
        // Every node is up in these tests: wait for all of them, so each liar is named even
        // when its share was not needed, however loaded the machine.
        read_grace: std::time::Duration::from_secs(5),
        read_all_shares: true,
        ..ClientOptions::default()
    };
    Client::new(manifest, identity, options).expect("a client")
}

async fn forward(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    upstream: Arc<Client>,
    node_id: String,
    tamper: Tamper,
) {
    let Ok(bytes) = recv
        .read_to_end(FRAME_MAX_BYTES as usize + PREFIX_BYTES)
        .await
    else {
        return;
    };
    let mut response = match frame::decode::<Request>(&bytes, FRAME_MAX_BYTES, "request") {
        Ok(request) => upstream.call(&node_id, &request).await.unwrap_or_else(|e| {
            Response::Error(RemoteError {
                code: ErrorCode::Unavailable,
                message: e.to_string(),
            })
        }),
        Err(e) => Response::Error(RemoteError {
            code: ErrorCode::BadRequest,
            message: e.to_string(),
        }),
    };
    if let Response::Share(envelope) = &mut response {
        if !envelope.header.tombstone {
            tamper(envelope);
        }
    }
    if let Ok(bytes) = frame::encode(&response, "response") {
        let _ = send.write_all(&bytes).await;
        let _ = send.finish();
        let _ = send.stopped().await;
    }
}
