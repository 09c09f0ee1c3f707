import subprocess
import sys

from tests.sandbox_absent import env_without_sandbox
from wardsync import __version__
from wardsync.cli import main
from wardsync.infra.sandbox_process import SANDBOX_NOT_INSTALLED_EXIT


def test_version_flag_prints_the_one_version(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out.strip() == f"wardsync {__version__}"


def test_console_script_is_installed_and_headless_commands_do_not_need_qt():
    out = subprocess.run(
        [sys.executable, "-c", "import sys, wardsync.cli; print('PySide6' in sys.modules)"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == "False"


NOT_INSTALLED = "The demo needs the sandbox component, which is not installed here."
HOW_TO_GET_IT = "pip install 'wardsync[sandbox]'"


def _run_without_sandbox(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wardsync", *args], capture_output=True, text=True,
        env={**env_without_sandbox(tmp_path), "HOME": str(tmp_path)}, timeout=60,
    )


def test_demo_without_the_sandbox_extra_says_how_to_get_it(tmp_path):
    out = _run_without_sandbox(tmp_path, "--demo")
    assert out.returncode == SANDBOX_NOT_INSTALLED_EXIT
    assert NOT_INSTALLED in out.stderr and HOW_TO_GET_IT in out.stderr
    assert "(missing: aiohttp)" in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_headless_commands_work_without_the_sandbox_extra(tmp_path):
    # Nothing outside the sandbox imports aiohttp: version and configuration still work.
    version = _run_without_sandbox(tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"wardsync {__version__}"
    config = _run_without_sandbox(tmp_path, "config", "show")
    assert config.returncode == 0, config.stderr
    assert "fhir.base_url" in config.stdout
