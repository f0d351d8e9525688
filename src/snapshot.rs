//! A snapshot is everything a request reads, built from one config: the router and
//! the upstreams. It is the unit of hot reload: built aside, then swapped in whole.

use std::sync::Arc;

use crate::config::Config;
use crate::router::Router;
use crate::upstream::{BackendStates, Upstream};

#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    pub router: Router,
    /// Same order as `config.upstreams`; routes refer to them by index.
    pub upstreams: Vec<Upstream>,
}

impl Snapshot {
    /// Builds the snapshot of `config`; backends also present in `previous` keep
    /// their runtime state (in-flight counts, pooled connections, health).
    pub fn build(config: Arc<Config>, previous: Option<&Snapshot>) -> Self {
        let states = previous.map(Snapshot::backend_states).unwrap_or_default();
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| Upstream::new(u, &states))
            .collect();
        Snapshot {
            router: Router::new(config.routes.clone()),
            upstreams,
            config,
        }
    }

    fn backend_states(&self) -> BackendStates {
        self.upstreams
            .iter()
            .flat_map(|u| {
                u.backends
                    .iter()
                    .map(|b| ((u.name.clone(), b.address), b.state.clone()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
[[listeners]]
listen = "127.0.0.1:0"
[[routes]]
upstream = "a"
[upstreams.a]
backends = [{ address = "127.0.0.1:9001" }, { address = "127.0.0.1:9002" }]
"#;

    #[test]
    fn backends_kept_across_builds_share_their_state() {
        let first = Snapshot::build(
            Arc::new(crate::config::parse(TEXT, "a.toml").unwrap()),
            None,
        );
        let changed = TEXT.replace("127.0.0.1:9002", "127.0.0.1:9003");
        let second = Snapshot::build(
            Arc::new(crate::config::parse(&changed, "a.toml").unwrap()),
            Some(&first),
        );
        let (old, new) = (&first.upstreams[0].backends, &second.upstreams[0].backends);
        assert!(Arc::ptr_eq(&old[0].state, &new[0].state));
        assert!(!Arc::ptr_eq(&old[1].state, &new[1].state));
    }
}
