//! The connection to the API server: which configuration (flag, KUBECONFIG,
//! ~/.kube/config, the pod's service account), and a runtime for the client.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use kube::config::{Config, KubeConfigOptions, Kubeconfig};

use crate::run::usage;

/// API calls the client has in flight at once, at most: hundreds of nodes
/// are asked a bounded number of things at a time, not all at once.
pub const CONCURRENT_CALLS: usize = 32;

pub struct Kube {
    rt: tokio::runtime::Runtime,
    pub client: kube::Client,
    /// Where the configuration came from, for messages.
    pub source: String,
    /// Bounds the calls made for many nodes at once.
    pub limit: Limit,
}

/// At most so many calls at a time: each waits its turn.
#[derive(Clone)]
pub struct Limit(Arc<tokio::sync::Semaphore>);

impl Limit {
    pub fn new(calls: usize) -> Limit {
        Limit(Arc::new(tokio::sync::Semaphore::new(calls.max(1))))
    }

    /// Runs the call `f` in its turn.
    pub async fn run<F: Future>(&self, f: F) -> F::Output {
        // The semaphore is never closed: a permit always comes.
        let _turn = self.0.acquire().await;
        f.await
    }
}

impl Kube {
    /// Connects as kubectl would: `--kubeconfig`, else `$KUBECONFIG`, else
    /// `~/.kube/config`, else the service account of the pod it runs in.
    pub fn connect(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Kube> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("the Kubernetes client's runtime")?;
        let (config, source) = rt.block_on(config(kubeconfig, context))?;
        let client = {
            let _in_rt = rt.enter();
            kube::Client::try_from(config)
                .map_err(|e| usage(format!("the Kubernetes client ({source}): {e}")))?
        };
        Ok(Kube {
            rt,
            client,
            source,
            limit: Limit::new(CONCURRENT_CALLS),
        })
    }

    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn handle(&self) -> tokio::runtime::Handle {
        self.rt.handle().clone()
    }
}

async fn config(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<(Config, String)> {
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..KubeConfigOptions::default()
    };
    let file = |path: PathBuf| -> Result<(Kubeconfig, String)> {
        let k = Kubeconfig::read_from(&path).map_err(|e| {
            usage(format!(
                "cannot read the kubeconfig {}: {e}; give a readable one with --kubeconfig FILE",
                path.display()
            ))
        })?;
        Ok((k, path.display().to_string()))
    };
    let home = std::env::home_dir().map(|h| h.join(".kube").join("config"));
    let found = if let Some(p) = kubeconfig {
        Some(file(p.to_path_buf())?)
    } else if let Some(v) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        let k = Kubeconfig::from_env()
            .map_err(|e| {
                usage(format!(
                    "cannot read KUBECONFIG={}: {e}",
                    v.to_string_lossy()
                ))
            })?
            .ok_or_else(|| usage("KUBECONFIG names no file"))?;
        Some((k, format!("KUBECONFIG={}", v.to_string_lossy())))
    } else if let Some(h) = home.filter(|h| h.exists()) {
        Some(file(h)?)
    } else {
        None
    };
    let Some((k, source)) = found else {
        if context.is_none() && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
            let c = Config::incluster().map_err(|e| {
                usage(format!(
                    "in-cluster configuration: {e}; mount the pod's service account token or give --kubeconfig FILE"
                ))
            })?;
            return Ok((c, "the pod's service account".into()));
        }
        return Err(usage(
            "no kubeconfig: neither --kubeconfig FILE, $KUBECONFIG nor ~/.kube/config exists, \
             and this is not a pod in a cluster; point --kubeconfig or KUBECONFIG at the file \
             kubectl uses (`kubectl config view` shows it)",
        ));
    };
    let c = Config::from_custom_kubeconfig(k, &options)
        .await
        .map_err(|e| match context {
            Some(ctx) => usage(format!(
                "context {ctx} in {source}: {e}; `kubectl config get-contexts` lists them"
            )),
            None => usage(format!(
                "{source}: {e}; `kubectl config current-context` shows which context is chosen"
            )),
        })?;
    Ok((c, source))
}
