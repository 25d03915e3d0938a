//! `custom-source`: the smallest application that plugs its own registry into the server by
//! implementing [`ResourceSource`], instead of feeding a `SnapshotCache`.
//!
//! ```text
//! cargo run -p xds-examples --bin custom-source -- 127.0.0.1:18000
//! ```
//!
//! It serves `xds:///myservice` and moves it between two backends every ten seconds, to show
//! that whatever the registry publishes reaches connected clients at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use xds_core::envoy::config::core::v3::Node;
use xds_core::{async_trait, type_url, Error, ResourceSet, ResourceSource, ResourceWatch};
use xds_core::{EncodedResource, XdsResource};
use xds_examples::registry::Service;
use xds_examples::resources;
use xds_server::XdsServer;

/// The application's registry: for each resource type, a watch channel holding the latest
/// set. A `watch` keeps only the newest value, so a slow client skips stale versions.
struct Registry {
    channels: HashMap<&'static str, watch::Sender<Option<Arc<ResourceSet>>>>,
}

impl Registry {
    fn new() -> Self {
        let types = [type_url::LISTENER, type_url::ROUTE, type_url::CLUSTER, type_url::ENDPOINT];
        // `None` = "nothing yet": streams wait instead of sending clients an empty config.
        Self { channels: types.into_iter().map(|t| (t, watch::channel(None).0)).collect() }
    }

    /// Publishes one service: the Listener, route, Cluster and endpoints gRPC clients need
    /// for `xds:///NAME` (built by the sidecar's `resources` module).
    fn publish(&self, service: &Service) {
        let name = &service.name;
        self.set(type_url::LISTENER, resources::listener(name).encode_resource());
        self.set(type_url::ROUTE, resources::route_configuration(name).encode_resource());
        self.set(type_url::CLUSTER, resources::cluster(service).encode_resource());
        self.set(type_url::ENDPOINT, resources::load_assignment(service).encode_resource());
    }

    /// Replaces the set of one type. Each resource was encoded once, above, and its version
    /// derived from its bytes: republishing identical content sends nothing to clients.
    fn set(&self, type_url: &str, resource: EncodedResource) {
        if let Some(channel) = self.channels.get(type_url) {
            let set = ResourceSet::from_resources(type_url, [resource]);
            channel.send_replace(Some(Arc::new(set)));
        }
    }
}

/// The one seam between an application and the server: called once per stream and type.
#[async_trait]
impl ResourceSource for Registry {
    async fn watch(&self, _node: &Node, type_url: &str) -> Result<ResourceWatch, Error> {
        // Every node gets the same configuration; a multi-tenant registry would pick by node.
        match self.channels.get(type_url) {
            Some(channel) => Ok(channel.subscribe()),
            None => Err(Error::UnknownType(type_url.to_string())),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18000".to_string());
    let addr: SocketAddr = addr.parse().map_err(|e| format!("usage: custom-source [IP:PORT]: {addr:?}: {e}"))?;

    let backends: [SocketAddr; 2] = ["127.0.0.1:50051".parse()?, "127.0.0.1:50052".parse()?];
    let service = |i: usize| Service::new("myservice", [backends[i % 2]]);
    let registry = Arc::new(Registry::new());
    registry.publish(&service(0));

    // The server holds the registry as its source (an `Arc<Registry>` is one too).
    let server = XdsServer::builder().build(registry.clone()).serve(addr, async {
        let _ = tokio::signal::ctrl_c().await;
    });
    // The application keeps updating its registry while the server runs; both futures are
    // owned by `main`, so nothing outlives it.
    let updates = async {
        for i in 1.. {
            tokio::time::sleep(Duration::from_secs(10)).await;
            tracing::info!(endpoint = %backends[i % 2], "moving myservice");
            registry.publish(&service(i));
        }
    };
    tokio::select! {
        served = server => served?,
        () = updates => {}
    }
    Ok(())
}
