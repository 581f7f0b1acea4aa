"""The README is a user's document: short, and its Python example runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_is_at_most_250_lines():
    assert len(README.read_text().splitlines()) <= 250


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_every_python_example_compiles_and_names_what_exists():
    for block in python_blocks():
        compile(block, "README.md", "exec")
        for module, names in re.findall(r"^from (hwnas[.\w]*) import (.+)$", block, flags=re.M):
            imported = __import__(module, fromlist=["_"])
            for name in (n.strip() for n in names.split(",")):
                assert hasattr(imported, name) or __import__(f"{module}.{name}", fromlist=["_"]), (module, name)


def test_the_api_example_runs_and_prints_a_measured_latency(tmp_path):
    blocks = [b for b in python_blocks() if "open_measurer" in b]
    assert len(blocks) == 1
    done = subprocess.run([sys.executable, "-c", blocks[0]], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    latency = float(re.search(r"M MACs, ([0-9.]+) ms", done.stdout).group(1))
    assert latency > 0 and (tmp_path / "api-example.sqlite").exists()
