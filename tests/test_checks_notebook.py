"""The code the notebook check runs in a user's kernel (cablab_cluster/checks/test_notebook.py):
the sample notebooks, all in one IPython shell, here in-process on small notebooks."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from cablab_cluster.checks.test_notebook import RUN_SAMPLES


def notebook(*cells: str) -> str:
    return json.dumps({"cells": [{"cell_type": "markdown", "source": "# title"}] +
                              [{"cell_type": "code", "source": c.splitlines(True)} for c in cells],
                       "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def run_samples(tmp_path) -> dict:
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "01-ok.ipynb").write_text(notebook("import os\n%pwd", "x = 6 * 7\nprint(x)", "assert x == 42"))
    (samples / "02-fresh-namespace.ipynb").write_text(notebook("y = 1", "x"))  # x of 01 must be gone
    (samples / "03-cwd.ipynb").write_text(notebook("import os\nassert os.getcwd().endswith('samples')"))
    driver = textwrap.dedent("""
        import sys
        from IPython.core.interactiveshell import InteractiveShell
        InteractiveShell.instance().run_cell(sys.stdin.read())
    """)
    done = subprocess.run([sys.executable, "-c", driver], input=RUN_SAMPLES, capture_output=True, text=True,
                          env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}, check=True, timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_sample_runs_in_one_shell_each_from_an_empty_namespace(tmp_path):
    ran = run_samples(tmp_path)
    assert sorted(ran) == ["01-ok.ipynb", "02-fresh-namespace.ipynb", "03-cwd.ipynb"]
    assert ran["01-ok.ipynb"]["rc"] == 0 and ran["03-cwd.ipynb"]["rc"] == 0, ran
    failed = ran["02-fresh-namespace.ipynb"]
    assert failed["rc"] == 1 and failed["err"] == "cell 1: NameError: name 'x' is not defined", failed
