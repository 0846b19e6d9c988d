//! The rounds of an agent without an etcd seat, paced so the fleet's calls
//! stay bounded as it grows (issue 18; the rates are `etcd::pacing`'s): a
//! worker lists its group and checks whether the cluster is short of
//! members (S7) now and then, and a booting agent that cannot form the
//! cluster probes a bounded set of peers, backing off while it waits.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use tracing::info;

use super::{Runner, mark_health};
use crate::discovery::Peer;
use crate::discovery::aws_asg::Freshness;
use crate::etcd::client;
use crate::etcd::pacing;
use crate::formation::{self, Decision, FoundCluster};
use crate::roles::{self, Role};
use crate::state::Phase;

/// When the next listing, check and probe are due.
#[derive(Debug, Default)]
pub(super) struct Pace {
    next_list: Option<Instant>,
    /// A booting agent that cannot form: when to list the group again.
    next_boot_list: Option<Instant>,
    next_step_in: Option<Instant>,
    next_probe: Option<Instant>,
    /// When the group was last listed (`LISTING_REUSE`).
    pub(super) listed_at: Option<Instant>,
    /// Probes in a row that found nothing to do.
    idle: u32,
    /// Rounds of bounded probes (which window of the rest to probe).
    probe_rounds: usize,
    /// Jitter draws so far.
    draws: u64,
}

impl Pace {
    fn jitter(&mut self, ip: Ipv4Addr) -> f64 {
        self.draws += 1;
        pacing::jitter(u64::from(u32::from(ip)), self.draws)
    }

    /// Whether a bounded probe is due. The very first one waits a share of
    /// `boot_spread`, so a fleet booting at once does not probe at once.
    pub(super) fn probe_due(&mut self, listed: usize, ip: Ipv4Addr) -> bool {
        let now = Instant::now();
        match self.next_probe {
            Some(at) => now >= at,
            None => {
                let share = self.jitter(ip) - 0.5;
                self.next_probe = Some(now + pacing::boot_spread(listed).mul_f64(share));
                false
            }
        }
    }

    /// After a bounded probe: wait longer when it found nothing to do.
    pub(super) fn probed(&mut self, idle: bool, tick: Duration, ip: Ipv4Addr) {
        self.idle = if idle { self.idle + 1 } else { 0 };
        let wait = if idle {
            pacing::wait_after(tick, self.idle).mul_f64(self.jitter(ip))
        } else {
            Duration::ZERO
        };
        self.next_probe = Some(Instant::now() + wait);
    }
}

impl Runner {
    /// The group as this round sees it: listed afresh, except by a booting
    /// agent (no role yet, no data of its own) that cannot form the
    /// cluster by its last listing, which lists every `BOOTING_LIST_EVERY`
    /// and uses that listing in between.
    pub(super) async fn view_for_round(&mut self) -> Result<(Vec<Peer>, Peer), String> {
        let now = Instant::now();
        let booting = self.role.is_none() && !super::has_wal(&self.data_dir());
        if booting
            && (self.pace.next_boot_list.is_some_and(|t| now < t) || self.listed_recently(now))
        {
            let cached = self.view_tx.borrow().clone();
            if let Ok(me) = self.find_me(&cached)
                && !pacing::probes_everyone(self.cfg.topology, &cached, &me)
            {
                return Ok((cached, me));
            }
        }
        let (view, me) = self.list_view().await?;
        let ip = self.cfg.ip;
        self.pace.next_boot_list = (booting
            && !pacing::probes_everyone(self.cfg.topology, &view, &me))
        .then(|| now + pacing::BOOTING_LIST_EVERY.mul_f64(self.pace.jitter(ip)));
        Ok((view, me))
    }

    /// Whether the last listing is young enough to serve this round.
    fn listed_recently(&self, now: Instant) -> bool {
        pacing::reuse_listing(
            self.pace
                .listed_at
                .map(|at| now.saturating_duration_since(at)),
        )
    }

