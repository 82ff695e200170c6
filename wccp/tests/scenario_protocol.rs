//! Scenario tests of the router and engine state machines on a virtual clock. Each test is
//! a script: set up the network, run to a time, and check the actions logged and the state
//! shown. Messages travel as real bytes (emit, sign, parse), 1 ms apart.

mod scenario_harness;

use std::collections::BTreeMap;
use std::time::Duration;

use scenario_harness::*;
use wccp::engine::{EngineConfig, FastTimers};
use wccp::proto::{Assignment, ServiceId};
use wccp::router::{EngineStatus, RemovalReason, RouterConfig};
use wccp::time::Instant;
use wccp::wire::{AssignmentMethods, ForwardingMethods, Message, MessageType};

/// (1) One router, one engine: join, assignment, then an hour of steady state.
#[test]
fn s01_join_assign_steady_hour() {
    let mut net = Net::new();
    net.add_router(router_config(R1));
    net.add_engine(engine_config(E1, &[R1]));

    // t=0: Here-I-Am; the router answers; the second Here-I-Am reflects the Receive ID and
    // the engine becomes usable within milliseconds.
    net.run_until(ms(100));
    assert_eq!(net.usable(R1), vec![E1]);
    assert_eq!(net.router_events(R1, "engine_usable").len(), 1);
    assert!(
        net.table(R1).is_none(),
        "nothing programmed before the assignment"
    );

    // The designated engine waits 1.5 T (15 s) after the view settles, then assigns.
    net.run_until(secs(14));
    assert!(net.table(R1).is_none());
    net.run_until(secs(16));
    let programs = net.programs(R1);
    assert_eq!(programs.len(), 1, "{}", net.dump(Instant::ZERO));
    let (at, counts) = &programs[0];
    assert!(*at >= ms(15_000) && *at < ms(15_100), "assigned at {at}");
    assert_eq!(counts.clone().unwrap(), BTreeMap::from([(E1, 256)]));
    let st = net.service_state(R1);
    assert_eq!(st.designated, Some(E1));
    assert_eq!(st.key.map(|k| k.0), Some(E1));
    assert!(complete(&net.table(R1).unwrap()));

    // One hour later: nothing new programmed, no queries, no drops; heartbeats flowed.
    net.run_until(secs(3600));
    assert_eq!(
        net.programs(R1).len(),
        1,
        "{}",
        net.router_script(R1, secs(16), secs(3600)).join("\n")
    );
    assert!(net.sent(R1, "removal_query").is_empty());
    let st = net.service_state(R1);
    assert_eq!(st.engines[0].status, EngineStatus::Usable);
    assert_eq!(st.engines[0].slots, 256);
    assert!(
        st.counters.0.keys().all(|k| !k.starts_with("drop.")),
        "{:?}",
        st.counters
    );
    let hia = net.sent(E1, "here_i_am").len();
    assert!((360..=366).contains(&hia), "{hia} Here-I-Ams in an hour");
    // The router reflects the key, so the designated engine never resends.
    assert!(net
        .engine_events(E1, "assignment_sent")
        .iter()
        .all(|(_, e)| !matches!(e, wccp::engine::Event::AssignmentSent { resend: true, .. })));
    assert_eq!(st.flush_at, None);
    let _ = Duration::ZERO;
}

/// Buckets whose engine differs between two hash tables (unassigned on either side counts).
fn moved(a: &Assignment, b: &Assignment) -> usize {
    match (a, b) {
        (Assignment::Hash(x), Assignment::Hash(y)) => (0..=255u8)
            .filter(|i| {
                x.owner(*i).is_some() && y.owner(*i).is_some() && x.owner(*i) != y.owner(*i)
            })
            .count(),
        _ => usize::MAX,
    }
}

fn two_engines(routers: &[std::net::Ipv4Addr]) -> Net {
    let mut net = Net::new();
    for r in routers {
        net.add_router(router_config(*r));
    }
    net.add_engine(engine_config(E1, routers));
    net.add_engine(engine_config(E2, routers));
    net.run_until(secs(20));
    net
}

