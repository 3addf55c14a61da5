//! calitrace: where exactly does Pod traffic die on this Calico node, and why.
//!
//! Data flows one way: kernel events ([`probes`], [`events`]) become per-packet
//! journeys ([`correlation`]), then diagnoses ([`diagnosis`]), then [`views`].
//! [`recording`] stores the event stream for replay.
//!
//! The modules, lowest first; each imports only modules listed before it
//! (the test `modules_import_only_lower_ones` checks this):
//!
//! | module | job |
//! |---|---|
//! | [`time`] | clocks and how times are written |
//! | [`model`] | the output contract: typed records, names of kernel codes, their formats |
//! | [`filter`] | FILTER expressions, compiled for the kernel |
//! | [`kernel`] | live look-ups: netlink, BTF, kallsyms, namespaces, sysctls |
//! | [`netfilter`] | the rule inventory of both iptables backends |
//! | [`dataplane`] | dataplanes that decide outside netfilter (Calico's eBPF), read from their state |
//! | [`facts`] | what is known about the node, recorded, and the environment that looks it up |
//! | [`doctor`] | checks of the node's Calico datapath configuration, without eBPF |
//! | [`events`] | ring-buffer bytes decoded, kernel numbers named |
//! | [`probes`] | loading and attaching the eBPF programs, and what the kernel allows |
//! | [`correlation`] | per-packet journeys and ARP waiting for answers |
//! | [`diagnosis`] | drops and unanswered ARP turned into diagnoses |
//! | [`pipeline`] | events in, records out |
//! | [`recording`] | the recording file: writing, reading, pcap export |
//! | [`merge`] | several nodes in one view: clocks, packets across nodes, the underlay |
//! | [`views`] | JSON lines, text, TUI; what a view asks of a session |
//! | [`cli`] | the command line |
//! | [`run`] | live, replay and probes sessions |

pub mod cli;
pub mod correlation;
pub mod dataplane;
pub mod diagnosis;
pub mod doctor;
pub mod events;
pub mod facts;
pub mod filter;
pub mod kernel;
pub mod merge;
pub mod model;
pub mod netfilter;
pub mod pipeline;
pub mod probes;
pub mod recording;
pub mod run;
pub mod time;
pub mod views;

#[cfg(test)]
mod function_length;
#[cfg(test)]
mod layering;
#[cfg(test)]
mod safety_comments;
#[cfg(test)]
mod source_files;
