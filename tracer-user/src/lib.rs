//! calitrace: where exactly does Pod traffic die on this Calico node, and why.
//!
//! Data flows one way: kernel events ([`probes`], [`events`]) become per-packet
//! journeys ([`correlation`]), then diagnoses ([`diagnosis`]), then [`views`].
//! [`recording`] stores the event stream for replay.

pub mod cli;
pub mod correlation;
pub mod diagnosis;
pub mod events;
pub mod filter;
pub mod kernel;
pub mod netfilter;
pub mod pipeline;
pub mod probes;
pub mod recording;
pub mod run;
pub mod views;
