"""The CLI end to end, in subprocesses, as a user runs it."""

import json
import subprocess
import sys

import click
import pandas as pd
import pytest

from hwnas.cli import main as cli_main

TINY = ["--space", "tfnas", "--resolution", "32", "--width-mult", "0.25", "--classes", "10"]
FAST = ["--warmup", "1", "--min-runs", "5", "--min-time", "0"]


def hwnas(*args, db=None):
    cmd = [sys.executable, "-m", "hwnas.cli", *args]
    if db is not None:
        cmd += ["--db", str(db)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_measure_random_writes_table_and_reuses_the_store(tmp_path):
    out = tmp_path / "r.csv"
    r = hwnas("measure", *TINY, *FAST, "--random", "--n", "3", "--seed", "1", "--out", str(out), db=tmp_path / "m.sqlite")
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out)
    assert len(df) == 3 and {"median_ms", "ci_low_ms", "ci_high_ms", "k", "ref_ratio", "flags", "p90_ms", "n"} <= set(df.columns)
    assert (df["median_ms"] > 0).all() and (~df["cached"]).all()
    r2 = hwnas("measure", *TINY, *FAST, "--random", "--n", "3", "--seed", "1", "--out", str(tmp_path / "r.json"), db=tmp_path / "m.sqlite")
    assert r2.returncode == 0
    again = pd.read_json(tmp_path / "r.json")
    assert again["cached"].all() and list(again["median_ms"]) == pytest.approx(list(df["median_ms"]))


def test_measure_with_sessions_stores_them_in_the_protocol(tmp_path):
    out = tmp_path / "s.csv"
    r = hwnas("measure", *TINY, *FAST, "--random", "--n", "1", "--processes", "2", "--sessions", "3", "--out", str(out),
              db=tmp_path / "m.sqlite")
    assert r.returncode == 0, r.stderr
    assert pd.read_csv(out)["k"].tolist() == [2]
    stored = pd.read_sql_table("measurements", f"sqlite:///{tmp_path / 'm.sqlite'}")
    arch = stored[stored["kind"] == "arch"].iloc[0]
    assert json.loads(arch["protocol"])["sessions"] == 3
    assert all(p["latency_ms"] > 0 and p["session_cov"] >= 0 for p in json.loads(arch["detail"])["processes"])


def test_measure_arch_file_layers_and_onnx(tmp_path):
    arch = tmp_path / "a.json"
    assert hwnas("arch", *TINY, "--random", "--seed", "4", "--out", str(arch)).returncode == 0
    r = hwnas("measure", *TINY, *FAST, "--processes", "1", "--no-reference", "--arch", str(arch), db=tmp_path / "m.sqlite")
    assert r.returncode == 0, r.stderr
    assert json.loads(arch.read_text())["space"] == "tfnas"
    r = hwnas("measure", *TINY, *FAST, "--processes", "1", "--no-reference", "--layers", "--out", str(tmp_path / "l.parquet"), db=tmp_path / "m.sqlite")
    assert r.returncode == 0, r.stderr
    layers = pd.read_parquet(tmp_path / "l.parquet")
    assert len(layers) > 20 and set(layers["kind"]) == {"stem", "mbinvres", "head"}
    from hwnas.exporters.onnx import export_arch
    from hwnas.spaces.mbconv import Space

    onnx_file = export_arch(Space("tfnas", 32, 0.25, 10), json.loads(arch.read_text()), cache_dir=tmp_path).path
    r = hwnas("measure", *FAST, "--onnx", str(onnx_file), db=tmp_path / "m.sqlite")
    assert r.returncode == 0 and onnx_file.name in r.stdout


def test_info_counts(tmp_path):
    r = hwnas("info", "--space", "proxyless")
    assert r.returncode == 0 and "M parameters" in r.stdout and "stage8.layer1" in r.stdout


