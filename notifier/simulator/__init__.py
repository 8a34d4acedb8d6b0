"""A local stand-in for Autodesk's Relationship Service v2 (tests, demos, benchmarks).

    async with Simulator(SimulatorConfig(containers=[cid], relationships=0)) as sim:
        sim.url                                   # http://127.0.0.1:<free port>
        sim.state.create_relationships(cid, 10)   # or a list of entity pairs
        sim.knobs.rpm = 5                         # any Knobs field, at any time

Where the public reference is silent, the simulator's choices are written down next to the
code: sync and syncStatus in ``syncing``, OAuth rotation in ``auth``, create and delete in
``writes``, tokens in ``tokens``, the control endpoints in ``control``.
"""

from notifier.simulator.config import Knobs, SimulatorConfig
from notifier.simulator.server import Simulator, build_app
from notifier.simulator.state import SimState

__all__ = ["Knobs", "SimState", "Simulator", "SimulatorConfig", "build_app"]