/// (2) A second engine joins: after 1.5 T the table is rebalanced 128/128 and no bucket
/// moves beyond the joiner's share (ceil(256/2)).
#[test]
fn s02_second_engine_joins() {
    let mut net = Net::new();
    net.add_router(router_config(R1));
    net.add_engine(engine_config(E1, &[R1]));
    net.run_until(secs(30));
    let before = net.table(R1).unwrap();
    net.add_engine(engine_config(E2, &[R1]));
    net.run_until(secs(31));
    assert_eq!(net.usable(R1), vec![E1, E2]);
    assert_eq!(
        net.table(R1),
        Some(before.clone()),
        "no change before the settling time"
    );
    net.run_until(secs(50));
    let after = net.table(R1).unwrap();
    assert_eq!(
        after.assignment.counts(),
        BTreeMap::from([(E1, 128), (E2, 128)])
    );
    assert_eq!(moved(&before.assignment, &after.assignment), 128);
    let progs = net.programs(R1);
    assert_eq!(progs.len(), 2, "{}", net.dump(secs(30)));
    assert!(
        progs[1].0 >= ms(45_000) && progs[1].0 < ms(45_100),
        "{:?}",
        progs[1].0
    );
}

/// (3) An engine goes silent: Removal-Query at 2.5 T, removal at 3 T (its buckets fail
/// open at once), rebalance 1.5 T later; with no engine left, the table is cleared.
#[test]
fn s03_engine_silent_then_none_left() {
    let mut net = two_engines(&[R1]);
    net.run_until(secs(40));
    assert_eq!(net.counts(R1), BTreeMap::from([(E1, 128), (E2, 128)]));
    // E2's Here-I-Ams go out at x0.004 s; silenced at 40 s, it was last heard at 30.005 s.
    net.silence(E2);
    net.run_until(secs(100));
    let q = net.sent(R1, "removal_query");
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].1, E2);
    assert_eq!(q[0].0, ms(55_005), "Removal-Query at 2.5 T");
    let removed = net.router_events(R1, "engine_removed");
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].0, ms(60_005), "removal at 3 T");
    let progs = net.programs(R1);
    // Removal: E1 keeps its 128, E2's fail open; then E1 is given everything.
    assert_eq!(progs[progs.len() - 2].1, Some(BTreeMap::from([(E1, 128)])));
    assert_eq!(progs[progs.len() - 1].1, Some(BTreeMap::from([(E1, 256)])));
    assert!(
        progs[progs.len() - 1].0 >= ms(75_005),
        "reassigned 1.5 T after the change"
    );
    // The last engine goes: cleared (fail open).
    net.silence(E1);
    net.run_until(secs(200));
    assert_eq!(net.programs(R1).last().unwrap().1, None);
    assert!(net.table(R1).is_none());
    assert!(net.usable(R1).is_empty());
}

/// (4) The designated engine leaves: the next lowest takes over and assigns everything,
/// keeping its own buckets.
#[test]
fn s04_designated_leaves() {
    let mut net = two_engines(&[R1]);
    net.run_until(secs(40));
    let before = net.table(R1).unwrap();
    assert_eq!(net.service_state(R1).designated, Some(E1));
    net.silence(E1);
    net.run_until(secs(120));
    let st = net.service_state(R1);
    assert_eq!(st.designated, Some(E2));
    assert_eq!(net.counts(R1), BTreeMap::from([(E2, 256)]));
    let Assignment::Hash(b) = &before.assignment else {
        panic!()
    };
    let Assignment::Hash(a) = &net.table(R1).unwrap().assignment else {
        panic!()
    };
    assert!(
        (0..=255u8)
            .filter(|i| b.owner(*i) == Some(E2))
            .all(|i| a.owner(i) == Some(E2)),
        "E2 kept its own buckets"
    );
    assert!(net
        .engine_events(E2, "designated")
        .iter()
        .any(|(_, e)| matches!(e, wccp::engine::Event::Designated { now: true })));
}

fn with_password(mut cfg: RouterConfig, pw: &str) -> RouterConfig {
    for s in &mut cfg.services {
        s.password = Some(pw.as_bytes().to_vec());
    }
    cfg
}

fn engine_pw(addr: std::net::Ipv4Addr, pw: Option<&str>) -> EngineConfig {
    let mut c = engine_config(addr, &[R1]);
    c.password = pw.map(|p| p.as_bytes().to_vec());
    c
}

