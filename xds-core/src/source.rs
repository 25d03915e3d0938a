//! The [`ResourceSource`] trait: the one seam between a registry and the transport.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use envoy_types::pb::envoy::config::core::v3::Node;
use tokio::sync::watch;

use crate::{Error, ResourceSet};

/// What a stream watches: the latest [`ResourceSet`] of one type for its node, or `None` while
/// the source has nothing for that node yet (the stream then waits instead of sending empty
/// configuration that would delete the client's resources).
///
/// A `watch` channel holds only the latest value: a slow stream skips intermediate versions
/// and never builds a backlog.
pub type ResourceWatch = watch::Receiver<Option<Arc<ResourceSet>>>;

/// Where a server's resources come from.
///
/// The server calls [`watch`](ResourceSource::watch) once per stream and type, when a client
/// first asks for that type, and then follows the channel: every value the source publishes
/// reaches the stream without polling. The same sets serve SotW and delta streams, since every
/// resource carries its own version.
///
/// Implementations map the node to whatever they store configuration under (see
/// [`NodeGrouper`](crate::NodeGrouper)) and may refuse a node or a type with an [`Error`].
///
/// # Example
///
/// A registry that serves the same clusters to every node:
///
/// ```
/// use std::sync::Arc;
/// use xds_core::{async_trait, envoy, type_url, Error, ResourceSet, ResourceSource, ResourceWatch, XdsResource};
/// use envoy::config::cluster::v3::Cluster;
/// use envoy::config::core::v3::Node;
/// use tokio::sync::watch;
///
/// struct Registry {
///     clusters: watch::Sender<Option<Arc<ResourceSet>>>,
/// }
///
/// impl Registry {
///     fn publish(&self, names: &[&str]) {
///         let set = ResourceSet::from_resources(
///             type_url::CLUSTER,
///             names.iter().map(|n| Cluster { name: n.to_string(), ..Default::default() }.encode_resource()),
///         );
///         self.clusters.send_replace(Some(Arc::new(set)));
///     }
/// }
///
/// #[async_trait]
/// impl ResourceSource for Registry {
///     async fn watch(&self, _node: &Node, type_url: &str) -> Result<ResourceWatch, Error> {
///         match type_url {
///             type_url::CLUSTER => Ok(self.clusters.subscribe()),
///             other => Err(Error::UnknownType(other.to_string())),
///         }
///     }
/// }
///
/// # tokio_test_block_on(async {
/// let registry = Registry { clusters: watch::channel(None).0 };
/// registry.publish(&["a", "b"]);
/// let node = Node { id: "n".into(), ..Default::default() };
/// let rx = registry.watch(&node, type_url::CLUSTER).await.unwrap();
/// assert_eq!(rx.borrow().as_ref().unwrap().len(), 2);
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[async_trait]
pub trait ResourceSource: Send + Sync + 'static {
    /// Starts following the resources of `type_url` for `node`.
    async fn watch(&self, node: &Node, type_url: &str) -> Result<ResourceWatch, Error>;
}

/// Hands the source's own future on, instead of boxing a second one around it (`async_trait`
/// would): a watch is made for every type every stream subscribes to.
impl<S: ResourceSource + ?Sized> ResourceSource for Arc<S> {
    fn watch<'s, 'n, 't, 'f>(
        &'s self,
        node: &'n Node,
        type_url: &'t str,
    ) -> Pin<Box<dyn Future<Output = Result<ResourceWatch, Error>> + Send + 'f>>
    where
        's: 'f,
        'n: 'f,
        't: 'f,
        Self: 'f,
    {
        (**self).watch(node, type_url)
    }
}
