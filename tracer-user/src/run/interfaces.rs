//! Interfaces that come and go while tracing. The kernel's link
//! announcements are read as they arrive: a selected interface that appears
//! waits in a queue for its tc programs, which the event loop attaches one
//! interface per turn (a TCX attach waits for an RCU grace period), so that
//! the ring buffer is drained in between; a new pod's namespace joins the
//! drop filter; an interface that goes is forgotten, its programs detached.
//! The veths left over when tracing started wait in the same queue.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

use crate::facts::{Environment, PodInfo};
use crate::kernel::netlink::{self, Link, LinkMonitor};
use crate::kernel::netns::{self, PeerNetns};
use crate::probes::loader::{Tracer, why};
use crate::probes::tc::ifaces::{self, Step, Tracked};
use crate::views::Interfaces;

/// How long the start spends attaching veths before it leaves the rest to
/// the event loop, so that tracing is on in well under a second (on a
/// loaded 2-CPU node the start itself takes 0.8 s; TCX attaches wait an RCU
/// grace period each, so a longer budget buys only a few more).
pub const START_BUDGET: Duration = Duration::from_millis(100);
/// How often the progress of a long queue is told.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How long a new pod veth's namespace is looked for, and how often.
const POD_SEARCH_FOR: Duration = Duration::from_secs(5);
const POD_SEARCH_EVERY: Duration = Duration::from_millis(500);

/// An interface waiting for its programs; `new` when it appeared while
/// tracing (not left over from the start).
struct Waiting {
    link: Link,
    new: bool,
}

/// A new pod veth whose namespace has not been found yet.
struct PodSearch {
    link: Link,
    until: Instant,
    next: Instant,
}

/// The queue's progress while it is long: since when, last told when.
struct Backlog {
    since: Instant,
    told: Instant,
}

/// The traced namespace's interfaces as they come and go.
pub struct InterfaceWatch {
    own_netns: u32,
    tracked: Tracked,
    /// `None` when the announcements could not be subscribed to.
    monitor: Option<AsyncFd<LinkMonitor>>,
    queue: VecDeque<Waiting>,
    backlog: Option<Backlog>,
    /// Host veth index to its pod's namespace inode.
    pods: HashMap<u32, u32>,
    searches: Vec<PodSearch>,
}

impl InterfaceWatch {
    /// `links` as they were listed at start, selected by `patterns`; `pods`
    /// found behind them; `left` still waiting for their programs. Must run
    /// inside the tokio runtime (the monitor is registered with it).
    pub fn new(
        own_netns: u32,
        patterns: Vec<String>,
        links: &[Link],
        pods: &[PeerNetns],
        monitor: std::io::Result<LinkMonitor>,
        left: Vec<Link>,
    ) -> InterfaceWatch {
        // SAFETY: the LinkMonitor owns its socket's fd, which stays open and
        // is the one `as_raw_fd` returns until the AsyncFd (and with it the
        // monitor) is dropped.
        let registered = monitor.and_then(|m| unsafe {
            AsyncFd::register_with_interest(m, tokio::io::Interest::READABLE).map_err(Into::into)
        });
        let monitor = registered.map_err(|e| warn_unwatched(&e)).ok();
        let now = Instant::now();
        InterfaceWatch {
            own_netns,
            tracked: Tracked::new(patterns, links),
            monitor,
            backlog: (!left.is_empty()).then_some(Backlog {
                since: now,
                told: now,
            }),
            queue: left
                .into_iter()
                .map(|link| Waiting { link, new: false })
                .collect(),
            pods: pods.iter().map(|p| (p.host_index, p.inode)).collect(),
            searches: Vec::new(),
        }
    }

    /// Traced and waiting interfaces, for the views.
    pub fn count(&self, tracer: &Tracer) -> Interfaces {
        Interfaces {
            traced: tracer.interface_count(),
            waiting: self.queue.len(),
        }
    }