/// (5) Bad MD5 and wrong or missing passwords are dropped and counted; the right password
/// joins.
#[test]
fn s05_bad_md5_and_wrong_password() {
    let mut net = Net::new();
    net.add_router(with_password(router_config(R1), "s3cret"));
    net.add_engine(engine_pw(E1, Some("s3cret")));
    net.add_engine(engine_pw(E2, Some("wrong")));
    net.add_engine(engine_pw(E3, None));
    net.run_until(secs(20));
    assert_eq!(net.usable(R1), vec![E1]);
    // A correctly signed message with one flipped digest byte.
    let (_, _, _, good) = net
        .wire_log
        .iter()
        .find(|(_, f, _, b)| {
            *f == E1 && Message::parse(b).unwrap().message_type == MessageType::HereIAm
        })
        .cloned()
        .unwrap();
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 1] ^= 1; // payload change: digest no longer matches
    net.inject(E1, R1, bad);
    net.run_until(secs(21));
    let c = net.service_state(R1).counters;
    // E2 and E3 sent two Here-I-Ams each (0 s and 10 s) and never got an answer.
    assert_eq!(c.get("drop.security"), 3 + 3 + 1, "{c:?}");
    assert!(net.sent(R1, "i_see_you").iter().all(|(_, to)| *to == E1));
    assert_eq!(net.counts(R1), BTreeMap::from([(E1, 256)]));
}

/// (6) A Here-I-Am describing service 90 differently from the first engine is refused.
#[test]
fn s06_inconsistent_service_refused() {
    let mut net = Net::new();
    net.add_router(router_config(R1));
    net.add_engine(engine_config(E1, &[R1]));
    net.run_until(secs(1));
    let mut other = engine_config(E2, &[R1]);
    other.service.ports = [8080, 0, 0, 0, 0, 0, 0, 0];
    net.add_engine(other);
    net.run_until(secs(30));
    assert_eq!(net.usable(R1), vec![E1]);
    assert!(net.service_state(R1).counters.get("drop.service_mismatch") >= 3);
    assert_eq!(net.service_state(R1).definition, Some(service()));
    assert_eq!(net.counts(R1), BTreeMap::from([(E1, 256)]));
}

/// (7) A stale Redirect-Assign (a replay after the membership changed) and one from an
/// engine that is not usable are ignored and counted; the table stays.
#[test]
fn s07_stale_assignment_ignored() {
    let mut net = Net::new();
    net.add_router(router_config(R1));
    net.add_engine(engine_config(E1, &[R1]));
    net.run_until(secs(20));
    let table = net.table(R1).unwrap();
    let (_, _, _, ra) = net
        .wire_log
        .iter()
        .find(|(_, _, _, b)| Message::parse(b).unwrap().message_type == MessageType::RedirectAssign)
        .cloned()
        .unwrap();
    net.add_engine(engine_config(E2, &[R1]));
    net.run_until(secs(25)); // membership changed; E1 has not reassigned yet
    net.inject(E1, R1, ra.clone());
    net.run_until(secs(26));
    assert_eq!(
        net.service_state(R1).counters.get("drop.stale_assignment"),
        1
    );
    assert_eq!(net.table(R1), Some(table));
    // From an address the router does not know as a usable engine.
    let mut m = Message::parse(&ra).unwrap();
    for c in &mut m.components {
        if let wccp::wire::Component::AssignmentInfo(a) = c {
            a.key.address = wccp::wire::Address::V4(E3);
        }
    }
    net.inject(E3, R1, m.to_bytes().unwrap());
    net.run_until(secs(27));
    assert_eq!(
        net.service_state(R1)
            .counters
            .get("drop.assigner_not_usable"),
        1
    );
    // The genuine reassignment still lands.
    net.run_until(secs(60));
    assert_eq!(net.counts(R1), BTreeMap::from([(E1, 128), (E2, 128)]));
}

/// (8) Two routers, two engines: both routers program the same table, from one key.
#[test]
fn s08_two_routers_agree() {
    let mut net = two_engines(&[R1, R2]);
    net.run_until(secs(60));
    let t1 = net.table(R1).unwrap();
    assert_eq!(Some(t1.clone()), net.table(R2));
    assert_eq!(
        t1.assignment.counts(),
        BTreeMap::from([(E1, 128), (E2, 128)])
    );
    assert_eq!(net.service_state(R1).key, net.service_state(R2).key);
    assert_eq!(net.service_state(R1).routers, vec![R1, R2]);
}

