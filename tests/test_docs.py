"""The README stays the manual: every setting documented, the two commands at the top, CI runs the second."""

from __future__ import annotations

from app.config import Settings
from tests.conftest import REPO


def test_every_setting_is_documented() -> None:
    readme = (REPO / "README.md").read_text()
    missing = [f"FACEAPI_{n.upper()}" for n in Settings.model_fields if f"`FACEAPI_{n.upper()}`" not in readme]
    assert not missing, f"README lacks {missing}"


def test_two_commands_lead_the_readme_and_ci_runs_the_test_one() -> None:
    readme = (REPO / "README.md").read_text()
    head = readme[: readme.index("## Backends")]
    assert "make run" in head and "make test" in head
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci
