//! Replay end to end, as people run it: the `calitrace replay` binary
//! (reading, processing and writing JSON lines on their own threads) against
//! `tshark -r` reading the pcapng export of the same recording. Wall time:
//! using more than one core is the point.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use calitrace_tests::calitrace;

use crate::userspace::write_recording;
use crate::util::{Row, median};

/// Seconds `cmd` takes, its stdout thrown away.
fn wall(cmd: &mut Command) -> Result<f64> {
    let t = Instant::now();
    let st = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?}: {st}");
    }
    Ok(t.elapsed().as_secs_f64())
}

fn has_tshark() -> bool {
    Command::new("tshark")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn binary_rows(reps: usize, events: usize, dir: &Path) -> Result<()> {
    let bin = calitrace::binary();
    let rec = dir.join("replay-vs-tshark.calitrace");
    let pcap = dir.join("replay-vs-tshark.pcapng");
    write_recording(&rec, events)?;
    let export = std::fs::File::create(&pcap)?;
    let st = Command::new(&bin)
        .arg("replay")
        .arg(&rec)
        .args(["-o", "pcap"])
        .stdout(export)
        .status()?;
    if !st.success() {
        bail!("calitrace replay -o pcap: {st}");
    }
    let tshark = has_tshark();
    let (mut json, mut drops, mut shark) = (vec![], vec![], vec![]);
    for _ in 0..reps {
        let replay = |extra: &[&str]| {
            let mut c = Command::new(&bin);
            c.arg("replay").arg(&rec).args(["-o", "json"]).args(extra);
            wall(&mut c)
        };
        json.push(events as f64 / replay(&[])?);
        drops.push(events as f64 / replay(&["--drops-only"])?);
        if tshark {
            shark.push(events as f64 / wall(Command::new("tshark").arg("-r").arg(&pcap))?);
        }
    }
    let mb = std::fs::metadata(&pcap).map_or(0.0, |m| m.len() as f64 / 1e6);
    std::fs::remove_file(&rec).ok();
    std::fs::remove_file(&pcap).ok();
    let mut row = Row::new(
        "replay",
        "`calitrace replay FILE -o json` (the binary, wall time)",
        median(&json),
        "ev/s",
    )
    .samples(&json);
    if tshark {
        row = row
            .baseline(median(&shark))
            .target(
                "no slower than `tshark -r` of the pcapng export",
                median(&json) >= median(&shark),
            )
            .note(format!(
                "{events} synthetic events; baseline: `tshark -r` reading their pcapng export ({mb:.0} MB, a packet per event with its JSON record as comment), stdout to /dev/null"
            ));
    } else {
        row = row.note("tshark is not installed: no baseline");
    }
    row.emit();
    Row::new(
        "replay",
        "`calitrace replay FILE -o json --drops-only` (the binary, wall time)",
        median(&drops),
        "ev/s",
    )
    .samples(&drops)
    .target(">= 5M ev/s", median(&drops) >= 5e6)
    .note("reading, processing and writing on threads of their own")
    .emit();
    Ok(())
}
