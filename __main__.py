"""The Pulumi program: `pulumi up` runs this (and `mlstack plan` runs stacks/program.py's main
under mocks). Installed, this file is also `python -m mlstack`: outside the Pulumi engine (no
resource monitor configured) that is the `mlstack` command line, not a traceback."""

from pulumi.runtime import settings

if settings.get_monitor() is None:
    from mlstack.stacks.cli import main
else:
    from mlstack.stacks.program import main

main()
