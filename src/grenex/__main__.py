"""``python -m grenex`` is the ``grenex`` command."""

from grenex.cli import main

main()
