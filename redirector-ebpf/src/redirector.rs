//! The controller's handle on the redirect program: load it (fresh, or adopting what a
//! previous process pinned), attach it to interfaces, write tables as one atomic update,
//! refresh the heartbeat, set interface flags, read counters and the connection table,
//! and remove everything on an explicit clear.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    maps::{lpm_trie, Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray},
    programs::{
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
        SchedClassifier, TcAttachType, TestRun as _, TestRunOptions, Xdp, XdpMode,
    },
    Pod,
};

use crate::{
    layout::{
        ConnEntry, Control, Counters, EngineKey, FlowKey, MacKey, PrefixKey, SlotLayout,
        StatsBlock, CONTROL_ENABLED, MAX_ENGINES, MAX_IFINDEX, MAX_PREFIXES, SLOTS, STATS_ENTRIES,
    },
    lifecycle::{tick_hz, PinRoot, PinRootError},
    table::Table,
    EbpfObject, LoadError,
};

/// The bits of a `prefixes` key after its length, in aya's shape (`lpm_trie::Key` holds
/// the length): [`PrefixKey`] without `prefixlen`, whose layout the tests check.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct PrefixData {
    slot: u8,
    rank: u8,
    reserved: [u8; 2],
    addr: u32,
}

// SAFETY: `repr(C)`, integers only, no padding (1 + 1 + 2 + 4, the tail of PrefixKey).
unsafe impl Pod for PrefixData {}

/// The LRU connection table's size (`conns` in redirect.c).
const CONNS: usize = 65536;

/// Every map of the redirect object with the (key size, value size, max entries) this
/// code was built for. A pinned map is reused only when it matches, so a controller of
/// another build never reads or writes a map whose layout it does not know.
const MAPS: [(&str, usize, usize, usize); 8] = {
    use std::mem::size_of;
    [
        ("control", 4, size_of::<Control>(), 1),
        ("ifaces", 4, 4, MAX_IFINDEX),
        ("slots", 4, size_of::<SlotLayout>(), SLOTS),
        (
            "engine_addrs",
            size_of::<EngineKey>(),
            4,
            SLOTS * MAX_ENGINES,
        ),
        ("engine_macs", size_of::<MacKey>(), 4, SLOTS * MAX_ENGINES),
        ("prefixes", size_of::<PrefixKey>(), 4, SLOTS * MAX_PREFIXES),
        ("conns", size_of::<FlowKey>(), size_of::<ConnEntry>(), CONNS),
        ("stats", 4, size_of::<StatsBlock>(), 1),
    ]
};

/// How the program runs on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver, before any socket buffer exists: the fast path.
    Native,
    /// Generic (SKB) XDP, after the stack allocated a buffer: works on every device, at a
    /// fraction of native speed. Chosen only when native attach fails, with a warning.
    Generic,
    /// Found pinned by a previous process; the mode it chose is kept.
    Adopted,
}

/// One XDP attachment this process holds: the link, its pin (when pinned) and mode.
#[derive(Debug)]
struct Attachment {
    link: FdLink,
    pin: Option<PathBuf>,
    mode: AttachMode,
}

/// The object and its program's name.
pub const OBJECT: &str = "redirect";
/// The XDP program (the C function) in [`OBJECT`].
pub const PROGRAM: &str = "xdp_redirect";
/// The tc egress program in [`OBJECT`]: "redirect out" (see [`Redirector::attach_out`]).
pub const OUT_PROGRAM: &str = "tc_redirect_out";
/// The program in [`OBJECT`] that reports the kernel's jiffies (see [`Redirector::jiffies`]).
pub const CLOCK_PROGRAM: &str = "xdp_clock";
/// `XDP_PASS` in `enum xdp_action`.
const XDP_PASS_VERDICT: u32 = 2;

