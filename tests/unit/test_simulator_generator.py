"""The simulator's change generator follows its rate knob at once, without a network."""

from __future__ import annotations

import asyncio

from notifier.simulator import SimState, SimulatorConfig
from notifier.simulator.generator import TICK, ChangeGenerator

C = "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10"


async def test_no_change_after_the_rate_is_set_to_zero() -> None:
    """Tests stop the changes and then compare against the ground truth: a change landing a
    tick later would be one the notifier is blamed for missing."""
    st = SimState(SimulatorConfig(containers=[C], relationships=0, seed=1))
    gen = ChangeGenerator(st)
    gen.start()
    try:
        for _ in range(5):
            st.set_knobs(change_rate=400.0)
            await asyncio.sleep(TICK * 3)
            st.set_knobs(change_rate=0.0)
            seq = st.container(C).seq
            await asyncio.sleep(TICK * 3)
            assert st.container(C).seq == seq
        assert gen.changes > 0
    finally:
        await gen.stop()
