import pytest

from hwnas.surrogates.decompose import TERMS, decompose, summarize
from hwnas.surrogates.lut import LookupTable

OVERHEAD_MS = 0.01  # known: every synthetic entry carries it


def _synthetic(lab):
    """A table whose parts cost exactly what the measured table's raw entries say, each entry
    measured with OVERHEAD_MS on top; and the parts' true cost at any width."""
    doc = lab.lut.to_json()
    for e in doc["entries"]:
        e["ms"] = [ms + OVERHEAD_MS for ms in e["ms"]]
    doc["overhead_ms"] = OVERHEAD_MS
    table = LookupTable.from_json(doc)
    return table, lambda spec: lab.lut.raw_layer_ms(spec)


def test_a_table_with_a_known_overhead_decomposes_into_it(lab):
    table, true_ms = _synthetic(lab)
    archs = lab.space.random_archs(6, seed=11)
    interaction = 0.03  # the whole network runs 3% slower than its parts
    measured = [(OVERHEAD_MS + sum(true_ms(s) for s in lab.space.layers(a))) * (1 + interaction) for a in archs]
    df = decompose(table, archs, measured, lambda spec: (true_ms(spec) + OVERHEAD_MS, 0.0))
    for a, row in zip(archs, df.itertuples()):
        n = len(lab.space.layers(a))
        assert row.parts == n
        assert row.overhead_ms == pytest.approx((n - 1) * OVERHEAD_MS, rel=1e-9)  # counted n times, paid once
        assert row.interpolation_ms == pytest.approx(0.0, abs=1e-9)  # exact widths interpolate exactly here
        assert row.interaction_pct == pytest.approx(100 * (1 / (1 + interaction) - 1), rel=1e-9)
        assert row.raw_ms - row.measured_ms == pytest.approx(row.overhead_ms + row.interpolation_ms + row.interaction_ms)
        assert row.entry_noise_ms == 0.0


def test_interpolation_and_entry_noise_are_their_own_terms(lab):
    table, true_ms = _synthetic(lab)
    arch = lab.space.random_archs(1, seed=12)[0]
    searchable = [s for s in lab.space.layers(arch) if s.part == "searchable"]
    off = searchable[0]  # at its own width this layer costs 0.05 ms more than the grid's line says

    def exact(spec):
        return true_ms(spec) + OVERHEAD_MS + (0.05 if spec == off else 0.0), 0.004

    measured = OVERHEAD_MS + sum(true_ms(s) for s in lab.space.layers(arch)) + 0.05
    row = decompose(table, [arch], [measured], exact).iloc[0]
    assert row.interpolation_ms == pytest.approx(-0.05)
    assert row.interaction_ms == pytest.approx(0.0, abs=1e-9)
    assert row.entry_noise_ms == pytest.approx(0.004 * len(lab.space.layers(arch)) ** 0.5)


def test_the_summary_splits_aligned_and_unaligned_subnets(lab):
    table, true_ms = _synthetic(lab)
    archs = lab.space.random_archs(8, seed=13) + lab.space.random_archs(4, seed=14, align=4)
    measured = [OVERHEAD_MS + sum(true_ms(s) for s in lab.space.layers(a)) for a in archs]
    df = decompose(table, archs, measured, lambda spec: (true_ms(spec) + OVERHEAD_MS, 0.0))
    assert df["unaligned"].any() and not df["unaligned"].all()
    summary = summarize(df)
    assert set(summary["subnets"]) == {"all", "aligned", "unaligned"}
    assert set(summary["figure"]) == {"raw_error", "table_error", *TERMS, "entry_noise"}
    table_err = summary[(summary.subnets == "all") & (summary.figure == "table_error")].iloc[0]
    assert table_err.mean_abs_pct == pytest.approx(0.0, abs=1e-9)  # the synthetic truth is the corrected table
