"""benchmarks/scaling.py keeps working: the chain it builds, its measurement and its table, on a
tiny graph (timings themselves are not checked: speed lives in the benchmark's output)."""

from __future__ import annotations

from benchmarks import scaling


def test_chain_measure_and_table():
    graph = scaling.chain(30).build((None, 4, 8, 8))
    assert graph.op_counts() == {"Conv": 10, "BatchNormalization": 10, "Relu": 10}
    rows = [scaling.measure(30, repeat=1), scaling.measure(60, repeat=1)]
    assert [r["nodes"] for r in rows] == [30.0, 60.0]
    assert all(r[s] >= 0 for r in rows for s in scaling.STAGES)
    table = scaling.render(rows, markdown=True).splitlines()
    assert table[0].startswith("| nodes | build us/node (x)") and len(table) == 4
    assert table[2].startswith("| 30 |") and "(1.00)" in table[2]
