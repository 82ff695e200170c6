//! Scenario tests of the router and engine state machines on a virtual clock. Each test is
//! a script: set up the network, run to a time, and check the actions logged and the state
//! shown. Messages travel as real bytes (emit, sign, parse), 1 ms apart.

mod scenario_harness;

use std::collections::BTreeMap;
use std::time::Duration;

use scenario_harness::*;
use wccp::router::EngineStatus;

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
    assert_eq!(programs.len(), 1, "{}", net.dump(Instant0()));
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

#[allow(non_snake_case)]
fn Instant0() -> wccp::time::Instant {
    wccp::time::Instant::ZERO
}

#[test]
#[ignore]
fn dump_join() {
    let mut net = Net::new();
    net.add_router(router_config(R1));
    net.add_engine(engine_config(E1, &[R1]));
    net.run_until(secs(31));
    println!("{}", net.dump(Instant0()));
}