/// Why a map operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RedirectorError {
    /// Loading the object or program.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The object lacks a map this code needs: object and code disagree.
    #[error("map {0} missing from the redirect object")]
    MissingMap(&'static str),
    /// The pin root is unusable (bad name, not bpffs).
    #[error(transparent)]
    PinRoot(#[from] PinRootError),
    /// A pinned map has another layout than this build expects: it was left by an
    /// incompatible version. `Redirector::clear` on the old version (or removing the pin
    /// root) is the way out; nothing was changed.
    #[error("pinned map {map} has key/value/entries {found:?}, this build expects {expected:?}")]
    IncompatiblePin {
        /// The map.
        map: &'static str,
        /// What the pinned map has.
        found: (u32, u32, u32),
        /// What this build's object declares.
        expected: (u32, u32, u32),
    },
    /// Attaching to an interface failed in both native and generic mode (the error is
    /// generic mode's; native's was logged).
    #[error("attaching XDP to {iface}: {source}")]
    Attach {
        /// The interface.
        iface: String,
        /// aya's error.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// Attaching the tc egress program to an interface failed.
    #[error("attaching tc egress (redirect out) to {iface}: {source}")]
    AttachOut {
        /// The interface.
        iface: String,
        /// aya's error.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// This process already holds an attachment to that interface.
    #[error("already attached to {0}")]
    AlreadyAttached(String),
    /// `detach` of an interface this process holds no attachment to.
    #[error("not attached to {0}")]
    NotAttached(String),
    /// Pinning, adopting or unpinning a link or map (a file on bpffs).
    #[error("{what} {path}: {reason}")]
    Pin {
        /// What was being done.
        what: &'static str,
        /// The pin's path.
        path: PathBuf,
        /// Why it failed.
        reason: String,
    },
    /// Reading the kernel's jiffies through `xdp_clock` failed.
    #[error("reading jiffies with xdp_clock: {0}")]
    Clock(#[source] Box<aya::programs::ProgramError>),
    /// A map operation the kernel refused.
    #[error("map {map}: {source}")]
    Map {
        /// The map.
        map: &'static str,
        /// aya's error.
        #[source]
        source: Box<MapError>,
    },
}

fn map_err(map: &'static str) -> impl Fn(MapError) -> RedirectorError {
    move |source| RedirectorError::Map {
        map,
        source: Box::new(source),
    }
}

fn pin_err<'a>(what: &'static str, path: &'a Path) -> impl Fn(String) -> RedirectorError + 'a {
    move |reason| RedirectorError::Pin {
        what,
        path: path.to_owned(),
        reason,
    }
}

/// The links pinned in `dir`, each with its interface (the pin's name) and path; none
/// when `dir` does not exist (a pin root of a build without such links).
fn pinned_links(dir: &Path) -> Result<Vec<(String, PathBuf, FdLink)>, RedirectorError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut links = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| pin_err("reading", dir)(e.to_string()))?;
        let path = entry.path();
        let Some(iface) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let pinned = PinnedLink::from_pin(&path)
            .map_err(|e| pin_err("opening pinned link", &path)(e.to_string()))?;
        links.push((iface, path, FdLink::from(pinned)));
    }
    Ok(links)
}

/// The outcome of switching the pinned `kind` link at `path` to this process's program:
/// the link, adopted; or, when it could not be switched, `None`: such a link belongs to
/// an interface that went away (ENOLINK), and its pin, only a leftover, is removed with
/// a warning.
fn adopted<L, E>(
    kind: &str,
    iface: &str,
    path: &Path,
    updated: Result<L, E>,
) -> Result<Option<FdLink>, RedirectorError>
where
    FdLink: TryFrom<L>,
    <FdLink as TryFrom<L>>::Error: std::fmt::Display,
    E: std::fmt::Display,
{
    match updated {
        Ok(link) => {
            let link =
                FdLink::try_from(link).map_err(|e| pin_err("adopting", path)(e.to_string()))?;
            tracing::info!(iface, pin = %path.display(), "adopted pinned {kind} link");
            Ok(Some(link))
        }
        Err(e) => {
            tracing::warn!(iface, pin = %path.display(), error = %e,
                "pinned {kind} link cannot be updated; removing its pin");
            std::fs::remove_file(path).map_err(|e| pin_err("removing", path)(e.to_string()))?;
            Ok(None)
        }
    }
}

/// The loaded redirect program and its maps, what this process last wrote to each table
/// slot (so an update writes only the entries that change), and the interfaces it is
/// attached to.
///
/// Dropping it without [`Redirector::clear`] leaves a pinned data plane running: that is
/// what a controller restart relies on. An unpinned one ([`Redirector::load`]) detaches
/// and vanishes on drop.
#[derive(Debug)]
pub struct Redirector {
    object: EbpfObject,
    control: Control,
    /// What each slot holds; a fresh map holds [`Table::default`].
    written: [Table; 2],
    pins: Option<PinRoot>,
    links: BTreeMap<String, Attachment>,
    /// tc egress ("redirect out") links, with their pins.
    out_links: BTreeMap<String, (FdLink, Option<PathBuf>)>,
    /// The `ifaces` map's content, once read or written ([`Redirector::set_iface_flags`]).
    ifaces: Option<Vec<u32>>,
}

impl Redirector {
    /// Loads the object and its program (the verifier runs here), with maps that live only
    /// as long as this value: for tests and benchmarks. Nothing is attached and every
    /// packet passes until a table is installed.
    pub fn load() -> Result<Self, RedirectorError> {
        Self::load_object(OBJECT)
    }

    /// Like [`Redirector::load`] for another build of the same C program with the same
    /// maps: `redirect_bench`, which undoes its encapsulation at the end of each run so
    /// that `BPF_PROG_TEST_RUN`'s repeat measures the redirect path every time. Never
    /// attach that build.
    pub fn load_object(object: &str) -> Result<Self, RedirectorError> {
        let mut object = EbpfObject::open(object)?;
        object.xdp(PROGRAM)?;
        Ok(Self {
            object,
            control: Control::default(),
            written: [Table::default(), Table::default()],
            pins: None,
            links: BTreeMap::new(),
            out_links: BTreeMap::new(),
            ifaces: None,
        })
    }

    /// Opens the data plane pinned under `root`, or creates and pins a fresh one: what a
    /// controller calls at start. When a previous process left maps and links there, they
    /// are adopted without a gap: the maps (tables, heartbeat, connection table, counters)
    /// are reused as they are, and every pinned link is switched atomically
    /// (`bpf_link_update`) to this process's program, which reads the same maps. A link
    /// whose interface has gone is unpinned, with a warning.
    ///
    /// Mounts bpffs at /sys/fs/bpf when nothing is mounted there. The first install after
    /// adoption rewrites the idle slot completely, since this process does not know what
    /// it holds.
    pub fn open(root: &PinRoot) -> Result<Self, RedirectorError> {
        root.prepare()?;
        let adopted = root.exists() && root.maps_dir().join("control").exists();
        let names: Vec<&'static str> = MAPS.iter().map(|m| m.0).collect();
        let mut object = EbpfObject::open_pinned(OBJECT, &root.maps_dir(), &names)?;
        check_maps(&mut object)?;
        object.xdp(PROGRAM)?;
        let mut this = Self {
            object,
            control: Control::default(),
            written: [Table::default(), Table::default()],
            pins: Some(root.clone()),
            links: BTreeMap::new(),
            out_links: BTreeMap::new(),
            ifaces: None,
        };
        if adopted {
            this.control = this
                .array::<Control>("control")?
                .get(&0, 0)
                .map_err(map_err("control"))?;
            this.written = [Table::poisoned(), Table::poisoned()];
            this.adopt_links(root)?;
            this.adopt_out_links(root)?;
        }
        Ok(this)
    }

    fn adopt_links(&mut self, root: &PinRoot) -> Result<(), RedirectorError> {
        for (iface, path, link) in pinned_links(&root.links_dir())? {
            let xdp_link = XdpLink::try_from(link)
                .map_err(|e| pin_err("not an XDP link", &path)(e.to_string()))?;
            let program = self.program()?;
            let updated = program
                .attach_to_link(xdp_link)
                .and_then(|id| program.take_link(id));
            if let Some(link) = adopted("XDP", &iface, &path, updated)? {
                let attachment = Attachment {
                    link,
                    pin: Some(path),
                    mode: AttachMode::Adopted,
                };
                self.links.insert(iface, attachment);
            }
        }
        Ok(())
    }

    /// Pinned tc egress links, switched to this process's program like the XDP ones.
    fn adopt_out_links(&mut self, root: &PinRoot) -> Result<(), RedirectorError> {
        for (iface, path, link) in pinned_links(&root.out_links_dir())? {
            let tc_link = SchedClassifierLink::try_from(link)
                .map_err(|e| pin_err("not a tc link", &path)(e.to_string()))?;
            let program = self.out_program()?;
            let updated = program
                .attach_to_link(tc_link)
                .and_then(|id| program.take_link(id));
            if let Some(link) = adopted("tc egress", &iface, &path, updated)? {
                self.out_links.insert(iface, (link, Some(path)));
            }
        }
        Ok(())
    }

    /// "Redirect out" on `iface` (Cisco's `ip wccp N redirect out`): the same
    /// classification as at ingress, for the traffic the router forwards out of this
    /// interface, from a tc egress program (tcx). For routers where the clients'
    /// interfaces cannot take XDP, or where only traffic toward one uplink is to be
    /// redirected. Packets that arrived on an engine-facing or excluded interface are
    /// never redirected there. Pinned like the XDP links when the data plane is pinned.
    pub fn attach_out(&mut self, iface: &str) -> Result<(), RedirectorError> {
        if self.out_links.contains_key(iface) {
            return Err(RedirectorError::AlreadyAttached(format!(
                "{iface} (egress)"
            )));
        }
        let pin = self.pins.as_ref().map(|p| p.out_links_dir().join(iface));
        let attach_err = |source| RedirectorError::AttachOut {
            iface: iface.to_owned(),
            source: Box::new(source),
        };
        let program = self.out_program()?;
        let id = program
            .attach(iface, TcAttachType::Egress)
            .map_err(attach_err)?;
        let link = program.take_link(id).map_err(attach_err)?;
        let link = FdLink::try_from(link).map_err(|e| RedirectorError::Pin {
            what: "tc attachment is not a bpf_link (tcx needs Linux 6.6)",
            path: PathBuf::from(iface),
            reason: e.to_string(),
        })?;
        let link = match &pin {
            Some(path) => FdLink::from(
                link.pin(path)
                    .map_err(|e| pin_err("pinning link", path)(e.to_string()))?,
            ),
            None => link,
        };
        self.out_links.insert(iface.to_owned(), (link, pin));
        Ok(())
    }

    /// Stops redirecting out of `iface` at once and removes the link's pin.
    pub fn detach_out(&mut self, iface: &str) -> Result<(), RedirectorError> {
        let (link, pin) = self
            .out_links
            .remove(iface)
            .ok_or_else(|| RedirectorError::NotAttached(format!("{iface} (egress)")))?;
        if let Some(path) = &pin {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(pin_err("unpinning", path)(e.to_string())),
            }
        }
        drop(link);
        Ok(())
    }

    /// The interfaces this process redirects out of (adopted ones included).
    pub fn attached_out(&self) -> Vec<String> {
        self.out_links.keys().cloned().collect()
    }

    /// The tc egress program, for test runs and attaching.
    pub fn out_program(&mut self) -> Result<&mut SchedClassifier, RedirectorError> {
        Ok(self.object.classifier(OUT_PROGRAM)?)
    }

    /// The pin root, when this data plane is pinned.
    pub fn pin_root(&self) -> Option<&PinRoot> {
        self.pins.as_ref()
    }

    /// Attaches the program to interface `iface` (a name in the calling thread's network
    /// namespace): native XDP, or generic XDP with a warning when the driver refuses
    /// native. When pinned, the link is pinned too and outlives this process.
    pub fn attach(&mut self, iface: &str) -> Result<AttachMode, RedirectorError> {
        if self.links.contains_key(iface) {
            return Err(RedirectorError::AlreadyAttached(iface.to_owned()));
        }
        let pin = self.pins.as_ref().map(|p| p.links_dir().join(iface));
        let program = self.program()?;
        let (id, mode) = match program.attach(iface, XdpMode::Driver) {
            Ok(id) => (id, AttachMode::Native),
            Err(native) => {
                tracing::warn!(iface, error = %native,
                    "native XDP refused; falling back to generic (SKB) XDP, which is much slower");
                let id = program.attach(iface, XdpMode::Skb).map_err(|source| {
                    RedirectorError::Attach {
                        iface: iface.to_owned(),
                        source: Box::new(source),
                    }
                })?;
                (id, AttachMode::Generic)
            }
        };
        let link = program
            .take_link(id)
            .map_err(|source| RedirectorError::Attach {
                iface: iface.to_owned(),
                source: Box::new(source),
            })?;
        // A netlink (pre-bpf_link) attachment cannot be pinned; this kernel always gives
        // a bpf_link, so this fails only on very old kernels, and the link detaches on drop.
        let link = FdLink::try_from(link).map_err(|e| RedirectorError::Pin {
            what: "XDP attachment is not a bpf_link",
            path: PathBuf::from(iface),
            reason: e.to_string(),
        })?;
        let link = match &pin {
            Some(path) => FdLink::from(
                link.pin(path)
                    .map_err(|e| pin_err("pinning link", path)(e.to_string()))?,
            ),
            None => link,
        };
        self.links
            .insert(iface.to_owned(), Attachment { link, pin, mode });
        Ok(mode)
    }

    /// Detaches from `iface` at once and removes the link's pin.
    pub fn detach(&mut self, iface: &str) -> Result<(), RedirectorError> {
        let attachment = self
            .links
            .remove(iface)
            .ok_or_else(|| RedirectorError::NotAttached(iface.to_owned()))?;
        if let Some(path) = &attachment.pin {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(pin_err("unpinning", path)(e.to_string())),
            }
        }
        // Closing the last descriptor of an unpinned link detaches the program.
        drop(attachment.link);
        Ok(())
    }

    /// The interfaces this process holds attachments to (adopted ones included), with
    /// their mode.
    pub fn attached(&self) -> Vec<(String, AttachMode)> {
        self.links
            .iter()
            .map(|(name, a)| (name.clone(), a.mode))
            .collect()
    }

    /// Removes redirection at once and for good: detaches from every interface, unpins
    /// every map and removes the pin root, so that nothing is left on bpffs. What an
    /// operator's `stop --clear` does.
    pub fn clear(mut self) -> Result<(), RedirectorError> {
        let names: Vec<String> = self.links.keys().cloned().collect();
        for name in names {
            self.detach(&name)?;
        }
        let names: Vec<String> = self.out_links.keys().cloned().collect();
        for name in names {
            self.detach_out(&name)?;
        }
        if let Some(root) = self.pins.take() {
            let remove = |path: PathBuf| match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(pin_err("unpinning", &path)(e.to_string())),
            };
            // Every pin under the root: links pinned by another process (not adopted: it
            // raced us) are removed as well, which detaches them, and so are maps an
            // earlier build pinned under other names (its layout changed).
            for dir in [root.links_dir(), root.out_links_dir(), root.maps_dir()] {
                if let Ok(entries) = std::fs::read_dir(dir) {
                    for entry in entries.flatten() {
                        remove(entry.path())?;
                    }
                }
            }
            for dir in [
                root.links_dir(),
                root.out_links_dir(),
                root.maps_dir(),
                root.path().to_owned(),
            ] {
                match std::fs::remove_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(pin_err("removing", &dir)(e.to_string())),
                }
            }
            // The instances' parent goes too when this was the last instance.
            if let Some(parent) = root.path().parent() {
                if parent == Path::new(crate::lifecycle::PIN_BASE) {
                    let _ = std::fs::remove_dir(parent);
                }
            }
        }
        Ok(())
    }

    /// Refreshes the dead-man switch: redirection continues for `grace` from now (rounded
    /// up to whole ticks, plus one for the tick in progress) unless refreshed again.
    pub fn heartbeat(&mut self, grace: Duration) -> Result<(), RedirectorError> {
        let now = self.jiffies()?;
        let hz = u128::from(tick_hz());
        let ticks = (grace.as_nanos() * hz).div_ceil(1_000_000_000) + 1;
        self.set_heartbeat(now, u64::try_from(ticks).unwrap_or(u64::MAX))
    }

    /// The kernel's jiffies now, as the program reads them: user space has no other exact
    /// view of them, so this runs the object's `xdp_clock` once with BPF_PROG_TEST_RUN.
    pub fn jiffies(&mut self) -> Result<u64, RedirectorError> {
        let input = [0u8; 64];
        let mut output = [0u8; 64];
        let program = self.object.xdp(CLOCK_PROGRAM)?;
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(&input),
                data_out: Some(&mut output),
                ..TestRunOptions::new()
            })
            .map_err(|source| RedirectorError::Clock(Box::new(source)))?;
        let mut now = [0u8; 8];
        now.copy_from_slice(&output[..8]);
        if result.return_value != XDP_PASS_VERDICT || result.data_size_out < 8 {
            return Err(RedirectorError::Clock(Box::new(
                aya::programs::ProgramError::UnexpectedProgramType,
            )));
        }
        Ok(u64::from_ne_bytes(now))
    }

    /// The XDP program, for test runs and attaching.
    pub fn program(&mut self) -> Result<&mut Xdp, RedirectorError> {
        Ok(self.object.xdp(PROGRAM)?)
    }

    /// The control record as last written.
    pub fn control(&self) -> Control {
        self.control
    }

    fn array<V: Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<Array<&mut MapData, V>, RedirectorError> {
        let map = self
            .object
            .ebpf_mut()
            .map_mut(name)
            .ok_or(RedirectorError::MissingMap(name))?;
        Array::try_from(map).map_err(map_err(name))
    }

    fn write_control(&mut self) -> Result<(), RedirectorError> {
        let control = self.control;
        self.array::<Control>("control")?
            .set(0, control, 0)
            .map_err(map_err("control"))
    }

    /// Installs `table` as one consistent update: every entry goes into the slot that
    /// packets are not reading, then the generation flips and the next packet reads the
    /// whole new table. Also enables redirection.
    ///
    /// A packet that read the old generation just before the flip finishes on the old
    /// slot; the *next* install rewrites that slot, so two installs should be at least a
    /// few microseconds apart (they are: each is thousands of system calls).
    pub fn install(&mut self, table: &Table) -> Result<(), RedirectorError> {
        let next = self.control.generation.wrapping_add(1);
        let slot = (next & 1) as usize;
        let old = std::mem::take(&mut self.written[slot]);
        let result = self.write_slot(slot as u32, &old, table);
        // On failure the slot's content is unknown: forget it so the next install
        // rewrites every entry.
        self.written[slot] = match &result {
            Ok(()) => table.clone(),
            Err(_) => Table::poisoned(),
        };
        result?;
        self.control.generation = next;
        self.control.flags |= CONTROL_ENABLED;
        self.control.flags = crate::model::l2_return_flag(self.control.flags, next, table);
        self.write_control()
    }

    fn write_slot(&mut self, slot: u32, old: &Table, new: &Table) -> Result<(), RedirectorError> {
        // Everything classification indexes is one value: one system call, and no slot
        // is ever half of one table and half of another even before the flip.
        if old.is_poisoned() || !old.same_slot_value(new) {
            let value = new.to_slot();
            self.array::<SlotLayout>("slots")?
                .set(slot, value.as_ref(), 0)
                .map_err(map_err("slots"))?;
        }
        let name = "engine_addrs";
        let poisoned = old.is_poisoned();
        let map = self
            .object
            .ebpf_mut()
            .map_mut(name)
            .ok_or(RedirectorError::MissingMap(name))?;
        let mut addrs: HashMap<&mut MapData, EngineKey, u32> =
            HashMap::try_from(map).map_err(map_err(name))?;
        if poisoned {
            // Unknown content (a failed write, or adopted from another process): remove
            // every entry of this slot that the new table lacks.
            let keys = addrs
                .keys()
                .collect::<Result<Vec<_>, _>>()
                .map_err(map_err(name))?;
            for key in keys {
                if key.slot == slot && !new.engine_addrs.iter().any(|&(a, _)| a == key.addr) {
                    match addrs.remove(&key) {
                        Ok(()) | Err(MapError::KeyNotFound) => {}
                        Err(e) => return Err(map_err(name)(e)),
                    }
                }
            }
        }
        for &(addr, _) in &old.engine_addrs {
            if !new.engine_addrs.iter().any(|&(a, _)| a == addr) {
                match addrs.remove(&EngineKey { slot, addr }) {
                    Ok(()) | Err(MapError::KeyNotFound) => {}
                    Err(e) => return Err(map_err(name)(e)),
                }
            }
        }
        for &(addr, index) in &new.engine_addrs {
            if !old.engine_addrs.contains(&(addr, index)) {
                addrs
                    .insert(EngineKey { slot, addr }, index, 0)
                    .map_err(map_err(name))?;
            }
        }
        self.write_engine_macs(slot, old, new)?;
        self.write_prefixes(slot, old, new)
    }

    fn write_engine_macs(
        &mut self,
        slot: u32,
        old: &Table,
        new: &Table,
    ) -> Result<(), RedirectorError> {
        let name = "engine_macs";
        let map = self
            .object
            .ebpf_mut()
            .map_mut(name)
            .ok_or(RedirectorError::MissingMap(name))?;
        let mut macs: HashMap<&mut MapData, MacKey, u32> =
            HashMap::try_from(map).map_err(map_err(name))?;
        let key = |mac| MacKey {
            slot,
            mac,
            reserved: [0; 2],
        };
        let stale: Vec<MacKey> = if old.is_poisoned() {
            macs.keys()
                .collect::<Result<Vec<_>, _>>()
                .map_err(map_err(name))?
                .into_iter()
                .filter(|k| k.slot == slot)
                .collect()
        } else {
            old.engine_macs.iter().map(|&(m, _)| key(m)).collect()
        };
        for k in stale {
            if !new.engine_macs.iter().any(|&(m, _)| m == k.mac) {
                match macs.remove(&k) {
                    Ok(()) | Err(MapError::KeyNotFound) => {}
                    Err(e) => return Err(map_err(name)(e)),
                }
            }
        }
        for &entry in &new.engine_macs {
            if !old.engine_macs.contains(&entry) {
                macs.insert(key(entry.0), entry.1, 0)
                    .map_err(map_err(name))?;
            }
        }
        Ok(())
    }

    fn write_prefixes(
        &mut self,
        slot: u32,
        old: &Table,
        new: &Table,
    ) -> Result<(), RedirectorError> {
        let name = "prefixes";
        let map = self
            .object
            .ebpf_mut()
            .map_mut(name)
            .ok_or(RedirectorError::MissingMap(name))?;
        let mut trie: LpmTrie<&mut MapData, PrefixData, u32> =
            LpmTrie::try_from(map).map_err(map_err(name))?;
        let key = |k: &PrefixKey| {
            lpm_trie::Key::new(
                k.prefixlen,
                PrefixData {
                    slot: slot as u8,
                    rank: k.rank,
                    reserved: [0; 2],
                    addr: k.addr,
                },
            )
        };
        let wanted = |k: &lpm_trie::Key<PrefixData>| {
            let d = k.data();
            new.prefixes
                .iter()
                .any(|(n, _)| (n.prefixlen, n.rank, n.addr) == (k.prefix_len(), d.rank, d.addr))
        };
        let stale: Vec<lpm_trie::Key<PrefixData>> = if old.is_poisoned() {
            trie.keys()
                .collect::<Result<Vec<_>, _>>()
                .map_err(map_err(name))?
                .into_iter()
                .filter(|k| u32::from(k.data().slot) == slot)
                .collect()
        } else {
            old.prefixes.iter().map(|(k, _)| key(k)).collect()
        };
        for k in stale {
            if !wanted(&k) {
                match trie.remove(&k) {
                    Ok(()) | Err(MapError::KeyNotFound) => {}
                    Err(e) => return Err(map_err(name)(e)),
                }
            }
        }
        for entry in &new.prefixes {
            if !old.prefixes.contains(entry) {
                trie.insert(&key(&entry.0), entry.1, 0)
                    .map_err(map_err(name))?;
            }
        }
        Ok(())
    }

    /// Writes the dead-man switch in raw jiffies: redirection continues while the
    /// kernel's jiffies are at most `heartbeat_jiffies + grace_jiffies` (wrapping). For
    /// tests that need a heartbeat that is always fresh or always stale;
    /// [`Redirector::heartbeat`] is the controller's call.
    pub fn set_heartbeat(
        &mut self,
        heartbeat_jiffies: u64,
        grace_jiffies: u64,
    ) -> Result<(), RedirectorError> {
        self.control.heartbeat_jiffies = heartbeat_jiffies;
        self.control.grace_jiffies = grace_jiffies;
        self.write_control()
    }

    /// Turns redirection on or off at once (off: every packet passes, returns included
    /// are no longer decapsulated).
    pub fn set_enabled(&mut self, enabled: bool) -> Result<(), RedirectorError> {
        if enabled {
            self.control.flags |= CONTROL_ENABLED;
        } else {
            self.control.flags &= !CONTROL_ENABLED;
        }
        self.write_control()
    }

    /// Sets the `IFACE_*` flags of interface `ifindex` (below `MAX_IFINDEX`), and the
    /// control record's [`CONTROL_IFACES`](crate::layout::CONTROL_IFACES) after it (set while any interface has flags).
    pub fn set_iface_flags(&mut self, ifindex: u32, flags: u32) -> Result<(), RedirectorError> {
        let mut ifaces = match self.ifaces.take() {
            Some(known) => known,
            // First call: what the map holds (a previous process may have written it).
            None => {
                let map = self.array::<u32>("ifaces")?;
                (0..MAX_IFINDEX as u32)
                    .map(|i| map.get(&i, 0).map_err(map_err("ifaces")))
                    .collect::<Result<Vec<u32>, _>>()?
            }
        };
        self.array::<u32>("ifaces")?
            .set(ifindex, flags, 0)
            .map_err(map_err("ifaces"))?;
        if let Some(f) = ifaces.get_mut(ifindex as usize) {
            *f = flags;
        }
        let control = crate::model::iface_flag(self.control.flags, &ifaces);
        self.ifaces = Some(ifaces);
        if control != self.control.flags {
            self.control.flags = control;
            self.write_control()?;
        }
        Ok(())
    }

    /// Every counter, summed over CPUs, indexed as `stats` (see `layout::STATS_*`).
    pub fn stats(&mut self) -> Result<Vec<Counters>, RedirectorError> {
        let name = "stats";
        let map = self
            .object
            .ebpf_mut()
            .map_mut(name)
            .ok_or(RedirectorError::MissingMap(name))?;
        let stats: PerCpuArray<&mut MapData, StatsBlock> =
            PerCpuArray::try_from(map).map_err(map_err(name))?;
        let per_cpu = stats.get(&0, 0).map_err(map_err(name))?;
        let mut out = vec![Counters::default(); STATS_ENTRIES];
        for block in per_cpu.iter() {
            for (sum, c) in out.iter_mut().zip(block.c.iter()) {
                sum.packets += c.packets;
                sum.bytes += c.bytes;
            }
        }
        Ok(out)
    }

    fn conns_map(&mut self) -> Result<HashMap<&mut MapData, FlowKey, ConnEntry>, RedirectorError> {
        let name = "conns";
        let map = self
            .object
            .ebpf_mut()
            .map_mut(name)
            .ok_or(RedirectorError::MissingMap(name))?;
        HashMap::try_from(map).map_err(map_err(name))
    }

    /// The connection table's entries (flows remembered at their SYN).
    pub fn conns(&mut self) -> Result<Vec<(FlowKey, ConnEntry)>, RedirectorError> {
        let map = self.conns_map()?;
        map.iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err("conns"))
    }

    /// Forgets every remembered flow.
    pub fn clear_conns(&mut self) -> Result<(), RedirectorError> {
        let mut map = self.conns_map()?;
        let keys = map
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err("conns"))?;
        for key in keys {
            match map.remove(&key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err("conns")(e)),
            }
        }
        Ok(())
    }
}