    /// A worker's round: list the group every `worker_list_every`, and ask
    /// whether the cluster is short of members every `step_in_every`
    /// (both jittered). Nothing at all in between.
    pub(super) async fn worker_round(&mut self, role: Role) -> Result<(), String> {
        let now = Instant::now();
        let list_due = self.pace.next_list.is_none_or(|t| now >= t);
        let check_due = self.pace.next_step_in.is_some_and(|t| now >= t);
        if !list_due && !check_due {
            return Ok(());
        }
        let ip = self.cfg.ip;
        // Just became a worker on a fresh listing: that one counts.
        if self.pace.next_list.is_none()
            && let Some(at) = self.pace.listed_at.filter(|_| self.listed_recently(now))
        {
            self.pace.next_list = Some(at + self.worker_list_every());
        }
        let list_due = list_due && self.pace.next_list.is_none_or(|t| now >= t);
        let (view, me) = if list_due {
            let listed = self.list_view_with(Freshness::KnownAddresses).await?;
            self.pace.next_list = Some(now + self.worker_list_every());
            listed
        } else {
            let view = self.view_tx.borrow().clone();
            let me = self.find_me(&view)?;
            (view, me)
        };
        self.note_lifecycle(&me);
        // A worker being terminated on purpose has nothing of etcd's to
        // hand off (its Node is not drained yet): it lets the group go on.
        if me.lifecycle == crate::discovery::Lifecycle::Leaving {
            return self.leave(&me, false).await;
        }
        self.report(|s| {
            s.role = Some(role.to_string());
            s.phase = Phase::SteadyState;
            s.message = Some("no etcd member on this node".into());
        });
        // The first check comes one (jittered) period after becoming a
        // worker, so a fleet that just booted does not check at once.
        if check_due || self.pace.next_step_in.is_none() {
            let workers = self.workers_in(view.len());
            let every = pacing::step_in_every(workers).mul_f64(self.pace.jitter(ip));
            self.pace.next_step_in = Some(now + every);
        }
        if check_due {
            self.maybe_step_in(role, &view, &me).await?;
        }
        Ok(())
    }

    /// How many of `listed` machines are workers (no etcd seat).
    fn workers_in(&self, listed: usize) -> usize {
        listed.saturating_sub(self.cfg.topology.etcd_members())
    }

    /// The wait until this worker's next listing (`pacing::worker_list_every`
    /// for the fleet of the last listing, jittered).
    fn worker_list_every(&mut self) -> Duration {
        let workers = self.workers_in(self.view_tx.borrow().len());
        pacing::worker_list_every(workers).mul_f64(self.pace.jitter(self.cfg.ip))
    }

    /// S7: asks the cluster whether it is short of members, and joins if so.
    async fn maybe_step_in(&mut self, role: Role, view: &[Peer], me: &Peer) -> Result<(), String> {
        if self.cfg.topology.dedicated_etcd_count.is_some() {
            return Ok(());
        }
        let Some(cluster) = self.probe_for_cluster(view, me).await else {
            return Ok(());
        };
        if !formation::worker_steps_in(self.cfg.topology, role, &cluster) {
            return Ok(());
        }
        info!(
            cluster = %format!("{:x}", cluster.cluster_id),
            members = cluster.members.len(),
            "the cluster is short of members: this worker steps in (S7)"
        );
        let decision = Decision::Join {
            cluster_id: cluster.cluster_id,
        };
        self.act(decision, me, &[cluster]).await
    }

    /// The cluster as seen from the first peer in the total order that
    /// answers with a leader (members are among the first peers). One probe
    /// in the usual case, at most 2N+1: cheap enough for every worker of a
    /// large group, unlike `probe_peers`.
    async fn probe_for_cluster(&self, view: &[Peer], me: &Peer) -> Option<FoundCluster> {
        let candidates = roles::candidates(view)
            .into_iter()
            .filter(|p| p.id != me.id && !p.address.is_unspecified())
            .take(2 * self.cfg.topology.etcd_members() + 1);
        for p in candidates {
            let found = client::probe(client::client_url(p.address), &self.cfg.tls).await;
            if let Some(mut cluster) = found.filter(|c| c.has_leader) {
                // Whether a seat is open depends on which voters answer.
                mark_health(&mut cluster.members, &self.cfg.tls).await;
                return Some(cluster);
            }
        }
        None
    }

    /// A booting agent that cannot form the cluster probes the bounded set
    /// (`pacing::bounded_probe_set`), then checks each member's health
    /// itself: members outside the set must not look down (a seat would
    /// seem open to every joiner).
    pub(super) async fn probe_bounded(&mut self, view: &[Peer], me: &Peer) -> Vec<FoundCluster> {
        let set = pacing::bounded_probe_set(self.cfg.topology, view, me, self.pace.probe_rounds);
        self.pace.probe_rounds += 1;
        let mut clusters = self.probe_peers(&set, me).await;
        for cluster in clusters.iter_mut().filter(|c| c.has_leader) {
            mark_health(&mut cluster.members, &self.cfg.tls).await;
        }
        clusters
    }
}