    pub fn has_waiting(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Waits until the kernel has announced something (forever without a
    /// monitor).
    pub async fn announced(&self) {
        if let Some(fd) = &self.monitor
            && let Ok(mut ready) = fd.readable().await
        {
            // Cleared before reading: whatever arrives later wakes us again.
            ready.clear_ready();
            return;
        }
        std::future::pending::<()>().await
    }

    /// Takes in what the kernel announced.
    pub fn on_announcements(&mut self, tracer: &mut Tracer, env: &mut Environment) {
        let Some(fd) = &mut self.monitor else { return };
        let news = match fd.get_mut().read() {
            Ok(n) => n,
            Err(e) => {
                warn_unwatched(&e);
                self.monitor = None;
                return;
            }
        };
        let mut steps = Vec::new();
        for change in &news.changes {
            steps.extend(self.tracked.change(change));
        }
        if news.overrun {
            match netlink::links() {
                Ok(links) => steps.extend(self.tracked.resync(&links)),
                Err(e) => eprintln!("calitrace: listing interfaces again: {e}"),
            }
        }
        for step in steps {
            self.take(step, tracer, env);
        }
    }

    fn take(&mut self, step: Step, tracer: &mut Tracer, env: &mut Environment) {
        match step {
            Step::Name { index, name } => env.learn_interface(self.own_netns, index, &name),
            Step::Attach(link) if tracer.can_attach_tc() => {
                self.queue.push_back(Waiting { link, new: true })
            }
            Step::Attach(_) => {}
            Step::Forget {
                index,
                name,
                renamed,
            } => self.forget(index, &name, renamed.as_deref(), tracer),
        }
    }

    /// An interface went (or was renamed): nothing of it stays, and its
    /// pod's namespace leaves the drop filter.
    fn forget(&mut self, index: u32, name: &str, renamed: Option<&str>, tracer: &mut Tracer) {
        self.queue.retain(|w| w.link.index != index);
        self.searches.retain(|s| s.link.index != index);
        let traced = tracer.detach_interface(index).is_some();
        let pod = self.pods.remove(&index);
        if let Some(inode) = pod {
            tracer.unwatch_netns(inode);
        }
        if traced {
            tracer.refresh_tc_report();
            let what = match renamed {
                Some(to) => format!("was renamed {to}"),
                None if pod.is_some() => "is gone, and its pod".into(),
                None => "is gone".into(),
            };
            eprintln!(
                "calitrace: interface {name} {what}; {} interface(s) traced",
                tracer.interface_count()
            );
        }
    }

    /// Attaches the programs to the next waiting interface.
    pub fn attach_next(&mut self, tracer: &mut Tracer, env: &mut Environment) {
        let Some(Waiting { link, new }) = self.queue.pop_front() else {
            return;
        };
        match tracer.attach_interface(&link) {
            Ok(()) => {
                tracer.refresh_tc_report();
                if new {
                    eprintln!(
                        "calitrace: new interface {}: tc attached; {} interface(s) traced",
                        link.name,
                        tracer.interface_count()
                    );
                    if ifaces::is_pod_veth(&link) && !self.find_pod(&link, tracer, env) {
                        let now = Instant::now();
                        self.searches.push(PodSearch {
                            link,
                            until: now + POD_SEARCH_FOR,
                            next: now + POD_SEARCH_EVERY,
                        });
                    }
                }
            }
            Err(_) if !still_there(&link) => {}
            Err(e) => eprintln!("calitrace: tc on {}: {}", link.name, why(&e)),
        }
        if self.queue.is_empty()
            && let Some(b) = self.backlog.take()
        {
            eprintln!(
                "calitrace: tc attach done: {} interface(s) traced ({:.1} s in the background)",
                tracer.interface_count(),
                b.since.elapsed().as_secs_f64()
            );
        }
    }

    /// The namespace behind a new pod veth joins the drop filter and is
    /// named; whether it was found (a failure to add it is told, and final).
    fn find_pod(&mut self, link: &Link, tracer: &mut Tracer, env: &mut Environment) -> bool {
        let Some(pod) = netns::discover(self.own_netns, std::slice::from_ref(link)).pop() else {
            return false;
        };
        if let Err(e) = tracer.watch_netns(pod.inode) {
            eprintln!("calitrace: pod namespace {}: {}", pod.name, why(&e));
            return true;
        }
        self.pods.insert(link.index, pod.inode);
        let info = PodInfo {
            name: pod.name.clone(),
            host_iface: pod.host_iface.clone(),
        };
        env.learn_pod(pod.inode, info, &pod.links);
        let joins = if tracer.filters_netns() {
            " joins the drop filter"
        } else {
            " found"
        };
        eprintln!(
            "calitrace: pod namespace {} (netns {}) behind {}{joins}",
            pod.name, pod.inode, link.name
        );
        true
    }

    /// Time-driven work: looking again for pods not found yet, and the
    /// progress of a long queue.
    pub fn tick(&mut self, tracer: &mut Tracer, env: &mut Environment) {
        let now = Instant::now();
        for mut s in std::mem::take(&mut self.searches) {
            if s.next <= now {
                if self.find_pod(&s.link, tracer, env) {
                    continue;
                }
                if s.until <= now {
                    eprintln!(
                        "calitrace: no pod namespace found behind {}: drops inside that pod are not reported",
                        s.link.name
                    );
                    continue;
                }
                s.next = now + POD_SEARCH_EVERY;
            }
            self.searches.push(s);
        }
        if let Some(b) = &mut self.backlog
            && now.duration_since(b.told) >= PROGRESS_EVERY
        {
            b.told = now;
            eprintln!(
                "calitrace: tc attach in the background: {} interface(s) traced, {} waiting",
                tracer.interface_count(),
                self.queue.len()
            );
        }
    }
}

/// Attaches the programs to `links` in order until `budget` is spent; the
/// ones left.
pub fn attach_within(tracer: &mut Tracer, links: Vec<Link>, budget: Duration) -> Vec<Link> {
    if !tracer.can_attach_tc() {
        return Vec::new();
    }
    let started = Instant::now();
    let mut links = links.into_iter();
    for link in links.by_ref() {
        if let Err(e) = tracer.attach_interface(&link) {
            tracer
                .report
                .missing(format!("tc on {}", link.name), why(&e));
        }
        if started.elapsed() >= budget {
            break;
        }
    }
    tracer.refresh_tc_report();
    links.collect()
}

/// Whether `link` is still in this namespace under its name (an attach that
/// failed because it went is no error).
fn still_there(link: &Link) -> bool {
    netlink::links().is_ok_and(|now| {
        now.iter()
            .any(|l| l.index == link.index && l.name == link.name)
    })
}

fn warn_unwatched(e: &std::io::Error) {
    eprintln!(
        "calitrace: interfaces that appear while tracing will not be traced (link announcements: {e})"
    );
}