/// (9) Mask assignment: 6-bit mask, 64 values split 32/32; an L2 engine is programmed as
/// such.
#[test]
fn s09_mask_assignment() {
    let mut net = Net::new();
    net.add_router(router_config(R1));
    let mut c1 = engine_config(E1, &[R1]);
    c1.assignment = AssignmentMethods::MASK;
    let mut c2 = engine_config(E2, &[R1]);
    c2.assignment = AssignmentMethods::MASK;
    c2.forwarding = ForwardingMethods::L2;
    net.add_engine(c1);
    net.add_engine(c2);
    net.run_until(secs(40));
    let t = net.table(R1).unwrap();
    let Assignment::Mask(rules) = &t.assignment else {
        panic!("expected a mask table: {t:?}");
    };
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].mask.dst_addr, 0x1741);
    assert_eq!(rules[0].values.len(), 64);
    assert_eq!(t.assignment.counts(), BTreeMap::from([(E1, 32), (E2, 32)]));
    let l2 = t.engines.iter().find(|e| e.address == E2).unwrap();
    assert_eq!(l2.forwarding, ForwardingMethods::L2);
    let st = net.service_state(R1);
    assert!(st
        .engines
        .iter()
        .all(|e| e.assignment == AssignmentMethods::MASK));
}

/// (10) Router restart: it comes back empty, relearns the engines, and the designated
/// engine gives it the same table again.
#[test]
fn s10_router_restart() {
    let mut net = two_engines(&[R1]);
    net.run_until(secs(40));
    let before = net.table(R1).unwrap();
    net.restart_router(router_config(R1));
    net.run_until(secs(41));
    assert!(net.table(R1).is_none());
    net.run_until(secs(90));
    assert_eq!(
        net.table(R1),
        Some(before),
        "{}",
        net.router_script(R1, secs(40), secs(90)).join("\n")
    );
}

/// (11) Partial view: E0 (the lowest address) reaches only R2. E0 cannot be designated (it
/// misses R1); E1 is, assigns to the engines both routers see, and R2 accepts E1's
/// assignment although E0 is lower there.
#[test]
fn s11_partial_view() {
    let mut net = Net::new();
    net.add_router(router_config(R1));
    net.add_router(router_config(R2));
    net.cut(E0, R1);
    net.add_engine(engine_config(E0, &[R1, R2]));
    net.add_engine(engine_config(E1, &[R1, R2]));
    net.add_engine(engine_config(E2, &[R1, R2]));
    net.run_until(secs(60));
    assert_eq!(net.usable(R2), vec![E0, E1, E2]);
    assert_eq!(net.usable(R1), vec![E1, E2]);
    let expected = BTreeMap::from([(E1, 128), (E2, 128)]);
    assert_eq!(net.counts(R1), expected);
    assert_eq!(net.counts(R2), expected);
    assert_eq!(net.service_state(R2).designated, Some(E1));
    assert!(net.engine_events(E0, "assignment_sent").is_empty());
    // E0 may believe itself designated for a moment (before R2 reports R1), never after.
    assert_eq!(net.engines[&E0].state().designated, None);
    assert!(net
        .engine_events(E0, "designated")
        .last()
        .is_none_or(|(_, e)| *e == wccp::engine::Event::Designated { now: false }));
    assert_eq!(
        net.service_state(R2).counters.get("drop.stale_assignment"),
        0
    );
}

/// (12) A multicast group: engines announce to 224.0.0.99, the router answers only with the
/// scheduled group I-See-You (9 s +-10%), and takes the group-addressed assignment.
#[test]
fn s12_multicast_group() {
    let mut net = Net::new();
    let mut rc = router_config(R1);
    rc.services[0].multicast = Some(GROUP);
    net.add_router(rc);
    for e in [E1, E2] {
        let mut c = engine_config(e, &[]);
        c.multicast = Some(GROUP);
        net.add_engine(c);
    }
    net.run_until(secs(120));
    assert_eq!(net.counts(R1), BTreeMap::from([(E1, 128), (E2, 128)]));
    let isy = net.sent(R1, "i_see_you");
    assert!(
        isy.iter().all(|(_, to)| *to == GROUP),
        "only group I-See-Yous"
    );
    for w in isy.windows(2) {
        let gap = w[1].0.as_millis() - w[0].0.as_millis();
        assert!((8_100..=9_900).contains(&gap), "gap {gap} ms");
    }
    assert!(net
        .sent(E1, "redirect_assign")
        .iter()
        .all(|(_, to)| *to == GROUP));
    // Router Identity: Sent-To is the group, Received-From lists both engines.
    let (_, _, _, bytes) = net
        .wire_log
        .iter()
        .rev()
        .find(|(_, f, _, b)| {
            *f == R1 && Message::parse(b).unwrap().message_type == MessageType::ISeeYou
        })
        .cloned()
        .unwrap();
    let m = Message::parse(&bytes).unwrap();
    let id = m.router_identity().unwrap();
    assert_eq!(id.sent_to, wccp::wire::Address::V4(GROUP));
    assert_eq!(id.received_from.len(), 2);
}

