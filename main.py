"""PruneLab: `python main.py` opens the desktop app; `python main.py <command>` runs headless."""
import sys


def main() -> int:
    """Dispatch to the command line or the GUI (Qt is imported only for the GUI)."""
    if sys.argv[1:2] == ["--self-test"]:
        from cli.selftest import main as self_test

        return self_test(sys.argv[2:], gui_checks=_gui_checks)
    if len(sys.argv) > 1:
        from cli.main import main as cli_main

        return cli_main(sys.argv[1:])
    from gui.app import main as gui_main

    return gui_main()


def _gui_checks(window: bool, files: dict) -> list:
    """The self-test's Qt checks (imported only when PySide6 is installed; cli/ imports no Qt)."""
    from gui.selftest import checks

    return checks(window, files)


if __name__ == "__main__":
    sys.exit(main())
