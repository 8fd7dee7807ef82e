"""`python -m bastion` (and `torchrun -m bastion`) run the CLI."""

from bastion.cli import main

main()