/// (13) A Removal-Query answered in time (three Here-I-Ams T/10 apart keep the engine),
/// and one not answered (the engine is removed at 3 T).
#[test]
fn s13_removal_query_answered_and_not() {
    let mut net = two_engines(&[R1]);
    net.run_until(secs(31));
    // E2's Here-I-Ams stop reaching R1 after the one at 30.004 s (heard at 30.005 s).
    net.block(E2, R1);
    net.run_until(ms(55_000));
    net.unblock(E2, R1);
    net.run_until(secs(70));
    let q = net.sent(R1, "removal_query");
    assert_eq!(q, vec![(ms(55_005), E2)]);
    let answers: Vec<Instant> = net
        .sent(E2, "here_i_am")
        .into_iter()
        .map(|(t, _)| t)
        .filter(|t| *t > ms(55_000) && *t < ms(58_000))
        .collect();
    assert_eq!(answers, vec![ms(55_006), ms(56_006), ms(57_006)]);
    assert!(net.router_events(R1, "engine_removed").is_empty());
    assert_eq!(net.usable(R1), vec![E1, E2]);

    // Not answered: E2 is gone for good.
    net.silence(E2);
    net.run_until(secs(120));
    let removed = net.router_events(R1, "engine_removed");
    assert_eq!(removed.len(), 1);
    assert!(
        matches!(removed[0].1, wccp::router::Event::EngineRemoved { engine, reason: RemovalReason::Timeout, .. } if engine == E2)
    );
}

/// (14) SHUTDOWN: the router removes the engine at once, acknowledges, and the designated
/// engine reassigns.
#[test]
fn s14_shutdown() {
    let mut net = two_engines(&[R1]);
    net.run_until(secs(60));
    net.shutdown(E2);
    net.run_until(ms(60_010));
    let removed = net.router_events(R1, "engine_removed");
    assert_eq!(removed.len(), 1);
    assert!(
        matches!(removed[0].1, wccp::router::Event::EngineRemoved { engine, reason: RemovalReason::Shutdown, .. } if engine == E2)
    );
    assert_eq!(
        net.counts(R1),
        BTreeMap::from([(E1, 128)]),
        "E2's buckets fail open at once"
    );
    assert_eq!(net.engine_events(E2, "left").len(), 1);
    assert!(net.engines[&E2].next_timeout().is_none());
    net.run_until(secs(90));
    assert_eq!(net.counts(R1), BTreeMap::from([(E1, 256)]));
    assert!(net.sent(R1, "removal_query").is_empty());
}

/// (15) Per-engine timers: E2 negotiates a 250 ms interval and timeout scale 3 (Transmit_T
/// and Timer Scale); silent, it is removed and its buckets fail open in under 1 s, while E1
/// on the default 10 s timers in the same group is never queried.
#[test]
fn s15_fast_timers_per_engine() {
    let mut net = Net::new();
    net.add_router(router_config(R1));
    net.add_engine(engine_config(E1, &[R1]));
    let mut fast = engine_config(E2, &[R1]);
    // The case: 500 ms heartbeats. A timeout scale of 2 removes the engine 2 T after
    // its last Here-I-Am, so under 1 s after it dies between two of them.
    fast.interval = Duration::from_millis(500);
    fast.fast_timers = Some(FastTimers {
        timeout_scale: Some(2),
    });
    net.add_engine(fast);
    net.run_until(secs(60));
    assert_eq!(net.counts(R1), BTreeMap::from([(E1, 128), (E2, 128)]));
    let st = net.service_state(R1);
    let iv: BTreeMap<_, _> = st
        .engines
        .iter()
        .map(|e| (e.address, e.interval_ms))
        .collect();
    assert_eq!(iv, BTreeMap::from([(E1, 10_000), (E2, 500)]));
    // Die between two heartbeats, as a crash does.
    net.run_until(Instant::from_millis(60_130));
    let died = net.now;
    net.silence(E2);
    net.run_until(secs(62));
    let progs = net.programs(R1);
    let (at, counts) = progs.last().unwrap();
    assert_eq!(counts.clone(), Some(BTreeMap::from([(E1, 128)])));
    let failover = at.as_millis() - died.as_millis();
    assert!(failover < 1000, "failover took {failover} ms");
    assert!(net
        .sent(R1, "removal_query")
        .iter()
        .all(|(_, to)| *to == E2));
    net.run_until(secs(3600));
    assert_eq!(net.usable(R1), vec![E1]);
    assert!(net
        .sent(R1, "removal_query")
        .iter()
        .all(|(_, to)| *to == E2));
    assert_eq!(net.counts(R1), BTreeMap::from([(E1, 256)]));
    let _ = ServiceId {
        dynamic: true,
        id: 90,
    };
}

