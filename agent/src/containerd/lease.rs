//! A containerd lease over an import. containerd's garbage collector takes
//! every blob and snapshot that nothing refers to, and an import writes
//! children before what refers to them: the layers before the manifest that
//! names them, the manifest before the image record. A collection in
//! between (containerd runs one 100 ms after it starts, then after every
//! 100 changes) took a freshly written layer in CI, and the unpack that
//! followed found no content. Whatever is written under a lease is kept
//! until the lease ends, by which time the image record holds it all.

use std::collections::HashMap;

use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::{CreateRequest, DeleteRequest};
use containerd_client::tonic;

use super::{Containerd, ContainerdError, within};

impl Containerd {
    /// A connection whose calls hold the lease `id` in `namespace`. A
    /// lease of that id left by an import that was cut off is replaced.
    pub async fn leased(&self, namespace: &str, id: &str) -> Result<Containerd, ContainerdError> {
        let plain = self.without_lease();
        plain.delete_lease(namespace, id).await?;
        let mut leases = LeasesClient::new(plain.channel.clone());
        let req = plain.request(
            namespace,
            CreateRequest {
                id: id.to_string(),
                labels: HashMap::new(),
            },
        )?;
        within(&format!("create lease {id}"), leases.create(req)).await?;
        Ok(Containerd {
            channel: plain.channel,
            lease: Some(id.to_string()),
        })
    }

    /// Ends this connection's lease: what it kept alive is now kept only
    /// by what refers to it.
    pub async fn release(self, namespace: &str) -> Result<(), ContainerdError> {
        match &self.lease {
            Some(id) => self.without_lease().delete_lease(namespace, id).await,
            None => Ok(()),
        }
    }

    fn without_lease(&self) -> Containerd {
        Containerd {
            channel: self.channel.clone(),
            lease: None,
        }
    }

    async fn delete_lease(&self, namespace: &str, id: &str) -> Result<(), ContainerdError> {
        let mut leases = LeasesClient::new(self.channel.clone());
        let req = self.request(
            namespace,
            DeleteRequest {
                id: id.to_string(),
                sync: false,
            },
        )?;
        match within(&format!("delete lease {id}"), leases.delete(req)).await {
            Ok(_) => Ok(()),
            Err(ContainerdError::Call { status, .. }) if status.code() == tonic::Code::NotFound => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
