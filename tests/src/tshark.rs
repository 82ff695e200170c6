//! Wireshark's dissector as an independent judge of our bytes: if `tshark` decodes a message
//! to the values we meant, with no malformed-packet or expert warning, other WCCP
//! implementations will read it the same way.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// One decoded frame: every dissected field as (name, shown value), grouped by subtree (tshark's
/// JSON objects are read unordered, so compare repeated values as sets), plus the
/// expert items tshark raised for it.
#[derive(Debug, Clone, Default)]
pub struct DecodedFrame {
    /// `wccp.*`, `ip.*`, ... fields with their values as tshark prints them in JSON.
    pub fields: Vec<(String, String)>,
    /// Expert items as (severity, message); severity is tshark's (`note`, `warning`, ...).
    pub expert: Vec<(String, String)>,
    /// True when tshark marked the frame malformed.
    pub malformed: bool,
}

impl DecodedFrame {
    /// Every value of `field` in this frame, in order within one subtree.
    pub fn all(&self, field: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(k, _)| k == field)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The single value of `field`; an error names the field when it is absent or repeated.
    pub fn value(&self, field: &str) -> Result<&str> {
        match self.all(field).as_slice() {
            [one] => Ok(one),
            [] => bail!("tshark shows no field {field}"),
            many => bail!("tshark shows {field} {} times: {many:?}", many.len()),
        }
    }

    /// The single value of `field`, for assertions: panics with the whole frame otherwise.
    pub fn one(&self, field: &str) -> &str {
        match self.value(field) {
            Ok(v) => v,
            Err(e) => panic!("{e}\n{self:#?}"),
        }
    }

    /// Every value of `field`, sorted: repeated subtrees come back in no fixed order.
    pub fn sorted(&self, field: &str) -> Vec<&str> {
        let mut values = self.all(field);
        values.sort_unstable();
        values
    }

    /// Panics when the frame is malformed or has an expert item above a note, other than
    /// those whose message contains one of `allowed` (known dissector quirks).
    pub fn assert_clean(&self, allowed: &[&str]) {
        assert!(
            !self.malformed,
            "tshark marks the frame malformed: {self:#?}"
        );
        let bad: Vec<_> = self
            .problems()
            .into_iter()
            .filter(|(_, message)| !allowed.iter().any(|a| message.contains(a)))
            .collect();
        assert!(bad.is_empty(), "tshark expert items {bad:?} in {self:#?}");
    }

    /// Expert items above a note: what a clean message must not have.
    pub fn problems(&self) -> Vec<&(String, String)> {
        self.expert
            .iter()
            .filter(|(severity, _)| severity != "note" && severity != "chat")
            .collect()
    }
}

/// Decodes every frame of `pcap` with `tshark -T json`; fails with what to install when tshark
/// is missing, rather than letting a test pass without its judge.
pub fn decode(pcap: &Path) -> Result<Vec<DecodedFrame>> {
    let output = Command::new("tshark")
        .args(["-n", "--no-duplicate-keys", "-T", "json", "-r"])
        .arg(pcap)
        .output()
        .context(
            "running tshark: install it with `apt-get install tshark` (scripts/setup.sh does)",
        )?;
    if !output.status.success() {
        bail!(
            "tshark failed on {}: {}",
            pcap.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let json: Value =
        serde_json::from_slice(&output.stdout).context("tshark printed JSON we cannot read")?;
    let frames = json
        .as_array()
        .context("tshark's JSON is not an array of frames")?;
    Ok(frames
        .iter()
        .map(|frame| {
            let mut decoded = DecodedFrame::default();
            collect(&frame["_source"]["layers"], &mut decoded);
            decoded
        })
        .collect())
}

/// Writes `frames` (whole Ethernet frames) to a scratch capture and decodes it.
pub fn decode_frames(frames: &[Vec<u8>]) -> Result<Vec<DecodedFrame>> {
    static SEQUENCE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tshark-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("frames.pcap");
    let result = crate::pcap::write_frames(&path, frames).and_then(|()| decode(&path));
    std::fs::remove_dir_all(&dir).ok();
    result
}

fn collect(node: &Value, out: &mut DecodedFrame) {
    match node {
        Value::Object(map) => {
            if let Some(severity) = map.get("_ws.expert.severity").and_then(Value::as_str) {
                let message = map
                    .get("_ws.expert.message")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                out.expert
                    .push((severity_name(severity), message.to_string()));
            }
            for (key, value) in map {
                if key.starts_with("_ws.malformed") {
                    out.malformed = true;
                }
                match value {
                    Value::String(s) => out.fields.push((key.clone(), s.clone())),
                    Value::Array(items) => {
                        for item in items {
                            match item {
                                Value::String(s) => out.fields.push((key.clone(), s.clone())),
                                other => collect(other, out),
                            }
                        }
                    }
                    other => collect(other, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect(item, out)),
        _ => {}
    }
}

/// tshark's JSON gives the severity as its numeric code; name it as Wireshark's UI does.
fn severity_name(code: &str) -> String {
    match code.parse::<u32>() {
        Ok(0x0010_0000) => "comment".into(),
        Ok(0x0020_0000) => "chat".into(),
        Ok(0x0040_0000) => "note".into(),
        Ok(0x0060_0000) => "warning".into(),
        Ok(0x0080_0000) => "error".into(),
        _ => code.to_string(),
    }
}