/// The active table of the data plane pinned under `pin_root` (the directory holding
/// `maps/`), and its control record, read from the pinned maps themselves: what packets
/// see, independently of any controller's word. The hash and trie entries of the slot
/// are not read (see [`Table::from_slot`]).
pub fn read_pinned_table(pin_root: &Path) -> Result<(Control, Table), RedirectorError> {
    let open = |name: &str| {
        let path = pin_root.join("maps").join(name);
        MapData::from_pin(&path).map_err(|e| pin_err("opening", &path)(e.to_string()))
    };
    let control_map = Array::<MapData, Control>::try_from(aya::maps::Map::Array(open("control")?))
        .map_err(map_err("control"))?;
    let control = control_map.get(&0, 0).map_err(map_err("control"))?;
    let slots = open("slots")?;
    let info = slots.info().map_err(map_err("slots"))?;
    if info.value_size() as usize != std::mem::size_of::<SlotLayout>() {
        return Err(RedirectorError::IncompatiblePin {
            map: "slots",
            found: (info.key_size(), info.value_size(), info.max_entries()),
            expected: (4, std::mem::size_of::<SlotLayout>() as u32, SLOTS as u32),
        });
    }
    let slot = control.generation & 1;
    let value = lookup_slot(&slots, slot)
        .map_err(|e| pin_err("reading", &pin_root.join("maps/slots"))(e.to_string()))?;
    Ok((control, Table::from_slot(&value)))
}