/// (16) A SIGHUP on a running router: new timers keep the view and the table untouched;
/// a group list that leaves an engine out removes it at once and its buckets move to the
/// others; changes the view cannot survive are refused with the group left as it was.
#[test]
fn s16_reconfigure_keeps_the_view() {
    let mut net = two_engines(&[R1]);
    net.run_until(secs(40));
    assert_eq!(net.counts(R1), BTreeMap::from([(E1, 128), (E2, 128)]));
    let usable_before = net.router_events(R1, "engine_usable").len();
    let programs_before = net.programs(R1).len();

    let mut cfg = wccp::router::ServiceConfig::new(SVC, None);
    cfg.timers.query_after_tenths = 40;
    cfg.timers.remove_after_tenths = 50;
    net.reconfigure_router(R1, cfg.clone()).unwrap();
    net.run_until(secs(200));
    assert_eq!(net.usable(R1), vec![E1, E2]);
    assert_eq!(net.router_events(R1, "engine_usable").len(), usable_before);
    assert_eq!(
        net.programs(R1).len(),
        programs_before,
        "nothing reprogrammed"
    );

    // The new timers are in force: a silent engine is queried after 4 T, not 2.5 T.
    let silent_at = net.now;
    net.silence(E2);
    net.run_until(silent_at + Duration::from_secs(60));
    let queries = net.sent(R1, "removal_query");
    let first = queries.iter().find(|(t, to)| *to == E2 && *t > silent_at);
    let first = first.expect("E2 queried").0;
    let after = first.as_millis() - silent_at.as_millis();
    assert!(
        (30_000..=41_000).contains(&after),
        "queried {after} ms after going silent"
    );

    // Back to two engines, then a group list without E2.
    let mut net = two_engines(&[R1]);
    net.run_until(secs(40));
    cfg.group_list = Some(vec![E1]);
    let at = net.now;
    net.reconfigure_router(R1, cfg.clone()).unwrap();
    let removed = net.router_events(R1, "engine_removed");
    assert!(
        matches!(&removed[..], [(t, wccp::router::Event::EngineRemoved { engine, reason: RemovalReason::GroupList, .. })] if *engine == E2 && *t == at),
        "{removed:?}"
    );
    assert_eq!(
        net.counts(R1),
        BTreeMap::from([(E1, 128)]),
        "E2's buckets fail open at once"
    );
    net.run_until(secs(80));
    assert_eq!(net.usable(R1), vec![E1]);
    assert_eq!(
        net.counts(R1),
        BTreeMap::from([(E1, 256)]),
        "E1 reassigned all"
    );
    assert!(
        net.service_state(R1)
            .counters
            .0
            .contains_key("drop.not_in_group_list"),
        "E2's later Here-I-Ams are refused by the list: {:?}",
        net.service_state(R1).counters
    );

    // Refused: a definition, a multicast address, the methods.
    let mut bad = cfg.clone();
    bad.definition = Some(service());
    assert_eq!(
        net.reconfigure_router(R1, bad),
        Err(wccp::router::ReconfigureError::DefinitionChanged)
    );
    let mut bad = cfg.clone();
    bad.multicast = Some(std::net::Ipv4Addr::new(224, 0, 1, 50));
    assert_eq!(
        net.reconfigure_router(R1, bad),
        Err(wccp::router::ReconfigureError::MulticastChanged)
    );
    let mut bad = cfg;
    bad.id = ServiceId {
        dynamic: true,
        id: 91,
    };
    assert!(matches!(
        net.reconfigure_router(R1, bad),
        Err(wccp::router::ReconfigureError::UnknownService(_))
    ));
    assert_eq!(net.usable(R1), vec![E1]);
}
