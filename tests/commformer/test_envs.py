"""Importing jaxmarl through jaxlab leaves the interpreter's output streams alone."""

import json
import subprocess
import sys
import textwrap

# Runs in a fresh interpreter because jaxmarl swaps the streams only on its first import. The checks go to
# the real stderr as one JSON line, since the script replaces sys.stdout and sys.stderr.
_SCRIPT = textwrap.dedent("""
    import io
    import json
    import sys

    notebook_stdout, notebook_stderr = io.StringIO(), io.StringIO()
    original_dunder_stdout = sys.__stdout__
    sys.stdout, sys.stderr = notebook_stdout, notebook_stderr

    from jaxlab.commformer import envs
    envs.import_jaxmarl()
    env = envs.make_env("3m")
    print("after import")

    checks = {
        "stdout_kept": sys.stdout is notebook_stdout,
        "stderr_kept": sys.stderr is notebook_stderr,
        "dunder_stdout_kept": sys.__stdout__ is original_dunder_stdout,
        "captured_stdout": notebook_stdout.getvalue(),
        "num_agents": env.num_agents,
    }
    sys.__stderr__.write("\\n" + json.dumps(checks) + "\\n")
""")


def test_import_jaxmarl_keeps_streams():
    result = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    checks = json.loads(result.stderr.strip().splitlines()[-1])

    assert checks["stdout_kept"]
    assert checks["stderr_kept"]
    assert checks["dunder_stdout_kept"]
    assert checks["captured_stdout"] == "after import\n"
    assert checks["num_agents"] == 3
    assert result.stdout == "", "jaxmarl's import messages reached the process's stdout"
