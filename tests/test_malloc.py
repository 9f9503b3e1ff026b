"""``import tinyfn`` tunes glibc's malloc once (before XLA starts), unless TINYFN_MALLOPT=0."""

import os
import subprocess
import sys

import pytest

CODE = "import tinyfn, resource; print(tinyfn._MALLOC_TUNED)"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize("setting, expected", [(None, "True"), ("0", "None"), ("1", "True")])
def test_import_tunes_the_allocator_unless_told_not_to(setting, expected):
    env = {k: v for k, v in os.environ.items() if k != "TINYFN_MALLOPT"}
    if setting is not None:
        env["TINYFN_MALLOPT"] = setting
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=120, check=True).stdout
    assert out.strip() == expected
