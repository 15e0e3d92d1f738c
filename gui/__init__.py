"""PruneLab desktop application (PySide6). All Qt code lives here; engine/ never imports it."""