/// `slots[slot]` read straight into a heap buffer: aya's `Array::get` returns the value
/// by value, which for 683 KiB would be on (and past) a thread's stack.
fn lookup_slot(map: &MapData, slot: u32) -> std::io::Result<Box<SlotLayout>> {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    /// `union bpf_attr` as BPF_MAP_LOOKUP_ELEM reads it.
    #[repr(C)]
    struct LookupAttr {
        map_fd: u32,
        pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    let mut value = SlotLayout::new_boxed();
    let attr = LookupAttr {
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        pad: 0,
        key: std::ptr::addr_of!(slot) as u64,
        value: std::ptr::addr_of_mut!(*value) as u64,
        flags: 0,
    };
    // SAFETY: the attribute points at a live u32 key and at a writable buffer of exactly
    // the map's value size (checked by the caller); the kernel writes nothing else.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_ELEM,
            std::ptr::addr_of!(attr),
            std::mem::size_of::<LookupAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(value)
}

/// Refuses maps whose kernel layout is not the one this build writes (see [`MAPS`]).
fn check_maps(object: &mut EbpfObject) -> Result<(), RedirectorError> {
    for (name, key, value, entries) in MAPS {
        let map = object
            .ebpf_mut()
            .map(name)
            .ok_or(RedirectorError::MissingMap(name))?;
        let data: &MapData = match map {
            aya::maps::Map::Array(m)
            | aya::maps::Map::HashMap(m)
            | aya::maps::Map::LruHashMap(m)
            | aya::maps::Map::LpmTrie(m)
            | aya::maps::Map::PerCpuArray(m) => m,
            _ => return Err(RedirectorError::MissingMap(name)),
        };
        let info = data.info().map_err(map_err(name))?;
        let found = (info.key_size(), info.value_size(), info.max_entries());
        let expected = (key as u32, value as u32, entries as u32);
        if found != expected {
            return Err(RedirectorError::IncompatiblePin {
                map: name,
                found,
                expected,
            });
        }
    }
    Ok(())
}