def _reshape_that_cannot_hold(path):
    """A valid model that fails only when run: its Reshape takes its target shape from an input."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def bad_inputs(tmp_path):
    malformed = tmp_path / "malformed.json"
    malformed.write_text("{ not json")
    wrong_shape = tmp_path / "list.json"
    wrong_shape.write_text("[1, 2, 3]")
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps({"stages": ["k3_e3"] * 300_000}))
    bad_op = tmp_path / "op.json"
    bad_op.write_text(json.dumps({"width_mult": 0.25, "stages": [{"layers": ["k9_e3"]}] + [{"layers": ["k3_e3"]}] * 5}))
    line_break = tmp_path / "nel.json"  # found by the fuzz test: U+0085 is a line break to str.splitlines
    line_break.write_text(json.dumps({"space": "tf\x85nas", "width_mult": 0.25, "stages": []}))
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(b"\x00garbage")
    fails_when_run = tmp_path / "reshape.onnx"
    _reshape_that_cannot_hold(fails_when_run)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    m = ["measure", *FAST]
    return [
        ([*m, *TINY, "--arch", str(malformed)], "not valid JSON"),
        ([*m, *TINY, "--arch", str(wrong_shape)], "must be a JSON object"),
        ([*m, *TINY, "--arch", str(huge)], "the limit is"),
        ([*m, *TINY, "--arch", str(tmp_path / "none.json")], "cannot read architecture file"),
        ([*m, *TINY, "--arch", str(bad_op)], "stages[0].layers[0].op 'k9_e3'"),
        ([*m, *TINY, "--arch", str(line_break)], "is an architecture of space 'tf\\x85nas', but --space tfnas"),
        ([*m, "--space", "mobilenet", "--random"], "unknown space 'mobilenet'"),
        ([*m, *TINY, "--random", "--backend", "onnx"], "unknown backend 'onnx'"),
        ([*m, "--resolution", "7", "--random"], "'--resolution': must be in [16, 2048], got 7"),
        ([*m, *TINY, "--random", "--batch", "0"], "'--batch': must be in [1, 4096], got 0"),
        ([*m, *TINY, "--random", "--threads", "0"], "'--threads': must be in [1, 1024], got 0"),
        ([*m, *TINY, "--random", "--batch", "two"], "'two' is not a valid integer"),
        ([*m, "--onnx", str(bad_onnx)], "is not a valid ONNX file"),
        ([*m, "--onnx", str(tmp_path / "missing.onnx")], "cannot read ONNX file"),
        ([*m, "--onnx", str(fails_when_run), "--processes", "1"], "fails when run"),
        ([*m, *TINY, "--random", "--db", str(blocker / "m.sqlite")], "cannot create measurement store"),
        ([*m, *TINY, "--random", "--backend", "tensorrt"], "tensorrt"),
        ([*m, *TINY, "--random", "--backend", "ort-cuda"], "ort-cuda needs CUDAExecutionProvider"),
        ([*m, *TINY], "give exactly one of"),
        ([*m, *TINY, "--random", "--layers"], "give exactly one of"),
        ([*m, *TINY, "--random", "--out", str(tmp_path / "x.xlsx")], "--out must end in"),
        (["mesure"], "No such command"),
        ([*m, *TINY, "--random", "--processes", "0"], "must be in [1, 100], got 0"),
        ([*m, *TINY, "--random", "--sessions", "0"], "'--sessions': must be in [1, 1000], got 0"),
        ([*m, *TINY, "--random", "--measure-cpus", "4096"], "does not let hwnas use"),
        ([*m, *TINY, "--random", "--isolation", "sideways"], "Invalid value for '--isolation'"),
    ]


def test_every_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    """In process (a traceback would fail the test as an exception); tests/fuzz runs real processes."""
    from hwnas.cli.main import main

    db = tmp_path / "m.sqlite"
    for args, expected in bad_inputs(tmp_path):
        if "--db" not in args and args[0] == "measure":
            args = [*args, "--db", str(db)]
        code = main([str(a) for a in args])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2, (args, err)
        assert len(lines) == 1 and lines[0].startswith("hwnas: error: "), (args, err)
        assert expected in lines[0], (args, lines[0])
    # the store is still a valid store after all of that
    from hwnas.store import Store

    with Store(db) as store:
        assert store.engine.connect().exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"


def test_pin_on_one_core_is_refused_in_one_line(tmp_path):
    import os

    core = min(os.sched_getaffinity(0))
    r = subprocess.run([sys.executable, "-m", "hwnas.cli", "measure", *TINY, *FAST, "--random", "--n", "1", "--isolation", "pin",
                        "--db", str(tmp_path / "m.sqlite")], capture_output=True, text=True, timeout=120,
                       preexec_fn=lambda: os.sched_setaffinity(0, {core}))
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert "--isolation pin needs a core" in r.stderr


def test_system_check_prints_each_fact_with_advice_and_the_reference(tmp_path):
    r = hwnas("system", "check", "--min-time", "0.05", db=tmp_path / "m.sqlite")
    assert r.returncode == 0, r.stderr
    for fact in ("cpu count", "governor", "turbo", "load average", "busy processes", "isolated cpus",
                 "worker affinity", "reference model"):
        assert fact in r.stdout, fact
    assert "baseline" in r.stdout


def test_an_architecture_files_space_and_width_are_used_unless_contradicted(tmp_path, capsys):
    from hwnas.cli.main import main

    arch = tmp_path / "a.json"
    assert main(["arch", "--space", "proxyless", "--width-mult", "1.0", "--resolution", "32", "--out", str(arch)]) == 0
    capsys.readouterr()
    assert main(["info", "--arch", str(arch), "--resolution", "32"]) == 0  # proxyless at 1.0, from the file
    assert "architecture" in capsys.readouterr().out
    assert main(["info", "--arch", str(arch), "--resolution", "32", "--width-mult", "0.5"]) == 2
    assert "an architecture of width_mult 1.0, but --width-mult 0.5 was given" in capsys.readouterr().err


def test_every_option_of_every_command_has_help():
    """`hwnas CMD --help` explains each option (search's per-method options: tests/cli/test_methods.py)."""
    cli_main._register_commands()
    missing, stack = [], [(["hwnas"], cli_main.cli)]
    while stack:
        path, cmd = stack.pop()
        if isinstance(cmd, click.Group):
            stack += [([*path, name], sub) for name, sub in cmd.commands.items()]
        missing += [f"{' '.join(path)} {p.opts[0]}" for p in cmd.params
                    if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()]
    assert len(cli_main.cli.commands) >= 10 and not missing, missing
