"""PruneLab: `python main.py` opens the desktop app; `python main.py <command>` runs headless."""
import sys


def main() -> int:
    """Dispatch to the command line or the GUI (Qt is imported only for the GUI)."""
    if len(sys.argv) > 1:
        from cli.main import main as cli_main

        return cli_main(sys.argv[1:])
    from gui.app import main as gui_main

    return gui_main()


if __name__ == "__main__":
    sys.exit(main())
