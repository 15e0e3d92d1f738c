"""The command line: `python main.py <command>`, a front end over the engine that nothing else imports.

The commands, their flags and exit codes are described in the README's "Command line" section.
"""
