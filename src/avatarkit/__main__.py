"""``python -m avatarkit``: the ``avatarkit`` command."""

from avatarkit.cli import main

main(prog_name="avatarkit")
