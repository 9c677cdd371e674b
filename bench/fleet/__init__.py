"""The fleet simulation of issue 21 (Scale-out V): N nodes pre-seeding one model.

- :mod:`bench.fleet.sim`: the discrete-event, flow-level simulation (:func:`simulate`);
- :mod:`bench.fleet.config`: :class:`FleetConfig` (one fleet) and :class:`FleetResult`;
- :mod:`bench.fleet.fairshare`: max-min fair rates over capacitated links (numpy);
- :mod:`bench.fleet.order`: the chunk order, injected (a stand-in until the node's own
  rule, ``accel.fetch.sources_order`` on branch peerfetch, is on main);
- :mod:`bench.fleet.tracking`: a faster table behind the hub's own ``choose_peers``;
- :mod:`bench.fleet.hubload`: the tracker's request rate measured on a real hub.

Run by ``./scripts/bench fleet`` (``bench/bench_fleet.py``); tested by
``tests/bench/test_fleet_sim.py``. The source policy (``accel.fetch.sources``) and
the tracker (``accel.hub.tracker``) are imported from accel as the node and hub run
them: nothing here re-implements a policy the product has.
"""
