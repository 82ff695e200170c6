//! The controller's handle on the redirect program: load it, write tables as one atomic
//! update, refresh the heartbeat, set interface flags, read counters and the connection
//! table.
//!
//! Attaching, pinning and adopting pinned maps and links come next (see the crate's
//! status list).

use aya::{
    maps::{Array, HashMap, MapData, MapError, PerCpuArray},
    programs::Xdp,
    Pod,
};

use crate::{
    layout::{
        ConnEntry, Control, Counters, EngineKey, FlowKey, BUCKETS, CONTROL_ENABLED, FILTER_WORDS,
        MAX_ENGINES, MAX_SERVICES, PORTS, PORT_PROTOCOLS, STATS_ENTRIES,
    },
    table::Table,
    EbpfObject, LoadError,
};

/// The object and its program's name.
pub const OBJECT: &str = "redirect";
/// The XDP program (the C function) in [`OBJECT`].
pub const PROGRAM: &str = "xdp_redirect";

/// Why a map operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RedirectorError {
    /// Loading the object or program.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The object lacks a map this code needs: object and code disagree.
    #[error("map {0} missing from the redirect object")]
    MissingMap(&'static str),
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

/// The loaded redirect program and its maps, and what this process last wrote to each
/// table slot (so an update writes only the entries that change).
#[derive(Debug)]
pub struct Redirector {
    object: EbpfObject,
    control: Control,
    /// What each slot holds; a fresh map holds [`Table::default`].
    written: [Table; 2],
}

impl Redirector {
    /// Loads the object and its program (the verifier runs here). Nothing is attached
    /// and every packet passes until a table is installed.
    pub fn load() -> Result<Self, RedirectorError> {
        let mut object = EbpfObject::open(OBJECT)?;
        object.xdp(PROGRAM)?;
        Ok(Self {
            object,
            control: Control::default(),
            written: [Table::default(), Table::default()],
        })
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
        self.write_control()
    }

    fn write_slot(&mut self, slot: u32, old: &Table, new: &Table) -> Result<(), RedirectorError> {
        fn diff<V: Pod + PartialEq>(
            map: &mut Array<&mut MapData, V>,
            name: &'static str,
            base: u32,
            old: &[V],
            new: &[V],
        ) -> Result<(), RedirectorError> {
            for (i, value) in new.iter().enumerate() {
                if old.get(i) != Some(value) {
                    map.set(base + i as u32, value, 0).map_err(map_err(name))?;
                }
            }
            Ok(())
        }
        let s = slot;
        diff(
            &mut self.array("ports")?,
            "ports",
            s * (PORT_PROTOCOLS * PORTS) as u32,
            &old.ports,
            &new.ports,
        )?;
        diff(
            &mut self.array("services")?,
            "services",
            s * MAX_SERVICES as u32,
            &old.services,
            &new.services,
        )?;
        diff(
            &mut self.array("buckets")?,
            "buckets",
            s * (MAX_SERVICES * BUCKETS) as u32,
            &old.buckets,
            &new.buckets,
        )?;
        diff(
            &mut self.array("engines")?,
            "engines",
            s * MAX_ENGINES as u32,
            &old.engines,
            &new.engines,
        )?;
        diff(
            &mut self.array("engine_filter")?,
            "engine_filter",
            s * FILTER_WORDS as u32,
            &old.filter,
            &new.filter,
        )?;
        diff(
            &mut self.array("tables")?,
            "tables",
            s,
            std::slice::from_ref(&old.header),
            std::slice::from_ref(&new.header),
        )?;
        let name = "engine_addrs";
        let map = self
            .object
            .ebpf_mut()
            .map_mut(name)
            .ok_or(RedirectorError::MissingMap(name))?;
        let mut addrs: HashMap<&mut MapData, EngineKey, u32> =
            HashMap::try_from(map).map_err(map_err(name))?;
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
        Ok(())
    }

    /// Writes the dead-man switch: redirection continues while the program's
    /// CLOCK_MONOTONIC is at most `heartbeat_ns + grace_ns`.
    pub fn set_heartbeat(
        &mut self,
        heartbeat_ns: u64,
        grace_ns: u64,
    ) -> Result<(), RedirectorError> {
        self.control.heartbeat_ns = heartbeat_ns;
        self.control.grace_ns = grace_ns;
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

    /// Sets the `IFACE_*` flags of interface `ifindex` (below `MAX_IFINDEX`).
    pub fn set_iface_flags(&mut self, ifindex: u32, flags: u32) -> Result<(), RedirectorError> {
        self.array::<u32>("ifaces")?
            .set(ifindex, flags, 0)
            .map_err(map_err("ifaces"))
    }

    /// Every counter, summed over CPUs, indexed as `stats` (see `layout::STATS_*`).
    pub fn stats(&mut self) -> Result<Vec<Counters>, RedirectorError> {
        let name = "stats";
        let map = self
            .object
            .ebpf_mut()
            .map_mut(name)
            .ok_or(RedirectorError::MissingMap(name))?;
        let stats: PerCpuArray<&mut MapData, Counters> =
            PerCpuArray::try_from(map).map_err(map_err(name))?;
        let mut out = Vec::with_capacity(STATS_ENTRIES);
        for i in 0..STATS_ENTRIES as u32 {
            let values = stats.get(&i, 0).map_err(map_err(name))?;
            let sum = values.iter().fold(Counters::default(), |a, c| Counters {
                packets: a.packets + c.packets,
                bytes: a.bytes + c.bytes,
            });
            out.push(sum);
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
