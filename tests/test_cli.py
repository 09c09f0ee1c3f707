import subprocess
import sys

from wardsync import __version__
from wardsync.cli import main


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
